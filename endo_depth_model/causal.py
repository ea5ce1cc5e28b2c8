"""Causal streaming: depth for every frame as it arrives, with no hold-back and no warm-up.

Video Depth Anything's encoder sees each frame alone; only the head's four temporal modules mix frames,
by attention over the frame axis at every pixel. The causal engine runs the head for the newest frame
only: in each temporal attention block the newest frame's query attends to its own key and to the keys
and values of up to ``context`` earlier frames, kept in a ring buffer (their position-free key and
value projections; the position terms are added for the slots' current positions, which the bias-free
projections make exact). Per frame that is one encoder pass and one single-frame head pass: a flat
cost, no periodic window pass.

Exactness: while the buffer has not yet dropped a frame, the output for frame k equals frame k of the
full head on frames 0..k with causal attention masking (``VideoDepthAnything.decode(..., causal=True)``);
``tests/inference/test_causal.py`` checks this. Once the buffer is full, slots keep their order and
positions 0..context, i.e. the window slides; cached states are those computed when each frame was
newest, as in VDA's own streaming mode.

Scale continuity (``fit``): ``none`` publishes the head's disparity as it comes (the temporal attention
keeps its scale consistent with the cached frames); ``previous`` fits each new frame's scale and shift
by least squares to the previously published frame (field-of-view pixels, a pixel subgrid), smoothed
by ``fit_momentum``. The default was chosen by measurement (docs/BENCHMARKS.md). :meth:`reset` (a scene
cut, a size change) empties the cache: the next frame starts a new anchor, reported like the aligned
engine's re-anchors.

:class:`CausalStep` is the one computation per frame as a module with the cache as explicit inputs and
outputs (fixed shapes, the empty slots masked), which is what ``endo-depth export --causal`` writes to
ONNX and what a TensorRT engine would run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from endo_depth_model.align import AlignStats, fit_scale_shift
from endo_depth_model.fov import BorderFill
from endo_depth_model.runtime.precision import autocast, compute_dtype
from endo_depth_model.streaming import DepthResult, StreamError, check_stream_frame

__all__ = ["CausalStep", "CausalDepth", "slot_inputs", "ring_inputs", "CAUSAL_FITS"]

CAUSAL_FITS = ("none", "previous")


def slot_inputs(length: int, n_valid: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``positions`` (L + 1,) long and ``key_bias`` (L + 1,) float for a cache of ``length`` slots whose
    last ``n_valid`` hold earlier frames (oldest first); the newest frame takes position ``n_valid``."""
    n_valid = min(int(n_valid), int(length))
    first = length - n_valid
    slots = torch.arange(length + 1, device=device)
    positions = torch.clamp(slots - first, min=0)
    positions[-1] = n_valid
    key_bias = torch.zeros(length + 1, device=device)
    key_bias[:first] = float("-inf")
    return positions, key_bias


def ring_inputs(length: int, n_valid: int, slot: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``positions`` and ``key_bias`` (L + 1,) for a ring buffer of ``length`` + 1 slots whose ``slot``
    receives the newest frame and whose ``n_valid`` slots before it (cyclically) hold the earlier frames:
    the same positions as :func:`slot_inputs` gives them in order (oldest 0 .. newest ``n_valid``)."""
    n_valid = min(int(n_valid), int(length))
    back = (int(slot) - torch.arange(length + 1, device=device)) % (length + 1)  # frames back from the newest
    valid = back <= n_valid
    positions = torch.where(valid, n_valid - back, torch.zeros_like(back))
    key_bias = torch.zeros(length + 1, device=device).masked_fill(~valid, float("-inf"))
    return positions, key_bias


class CausalStep(nn.Module):
    """One causal frame: ``(frame (1, 3, H, W) normalised, positions, key_bias, *caches)`` ->
    ``(disparity (1, H, W) >= 0 at the network size, *next caches)``."""

    def __init__(self, model, head=None):
        super().__init__()
        self.model = model
        self.head = head if head is not None else model.head  # e.g. the torch backend's channels-last copy

    def cache_shapes(self, input_hw: tuple[int, int], context: int) -> list[tuple[int, int, int]]:
        return self.head.cache_shapes((input_hw[0] // 14, input_hw[1] // 14), context)

    def forward(self, frame, positions, key_bias, *caches, slot: int | None = None):
        """``slot``: eager inference with ring-buffer caches of L + 1 slots written in place (what
        :class:`CausalDepth` runs); without it the caches are explicit inputs and outputs (ONNX)."""
        h, w = frame.shape[-2:]
        tokens = self.model.pretrained.forward_intermediates(frame, self.model.config.intermediate_layers)
        out, nxt = self.head.forward_causal(
            list(tokens), (h // 14, w // 14), list(caches), positions, key_bias, slot
        )
        return (F.relu(out.float())[:, 0], *nxt)


class CausalDepth:
    """Zero-hold-back streaming engine: :meth:`push` returns exactly one :class:`DepthResult` per frame.

    ``model``: a ``VideoDepthAnything`` or a torch backend wrapping one (its autocast precision is used);
    ``preprocessor``: RGB (H, W, 3) uint8 -> (1, 3, h, w) normalised tensor; ``context``: earlier frames
    the temporal attention sees (at most the model's ``num_frames - 1``).
    """

    def __init__(
        self,
        model,
        preprocessor: Callable[[np.ndarray], torch.Tensor],
        context: int | None = None,
        output_hw: tuple[int, int] | None = None,
        depth_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        fit: str = "none",
        fit_momentum: float = 0.3,
        max_fit_pixels: int = 20000,
        device: str | torch.device = "cpu",
        precision: str | None = None,
    ) -> None:
        inner = getattr(model, "model", model)
        if not hasattr(getattr(inner, "head", None), "forward_causal"):
            raise StreamError(
                f"the causal engine needs a PyTorch VideoDepthAnything (got {type(model).__name__}); "
                "graph backends run the aligned engine"
            )
        max_context = inner.config.num_frames - 1
        self.context = max_context if context is None else int(context)
        if not 1 <= self.context <= max_context:
            raise StreamError(f"context must be in 1..{max_context}, got {self.context}")
        if fit not in CAUSAL_FITS:
            raise StreamError(f"fit must be one of {CAUSAL_FITS}, got {fit!r}")
        if not 0 < fit_momentum <= 1:
            raise StreamError(f"fit_momentum must be in (0, 1], got {fit_momentum}")
        self.device = torch.device(device)
        head = getattr(model, "head", None) if model is not inner else None
        self.step_module = CausalStep(inner.to(self.device).eval(), head)
        # a torch backend's own precision wins: its weights may be stored in it (runtime.cast_weights)
        self.precision = getattr(model, "precision", None) or precision or "fp32"
        self._autocast = lambda: autocast(self.precision, self.device)
        self.preprocessor = preprocessor
        self.output_hw = tuple(output_hw) if output_hw is not None else None
        self._fixed_output_hw = output_hw is not None
        self.depth_fn = depth_fn
        self.fit, self.fit_momentum, self.max_fit_pixels = fit, float(fit_momentum), int(max_fit_pixels)
        self.fov_mask: np.ndarray | None = None  # (H, W) bool at the output size: pixels the fit may use
        #: fill the input outside ``fov_mask`` (weights trained so: metadata ``fill_border``)
        self.fill_border = False
        self._border_fill = BorderFill()
        self.head_passes = 0
        self.encoder_calls = 0
        self.encoded_frames = 0
        self.window = self.context + 1
        self.blend = 0
        self.stride = 1
        self._index_base = 0
        self._reset_state()

    # ---- state ---------------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self._caches: list[torch.Tensor] | None = None
        self._n_received = 0
        self._input_hw: tuple[int, int] | None = None
        self._prev: np.ndarray | None = None
        self._scale, self._shift = 1.0, 0.0
        if not self._fixed_output_hw:
            self.output_hw = None

    def reset(self) -> int:
        """Forget the cached frames (a new anchor on the next frame). Nothing is held back: returns 0."""
        self._index_base += self._n_received
        self._reset_state()
        return 0

    def flush(self) -> list[DepthResult]:
        """Nothing is ever pending in the causal engine."""
        return []

    @property
    def frames_received(self) -> int:
        return self._n_received

    @property
    def frames_pending(self) -> int:
        return 0

    @property
    def next_index(self) -> int:
        return self._index_base + self._n_received

    @property
    def cached_frames(self) -> int:
        """Earlier frames the next step's attention will see (the ring holds at most ``context``)."""
        return min(self._n_received, self.context)

    # ---- frames --------------------------------------------------------------------------------------
    def _fit(self, raw: np.ndarray, first: bool) -> tuple[np.ndarray, AlignStats]:
        """``first``: the first frame since construction or reset()."""
        if self.fit == "previous" and self._prev is not None and self._prev.shape == raw.shape:
            a, b = raw, self._prev
            if self.fov_mask is not None and self.fov_mask.shape == raw.shape and self.fov_mask.any():
                a, b = a[self.fov_mask], b[self.fov_mask]
            a, b = a.ravel(), b.ravel()
            step = max(1, a.size // self.max_fit_pixels)
            s, t, ok = fit_scale_shift(a[::step], b[::step])
            if ok and s > 0 and np.isfinite(s) and np.isfinite(t):
                m = self.fit_momentum  # raw -> previous output, smoothed
                self._scale = (1 - m) * self._scale + m * s
                self._shift = (1 - m) * self._shift + m * t
        out = np.maximum(raw * np.float32(self._scale) + np.float32(self._shift), 0).astype(np.float32)
        self._prev = out if self.fit == "previous" else None
        stats = AlignStats(
            self._scale, self._shift, float("nan"), self.cached_frames, first, "first" if first else ""
        )
        return out, stats

    @torch.inference_mode()
    def push(self, frame_rgb: np.ndarray, stamp: Any = None) -> list[DepthResult]:
        """One (H, W, 3) uint8 RGB frame in, its depth out (always exactly one result)."""
        check_stream_frame(self, frame_rgb)  # the aligned engine's checks: RGB uint8, the stream's size
        x = self.preprocessor(frame_rgb)
        x = x.reshape(1, *x.shape[-3:])
        if self.fill_border:
            x = self._border_fill(x, self.fov_mask)
        x = x.to(self.device)
        if self._caches is None:
            # ring buffers of context + 1 slots, written in place (TemporalAttention.step), in the dtype
            # the key and value projections come out in (bf16 / fp16 under autocast: storing them wider
            # adds no precision and doubles the memory the attention reads; 224x280, bf16, one thread:
            # 77 -> 66 ms per frame with the copies gone and the cache in bf16, docs/BENCHMARKS.md)
            dtype = compute_dtype(self.precision)
            shapes = self.step_module.cache_shapes(tuple(x.shape[-2:]), self.context + 1)
            self._caches = [torch.zeros(s, device=self.device, dtype=dtype) for s in shapes]
        slot = self._n_received % (self.context + 1)
        positions, key_bias = ring_inputs(self.context, self.cached_frames, slot, self.device)
        with self._autocast():
            out = self.step_module(x, positions, key_bias, *self._caches, slot=slot)
        disparity = out[0]
        first, index = self._n_received == 0, self._index_base + self._n_received
        # the frame is in the ring now: count it before anything below can raise (the next frame's slot and
        # the valid slots both follow from this count)
        self._n_received += 1
        self.head_passes += 1
        self.encoder_calls += 1
        self.encoded_frames += 1
        if tuple(disparity.shape[-2:]) != tuple(self.output_hw):
            disparity = F.interpolate(
                disparity[None], size=self.output_hw, mode="bilinear", align_corners=True
            )[0]
        raw = F.relu(disparity)[0].float().cpu().numpy()
        aligned, stats = self._fit(raw, first)
        depth = self.depth_fn(aligned) if self.depth_fn is not None else None
        return [DepthResult(index, stamp, aligned, depth, stats)]
