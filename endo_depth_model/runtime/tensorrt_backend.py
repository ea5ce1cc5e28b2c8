"""TensorRT backend: engines built from the exported ONNX graphs, run with pycuda buffers and a stream.

Written against the TensorRT >= 10 Python API: ``Builder`` + ``OnnxParser`` -> ``build_serialized_network``;
``Runtime.deserialize_cuda_engine``; name-based I/O (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_shape``, ``set_tensor_address``) and ``execute_async_v3`` on a
pycuda stream. pycuda shares CUDA's primary context with PyTorch (``pycuda.autoprimaryctx``).

fp16 engines keep the numerically fragile parts in fp32 (per-layer precision with
``OBEY_PRECISION_CONSTRAINTS``): every layer of the four temporal (motion) modules, whose attention
overflowed in fp16 elsewhere, and the final convolutions ``scratch.output_conv2`` (upstream runs them in
fp32 too). :func:`fp32_node_names` finds those ONNX nodes from the exporter's scope metadata and the
weight names; it is pure ONNX and tested without TensorRT.

Engines are cached on disk, one file per :class:`EngineKey` (GPU name, compute capability, TensorRT
version, input shapes, precision, sha256 of the ONNX file, the pinned-node list), with a JSON sidecar
holding the key; a cached engine whose sidecar does not match is never deserialised.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import BackendError, BackendUnavailable, EngineError
from .graph_backend import GraphBackend
from .graphs import ExportError, GraphMetadata, default_cache_dir, graph_sha256, read_metadata

__all__ = [
    "PRECISIONS",
    "EngineKey",
    "EngineCache",
    "GpuInfo",
    "TensorRTBackend",
    "tensorrt_unavailable_reason",
    "fp32_node_names",
    "onnx_layer_names",
    "engine_key",
    "check_engine_io",
    "build_engine",
    "build_or_load_engine",
]

PRECISIONS = ("fp32", "fp16")
# module scopes whose every node stays fp32 in an fp16 engine
FP32_SCOPES = (re.compile(r"(^|\.)motion_modules\.\d+(\.|$)"),)
# weights whose consuming Conv (and the Relu after it) stays fp32
FP32_WEIGHTS = re.compile(r"scratch[._]output_conv2[._]")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


def tensorrt_unavailable_reason(need_gpu: bool = True) -> str | None:
    """Why the TensorRT backend cannot run here (None when it can): package, pycuda or GPU missing."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising OSError
        return f"TensorRT is not importable ({type(exc).__name__}: {exc})"
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        return f"TensorRT {trt.__version__} found; the backend needs TensorRT >= 10"
    try:
        import pycuda.driver  # noqa: F401
    except Exception as exc:
        return f"pycuda is not importable ({type(exc).__name__}: {exc})"
    if need_gpu and not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


# ---- which layers stay fp32 (pure ONNX) ---------------------------------------------------------------
def _scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return [prop.value]
        if prop.key == "namespace":
            return [prop.value]
    return []


def fp32_node_names(model) -> list[str]:
    """Names of the ONNX nodes to pin to fp32 in an fp16 engine, in graph order.

    ``model``: an ``onnx.ModelProto`` or a path. Pinned: every node inside a temporal module (exporter
    scope ``...motion_modules.<i>...``), every Conv whose weight is ``scratch.output_conv2.*`` and the
    Relu directly after such a Conv. Raises :class:`EngineError` for a head graph where nothing matched
    (e.g. a graph exported without scope metadata), since the fp16 engine would then be unprotected.
    """
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    pinned: list[str] = []
    pinned_outputs: set[str] = set()
    for node in model.graph.node:
        keep = any(p.search(s) for s in _scopes(node) for p in FP32_SCOPES)
        if not keep and node.op_type == "Conv" and len(node.input) > 1 and FP32_WEIGHTS.search(node.input[1]):
            keep = True
        if not keep and node.op_type == "Relu" and node.input and node.input[0] in pinned_outputs:
            keep = True
        if keep:
            if not node.name:
                raise EngineError(
                    f"an ONNX {node.op_type} node to pin to fp32 has no name; re-export the graph"
                )
            pinned.append(node.name)
            if node.op_type == "Conv":
                pinned_outputs.update(node.output)
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("endo_depth.kind") == "head" and not pinned:
        raise EngineError("head graph has no temporal-module or output_conv2 nodes to pin to fp32")
    return pinned


def onnx_layer_names(layer_name: str, layer_metadata: str = "") -> set[str]:
    """ONNX node names a TensorRT layer came from.

    The ONNX parser records ``[ONNX Layer: <node>]`` in ``ILayer.metadata``; without it the layer name
    is the node name, possibly followed by a suffix the parser adds for multi-layer nodes.
    """
    names = set(_ONNX_LAYER.findall(layer_metadata or ""))
    if names:
        return names
    out = {layer_name}
    for sep in ("_", "/", ":", " ", "."):
        head = layer_name
        while sep in head:
            head = head.rsplit(sep, 1)[0]
            out.add(head)
    return out


# ---- engine cache ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for (engines are not portable across GPUs or TensorRT versions)."""

    name: str
    compute_capability: tuple[int, int]

    @classmethod
    def current(cls, device: int = 0) -> GpuInfo:
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA GPU is available")
        props = torch.cuda.get_device_properties(device)
        return cls(props.name, (int(props.major), int(props.minor)))


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on; two equal keys may share one engine file."""

    gpu_name: str
    compute_capability: tuple[int, int]
    trt_version: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    precision: str
    graph_sha256: str
    fp32_nodes_sha256: str
    graph_kind: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        d["input_shapes"] = [[n, list(s)] for n, s in self.input_shapes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EngineKey:
        d = dict(d)
        d["compute_capability"] = tuple(d["compute_capability"])
        d["input_shapes"] = tuple((str(n), tuple(int(v) for v in s)) for n, s in d["input_shapes"])
        return cls(**d)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def file_name(self, stem: str = "graph") -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower() or "gpu"
        sm = f"sm{self.compute_capability[0]}{self.compute_capability[1]}"
        return f"{stem}.{self.precision}.{gpu}-{sm}.trt{self.trt_version}.{self.digest()[:16]}.engine"

    def differences(self, other: EngineKey) -> list[str]:
        """Fields that differ, as ``name: mine != theirs``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {mine[k]} != {theirs.get(k)}" for k in mine if mine[k] != theirs.get(k)]


def engine_key(
    onnx_path: str | Path, precision: str, gpu: GpuInfo, trt_version: str, fp32_nodes: list[str] | None = None
) -> EngineKey:
    """The cache key of the engine built from ``onnx_path`` (shapes from its endo_depth metadata)."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    try:
        meta = read_metadata(onnx_path)
    except ExportError as exc:
        raise EngineError(str(exc)) from exc
    nodes = (
        fp32_nodes if fp32_nodes is not None else (fp32_node_names(onnx_path) if precision == "fp16" else [])
    )
    return EngineKey(
        gpu_name=gpu.name,
        compute_capability=tuple(gpu.compute_capability),  # type: ignore[arg-type]
        trt_version=str(trt_version),
        input_shapes=tuple(sorted(meta.input_shapes().items())),
        precision=precision,
        graph_sha256=graph_sha256(onnx_path),
        fp32_nodes_sha256=hashlib.sha256("\n".join(nodes).encode()).hexdigest(),
        graph_kind=meta.kind,
    )


class EngineCache:
    """Serialized engines under ``root``: ``<file_name(key)>`` plus ``<same>.json`` holding the key."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir() / "engines"

    def path_for(self, key: EngineKey, stem: str = "graph") -> Path:
        return self.root / key.file_name(stem)

    def load(self, key: EngineKey, stem: str = "graph") -> bytes:
        """Engine bytes for ``key``; :class:`EngineError` when missing or when its sidecar disagrees."""
        path = self.path_for(key, stem)
        return self.load_file(path, key)

    @staticmethod
    def load_file(path: str | Path, key: EngineKey) -> bytes:
        """Read an engine file and check its JSON sidecar against ``key`` before returning the bytes."""
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"TensorRT engine not found: {path}")
        sidecar = path.with_name(path.name + ".json")
        if not sidecar.is_file():
            raise EngineError(
                f"{path}: no key file {sidecar.name}; cannot tell what the engine was built for"
            )
        try:
            stored = EngineKey.from_dict(json.loads(sidecar.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"{sidecar}: unreadable engine key ({exc})") from None
        diffs = key.differences(stored)
        if diffs:
            raise EngineError(
                f"{path} was built for something else ({'; '.join(diffs)}); delete it or rebuild the engine"
            )
        return path.read_bytes()

    def store(self, key: EngineKey, data: bytes, stem: str = "graph") -> Path:
        """Write engine and sidecar atomically; returns the engine path."""
        path = self.path_for(key, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, payload in (
            (path, bytes(data)),
            (path.with_name(path.name + ".json"), json.dumps(key.to_dict(), indent=1).encode()),
        ):
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            tmp.write_bytes(payload)
            os.replace(tmp, target)
        return path


def check_engine_io(
    path: str | Path, meta: GraphMetadata, io: dict[str, tuple[str, tuple[int, ...]]]
) -> None:
    """Raise :class:`EngineError` unless the engine's I/O (name -> (``"input"``/``"output"``, shape))
    is exactly that of the graph described by ``meta``."""
    want = {n: ("input", tuple(s)) for n, s in meta.input_shapes().items()}
    want.update({n: ("output", tuple(s)) for n, s in meta.output_shapes().items()})
    have = {n: (m, tuple(int(v) for v in s)) for n, (m, s) in io.items()}
    if set(want) != set(have):
        raise EngineError(f"{path}: engine tensors {sorted(have)} do not match the graph's {sorted(want)}")
    bad = [f"{n}: engine {have[n]} vs graph {want[n]}" for n in sorted(want) if have[n] != want[n]]
    if bad:
        raise EngineError(f"{path}: engine shapes do not match the graph: {'; '.join(bad)}")


# ---- build ----------------------------------------------------------------------------------------------
def _trt_logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(
    onnx_path: str | Path,
    precision: str = "fp16",
    workspace_gib: float = 4.0,
    fp32_nodes: list[str] | None = None,
) -> tuple[bytes, list[str]]:
    """Build a serialized engine from an exported graph; returns ``(engine bytes, pinned layer names)``.

    fp16 engines pin every TensorRT layer that comes from a node of ``fp32_nodes`` (default
    :func:`fp32_node_names`) to fp32 precision and fp32 outputs, with ``OBEY_PRECISION_CONSTRAINTS``.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailable(reason)
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    logger = _trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    pinned_layers: list[str] = []
    if precision == "fp16":
        nodes = set(fp32_nodes if fp32_nodes is not None else fp32_node_names(onnx_path))
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        floating = (trt.float32, trt.float16)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if not onnx_layer_names(layer.name, getattr(layer, "metadata", "")) & nodes:
                continue
            outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
            if not outputs or any(o.dtype not in floating for o in outputs):
                continue  # shape / index layers keep their integer types
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned_layers.append(layer.name)
        if nodes and not pinned_layers:
            raise EngineError(f"{onnx_path}: none of the {len(nodes)} fp32 nodes matched a TensorRT layer")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} ({precision})")
    return bytes(serialized), pinned_layers


def build_or_load_engine(
    onnx_path: str | Path,
    precision: str = "fp16",
    cache_dir: str | Path | None = None,
    workspace_gib: float = 4.0,
    build: bool = True,
) -> Path:
    """The cached engine for ``onnx_path`` on this GPU, built (and cached) first when missing.

    ``build=False`` turns a missing or mismatched engine into an :class:`EngineError` instead.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailable(reason)
    import tensorrt as trt

    cache = EngineCache(cache_dir)
    key = engine_key(onnx_path, precision, GpuInfo.current(), trt.__version__)
    stem = Path(onnx_path).stem
    path = cache.path_for(key, stem)
    try:
        cache.load(key, stem)
        return path
    except EngineError:
        if not build:
            raise
    data, _ = build_engine(onnx_path, precision, workspace_gib)
    return cache.store(key, data, stem)


# ---- run ------------------------------------------------------------------------------------------------
class _Engine:
    """One deserialized engine with its execution context and pycuda host/device buffers."""

    def __init__(self, path: Path, data: bytes, meta: GraphMetadata) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        try:
            import pycuda.autoprimaryctx  # noqa: F401 - share torch's primary context
        except ImportError:  # older pycuda
            import pycuda.autoinit  # noqa: F401

        self.cuda = cuda
        self.runtime = trt.Runtime(_trt_logger())
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineError(f"{path}: TensorRT could not deserialize the engine (other TensorRT version?)")
        io: dict[str, tuple[str, tuple[int, ...]]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = "input" if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            io[name] = (mode, tuple(self.engine.get_tensor_shape(name)))
        check_engine_io(path, meta, io)
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, object] = {}
        self.inputs = [n for n, (m, _) in io.items() if m == "input"]
        self.outputs = [n for n, (m, _) in io.items() if m == "output"]
        for name, (_, shape) in io.items():
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            host = cuda.pagelocked_empty(shape, dtype)
            dev = cuda.mem_alloc(host.nbytes)
            self.host[name], self.device[name] = host, dev
            self.context.set_tensor_address(name, int(dev))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self.cuda
        for name in self.inputs:
            np.copyto(self.host[name], feeds[name], casting="same_kind")
            cuda.memcpy_htod_async(self.device[name], self.host[name], self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise BackendError("TensorRT execute_async_v3 failed")
        for name in self.outputs:
            cuda.memcpy_dtoh_async(self.host[name], self.device[name], self.stream)
        self.stream.synchronize()
        return {name: self.host[name].copy() for name in self.outputs}

    def close(self) -> None:
        for dev in self.device.values():
            dev.free()  # type: ignore[attr-defined]
        self.device.clear()
        self.context = self.engine = None


class TensorRTBackend(GraphBackend):
    """The exported encoder and head graphs as TensorRT engines (fp32 or fp16 with fp32 islands).

    Engines come from the on-disk cache (built there first when ``build`` is True). Outputs are CPU
    float32 tensors, like the onnxruntime backend; the work runs on CUDA through pycuda.
    """

    name = "tensorrt"
    graph_error = EngineError

    def __init__(
        self,
        encoder_path: str | Path,
        head_path: str | Path,
        precision: str = "fp16",
        cache_dir: str | Path | None = None,
        build: bool = True,
        workspace_gib: float = 4.0,
    ) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        self._read_graphs(encoder_path, head_path, "cuda")
        enc_meta, head_meta = self.encoder_meta, self.head_meta
        self.precision = precision
        self.engine_paths = tuple(
            build_or_load_engine(p, precision, cache_dir, workspace_gib, build)
            for p in (encoder_path, head_path)
        )
        import tensorrt as trt

        gpu = GpuInfo.current()
        engines = []
        for graph, path, meta in zip(
            (encoder_path, head_path), self.engine_paths, (enc_meta, head_meta), strict=True
        ):
            key = engine_key(graph, precision, gpu, trt.__version__)
            engines.append(_Engine(path, EngineCache.load_file(path, key), meta))
        self.encoder, self.head = engines

    def _run(self, graph, feeds, names):
        out = graph.run(feeds)
        return [out[name] for name in names]

    def describe(self) -> str:
        return super().describe() + f" [{self.precision}, engines {[p.name for p in self.engine_paths]}]"

    def close(self) -> None:
        for engine in (getattr(self, "encoder", None), getattr(self, "head", None)):
            if engine is not None:
                engine.close()
