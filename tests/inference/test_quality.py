"""Quality measures and baselines: ranked correctly on constructed cases; bad frames give NaN, never a
crash."""

from __future__ import annotations

import numpy as np

from endo_depth_model.evaluate import evaluate_sequence, summarise
from endo_depth_model.quality import (
    constant_depth,
    depth_range_ratio,
    edge_ordinal_accuracy,
    flicker,
    grey_tool_mask,
    instrument_nearer,
    light_heuristic_depth,
)


def _lit_scene(n=3, h=64, w=80):
    """Depth varying in a smooth ramp and a near box; the image is what an inverse-square tip light gives
    on a uniform albedo, so the light heuristic has its best case; the model stand-in is the truth
    blurred a little."""
    v, u = np.mgrid[0:h, 0:w]
    depth = 0.05 + 0.06 * u / w + 0.01 * np.sin(v / 9.0)
    depth = np.where((u > 30) & (u < 50) & (v > 20) & (v < 40), 0.03, depth)
    depths = np.stack([depth * (1 + 0.02 * k) for k in range(n)]).astype(np.float32)
    grey = np.clip(0.002 / depths**2, 0, 1)
    rgb = (np.repeat(grey[..., None], 3, axis=-1) * 255).astype(np.uint8)
    return depths, rgb


def _abs_rel(gt, pred):
    return summarise("m", [evaluate_sequence("s", gt, pred, "per-frame")]).metrics["abs_rel"]


def test_baselines_rank_truth_heuristic_constant():
    depths, rgb = _lit_scene()
    heuristic = np.stack([light_heuristic_depth(x) for x in rgb])
    constant = np.stack([constant_depth(x) for x in rgb])
    exact = _abs_rel(depths, depths * 3.0)
    h = _abs_rel(depths, heuristic)
    c = _abs_rel(depths, constant)
    assert exact < 1e-6
    assert h < 0.6 * c, (h, c)
    # the per-sequence protocol also scores a constant (flat ground-truth median, not an error)
    flat = summarise("m", [evaluate_sequence("s", depths, constant, "per-sequence")])
    assert np.isfinite(flat.metrics["abs_rel"]) and flat.metrics["abs_rel"] > 0.1


def test_range_ratio_and_edges():
    depths, _ = _lit_scene(1)
    gt = depths[0]
    assert abs(depth_range_ratio(gt * 2, gt) - 1.0) < 1e-6
    squashed = gt.mean() + 0.3 * (gt - gt.mean())
    assert depth_range_ratio(squashed, gt) < 0.8
    assert edge_ordinal_accuracy(gt * 5, gt) == 1.0
    assert edge_ordinal_accuracy(np.full_like(gt, 0.05), gt) == 0.0
    inverted = 1.0 / gt
    assert edge_ordinal_accuracy(inverted, gt) == 0.0
    assert np.isnan(edge_ordinal_accuracy(np.ones((10, 10)), np.ones((10, 10))))


def test_instrument_order():
    depth = np.full((40, 40), 0.08)
    inst = np.zeros((40, 40), bool)
    inst[10:30, 15:22] = True
    near = np.where(inst, 0.04, depth)
    far = np.where(inst, 0.12, depth)
    assert instrument_nearer(near, inst) is True
    assert instrument_nearer(far, inst) is False
    assert instrument_nearer(near, np.zeros_like(inst)) is None  # no instrument in view


def test_grey_tool_mask_finds_tools_not_highlights_or_pale_tissue():
    """EndoNeRF-like frame: orange tissue, a blue-grey shaft and a grey metal jaw, small white highlights,
    a pale pink patch and a black strip: only the two tools come out."""
    import pytest

    h, w = 128, 160
    rng = np.random.default_rng(0)
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = (200, 110, 70)  # tissue
    rgb[...] = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    shaft = np.zeros((h, w), bool)
    shaft[70:100, 90:160] = True
    jaw = np.zeros((h, w), bool)
    jaw[8:30, 0:50] = True
    rgb[shaft] = (150, 165, 190)  # blue-grey sleeve
    rgb[jaw] = (170, 170, 172)  # metal
    for y, x in ((40, 40), (50, 120), (100, 30)):
        rgb[y : y + 3, x : x + 3] = 255  # specular highlights
    rgb[40:70, 60:85] = (215, 170, 190)  # pale pink tissue (hue about 165 of 180)
    rgb[120:, :] = 0  # black strip
    mask = grey_tool_mask(rgb)
    assert mask[shaft].mean() > 0.85 and mask[jaw].mean() > 0.85  # the blur takes a pixel or two of the edge
    assert mask[~(shaft | jaw)].mean() < 0.01
    assert not grey_tool_mask(np.zeros((h, w, 3), np.uint8)).any()  # all black: no tool, no crash
    with pytest.raises(ValueError, match="expected an"):
        grey_tool_mask(np.zeros((h, w), np.uint8))


def test_flicker():
    _, rgb = _lit_scene(4)
    steady = np.ones((4, *rgb.shape[1:3]))
    noisy = steady * (1 + 0.1 * (np.arange(4) % 2))[:, None, None]
    assert flicker(steady, rgb) == 0.0
    assert 0.05 < flicker(noisy, rgb) < 0.2
    assert np.isnan(flicker(steady[:1], rgb[:1]))


def test_bad_frames_give_nan_not_a_crash():
    black = np.zeros((30, 40, 3), np.uint8)
    white = np.full((30, 40, 3), 255, np.uint8)
    border = np.zeros((30, 40), bool)
    for img in (black, white):
        d = light_heuristic_depth(img)
        assert np.isfinite(d).all() and d.min() > 0
        assert np.isnan(light_heuristic_depth(img, border)).all()
        assert np.isnan(depth_range_ratio(d, np.full((30, 40), np.nan)))
    assert np.isnan(constant_depth(black, border)).all()
