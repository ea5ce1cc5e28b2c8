"""ONNX export of the cached-encoder design: a per-frame encoder graph and a window head graph.

Video Depth Anything's encoder sees each frame alone and only the head is temporal, so deployment uses
two graphs with fixed shapes per (height, width, T)::

    encoder  frames (N, 3, H, W) float32, ImageNet-normalised
             -> layer_0 .. layer_3 (N, H/14 * W/14, embed_dim)   final-norm patch tokens
    head     layer_0 .. layer_3 (T, H/14 * W/14, embed_dim)      one window of cached features
             -> disparity (T, H, W) >= 0 at the network input size
                (relative disparity; depth in metres for metric models)

Both are written with ``torch.onnx.export(dynamo=True)`` at opset >= 18 (the legacy exporter bakes
large constants, and dynamo at opset 17 gave invalid models) and carry their description in the ONNX
``metadata_props`` (keys ``endo_depth.*``: graph kind, model config, input size, frames, normalisation,
output kind, I/O names, a fingerprint of the weights), which the runtime backends check before use; that
format, its readers and checks are :mod:`endo_depth_model.runtime.graphs` (re-exported here).
An SSB-adapted model is merged first (a copy; the caller's model is untouched), so it exports exactly
like a plain one. ``endo-depth export`` is the command-line front end (optionally also building
TensorRT engines, see :mod:`endo_depth_model.runtime.tensorrt_backend`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

from endo_depth_model.runtime.graphs import (
    METADATA_PREFIX,
    ExportedGraphs,
    ExportError,
    GraphMetadata,
    check_graph,
    check_pair,
    default_cache_dir,
    graph_sha256,
    read_metadata,
)

__all__ = [
    "ExportError",
    "GraphMetadata",
    "ExportedGraphs",
    "EncoderGraph",
    "HeadGraph",
    "METADATA_PREFIX",
    "DEFAULT_OPSET",
    "default_cache_dir",
    "model_fingerprint",
    "prepare_for_export",
    "export_encoder",
    "export_head",
    "export_model",
    "ensure_graphs",
    "read_metadata",
    "check_graph",
    "check_pair",
    "graph_sha256",
]

DEFAULT_OPSET = 18
LAYER_NAMES = ("layer_0", "layer_1", "layer_2", "layer_3")


# ---- the two graphs -------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


@functools.lru_cache(maxsize=1)
def _build_graph_classes():
    """Define the export wrappers on first use so that importing this module does not import torch."""
    torch = _torch()

    class _EncoderGraph(torch.nn.Module):
        """frames (N, 3, H, W) normalised -> four (N, H/14 * W/14, C) token maps."""

        def __init__(self, model):
            super().__init__()
            self.vda = model
            self.layers = tuple(model.config.intermediate_layers)

        def forward(self, frames):
            return tuple(self.vda.pretrained.forward_intermediates(frames, self.layers))

    class _HeadGraph(torch.nn.Module):
        """Four (T, P, C) token maps of one window -> (T, H, W) non-negative output at network size."""

        def __init__(self, model, patch_hw: tuple[int, int]):
            super().__init__()
            self.vda = model
            self.patch_hw = tuple(patch_hw)

        def forward(self, layer_0, layer_1, layer_2, layer_3):
            window = layer_0.shape[0]
            out = self.vda.head([layer_0, layer_1, layer_2, layer_3], self.patch_hw, window)
            return out.squeeze(1)

    return _EncoderGraph, _HeadGraph


def EncoderGraph(model):  # noqa: N802 - a factory standing in for the class
    """Export wrapper: ``frames (N, 3, H, W) -> (layer_0, .., layer_3)`` each (N, P, C)."""
    return _build_graph_classes()[0](model)


def HeadGraph(model, patch_hw: tuple[int, int]):  # noqa: N802
    """Export wrapper: four (T, P, C) token maps -> (T, H, W) disparity at the network input size."""
    return _build_graph_classes()[1](model, patch_hw)


# ---- helpers ----------------------------------------------------------------------------------------------
def model_fingerprint(model) -> str:
    """16 hex digits identifying the architecture and every weight of ``model`` (sha256)."""
    torch = _torch()
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        digest.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def prepare_for_export(model):
    """A float32 CPU eval copy of ``model`` with any SSB adapters merged into the weights.

    ``model`` must be a :class:`~endo_depth_model.models.VideoDepthAnything` (possibly SSB-adapted).
    """
    from endo_depth_model.models import VideoDepthAnything

    if not isinstance(model, VideoDepthAnything):
        raise ExportError(f"only VideoDepthAnything models can be exported, got {type(model).__name__}")
    model = copy.deepcopy(model).float().to("cpu").eval()
    from endo_depth_model import ssb

    if any(True for _ in ssb.ssb_layers(model)):
        model = ssb.merge_ssb(model)
    return model


def _check_hw(input_hw) -> tuple[int, int]:
    h, w = (int(v) for v in input_hw)
    if h <= 0 or w <= 0 or h % 14 or w % 14:
        raise ExportError(f"input size {h}x{w} must be positive multiples of 14")
    return h, w


def _metadata(model, kind: str, input_hw, frames: int, fingerprint: str, opset: int) -> GraphMetadata:
    from endo_depth_model.preprocess import IMAGENET_MEAN, IMAGENET_STD

    torch = _torch()
    h, w = input_hw
    if kind == "encoder":
        inputs, outputs = ("frames",), LAYER_NAMES
    else:
        inputs, outputs = LAYER_NAMES, ("disparity",)
    return GraphMetadata(
        kind=kind,
        model_config=json.loads(json.dumps(dataclasses.asdict(model.config))),
        input_hw=(h, w),
        frames=int(frames),
        patch_hw=(h // 14, w // 14),
        embed_dim=int(model.config.embed_dim),
        output_kind="metric_depth" if model.config.metric else "relative_disparity",
        mean=tuple(float(v) for v in IMAGENET_MEAN),
        std=tuple(float(v) for v in IMAGENET_STD),
        inputs=inputs,
        outputs=outputs,
        fingerprint=fingerprint,
        opset=int(opset),
        torch_version=str(torch.__version__),
    )


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Silence the exporter's progress lines and warnings unless ``verbose``."""
    if verbose:
        yield
        return
    import logging

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(module, args: tuple, path: Path, meta: GraphMetadata, verbose: bool) -> Path:
    import onnx

    torch = _torch()
    if meta.opset < 18:
        raise ExportError(f"opset {meta.opset} < 18: the dynamo exporter needs opset >= 18 for these graphs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with _quiet(verbose), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module,
                args,
                str(tmp),
                dynamo=True,
                opset_version=meta.opset,
                input_names=list(meta.inputs),
                output_names=list(meta.outputs),
                external_data=False,
                verbose=verbose,
            )
        graph = onnx.load(str(tmp))
        graph.doc_string = (
            f"endo_depth {meta.kind} graph: Video Depth Anything {meta.encoder_name}, "
            f"{meta.input_hw[0]}x{meta.input_hw[1]}, {meta.frames} frame(s)"
        )
        del graph.metadata_props[:]
        for key, value in sorted(meta.to_props().items()):
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, str(tmp))
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types; report them as one
        raise ExportError(f"ONNX export of the {meta.kind} graph to {path} failed: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    check_graph(path, expect=meta)
    return path


def export_encoder(
    model,
    path: str | Path,
    input_hw: tuple[int, int],
    frames: int = 1,
    opset: int = DEFAULT_OPSET,
    fingerprint: str | None = None,
    verbose: bool = False,
) -> Path:
    """Write the per-frame encoder graph: ``frames (N, 3, H, W)`` -> four ``(N, H/14 * W/14, C)``."""
    torch = _torch()
    model = prepare_for_export(model)
    h, w = _check_hw(input_hw)
    if frames < 1:
        raise ExportError(f"encoder frames per call must be >= 1, got {frames}")
    meta = _metadata(model, "encoder", (h, w), frames, fingerprint or model_fingerprint(model), opset)
    example = torch.randn(frames, 3, h, w, generator=torch.Generator().manual_seed(0))
    return _export(EncoderGraph(model), (example,), Path(path), meta, verbose)


def export_head(
    model,
    path: str | Path,
    input_hw: tuple[int, int],
    window: int,
    opset: int = DEFAULT_OPSET,
    fingerprint: str | None = None,
    verbose: bool = False,
) -> Path:
    """Write the head graph for windows of ``window`` frames: four ``(T, P, C)`` -> ``(T, H, W)``."""
    torch = _torch()
    model = prepare_for_export(model)
    h, w = _check_hw(input_hw)
    if not 1 <= window <= model.config.num_frames:
        raise ExportError(f"window {window} outside 1..{model.config.num_frames} (the model's num_frames)")
    meta = _metadata(model, "head", (h, w), window, fingerprint or model_fingerprint(model), opset)
    tokens = (h // 14) * (w // 14)
    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.randn(window, tokens, model.config.embed_dim, generator=gen) for _ in range(4))
    # one pass through the full-resolution tail (the micro-batch loop would be unrolled into the graph)
    model.head.micro_batch = window
    return _export(HeadGraph(model, meta.patch_hw), example, Path(path), meta, verbose)


def export_causal_step(
    model,
    path: str | Path,
    input_hw: tuple[int, int],
    context: int = 31,
    opset: int = DEFAULT_OPSET,
    fingerprint: str | None = None,
    verbose: bool = False,
) -> Path:
    """Write the causal step (:class:`endo_depth_model.causal.CausalStep`): ``frame (1, 3, H, W)``,
    ``positions`` and ``key_bias`` ``(context + 1,)`` and the cache tensors ``cache_i`` in, the
    ``disparity (1, H, W)`` and the next caches ``next_cache_i`` out; the runtime feeds each step's next
    caches back (``endo_depth_model.causal.slot_inputs`` gives the two small inputs)."""
    torch = _torch()
    from endo_depth_model.causal import CausalStep, slot_inputs

    model = prepare_for_export(model)
    h, w = _check_hw(input_hw)
    if not 1 <= context < model.config.num_frames:
        raise ExportError(f"context {context} outside 1..{model.config.num_frames - 1}")
    step = CausalStep(model).eval()
    shapes = step.cache_shapes((h, w), context)
    names = tuple(f"cache_{i}" for i in range(len(shapes)))
    meta = dataclasses.replace(
        _metadata(model, "causal", (h, w), context, fingerprint or model_fingerprint(model), opset),
        inputs=("frame", "positions", "key_bias", *names),
        outputs=("disparity", *(f"next_{n}" for n in names)),
    )
    gen = torch.Generator().manual_seed(0)
    positions, key_bias = slot_inputs(context, context // 2)
    example = (
        torch.randn(1, 3, h, w, generator=gen),
        positions,
        key_bias,
        *(torch.randn(*s, generator=gen) for s in shapes),
    )
    return _export(step, example, Path(path), meta, verbose)


def graph_file_names(encoder: str, input_hw, window: int, encoder_frames: int = 1) -> tuple[str, str]:
    """Canonical file names ``<enc>_<H>x<W>_encoder_n<N>.onnx`` and ``<enc>_<H>x<W>_head_t<T>.onnx``."""
    h, w = input_hw
    return f"{encoder}_{h}x{w}_encoder_n{encoder_frames}.onnx", f"{encoder}_{h}x{w}_head_t{window}.onnx"


def export_model(
    model,
    out_dir: str | Path,
    input_hw: tuple[int, int],
    window: int,
    encoder_frames: int = 1,
    opset: int = DEFAULT_OPSET,
    progress: bool = False,
    verbose: bool = False,
) -> ExportedGraphs:
    """Export both graphs of ``model`` into ``out_dir`` under :func:`graph_file_names`."""
    model = prepare_for_export(model)
    fingerprint = model_fingerprint(model)
    enc_name, head_name = graph_file_names(model.config.encoder, _check_hw(input_hw), window, encoder_frames)
    out_dir = Path(out_dir)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=2, unit="graph", desc="onnx export")
    enc = export_encoder(model, out_dir / enc_name, input_hw, encoder_frames, opset, fingerprint, verbose)
    if bar is not None:
        bar.update(1)
    head = export_head(model, out_dir / head_name, input_hw, window, opset, fingerprint, verbose)
    if bar is not None:
        bar.update(1)
        bar.close()
    return ExportedGraphs(enc, head)


def ensure_graphs(
    model,
    input_hw: tuple[int, int],
    window: int,
    cache_dir: str | Path | None = None,
    encoder_frames: int = 1,
    opset: int = DEFAULT_OPSET,
    progress: bool = False,
) -> ExportedGraphs:
    """Graphs of ``model`` from the cache, exported into ``<cache_dir>/onnx/<fingerprint>/`` when missing.

    Looked up first in ``<cache_dir>/onnx/<fingerprint>/`` (the node's own exports), then in
    ``<cache_dir>`` itself, where ``endo-depth export --out <cache_dir>`` writes: a pair there is used
    when its metadata carries this model's :func:`model_fingerprint`, so changed weights never reuse
    stale graphs.
    """
    model = prepare_for_export(model)
    fingerprint = model_fingerprint(model)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = root / "onnx" / fingerprint
    enc_name, head_name = graph_file_names(model.config.encoder, _check_hw(input_hw), window, encoder_frames)
    for where in (folder, root):
        graphs = ExportedGraphs(where / enc_name, where / head_name)
        if graphs.encoder.is_file() and graphs.head.is_file():
            try:
                enc, head = graphs.metadata()
                check_pair(enc, head)
                if enc.fingerprint == fingerprint:
                    return graphs
            except ExportError:
                pass  # a damaged or foreign file: look further, export when nothing fits
    return export_model(model, folder, input_hw, window, encoder_frames, opset, progress)
