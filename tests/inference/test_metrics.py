"""Metrics against hand-computed values; TAE is 0 for pose-consistent depth and grows with flicker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from endo_depth_model.metrics import (
    MetricError,
    compute_ate,
    depth_errors,
    disparity_lsq_align,
    mad_align,
    median_scale,
    median_scaled_abs_rel,
    snippet_ate,
    tae,
    valid_mask,
    warp_depth,
)


def test_depth_errors_hand_computed():
    gt = np.array([1.0, 2.0, 4.0, 3.0, 1.0])
    pred = np.array([1.2, 2.0, 2.0, 4.5, 1.8])  # ratios 1.2, 1, 2, 1.5, 1.8
    e = depth_errors(gt, pred)
    assert e["abs_rel"] == pytest.approx((0.2 + 0 + 0.5 + 0.5 + 0.8) / 5)
    assert e["sq_rel"] == pytest.approx((0.04 + 0 + 1.0 + 0.75 + 0.64) / 5)
    assert e["rmse"] == pytest.approx(math.sqrt((0.04 + 0 + 4 + 2.25 + 0.64) / 5))
    logs = [math.log(1 / 1.2), 0.0, math.log(2), math.log(1.5), math.log(1.8)]
    assert e["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 5))
    assert (e["a1"], e["a2"], e["a3"]) == pytest.approx((2 / 5, 3 / 5, 4 / 5))


def test_depth_errors_rejects_bad_input():
    with pytest.raises(MetricError, match="positive"):
        depth_errors(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    with pytest.raises(MetricError, match="no valid"):
        depth_errors(np.array([]), np.array([]))
    with pytest.raises(MetricError, match="differ"):
        depth_errors(np.ones(3), np.ones(2))


def test_median_scale_and_valid_mask():
    assert median_scale(np.array([1.0, 2.0, 4.0]), np.array([2.0, 4.0, 8.0])) == pytest.approx(0.5)
    gt = np.array([0.0, 1e-3, 0.5, 149.9, 150.0, np.nan])
    np.testing.assert_array_equal(valid_mask(gt), [False, False, True, True, False, False])


def test_median_scaled_abs_rel_ignores_scale_and_invalid_pixels():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.02, 0.2, (2, 8, 8))
    assert median_scaled_abs_rel(3.0 * gt, gt) == pytest.approx(0.0, abs=1e-12)
    pred = 5.0 * gt
    pred[0, 0, 0] = 5.0 * gt[0, 0, 0] * 2.0  # one pixel off by 2x after scaling
    gt_holes, pred_holes = gt.copy(), pred.copy()
    gt_holes[1, :2] = np.nan  # no ground truth
    pred_holes[1, 2, :3] = np.inf  # a broken prediction
    gt_holes[1, 3, 0] = -1.0
    expected = 1.0 / (128 - 16 - 3 - 1)
    assert median_scaled_abs_rel(pred_holes, gt_holes) == pytest.approx(expected)
    assert math.isnan(median_scaled_abs_rel(pred[0, :1, :5], gt[0, :1, :5]))  # fewer than 10 pixels
    with pytest.raises(MetricError, match="shapes"):
        median_scaled_abs_rel(pred[0], gt)


def test_mad_align_hand_computed():
    gt = np.array([1.0, 2.0, 3.0, 4.0, 10.0]).reshape(1, 1, 5)
    pred = np.array([0.0, 1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 5)
    aligned, params = mad_align(gt, pred, np.ones_like(gt, dtype=bool))
    # medians 3 and 2, MADs (2+1+0+1+7)/5 = 2.2 and (2+1+0+1+2)/5 = 1.2
    assert params == pytest.approx({"t_gt": 3.0, "s_gt": 2.2, "t_pred": 2.0, "s_pred": 1.2})
    np.testing.assert_allclose(aligned.ravel(), (np.arange(5.0) - 2) * (2.2 / 1.2) + 3)
    # an affine copy of gt is mapped back exactly
    aligned, _ = mad_align(gt, 0.25 * gt + 7, np.ones_like(gt, dtype=bool))
    np.testing.assert_allclose(aligned, gt)


def test_disparity_lsq_align_recovers_affine_disparity():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2.0, 20.0, size=(3, 4, 5))
    disp = (1.0 / gt - 0.01) / 0.5  # so that 0.5 * disp + 0.01 = 1 / gt
    aligned, s, t = disparity_lsq_align(gt, disp, np.ones(gt.shape, bool))
    assert (s, t) == pytest.approx((0.5, 0.01))
    np.testing.assert_allclose(aligned, gt, rtol=1e-9)


def _plane_depths(poses, K, h, w, normal, offset):
    """Ray-cast the world plane ``normal . X = offset`` from camera-to-world ``poses``: (N, H, W) z-depth."""
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(h * w)])  # z = 1
    out = []
    for T in poses:
        world_rays = T[:3, :3] @ rays
        t = (offset - normal @ T[:3, 3]) / (normal @ world_rays)
        out.append(t.reshape(h, w))
    return np.stack(out)


def _pose(rz=0.0, t=(0, 0, 0), rx=0.0):
    cz, sz, cx, sx = math.cos(rz), math.sin(rz), math.cos(rx), math.sin(rx)
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Rx
    T[:3, 3] = t
    return T


K = np.array([[40.0, 0, 23.5], [0, 40.0, 17.5], [0, 0, 1]])


def test_tae_is_zero_for_pose_consistent_fronto_parallel_plane():
    poses = np.stack([_pose(0.05 * i, (0.3 * i, -0.2 * i, 0.5 * i)) for i in range(5)])
    depths = _plane_depths(poses, K, 36, 48, np.array([0.0, 0.0, 1.0]), 10.0)
    assert np.allclose(depths[0], 10.0) and np.allclose(depths[4], 8.0)
    assert tae(depths, poses, K) == pytest.approx(0.0, abs=1e-10)


def test_tae_grows_with_injected_flicker_and_matches_closed_form():
    poses = np.stack([_pose(0.0, (0.1 * i, 0.0, 0.4 * i)) for i in range(6)])
    depths = _plane_depths(poses, K, 36, 48, np.array([0.0, 0.0, 1.0]), 10.0)
    base = depths[:, 0, 0].copy()  # D_i = 10 - 0.4 i
    values = []
    for amp in (0.0, 0.01, 0.05, 0.1):
        f = 1.0 + amp * (-1.0) ** np.arange(6)
        value = tae(depths * f[:, None, None], poses, K)
        # fronto-parallel plane: a point of frame a lands in frame b at f_a D_a - D_a + D_b
        pairs = []
        for a in range(5):
            b = a + 1
            fwd = abs(f[b] * base[b] - (f[a] * base[a] - base[a] + base[b])) / (f[b] * base[b])
            bwd = abs(f[a] * base[a] - (f[b] * base[b] - base[b] + base[a])) / (f[a] * base[a])
            pairs.append(0.5 * (fwd + bwd))
        assert value == pytest.approx(100 * np.mean(pairs), rel=1e-9, abs=1e-9)
        values.append(value)
    assert values[0] == pytest.approx(0.0, abs=1e-10)
    assert values[0] < values[1] < values[2] < values[3]
    assert values[3] > 10.0  # ±10 % flicker is a ~20 % frame-to-frame jump


def test_tae_small_for_consistent_tilted_plane_with_rotation():
    """General motion: only pixel rounding separates the warped depth from the target."""
    poses = np.stack([_pose(0.02 * i, (0.05 * i, 0.02 * i, 0.1 * i), rx=0.01 * i) for i in range(4)])
    normal = np.array([0.2, -0.1, 1.0])
    depths = _plane_depths(poses, K, 60, 80, normal / np.linalg.norm(normal), 8.0)
    consistent = tae(depths, poses, K)
    assert 0.0 <= consistent < 0.5
    flicker = tae(depths * np.array([1.0, 1.05, 1.0, 1.05])[:, None, None], poses, K)
    assert flicker > 4.0 > 8 * consistent


def test_warp_depth_identity_and_masking():
    depth = np.random.default_rng(1).uniform(1, 2, size=(10, 12))
    mask = np.ones_like(depth, bool)
    mask[:, :3] = False
    out = warp_depth(depth, mask, np.eye(4), K)
    np.testing.assert_allclose(out[:, 3:], depth[:, 3:])
    assert (out[:, :3] == 0).all()


def test_tae_input_validation():
    with pytest.raises(MetricError, match="N>=2"):
        tae(np.ones((1, 4, 4)), np.eye(4)[None], K)
    with pytest.raises(MetricError, match="poses"):
        tae(np.ones((2, 4, 4)), np.eye(4)[None], K)


def test_compute_ate_hand_computed():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    pred = np.array([[5.0, 5, 5], [6, 5, 5], [6, 5, 5]])  # offset removes (5, 5, 5); scale = 3/2
    assert compute_ate(gt, pred) == pytest.approx(math.sqrt(0.5) / 3)
    assert compute_ate(gt, 0.1 * gt) == pytest.approx(0.0, abs=1e-12)


def test_snippet_ate_scale_invariant_and_sensitive_to_noise():
    rng = np.random.default_rng(2)
    poses = np.stack([_pose(0.03 * i, (0.2 * i, 0.05 * i * i, 0.1 * i)) for i in range(12)])
    scaled = poses.copy()
    scaled[:, :3, 3] *= 0.01  # a pose network's arbitrary scale
    mean, std = snippet_ate(poses, scaled)
    assert mean == pytest.approx(0.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    noisy = scaled.copy()
    noisy[:, :3, 3] += rng.normal(0, 0.001, size=(12, 3))
    assert snippet_ate(poses, noisy)[0] > 1e-3
    with pytest.raises(MetricError, match="at least 5"):
        snippet_ate(poses[:3], scaled[:3])
