"""Depth alignment across overlapping snippets: the one aligner shared by offline and online inference.

Video Depth Anything predicts affine-invariant disparity per snippet (window of ``T`` frames), so two
snippets differ by a scale and a shift. EndoDAV chains them: the new snippet's predictions on the frames
it shares with the already-aligned history are fitted to that history by closed-form least squares
(``aligned = scale * raw + shift``, in disparity), the last ``blend`` shared frames are cross-faded
linearly (weights ``0, 1/(blend-1), ..., 1`` on the new fit), and the fit is applied to the new frames.

:class:`SnippetAligner` holds that state. Each :meth:`SnippetAligner.push` receives one snippet's raw
disparity laid out as ``[shared frames | new frames]`` and returns the frames that became final; the
last ``blend`` frames stay pending until the next snippet blends them (or :meth:`flush` releases them).
With EndoDAV's constants (8 shared frames, 8 blended, 22 new) this is exactly its offline alignment.

A fit whose relative residual is too large, whose scale is outside a plausible range or whose system is
degenerate (a scene cut, an occluded or blank view) is not propagated: the aligner re-anchors, i.e. it
matches the new snippet's median to the history's median (scale only), does not blend across the cut and
reports ``reanchored=True`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AlignError", "AlignStats", "AlignOutput", "SnippetAligner", "fit_scale_shift", "blend_weights"]


class AlignError(ValueError):
    """A snippet does not fit the aligner's configuration (wrong shape, too few frames)."""


@dataclass(frozen=True)
class AlignStats:
    """How one snippet was aligned.

    ``scale``/``shift`` map the snippet's raw disparity to the aligned disparity (``scale * raw + shift``).
    ``residual`` is the fit's RMS error on the shared frames divided by the standard deviation of the
    target disparity, i.e. ``sqrt(1 - R^2)``: 0 for a perfect fit, about 1 when the new snippet explains
    none of the history's structure (NaN when there was nothing to fit). ``n_overlap`` counts the shared
    frames used. ``reanchored`` is true when the chain restarted (first snippet, reset or failed fit);
    ``reason`` says why: ``""``, ``"first"``, ``"residual"``, ``"scale"`` or ``"degenerate"``.
    """

    scale: float
    shift: float
    residual: float
    n_overlap: int
    reanchored: bool
    reason: str = ""


@dataclass(frozen=True)
class AlignOutput:
    """Frames finalised by one :meth:`SnippetAligner.push`: ``disparity`` (K, H, W) float32, oldest first."""

    disparity: np.ndarray
    stats: AlignStats


def fit_scale_shift(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, float, bool]:
    """Closed-form least squares ``min_{s,t} sum mask * (s * pred + t - target)^2``.

    ``pred``, ``target`` and ``mask`` have the same shape (any). Sums are taken in float64.
    Returns ``(scale, shift, ok)``; ``ok`` is false when the system is singular (constant ``pred`` or
    no valid samples), in which case ``(1, 0)`` is returned.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    g = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != g.shape:
        raise AlignError(f"prediction and target sizes differ: {p.size} vs {g.size}")
    if mask is not None:
        m = np.asarray(mask, dtype=bool).ravel()
        p, g = p[m], g[m]
    n = float(p.size)
    if n < 2:
        return 1.0, 0.0, False
    s_pp, s_p = float(p @ p), float(p.sum())
    s_pg, s_g = float(p @ g), float(g.sum())
    det = s_pp * n - s_p * s_p
    if not np.isfinite(det) or det <= 1e-12 * max(s_pp * n, 1e-300):
        return 1.0, 0.0, False
    scale = (n * s_pg - s_p * s_g) / det
    shift = (s_pp * s_g - s_p * s_pg) / det
    return float(scale), float(shift), True


def blend_weights(n: int) -> np.ndarray:
    """Weights of the new fit over ``n`` blended frames: ``linspace(0, 1, n)`` (old frame gets ``1 - w``)."""
    if n < 2:
        raise AlignError(f"a linear blend needs at least 2 frames, got {n} (use 0 to disable blending)")
    return np.linspace(0.0, 1.0, n)


class SnippetAligner:
    """Stateful least-squares scale/shift aligner with a linear cross-fade over the shared frames.

    Args:
        overlap: number of already-aligned frames at the start of every snippet after the first
            (EndoDAV: 8). The aligner keeps that many aligned frames as history.
        blend: frames cross-faded between the old alignment and the new fit, the last ``blend`` shared
            frames (EndoDAV: 8); 0 disables blending. ``blend <= overlap``. The last ``blend`` frames of
            each snippet stay pending until the next snippet (latency of ``blend`` frames).
        max_residual: re-anchor when the fit's residual (``sqrt(1 - R^2)``, see :class:`AlignStats`)
            exceeds this (None: never). 0.5 means the fit explains less than 75 % of the variance.
        scale_range: re-anchor when the fitted scale is outside ``[lo, hi]`` (None: never).
        clamp_min: aligned disparity below this is set to it (EndoDAV clamps at 0; None: no clamp).
        fit: False turns alignment off (ablation, per-frame inference; overlap may then be 0): every
            snippet keeps its raw values (scale 1, shift 0) and nothing is blended; frames are released
            on the same schedule.
        max_fit_pixels: fit on a regular pixel subgrid when the shared frames hold more values than
            this (large images, small strides); None fits every pixel as EndoDAV does.
    """

    def __init__(
        self,
        overlap: int = 8,
        blend: int = 8,
        max_residual: float | None = 0.5,
        scale_range: tuple[float, float] | None = (0.05, 20.0),
        clamp_min: float | None = 0.0,
        fit: bool = True,
        max_fit_pixels: int | None = None,
    ) -> None:
        if overlap < (1 if fit else 0):
            raise AlignError(f"overlap must be >= 1 shared frame, got {overlap}")
        if blend < 0 or blend == 1 or blend > overlap:
            raise AlignError(f"blend must be 0 or in [2, overlap={overlap}], got {blend}")
        if scale_range is not None and not (0 < scale_range[0] < scale_range[1]):
            raise AlignError(f"scale_range must be 0 < lo < hi, got {scale_range}")
        self.overlap = int(overlap)
        self.blend = int(blend)
        self.max_residual = max_residual
        self.scale_range = scale_range
        self.clamp_min = clamp_min
        self.fit = bool(fit)
        if max_fit_pixels is not None and max_fit_pixels < 2:
            raise AlignError(f"max_fit_pixels must be >= 2 or None, got {max_fit_pixels}")
        self.max_fit_pixels = max_fit_pixels
        #: (H, W) bool pixels the fits may use (the scope's field of view); None: every pixel
        self.fit_mask: np.ndarray | None = None
        self._history: np.ndarray | None = None  # (overlap, H, W) float32, aligned, newest last
        self._pending: np.ndarray | None = None  # (blend, H, W) float32, aligned but not yet final

    # ---- state ----------------------------------------------------------------------------------
    @property
    def anchored(self) -> bool:
        """True once a snippet has been pushed since construction or the last :meth:`reset`."""
        return self._history is not None

    @property
    def n_pending(self) -> int:
        """Frames aligned but not yet released (they wait for the next snippet's blend)."""
        return 0 if self._pending is None else len(self._pending)

    def reset(self) -> int:
        """Forget the history (re-anchor on the next snippet). Returns the number of pending frames dropped;
        call :meth:`flush` first to keep them."""
        dropped = self.n_pending
        self._history = None
        self._pending = None
        return dropped

    def flush(self) -> np.ndarray:
        """Release the pending frames as they are (no later snippet will blend them): (blend, H, W)."""
        out = self._pending
        self._pending = None
        if out is None:
            return np.zeros((0, 0, 0), dtype=np.float32)
        return out

    # ---- alignment ------------------------------------------------------------------------------
    def _fit_view(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (N, H, W), or a regular subgrid of it with at most ``max_fit_pixels`` values."""
        if self.max_fit_pixels is None or frames.size <= self.max_fit_pixels:
            return frames
        step = int(np.ceil(np.sqrt(frames.size / self.max_fit_pixels)))
        return frames[:, step // 2 :: step, step // 2 :: step]

    def _apply(self, raw: np.ndarray, scale: float, shift: float) -> np.ndarray:
        """``scale * raw + shift`` in float32, clamped below at ``clamp_min``."""
        out = raw.astype(np.float32) * np.float32(scale) + np.float32(shift)
        if self.clamp_min is not None:
            np.maximum(out, np.float32(self.clamp_min), out=out)
        return out

    def push(self, raw_disparity: np.ndarray) -> AlignOutput:
        """Align one snippet.

        ``raw_disparity`` (N, H, W) float: for the first snippet (or after :meth:`reset`) all N frames are
        new and are taken as they are (the anchor); afterwards the first ``overlap`` frames are the shared
        frames (the same frames as the last ``overlap`` of the history) and the remaining ``N - overlap >=
        1`` are new. Returns the frames that became final, oldest first, and the fit's statistics.
        """
        raw = np.asarray(raw_disparity)
        if raw.ndim != 3:
            raise AlignError(f"expected raw disparity of shape (N, H, W), got {raw.shape}")
        if self._history is None:
            return self._push_first(raw)
        if raw.shape[1:] != self._history.shape[1:]:
            raise AlignError(
                f"snippet frames are {raw.shape[1:]}, history frames are {self._history.shape[1:]}"
            )
        if raw.shape[0] <= self.overlap:
            raise AlignError(
                f"snippet has {raw.shape[0]} frames; it needs the {self.overlap} shared frames"
                " and at least one new one"
            )
        shared_raw, new_raw = raw[: self.overlap], raw[self.overlap :]
        pending = self._pending if self._pending is not None else np.zeros((0, *raw.shape[1:]), np.float32)
        if not self.fit:
            stats = AlignStats(1.0, 0.0, float("nan"), self.overlap, False, "")
            return self._release(np.concatenate([pending, new_raw.astype(np.float32)], axis=0), stats)
        fit_raw, target = self._fit_view(shared_raw), self._fit_view(self._history)
        if self.fit_mask is not None and self.fit_mask.shape == raw.shape[1:] and self.fit_mask.any():
            keep = self._fit_view(np.broadcast_to(self.fit_mask, shared_raw.shape))
            fit_raw, target = fit_raw[keep], target[keep]
        scale, shift, ok = fit_scale_shift(fit_raw, target)
        residual = self._residual(fit_raw, target, scale, shift) if ok else float("nan")
        reason = ""
        if not ok:
            reason = "degenerate"
        elif not np.isfinite(residual) or (self.max_residual is not None and residual > self.max_residual):
            reason = "residual"
        elif self.scale_range is not None and not (self.scale_range[0] <= scale <= self.scale_range[1]):
            reason = "scale"
        if reason:
            scale, shift = self._reanchor_fit(fit_raw, target)
        shared_fit = self._apply(shared_raw, scale, shift)
        new_fit = self._apply(new_raw, scale, shift)

        # the pending frames are the last `blend` shared frames: cross-fade them (not across a cut)
        if len(pending) and not reason:
            w = blend_weights(len(pending))[:, None, None]
            post = shared_fit[self.overlap - len(pending) :]
            pending = (pending * (1.0 - w) + post * w).astype(np.float32)
        stats = AlignStats(scale, shift, residual, self.overlap, bool(reason), reason)
        return self._release(np.concatenate([pending, new_fit], axis=0), stats)

    def _push_first(self, raw: np.ndarray) -> AlignOutput:
        if raw.shape[0] < max(self.overlap, self.blend + 1):
            raise AlignError(
                f"the first snippet needs at least {max(self.overlap, self.blend + 1)} frames,"
                f" got {raw.shape[0]}"
            )
        self._history = np.zeros((0, *raw.shape[1:]), dtype=np.float32)
        stats = AlignStats(1.0, 0.0, float("nan"), 0, True, "first")
        return self._release(raw.astype(np.float32, copy=True), stats)

    def _release(self, frames: np.ndarray, stats: AlignStats) -> AlignOutput:
        """Keep the newest ``blend`` of ``frames`` pending, return the rest; update the history.

        ``frames`` starts with the (possibly blended) previously pending frames, which replace their
        entries at the end of the history.
        """
        kept = self._history[: len(self._history) - self.n_pending]
        history = np.concatenate([kept, frames], axis=0)
        self._history = np.ascontiguousarray(history[len(history) - self.overlap :])
        n_final = len(frames) - self.blend
        self._pending = frames[n_final:].copy() if self.blend else None
        return AlignOutput(np.ascontiguousarray(frames[:n_final]), stats)

    @staticmethod
    def _residual(pred: np.ndarray, target: np.ndarray, scale: float, shift: float) -> float:
        tgt = target.astype(np.float64)
        err = pred.astype(np.float64) * scale + shift - tgt
        spread = max(float(np.std(tgt)), 1e-6 * float(np.mean(np.abs(tgt))), 1e-12)
        return float(np.sqrt(np.mean(err * err)) / spread)

    def _reanchor_fit(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
        """Scale-only fit by medians (robust to the scene change); identity when that is not finite."""
        med_p = float(np.median(pred))
        med_g = float(np.median(target))
        if med_p > 0 and med_g > 0 and np.isfinite(med_p) and np.isfinite(med_g):
            return med_g / med_p, 0.0
        return 1.0, 0.0
