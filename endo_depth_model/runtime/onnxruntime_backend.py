"""onnxruntime backend: the exported encoder and head graphs on CPU (CUDA provider where present)."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import BackendError, BackendUnavailable
from .graph_backend import GraphBackend

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


class OnnxRuntimeBackend(GraphBackend):
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
        self._read_graphs(encoder_path, head_path, "cpu")
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
        self.output_device = torch.device("cpu")

    def _run(self, graph, feeds, names):
        return graph.run(names, feeds)

    def describe(self) -> str:
        return (
            super().describe() + f" [{', '.join(p.replace('ExecutionProvider', '') for p in self.providers)}]"
        )

    def close(self) -> None:
        self.encoder = self.head = None  # type: ignore[assignment]
