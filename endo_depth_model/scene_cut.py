"""Image-level scene cuts: the scope withdrawn or switched, a camera changed, a bag spliced.

Temporal depth alignment and odometry chain each frame to the previous ones; across a cut that chain
is meaningless and must restart. :class:`SceneCutDetector` compares each frame with the previous one
on a small grey thumbnail (48 x 64 by default): the Pearson correlation of the two thumbnails after
removing their means, and the intersection of their 32-bin grey histograms. Ordinary endoscope motion,
tissue deformation, instruments and smoke keep both high; a different view drops both. A cut is
declared when the correlation is below ``min_correlation`` and the histogram overlap below
``min_histogram_overlap``, or when the correlation of coarser thumbnails (a quarter of the size, so a
pixel or two of motion of fine texture keeps it high) is below ``cut_correlation``: two unrelated views
of similar colours, e.g. a red lumen spliced onto a red abdomen. Consecutive frames of the two real
clips and of five held-out simulator sequences stay above 0.77 on both measures; the spliced bag of
the tests falls to -0.6.

A frame with nothing to compare is not a cut by itself, and the next usable frame is compared with
the last usable one before it: *dark* (the scope's border only, all black; the field-of-view logic
handles it) or *overexposed* (the light against tissue: nearly all of it saturated). Both are counted
in :attr:`SceneCutDetector.skipped`.
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
    coarse_correlation: float = 1.0


class SceneCutDetector:
    def __init__(
        self,
        min_correlation: float = 0.3,
        min_histogram_overlap: float = 0.55,
        thumb_hw: tuple[int, int] = (48, 64),
        min_brightness: float = 8.0,
        cut_correlation: float = 0.0,
        max_saturated: float = 0.9,
    ):
        self.min_correlation = float(min_correlation)
        self.cut_correlation = float(cut_correlation)
        self.min_histogram_overlap = float(min_histogram_overlap)
        self.thumb_hw = thumb_hw
        self.min_brightness = float(min_brightness)
        self.max_saturated = float(max_saturated)
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.last: CutScore | None = None
        #: frames not compared, by reason: ``dark`` (nothing visible) or ``overexposed``
        self.skipped = {"dark": 0, "overexposed": 0}

    def reset(self) -> None:
        self._prev, self.last = None, None

    def _describe(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
        import cv2

        image = np.asarray(rgb)
        grey = cv2.resize(image, self.thumb_hw[::-1], interpolation=cv2.INTER_AREA)
        grey = grey.astype(np.float32).mean(axis=2)
        if grey.mean() < self.min_brightness:
            return "dark"
        # saturation on a sparse grid of raw pixels (the whole 1280x720 image would cost 24 ms a frame),
        # among lit ones: the scope's black border is neither exposed nor overexposed
        step = max(1, image.shape[0] // 96)
        peak = image[::step, ::step].max(axis=2)
        lit = peak > 20
        if lit.any() and (peak[lit] >= 250).mean() > self.max_saturated:
            return "overexposed"
        hist = np.histogram(grey, bins=32, range=(0, 256))[0].astype(np.float64)
        h, w = self.thumb_hw
        coarse = cv2.resize(grey, (max(w // 4, 2), max(h // 4, 2)), interpolation=cv2.INTER_AREA)
        return grey - grey.mean(), hist / max(hist.sum(), 1.0), coarse - coarse.mean()

    @staticmethod
    def _correlation(a: np.ndarray, b: np.ndarray, min_std: float = 2.0) -> float:
        """Pearson correlation of two mean-free thumbnails; 1 (no evidence of a change) when either is
        flat (standard deviation below ``min_std`` grey levels: a uniform view, whose pattern is sensor
        noise with a correlation of random sign)."""
        a, b = a.ravel(), b.ravel()
        if a.std() < min_std or b.std() < min_std:
            return 1.0
        return float(a @ b / float(np.linalg.norm(a) * np.linalg.norm(b)))

    def update(self, rgb: np.ndarray) -> bool:
        """Feed one (H, W, 3) frame; True when it starts a new scene (never for the first frame)."""
        desc = self._describe(rgb)
        if isinstance(desc, str):  # nothing to compare: keep the last usable frame as the reference
            self.skipped[desc] += 1
            return False
        prev, self._prev = self._prev, desc
        if prev is None:
            return False
        corr = self._correlation(prev[0], desc[0])
        coarse = self._correlation(prev[2], desc[2])
        overlap = float(np.minimum(prev[1], desc[1]).sum())
        both_low = corr < self.min_correlation and overlap < self.min_histogram_overlap
        cut = both_low or coarse < self.cut_correlation
        self.last = CutScore(corr, overlap, cut, coarse)
        return cut
