"""Depth that holds still where the image holds still: a per-pixel recursive filter gated by image change.

A depth network's output trembles from frame to frame even where nothing in front of the scope moves
(the real EndoNeRF clip: a few per cent of depth between consecutive frames on pixels whose grey level
changes by less than 2 of 255). A surgeon reads that as the anatomy breathing; a controller reads it as
motion. :class:`StillPixelFilter` blends each frame's depth with the filtered depth of the frame before,
with a per-pixel gain set by how much the image changed there:

* where the grey level changed by ``still`` or more (tissue pulled, an instrument, the camera moving
  over texture), the gain is 1: the new depth is taken as it is, with no lag;
* where it did not change, the gain falls to ``min_gain``: an exponential average over about
  1 / ``min_gain`` frames, which damps frame-to-frame noise while still following slow drift.

The image difference is taken on a lightly blurred grey thumbnail, so sensor noise alone does not
open the gate. Pixels without valid depth in either frame take the new depth. :meth:`reset` (start, reset,
re-anchor, scene cut, size change) starts over from the next frame. The filter needs no pose: a moving
camera changes the image wherever there is texture to see, and where there is none its depth barely
changes either.
"""

from __future__ import annotations

import numpy as np

__all__ = ["StillPixelFilter"]


class StillPixelFilter:
    """``filter(depth, rgb)`` -> filtered depth (H, W) float32, NaN where ``depth`` is NaN.

    The gain is computed on a grey thumbnail at most ``work_rows`` high (the image change is a coarse
    cue, and at 1280 x 720 this keeps the filter at a few milliseconds) and resized to the depth's size.
    """

    # defaults measured with pretrained_v10 (benchmarks/temporal_filter.py): still 4, gain 0.2 brings the real
    # EndoNeRF clip's causal flicker to 0.47 of per-frame inference with held-out TAE as good or better
    # (pretrained_v11, shipped since session 13: 0.47 too, temporal_filter_v11s13.json)
    def __init__(self, still: float = 4.0, min_gain: float = 0.2, work_rows: int = 180) -> None:
        if not still > 0:
            raise ValueError(f"still must be > 0 grey levels, got {still}")
        if not 0 < min_gain <= 1:
            raise ValueError(f"min_gain must be in (0, 1], got {min_gain}")
        self.still, self.min_gain, self.work_rows = float(still), float(min_gain), int(work_rows)
        self.reset()

    def reset(self) -> None:
        self._depth: np.ndarray | None = None
        self._grey: np.ndarray | None = None

    def _grey_of(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        if h > self.work_rows:
            rgb = cv2.resize(
                rgb, (max(1, round(w * self.work_rows / h)), self.work_rows), interpolation=cv2.INTER_AREA
            )
        return cv2.blur(np.asarray(rgb, dtype=np.float32).mean(axis=2), (3, 3))

    def __call__(self, depth: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        import cv2

        depth = np.asarray(depth, dtype=np.float32)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"image {rgb.shape[:2]} and depth {depth.shape} differ in size")
        grey = self._grey_of(rgb)
        if self._depth is None or self._depth.shape != depth.shape:
            self._depth, self._grey = depth.copy(), grey
            return depth.copy()
        gain = np.clip(np.abs(grey - self._grey) / self.still, self.min_gain, 1.0)
        if gain.shape != depth.shape:
            gain = cv2.resize(gain, depth.shape[::-1], interpolation=cv2.INTER_LINEAR)
        prev = self._depth
        # new depth where either frame has none; NaN stays NaN (the subtraction carries it)
        out = np.where(np.isfinite(prev), prev + gain * (depth - prev), depth).astype(np.float32)
        self._depth, self._grey = out, grey
        return out
