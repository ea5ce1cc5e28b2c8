"""Image-level scene cuts: the scope withdrawn or switched, a camera changed, a bag spliced.

Temporal depth alignment and odometry chain each frame to the previous ones; across a cut that chain
is meaningless and must restart. :class:`SceneCutDetector` compares each frame with the previous one
on a small grey thumbnail (48 x 64 by default): the Pearson correlation of the two thumbnails after
removing their means, and the intersection of their 32-bin grey histograms. Ordinary endoscope motion,
tissue deformation, instruments and smoke keep both high; a different view drops both. A cut is
declared when the correlation is below ``min_correlation`` and the histogram overlap below
``min_histogram_overlap``. A frame with nothing visible (the scope's border only, all black) is not a
cut by itself (the field-of-view logic handles it); the first visible frame after it is compared with
the last visible frame before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SceneCutDetector", "CutScore"]


@dataclass(frozen=True)
class CutScore:
    correlation: float
    histogram_overlap: float
    cut: bool


class SceneCutDetector:
    def __init__(
        self,
        min_correlation: float = 0.3,
        min_histogram_overlap: float = 0.55,
        thumb_hw: tuple[int, int] = (48, 64),
        min_brightness: float = 8.0,
    ):
        self.min_correlation = float(min_correlation)
        self.min_histogram_overlap = float(min_histogram_overlap)
        self.thumb_hw = thumb_hw
        self.min_brightness = float(min_brightness)
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self.last: CutScore | None = None

    def reset(self) -> None:
        self._prev, self.last = None, None

    def _describe(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        import cv2

        grey = cv2.resize(np.asarray(rgb), self.thumb_hw[::-1], interpolation=cv2.INTER_AREA)
        grey = grey.astype(np.float32).mean(axis=2)
        if grey.mean() < self.min_brightness:
            return None
        hist = np.histogram(grey, bins=32, range=(0, 256))[0].astype(np.float64)
        return grey - grey.mean(), hist / max(hist.sum(), 1.0)

    def update(self, rgb: np.ndarray) -> bool:
        """Feed one (H, W, 3) frame; True when it starts a new scene (never for the first frame)."""
        desc = self._describe(rgb)
        if desc is None:  # nothing visible: keep the last visible frame as the reference
            return False
        prev, self._prev = self._prev, desc
        if prev is None:
            return False
        a, b = prev[0].ravel(), desc[0].ravel()
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        corr = float(a @ b / denom) if denom > 1e-6 else 1.0
        overlap = float(np.minimum(prev[1], desc[1]).sum())
        cut = corr < self.min_correlation and overlap < self.min_histogram_overlap
        self.last = CutScore(corr, overlap, cut)
        return cut
