"""onnxruntime backend: the exported encoder and head graphs on CPU (CUDA provider where present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from endo_depth_model.models import FrameFeatures, VDAConfig

from .base import Backend, BackendError, BackendUnavailable, chunked, finish_output
from .graphs import ExportError, check_pair, read_metadata

__all__ = ["OnnxRuntimeBackend", "select_providers"]


def select_providers(device: str | torch.device, available: list[str] | None = None) -> list[str]:
    """Execution providers for ``device``: CUDA first when asked for and present, CPU always last."""
    if available is None:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    device = torch.device(device)
    providers = []
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailable(
                f"device {device} requested but this onnxruntime has no CUDAExecutionProvider "
                f"(available: {available}); install onnxruntime-gpu or use device=cpu"
            )
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


class OnnxRuntimeBackend(Backend):
    """Runs the two graphs of :func:`endo_depth_model.export.export_model` with onnxruntime.

    ``encoder_path``/``head_path``: the exported graphs (checked to belong together). ``threads``: intra-op
    threads (0 = onnxruntime's default, one per core). Inputs may be on any device; outputs are CPU
    float32 tensors. Shapes are those of the graphs: any number of frames for ``encode`` (run in
    chunks of the graph's N), exactly the head's T for ``decode``, batch 1.
    """

    name = "onnxruntime"

    def __init__(
        self,
        encoder_path: str | Path,
        head_path: str | Path,
        device: str | torch.device = "cpu",
        threads: int = 0,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
        try:
            enc_meta, head_meta = read_metadata(encoder_path), read_metadata(head_path)
            check_pair(enc_meta, head_meta)
        except ExportError as exc:
            raise BackendError(str(exc)) from exc
        config = VDAConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in enc_meta.model_config.items()}
        )
        super().__init__(config, "cpu", input_hw=enc_meta.input_hw, window=head_meta.frames)
        self.encoder_meta, self.head_meta = enc_meta, head_meta
        self.paths = (Path(encoder_path), Path(head_path))
        self.providers = select_providers(device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads > 0:
            options.intra_op_num_threads = int(threads)
        try:
            self.encoder = ort.InferenceSession(str(encoder_path), options, providers=self.providers)
            self.head = ort.InferenceSession(str(head_path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {encoder_path} / {head_path}: {exc}") from exc
        self.encoder_frames = enc_meta.frames
        self.output_device = torch.device("cpu")

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> FrameFeatures:
        frames = self._check_frames(frames)
        b, t = frames.shape[:2]
        flat = frames.detach().to("cpu", torch.float32).flatten(0, 1)
        names = list(self.encoder_meta.outputs)
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for chunk, valid in chunked(flat, self.encoder_frames):
            outs = self.encoder.run(names, {self.encoder_meta.inputs[0]: chunk.contiguous().numpy()})
            for i, out in enumerate(outs):
                parts[i].append(out[:valid])
        layers = tuple(torch.from_numpy(np.concatenate(p, axis=0)).unflatten(0, (b, t)) for p in parts)
        return FrameFeatures(layers, self.encoder_meta.patch_hw)  # type: ignore[arg-type]

    @torch.inference_mode()
    def decode(
        self,
        features: FrameFeatures,
        image_hw: tuple[int, int] | None = None,
        output_frames: slice | None = None,
    ) -> torch.Tensor:
        self._check_window(features)
        b = features.layers[0].shape[0]
        outs = []
        for i in range(b):
            feeds = {
                name: x[i].detach().to("cpu", torch.float32).contiguous().numpy()
                for name, x in zip(self.head_meta.inputs, features.layers, strict=True)
            }
            (raw,) = self.head.run(list(self.head_meta.outputs), feeds)
            outs.append(torch.from_numpy(raw))
        hw = image_hw if image_hw is not None else features.image_hw
        return finish_output(torch.stack(outs), hw, output_frames)

    def describe(self) -> str:
        return (
            super().describe() + f" [{', '.join(p.replace('ExecutionProvider', '') for p in self.providers)}]"
        )

    def close(self) -> None:
        self.encoder = self.head = None  # type: ignore[assignment]
