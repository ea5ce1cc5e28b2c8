"""Scene-cut detection on the two real clips (no cut inside either) and on their splice (one cut)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from endo_depth_model.scene_cut import SceneCutDetector

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "real"


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real clips not found at {REAL}")
def test_no_cut_inside_real_clips_and_one_at_their_splice():
    import cv2

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from model_quality import read_clip

    a = read_clip(REAL / "endonerf_pulling/pulling_gt.mp4", 63, 320)  # tissue pulled by a tool
    b = read_clip(REAL / "laparoscopic_rvim/endo.mp4", 120, 320)  # instruments and smoke
    for frames in (a, b):
        d = SceneCutDetector()
        assert not any(d.update(f) for f in frames)
    spliced = list(a[:20]) + [cv2.resize(x, (a.shape[2], a.shape[1])) for x in b[:20]]
    d = SceneCutDetector()
    assert [i for i, f in enumerate(spliced) if d.update(f)] == [20]


def test_black_frames_are_not_cuts_and_bridge_to_the_next_visible_frame():
    rng = np.random.default_rng(0)
    scene = rng.integers(40, 220, (60, 80, 3), dtype=np.uint8)
    black = np.zeros_like(scene)
    d = SceneCutDetector()
    assert not d.update(scene)
    assert not d.update(black)  # the scope withdrawn into the trocar: not a cut by itself
    assert not d.update(scene)  # the same view again: no cut
    v, u = np.mgrid[0:60, 0:80]
    other = np.repeat((30 + 40 * np.sin(u / 9.0) ** 2)[..., None], 3, axis=2).astype(
        np.uint8
    )  # darker, smooth
    assert not d.update(black)
    assert d.update(other)  # a different view after the blackout: a cut
