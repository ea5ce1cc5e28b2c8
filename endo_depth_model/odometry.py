"""Camera odometry from predicted relative poses, and the metric scale of depth and odometry.

Self-supervised depth and pose share one unknown scale. :class:`ScaleEstimator` gives them a scale:
``relative`` (1, not metric), ``fixed`` (a calibrated factor) or ``kinematic`` (the ratio of the robot's
measured camera translation to the predicted translation over a sliding window of frame pairs).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

SCALE_MODES = ("relative", "fixed", "kinematic")


class PoseIntegrator:
    """Accumulates ``T_odom_cam`` (4, 4) from per-frame relative motion ``T_prev_cur``.

    ``T_prev_cur`` maps points of the current camera into the previous camera (the camera-to-world
    increment); its translation is in relative units and is multiplied by ``scale`` when integrated.
    """

    def __init__(self) -> None:
        self.T_odom_cam = np.eye(4)
        self.n_updates = 0

    def reset(self) -> None:
        self.T_odom_cam = np.eye(4)
        self.n_updates = 0

    def update(self, T_prev_cur: np.ndarray, scale: float = 1.0) -> np.ndarray:
        step = np.array(T_prev_cur, dtype=np.float64, copy=True)
        if step.shape != (4, 4) or not np.all(np.isfinite(step)):
            raise ValueError(f"relative pose must be a finite 4x4 matrix, got shape {step.shape}")
        step[:3, 3] *= scale
        self.T_odom_cam = self.T_odom_cam @ step
        self.n_updates += 1
        return self.T_odom_cam.copy()


@dataclass
class ScaleState:
    """What the current scale promises: ``scale`` multiplies relative depth/translation."""

    mode: str
    scale: float
    is_metric: bool
    n_pairs: int = 0


class ScaleEstimator:
    """Metric scale of relative depth and odometry.

    kinematic: push one (predicted relative translation, measured translation in metres) pair per frame
    pair; pairs whose measured motion is below ``min_motion_m`` carry no scale information and are skipped.
    The estimate is ``sum |t_measured| / sum |t_predicted|`` over the last ``window`` informative pairs,
    available after ``min_pairs`` of them (``is_metric`` is False before).
    """

    def __init__(
        self,
        mode: str = "relative",
        fixed_scale: float = 1.0,
        window: int = 30,
        min_pairs: int = 5,
        min_motion_m: float = 1e-4,
    ) -> None:
        if mode not in SCALE_MODES:
            raise ValueError(f"scale mode must be one of {SCALE_MODES}, got {mode!r}")
        if not (np.isfinite(fixed_scale) and fixed_scale > 0):
            raise ValueError(f"fixed scale must be a positive number, got {fixed_scale}")
        if window < 1 or min_pairs < 1 or min_pairs > window:
            raise ValueError(f"need 1 <= min_pairs <= window, got min_pairs={min_pairs}, window={window}")
        self.mode = mode
        self.fixed_scale = float(fixed_scale)
        self.min_pairs = min_pairs
        self.min_motion_m = min_motion_m
        self._pairs: deque[tuple[float, float]] = deque(maxlen=window)

    def reset(self) -> None:
        self._pairs.clear()

    def push(self, predicted_translation, measured_translation_m) -> bool:
        """Add one frame pair; returns True when the pair was informative and kept."""
        pred = float(np.linalg.norm(predicted_translation))
        meas = float(np.linalg.norm(measured_translation_m))
        if not (np.isfinite(pred) and np.isfinite(meas)) or meas < self.min_motion_m or pred <= 1e-12:
            return False
        self._pairs.append((pred, meas))
        return True

    def state(self) -> ScaleState:
        if self.mode == "relative":
            return ScaleState("relative", 1.0, False)
        if self.mode == "fixed":
            return ScaleState("fixed", self.fixed_scale, True)
        n = len(self._pairs)
        if n < self.min_pairs:
            return ScaleState("kinematic", 1.0, False, n)
        pred = sum(p for p, _ in self._pairs)
        meas = sum(m for _, m in self._pairs)
        return ScaleState("kinematic", meas / pred, True, n)
