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


def test_unrelated_views_of_similar_colours_are_a_cut():
    """A red tube spliced onto a red abdomen: the grey histograms overlap (0.67) but the views are
    unrelated (coarse correlation below 0), so it is a cut; the frames around the splice are not."""
    from endo_depth_model.training.pretrain import render_sequence

    a = render_sequence("target", 31, 8, 48, 64)["rgb"]
    b = render_sequence("lap", 9003, 8, 48, 64)["rgb"]
    d = SceneCutDetector()
    assert [i for i, f in enumerate(list(a) + list(b)) if d.update(f)] == [8]
    assert d.last is not None and d.last.cut is False
    strict = SceneCutDetector(cut_correlation=-1.0)  # the rule off: both thresholds needed, no cut
    assert not any(strict.update(f) for f in list(a) + list(b))


def test_fine_texture_moving_a_pixel_is_not_a_cut():
    """Pixel-scale texture shifted by one pixel a frame: the fine thumbnails no longer correlate (about
    0), the coarse ones still do, so the view is the same; the same texture elsewhere is a cut."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (60, 76, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(base[i : i + 48, i : i + 64]) for i in range(10)]
    d = SceneCutDetector()
    assert not any(d.update(f) for f in frames)
    assert abs(d.last.correlation) < 0.1 and d.last.coarse_correlation > 0.4
    other = np.ascontiguousarray(np.flip(frames[-1], axis=(0, 1)))  # the same colours, another view
    assert d.update(other) and d.last.coarse_correlation < 0.0


def test_overexposed_frames_are_counted_and_bridged_like_black_ones():
    """The light against tissue saturates the image: not a cut, counted as overexposed, and the next
    usable frame is compared with the last one before it (the same view: no cut; another: a cut)."""
    rng = np.random.default_rng(1)
    scene = rng.integers(40, 220, (60, 80, 3), dtype=np.uint8)
    white = np.full_like(scene, 255)
    white[:2] = 120  # a few unsaturated rows: still overexposed
    d = SceneCutDetector()
    assert not d.update(scene)
    assert not d.update(white) and not d.update(white)
    assert d.skipped == {"dark": 0, "overexposed": 2}
    assert not d.update(scene)
    assert not d.update(np.zeros_like(scene)) and d.skipped["dark"] == 1
    assert d.update(np.ascontiguousarray(scene[::-1, ::-1]))


def test_a_uniform_view_with_sensor_noise_is_never_a_cut():
    """A white-balance card or red-out against tissue: the thumbnails' pattern is sensor noise, whose
    correlation has a random sign; flat thumbnails are no evidence of a cut."""
    rng = np.random.default_rng(2)
    d = SceneCutDetector()
    for _ in range(40):
        frame = np.clip(np.array([170, 60, 50]) + rng.normal(0, 5, (180, 320, 3)), 0, 255).astype(np.uint8)
        assert not d.update(frame)


def test_overexposure_is_judged_inside_the_scope_border():
    """A circular scope (a fifth of the image black): the saturated share is taken among lit pixels."""
    from endo_depth_model.data.laparoscopy import fov_border_mask

    stop = fov_border_mask(96, 128, "circle", 0.7)
    white = np.repeat(np.where(stop, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    assert (~stop).mean() > 0.15  # more than the 10 % an all-pixel share would allow
    d = SceneCutDetector()
    assert not d.update(white) and d.skipped["overexposed"] == 1
