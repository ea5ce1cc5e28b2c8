"""Inference backends behind one interface, chosen by name or ``auto``.

    backend = load_backend("auto", model, input_hw=(224, 280), window=16, device="cpu")
    engine = StreamingDepth(backend, preprocessor, window=16, ...)   # unchanged for every backend

Registry (``BACKENDS``): ``torch`` (CPU/CUDA; bf16 autocast on CPUs with AMX / AVX512-BF16, fp16
autocast and CUDA graphs on GPU), ``onnxruntime``
(exported graphs; CPU, CUDA provider where present), ``tensorrt`` (engines from the same graphs,
pycuda). Graph backends need an input size and a window (graphs have fixed shapes); they use the
graphs given, or export the model's graphs into the cache (keyed by a fingerprint of the weights).

``auto`` tries, in order, ``AUTO_ORDER[device type]`` and returns the first backend that loads;
every backend it skipped is recorded with its reason in ``backend.fallbacks`` (and logged), so a
missing or mismatched TensorRT engine falls back to the next backend with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import Backend, BackendError, BackendUnavailable, EngineError

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "EngineError",
    "available_backends",
    "load_backend",
]

BACKENDS = ("torch", "onnxruntime", "tensorrt")
# measured on our 2-core CPU (docs/BENCHMARKS.md): in fp32 onnxruntime and torch are within a few per
# cent; with bf16 asked for, torch goes first (bf16 is a torch option; VDA-S 105 vs 192-199 ms per frame)
AUTO_ORDER = {"cpu": ("onnxruntime", "torch"), "cuda": ("tensorrt", "torch", "onnxruntime")}


def available_backends(device: str = "cpu") -> dict[str, str | None]:
    """Backend name -> None when it can run on ``device`` here, else the reason it cannot."""
    import torch

    dev = torch.device(device)
    out: dict[str, str | None] = {}
    out["torch"] = None if dev.type == "cpu" or torch.cuda.is_available() else "CUDA is not available"
    try:
        import onnxruntime as ort

        if dev.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            out["onnxruntime"] = "onnxruntime has no CUDAExecutionProvider"
        else:
            out["onnxruntime"] = None
    except ImportError as exc:
        out["onnxruntime"] = f"onnxruntime is not installed ({exc})"
    if dev.type != "cuda":
        out["tensorrt"] = "TensorRT runs on CUDA devices only"
    else:
        from .tensorrt_backend import tensorrt_unavailable_reason

        out["tensorrt"] = tensorrt_unavailable_reason()
    return out


def _graphs(model, encoder_onnx, head_onnx, input_hw, window, cache_dir, encoder_frames):
    from endo_depth_model.export import ensure_graphs  # exports the graphs on a cache miss

    from .graphs import ExportedGraphs, ExportError

    if encoder_onnx or head_onnx:
        if not (encoder_onnx and head_onnx):
            raise BackendError("give both encoder_onnx and head_onnx (or neither, to export from the model)")
        return ExportedGraphs(Path(encoder_onnx), Path(head_onnx))
    if model is None or input_hw is None or window is None:
        raise BackendError("graph backends need ONNX graphs, or a model with input_hw and window to export")
    try:
        return ensure_graphs(model, tuple(input_hw), int(window), cache_dir, encoder_frames)
    except ExportError as exc:
        raise BackendError(str(exc)) from exc


def _load_one(
    name: str,
    model,
    *,
    device,
    input_hw,
    window,
    encoder_onnx,
    head_onnx,
    cache_dir,
    encoder_frames,
    precision,
    fp16,
    bf16,
    cuda_graphs,
    threads,
    build_engines,
) -> Backend:
    if name == "torch":
        from .torch_backend import TorchBackend

        if model is None:
            raise BackendError("the torch backend needs the model")
        torch_precision = "fp16" if fp16 else "bf16" if bf16 else "fp32"
        backend: Backend = TorchBackend(model, device, precision=torch_precision, cuda_graphs=cuda_graphs)
        if input_hw is not None:
            backend.input_hw = tuple(input_hw)
        return backend
    if bf16 or fp16:
        raise BackendError(f"{'bf16' if bf16 else 'fp16'} autocast is a torch backend option, not {name}'s")
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend, select_providers

        select_providers(device)  # fail early (BackendUnavailable) before exporting anything
        graphs = _graphs(model, encoder_onnx, head_onnx, input_hw, window, cache_dir, encoder_frames)
        return OnnxRuntimeBackend(graphs.encoder, graphs.head, device, threads=threads)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        graphs = _graphs(model, encoder_onnx, head_onnx, input_hw, window, cache_dir, encoder_frames)
        engines = Path(cache_dir) / "engines" if cache_dir else None
        return TensorRTBackend(graphs.encoder, graphs.head, precision, engines, build=build_engines)
    raise BackendError(f"unknown backend {name!r}; choose one of {('auto', *BACKENDS)}")


def load_backend(
    name: str = "auto",
    model=None,
    *,
    device: str = "cpu",
    input_hw: tuple[int, int] | None = None,
    window: int | None = None,
    encoder_onnx: str | Path | None = None,
    head_onnx: str | Path | None = None,
    cache_dir: str | Path | None = None,
    encoder_frames: int = 1,
    precision: str = "fp16",
    fp16: bool = False,
    bf16: bool = False,
    cuda_graphs: bool = False,
    threads: int = 0,
    build_engines: bool = True,
    log: Callable[[str], None] | None = None,
) -> Backend:
    """A ready backend by ``name`` (``auto``, ``torch``, ``onnxruntime``, ``tensorrt``).

    ``model``: a ``VideoDepthAnything`` (needed by ``torch``, and by graph backends to export graphs
    when ``encoder_onnx``/``head_onnx`` are not given). ``input_hw`` (H, W) and ``window`` T fix the
    graph shapes. ``cache_dir``: exported graphs (``onnx/``) and engines (``engines/``); default
    ``$ENDO_DEPTH_CACHE`` or ``~/.cache/endo_depth``. ``precision``: TensorRT ``fp16`` (fp32 islands)
    or ``fp32``. ``fp16``/``cuda_graphs``: torch on CUDA. ``bf16``: torch autocast to bfloat16 (CPU with
    AMX / AVX512-BF16, or CUDA); with ``auto`` on CPU it puts torch first (measured faster than
    onnxruntime fp32 on such a CPU, docs/BENCHMARKS.md). ``threads``: onnxruntime intra-op threads.
    ``build_engines=False`` makes a missing TensorRT engine an :class:`EngineError`.
    A named backend raises its error; ``auto`` falls back along ``AUTO_ORDER`` and raises
    :class:`BackendError` listing every reason when none loads.
    """
    import torch

    kwargs = dict(
        device=device,
        input_hw=input_hw,
        window=window,
        encoder_onnx=encoder_onnx,
        head_onnx=head_onnx,
        cache_dir=cache_dir,
        encoder_frames=encoder_frames,
        precision=precision,
        fp16=fp16,
        bf16=bf16,
        cuda_graphs=cuda_graphs,
        threads=threads,
        build_engines=build_engines,
    )
    if name != "auto":
        return _load_one(name, model, **kwargs)
    order = AUTO_ORDER.get(torch.device(device).type)
    if order is None:
        raise BackendError(f"no backends for device {device!r}")
    if bf16 or fp16:  # autocast asked for: torch first, the graph backends (fp32) as fallbacks
        order = ("torch", *(n for n in order if n != "torch"))
    skipped: list[tuple[str, str]] = []
    for candidate in order:
        if candidate == "torch" and model is None:
            skipped.append((candidate, "no model given"))
            continue
        try:
            opts = kwargs if candidate == "torch" else {**kwargs, "fp16": False, "bf16": False}
            backend = _load_one(candidate, model, **opts)
        except (BackendError, ImportError, OSError) as exc:
            skipped.append((candidate, f"{type(exc).__name__}: {exc}"))
            if log is not None:
                log(f"backend {candidate} unavailable, trying the next: {exc}")
            continue
        backend.fallbacks = skipped
        return backend
    raise BackendError("no backend could be loaded: " + "; ".join(f"{n}: {r}" for n, r in skipped))
