"""The exported-graph format: what :mod:`endo_depth_model.export` writes and the graph backends read.

Each graph is an ONNX file whose ``metadata_props`` carry its description as ``endo_depth.<field>``
entries (:class:`GraphMetadata`: graph kind, model config, input size, frames, normalisation, output
kind, I/O names, a fingerprint of the weights). The runtime backends read and check graphs with this
module only; exporting them is :mod:`endo_depth_model.export`'s job. Exported graphs and engines are
cached under :func:`default_cache_dir`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ExportError",
    "GraphMetadata",
    "ExportedGraphs",
    "METADATA_PREFIX",
    "FORMAT",
    "FORMAT_VERSION",
    "default_cache_dir",
    "read_metadata",
    "check_graph",
    "check_pair",
    "graph_sha256",
]

METADATA_PREFIX = "endo_depth."
FORMAT = "endo_depth.onnx"
FORMAT_VERSION = 1


class ExportError(RuntimeError):
    """The model or graph cannot be exported, or an ONNX file is not a valid endo_depth graph."""


def default_cache_dir() -> Path:
    """Where exported graphs and engines are cached: ``$ENDO_DEPTH_CACHE`` or ``~/.cache/endo_depth``."""
    env = os.environ.get("ENDO_DEPTH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "endo_depth"


@dataclass(frozen=True)
class GraphMetadata:
    """What an exported graph is; stored as ``endo_depth.<field>`` entries of ``metadata_props``.

    ``kind``: ``"encoder"`` or ``"head"``. ``input_hw``: network input (H, W), multiples of 14.
    ``frames``: N frames per encoder call or the head's window T. ``patch_hw``: (H/14, W/14).
    ``embed_dim``: channels of the cached features. ``output_kind``: ``"relative_disparity"`` or
    ``"metric_depth"``. ``mean``/``std``: the RGB normalisation the encoder expects (inputs in [0, 1]
    before normalisation). ``fingerprint``: :func:`endo_depth_model.export.model_fingerprint` of the
    exported weights; an encoder and a head belong together only when their fingerprints match.
    """

    kind: str
    model_config: dict
    input_hw: tuple[int, int]
    frames: int
    patch_hw: tuple[int, int]
    embed_dim: int
    output_kind: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fingerprint: str
    opset: int
    torch_version: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def encoder_name(self) -> str:
        return str(self.model_config.get("encoder", "?"))

    def _cache_shapes(self) -> list[tuple[int, ...]]:
        """The causal step's cache tensors (kind ``causal``; ``frames`` is the cached context)."""
        import torch

        from endo_depth_model.models import build_vda

        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in self.model_config.items()}
        name = cfg.pop("encoder")
        with torch.device("meta"):
            model = build_vda(name, **{k: v for k, v in cfg.items() if k != "encoder"})
        return [tuple(s) for s in model.head.cache_shapes(tuple(self.patch_hw), self.frames)]

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> fixed shape of every graph input."""
        h, w = self.input_hw
        if self.kind == "causal":
            fixed = {"frame": (1, 3, h, w), "positions": (self.frames + 1,), "key_bias": (self.frames + 1,)}
            return fixed | dict(zip(self.inputs[3:], self._cache_shapes(), strict=True))
        if self.kind == "encoder":
            return {self.inputs[0]: (self.frames, 3, h, w)}
        tokens = self.patch_hw[0] * self.patch_hw[1]
        return {name: (self.frames, tokens, self.embed_dim) for name in self.inputs}

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> fixed shape of every graph output."""
        if self.kind == "causal":
            out = {"disparity": (1, *self.input_hw)}
            return out | dict(zip(self.outputs[1:], self._cache_shapes(), strict=True))
        if self.kind == "encoder":
            tokens = self.patch_hw[0] * self.patch_hw[1]
            return {name: (self.frames, tokens, self.embed_dim) for name in self.outputs}
        return {self.outputs[0]: (self.frames, *self.input_hw)}

    def to_props(self) -> dict[str, str]:
        props = {"format": FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            props[f.name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return {METADATA_PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "<graph>") -> GraphMetadata:
        ours = {k[len(METADATA_PREFIX) :]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
        if ours.get("format") != FORMAT:
            raise ExportError(
                f"{source}: not an endo_depth graph (no {METADATA_PREFIX}format={FORMAT} metadata)"
            )
        values: dict[str, Any] = {}
        try:
            for f in dataclasses.fields(cls):
                if f.name not in ours:
                    if f.default is not dataclasses.MISSING:
                        continue
                    raise ExportError(f"{source}: metadata {METADATA_PREFIX}{f.name} is missing")
                raw = ours[f.name]
                values[f.name] = (
                    raw
                    if f.name in ("kind", "output_kind", "fingerprint", "torch_version")
                    else (json.loads(raw))
                )
        except json.JSONDecodeError as exc:
            raise ExportError(f"{source}: unreadable metadata ({exc})") from None
        for key in ("input_hw", "patch_hw", "mean", "std", "inputs", "outputs"):
            values[key] = tuple(values[key])
        meta = cls(**values)
        if meta.format_version > FORMAT_VERSION:
            raise ExportError(
                f"{source}: graph format version {meta.format_version} is newer than this package's "
                f"{FORMAT_VERSION}; update endo_depth"
            )
        if meta.kind not in ("encoder", "head", "causal"):
            raise ExportError(f"{source}: unknown graph kind {meta.kind!r}")
        return meta


@dataclass(frozen=True)
class ExportedGraphs:
    """An encoder graph and the head graph that goes with it."""

    encoder: Path
    head: Path

    def metadata(self) -> tuple[GraphMetadata, GraphMetadata]:
        return read_metadata(self.encoder), read_metadata(self.head)


# ---- reading and checking --------------------------------------------------------------------------
def read_metadata(path: str | Path) -> GraphMetadata:
    """The :class:`GraphMetadata` of an exported graph (weights are not loaded)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX graph not found: {path}")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors
        raise ExportError(f"{path}: not a readable ONNX file ({exc})") from exc
    return GraphMetadata.from_props({p.key: p.value for p in graph.metadata_props}, str(path))


def _value_shape(value) -> tuple:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def check_graph(path: str | Path, expect: GraphMetadata | None = None) -> GraphMetadata:
    """Validate an exported graph: ONNX checker, opset >= 18, metadata, fixed I/O names and shapes.

    Raises :class:`ExportError` naming the file and the first problem; returns the metadata.
    """
    import onnx

    path = Path(path)
    meta = read_metadata(path)
    graph = onnx.load(str(path))
    try:
        onnx.checker.check_model(graph, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: invalid ONNX model: {exc}") from exc
    opset = max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 18:
        raise ExportError(f"{path}: opset {opset} < 18")
    if expect is not None and meta != expect:
        raise ExportError(f"{path}: metadata differs from what was exported")
    inputs = {v.name: _value_shape(v) for v in graph.graph.input}
    outputs = {v.name: _value_shape(v) for v in graph.graph.output}
    for kind, want, have in (
        ("input", meta.input_shapes(), inputs),
        ("output", meta.output_shapes(), outputs),
    ):
        if set(want) != set(have):
            raise ExportError(
                f"{path}: graph {kind}s {sorted(have)} differ from the metadata's {sorted(want)}"
            )
        for name, shape in want.items():
            if tuple(have[name]) != tuple(shape):
                raise ExportError(f"{path}: {kind} {name} has shape {have[name]}, metadata says {shape}")
    return meta


def check_pair(encoder: GraphMetadata, head: GraphMetadata) -> None:
    """Raise :class:`ExportError` unless ``encoder`` feeds ``head`` (same weights, input size, features)."""
    if encoder.kind != "encoder" or head.kind != "head":
        raise ExportError(f"expected an encoder and a head graph, got {encoder.kind} and {head.kind}")
    problems = []
    if encoder.fingerprint != head.fingerprint:
        problems.append(f"weights differ (fingerprints {encoder.fingerprint} vs {head.fingerprint})")
    if encoder.input_hw != head.input_hw:
        problems.append(f"input sizes differ ({encoder.input_hw} vs {head.input_hw})")
    if encoder.embed_dim != head.embed_dim or encoder.model_config != head.model_config:
        problems.append("model configs differ")
    if problems:
        raise ExportError("encoder and head graphs do not belong together: " + "; ".join(problems))


def graph_sha256(path: str | Path) -> str:
    """sha256 of an ONNX file's bytes (part of the TensorRT engine cache key)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
