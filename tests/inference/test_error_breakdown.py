"""benchmarks/error_breakdown.py on a constructed sequence: an exact prediction has no error at the
conversion's own shift; a prediction blurred across a depth jump puts its error in the boundary band."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from error_breakdown import SHIFTS, breakdown  # noqa: E402


def _scene(t=3, h=48, w=64):
    depth = np.full((t, h, w), 0.08)
    depth[:, 16:32, 20:44] = 0.03  # a near box: a 2.7x depth jump around it
    inst = np.zeros((t, h, w), bool)
    inst[:, 16:32, 20:44] = True
    return {"depth": depth, "instruments": inst}


def test_exact_prediction_has_no_error_and_blur_sits_at_the_boundary():
    import cv2

    data, c = _scene(), 0.0033
    fov = np.ones(data["depth"].shape[1:], bool)
    # disparity whose depth 1 / (c + d) is the truth up to scale
    disp = 0.01 / data["depth"] - c
    exact = breakdown(disp, data, fov, c)
    assert exact["frames"] == 3 and exact["abs_rel"] < 1e-9
    assert exact["shift"][SHIFTS.index(c)] < 1e-9 and exact["shift"][-1] > 1e-3  # another shift is wrong
    blurred = np.stack([cv2.GaussianBlur(d, (0, 0), 2.0) for d in disp])
    acc = breakdown(blurred, data, fov, c)
    assert acc["abs_rel"] > 0.01
    # sums over the frames; the 8 px band
    share, part, rest = (acc[k][-1] / acc["frames"] for k in ("band_share", "band_part", "band_rest"))
    abs_rel = acc["abs_rel"] / acc["frames"]
    assert part > 0.9 * abs_rel and rest < 0.1 * abs_rel and 0 < share < 1
    assert np.mean(acc["inst"]) > np.mean(acc["tissue"])  # the small near box suffers most
    assert len(exact["inst_log"]) == 3 and max(abs(x) for x in exact["inst_log"]) < 1e-9
    assert len(acc["inst_log"]) == 3 and np.mean(acc["inst_log"]) > 0.05  # blurred: the near box too far
