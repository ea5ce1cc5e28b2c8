"""PyTorch backend: the ``nn.Module`` itself, on CPU or CUDA, with bf16 autocast on CPUs that compute
bfloat16 natively, fp16/bf16 autocast and CUDA graphs on GPU."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from endo_depth_model.models import FrameFeatures, VideoDepthAnything

from .base import Backend, BackendError, BackendUnavailable, finish_output
from .precision import PrecisionError, autocast, cast_weights, resolve_precision

__all__ = ["TorchBackend", "CudaGraphRunner"]


class CudaGraphRunner:
    """Replays one captured CUDA graph of ``fn`` for inputs of one fixed shape.

    Inputs are copied into static buffers, the graph is replayed and the outputs are cloned (the static
    outputs are overwritten by the next replay). ``fn`` maps tensors to a tuple of tensors.
    """

    def __init__(
        self, fn: Callable[..., tuple[torch.Tensor, ...]], example: tuple[torch.Tensor, ...], warmup: int = 2
    ) -> None:
        self.static_in = tuple(x.detach().clone() for x in example)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(*self.static_in)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for dst, src in zip(self.static_in, inputs, strict=True):
            dst.copy_(src)
        self.graph.replay()
        return tuple(x.clone() for x in self.static_out)


class TorchBackend(Backend):
    """``VideoDepthAnything`` run by PyTorch.

    ``precision``: ``fp32``, ``bf16`` (autocast to bfloat16; CPU with AMX / AVX512-BF16, or CUDA),
    ``fp16`` (autocast to float16 on CUDA; the model keeps its final convolutions in fp32) or ``auto``
    (:func:`~endo_depth_model.runtime.precision.resolve_precision`). ``fp16=True`` is ``precision="fp16"``.
    ``cuda_graphs``: capture one CUDA graph per input shape for the encoder and the head and replay it
    (CUDA only; shapes are fixed per stream, so one capture each suffices).
    """

    name = "torch"

    def __init__(
        self,
        model: VideoDepthAnything,
        device: str | torch.device = "cpu",
        fp16: bool = False,
        cuda_graphs: bool = False,
        precision: str = "fp32",
    ) -> None:
        if not isinstance(model, VideoDepthAnything):
            raise BackendError(f"torch backend needs a VideoDepthAnything model, got {type(model).__name__}")
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device} requested but CUDA is not available")
        if cuda_graphs and device.type != "cuda":
            raise BackendError("CUDA graphs need a CUDA device")
        try:
            self.precision = resolve_precision("fp16" if fp16 else precision, device)
        except PrecisionError as exc:
            raise BackendError(str(exc)) from exc
        super().__init__(model.config, device)
        self.model = model.to(device).eval()
        if device.type == "cpu" and self.precision != "fp32":
            # the weights stored in the dtype autocast computes in, once, instead of cast on every call
            # (cast_weights; the same rounding); on a copy, so the caller's model stays fp32. The head's
            # last convolutions run with autocast off and stay fp32.
            fp32_tail = ("head.scratch.output_conv2",)
            self.model = cast_weights(copy.deepcopy(self.model), self.precision, keep=fp32_tail)
        self.head = self.model.head
        if device.type == "cpu":
            # oneDNN's convolutions are much faster in channels-last layout when channels are few, as in
            # the head's full-resolution tail (docs/BENCHMARKS.md). The backend runs a channels-last
            # copy of the head; the model itself keeps its layout (channels-last weights would break
            # ONNX export and safetensors saving), so weights changed after this point are not seen.
            self.head = copy.deepcopy(self.model.head).to(memory_format=torch.channels_last)
        self.cuda_graphs = bool(cuda_graphs)
        self._graphs: dict[tuple, CudaGraphRunner] = {}

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    def _autocast(self):
        return autocast(self.precision, self.device)

    def _encode_flat(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            layers = self.model.pretrained.forward_intermediates(frames, self.config.intermediate_layers)
        return tuple(x.float() for x in layers)

    def _head_flat(
        self, t: int, patch_hw: tuple[int, int], output_frames: slice | None, *tokens: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            out = self.head(list(tokens), patch_hw, t, output_frames=output_frames)
        return (out.float(),)

    def _run(self, key: tuple, fn: Callable, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.cuda_graphs:
            return fn(*inputs)
        runner = self._graphs.get(key)
        if runner is None:
            runner = self._graphs[key] = CudaGraphRunner(fn, inputs)
        return runner(*inputs)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> FrameFeatures:
        frames = self._check_frames(frames).to(self.device, torch.float32)
        b, t, _, h, w = frames.shape
        flat = frames.flatten(0, 1)
        layers = self._run(("encoder", tuple(flat.shape)), self._encode_flat, flat)
        return FrameFeatures(tuple(x.unflatten(0, (b, t)) for x in layers), (h // 14, w // 14))  # type: ignore[arg-type]

    @torch.inference_mode()
    def decode(
        self,
        features: FrameFeatures,
        image_hw: tuple[int, int] | None = None,
        output_frames: slice | None = None,
    ) -> torch.Tensor:
        self._check_window(features)
        b, t = features.layers[0].shape[:2]
        tokens = [x.to(self.device, torch.float32).flatten(0, 1) for x in features.layers]
        patch_hw = features.patch_hw

        def head(*tok: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self._head_flat(t, patch_hw, output_frames, *tok)

        sel = None if output_frames is None else output_frames.indices(t)
        (out,) = self._run(("head", t, sel, tuple(patch_hw), tuple(tokens[0].shape)), head, *tokens)
        raw = out[:, 0].unflatten(0, (b, out.shape[0] // b))
        return finish_output(raw, image_hw if image_hw is not None else features.image_hw)

    def describe(self) -> str:
        extras = [f"{self.precision} autocast"] if self.precision != "fp32" else []
        extras += ["CUDA graphs"] if self.cuda_graphs else []
        return super().describe() + (f" [{', '.join(extras)}]" if extras else "")

    def close(self) -> None:
        self._graphs.clear()
