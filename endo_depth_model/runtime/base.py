"""The one inference-backend interface used by ``endo-depth infer``, the ROS node and ``endo-depth bench``.

A backend is a :class:`~endo_depth_model.streaming.DepthModel`: ``encode`` turns frames into per-frame
:class:`~endo_depth_model.models.FrameFeatures` (sliceable and concatenable along T, so the streaming
engine caches them), ``decode`` turns one window of features into disparity. The torch backend wraps
the ``nn.Module``; the graph backends (onnxruntime, TensorRT) run the two exported graphs of
:mod:`endo_depth_model.export` with fixed shapes and return CPU tensors. Pre-processing (resize,
normalisation) and alignment stay outside the backend, as in Isaac ROS's dnn_inference split.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: importing the package (and graphs.py) stays light
    import torch

    from endo_depth_model.models import FrameFeatures, VDAConfig

__all__ = ["Backend", "BackendError", "BackendUnavailable", "EngineError", "finish_output", "chunked"]


class BackendError(RuntimeError):
    """A backend was given input it cannot run (wrong shape, wrong graph) or failed while running."""


class BackendUnavailable(BackendError):
    """The backend cannot run here (library missing, no GPU); ``auto`` moves on to the next one."""


class EngineError(BackendError):
    """A TensorRT engine (or the ONNX graph it comes from) is missing, stale or does not fit the model."""


def finish_output(
    raw: torch.Tensor, image_hw: tuple[int, int] | None, output_frames: slice | None = None
) -> torch.Tensor:
    """Head output (B, T, h, w) at network size -> (B, T, H, W) at ``image_hw``, clamped at 0.

    The same bilinear (``align_corners=True``) resize and ReLU as ``VideoDepthAnything.decode``.
    ``output_frames`` keeps only those frames (graph backends compute every frame of their fixed shape).
    """
    import torch.nn.functional as F

    if output_frames is not None:
        raw = raw[:, output_frames]
    if image_hw is not None and tuple(raw.shape[-2:]) != tuple(image_hw):
        b, t = raw.shape[:2]
        raw = F.interpolate(
            raw.flatten(0, 1)[:, None].float(), size=tuple(image_hw), mode="bilinear", align_corners=True
        )[:, 0].unflatten(0, (b, t))
    return F.relu(raw)


def chunked(frames: torch.Tensor, size: int) -> list[tuple[torch.Tensor, int]]:
    """Split (N, ...) into chunks of exactly ``size`` rows (the last padded by repeating its final row).

    Returns ``(chunk, valid_rows)`` pairs; fixed-shape graphs take any number of frames this way.
    """
    import torch

    out = []
    for start in range(0, frames.shape[0], size):
        part = frames[start : start + size]
        valid = part.shape[0]
        if valid < size:
            part = torch.cat([part, part[-1:].expand(size - valid, *part.shape[1:])], dim=0)
        out.append((part, valid))
    return out


class Backend(ABC):
    """Runs Video Depth Anything's encoder per frame and its temporal head per window.

    Attributes: ``name`` (registry name), ``config`` (the model's :class:`VDAConfig`; the streaming
    engine reads ``config.num_frames``), ``device`` (where outputs live), ``input_hw`` (fixed network
    input size or None for any multiple of 14), ``window`` (fixed head window T or None for any
    T <= num_frames), ``fallbacks`` (``(backend, reason)`` pairs that ``auto`` skipped before this one).
    """

    name: str = "?"

    def __init__(
        self,
        config: VDAConfig,
        device: str | torch.device = "cpu",
        input_hw: tuple[int, int] | None = None,
        window: int | None = None,
    ) -> None:
        import torch

        self.config = config
        self.device = torch.device(device)
        self.input_hw = tuple(input_hw) if input_hw is not None else None
        self.window = int(window) if window is not None else None
        self.fallbacks: list[tuple[str, str]] = []

    @property
    def metric(self) -> bool:
        return bool(self.config.metric)

    # ---- the DepthModel protocol ----------------------------------------------------------------------
    @abstractmethod
    def encode(self, frames: torch.Tensor) -> FrameFeatures:
        """``frames`` (B, T, 3, H, W) float32 ImageNet-normalised -> features of every frame."""

    @abstractmethod
    def decode(
        self,
        features: FrameFeatures,
        image_hw: tuple[int, int] | None = None,
        output_frames: slice | None = None,
    ) -> torch.Tensor:
        """Features of one window (B, T frames) -> (B, T, H, W) float32 >= 0 at ``image_hw``
        (default the network input size): relative disparity, or metric depth for metric models.
        ``output_frames`` (a slice along T) returns only those frames; the torch backend then skips the
        per-frame work of the others, graph backends (fixed shapes) compute all and slice."""

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """Full forward: (B, T, 3, H, W) -> (B, T, H, W), i.e. ``decode(encode(frames))``."""
        return self.decode(self.encode(frames), image_hw=tuple(frames.shape[-2:]))

    # ---- shared checks --------------------------------------------------------------------------------
    def _check_frames(self, frames: Any) -> torch.Tensor:
        import torch

        if not isinstance(frames, torch.Tensor) or frames.dim() != 5 or frames.shape[2] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise BackendError(f"{self.name}: expected frames (B, T, 3, H, W), got {shape}")
        hw = tuple(frames.shape[-2:])
        if self.input_hw is not None and hw != self.input_hw:
            raise BackendError(
                f"{self.name}: frames are {hw[0]}x{hw[1]} but this backend was built for "
                f"{self.input_hw[0]}x{self.input_hw[1]}; export graphs for that size"
            )
        if hw[0] % 14 or hw[1] % 14:
            raise BackendError(f"{self.name}: frame size {hw[0]}x{hw[1]} is not a multiple of 14")
        return frames

    def _check_window(self, features: FrameFeatures) -> None:
        t = features.num_frames
        if self.window is not None and t != self.window:
            raise BackendError(
                f"{self.name}: the head was built for windows of {self.window} frames, got {t}; "
                f"use window={self.window} or export a head for T={t}"
            )
        if t > self.config.num_frames:
            raise BackendError(
                f"{self.name}: window of {t} frames exceeds num_frames={self.config.num_frames}"
            )
        if self.input_hw is not None and features.image_hw != self.input_hw:
            raise BackendError(
                f"{self.name}: features of a {features.image_hw} input, backend is {self.input_hw}"
            )

    def describe(self) -> str:
        """One line: backend, model, device, shapes."""
        shape = f"{self.input_hw[0]}x{self.input_hw[1]}" if self.input_hw else "any size"
        window = f"T={self.window}" if self.window else f"T<={self.config.num_frames}"
        return f"{self.name} ({self.config.encoder}, {self.device}, {shape}, {window})"

    def close(self) -> None:  # noqa: B027 - optional hook; backends without resources keep it
        """Release sessions, engines and device buffers (the backend is unusable afterwards)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
