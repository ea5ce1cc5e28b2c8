"""Odometry integration and the metric scale modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endo_depth_model import geometry
from endo_depth_model.odometry import PoseIntegrator, ScaleEstimator


def _step(rng) -> np.ndarray:
    aa, t = torch.tensor(rng.normal(size=(1, 3)) * 0.05), torch.tensor(rng.normal(size=(1, 3)) * 0.01)
    return geometry.pose_vec_to_mat(aa, t)[0].numpy()


def test_integrated_odometry_reproduces_the_trajectory_at_scale():
    rng = np.random.default_rng(1)
    steps = [_step(rng) for _ in range(20)]
    truth = [np.eye(4)]
    for s in steps:
        truth.append(truth[-1] @ s)
    integ = PoseIntegrator()
    scaled = PoseIntegrator()
    for s in steps:
        integ.update(s)
        scaled.update(s, scale=3.0)
    assert np.allclose(integ.T_odom_cam, truth[-1], atol=1e-12)
    # scaling every step's translation scales the whole trajectory's positions, rotations unchanged
    assert np.allclose(scaled.T_odom_cam[:3, :3], truth[-1][:3, :3], atol=1e-12)
    assert np.allclose(scaled.T_odom_cam[:3, 3], 3.0 * truth[-1][:3, 3], atol=1e-12)
    with pytest.raises(ValueError, match="finite 4x4"):
        integ.update(np.full((4, 4), np.nan))


def test_kinematic_scale_recovers_the_true_factor_and_ignores_standstill():
    rng = np.random.default_rng(2)
    est = ScaleEstimator("kinematic", window=10, min_pairs=4)
    assert est.state().is_metric is False and est.state().scale == 1.0
    for _ in range(3):
        t = rng.normal(size=3) * 0.01
        assert est.push(t, 0.4 * t)  # measured = 0.4 * predicted
    assert not est.state().is_metric  # 3 < min_pairs
    assert not est.push(np.ones(3), np.zeros(3))  # robot standing still: no information
    est.push(np.array([0.01, 0, 0]), np.array([0.004, 0, 0]))
    state = est.state()
    assert state.is_metric and state.mode == "kinematic" and state.n_pairs == 4
    assert state.scale == pytest.approx(0.4)
    est.reset()
    assert not est.state().is_metric


def test_fixed_and_relative_modes_and_validation():
    assert ScaleEstimator("fixed", fixed_scale=0.02).state().scale == 0.02
    assert ScaleEstimator("fixed", fixed_scale=0.02).state().is_metric
    rel = ScaleEstimator("relative")
    rel.push(np.ones(3), np.ones(3))
    assert (rel.state().scale, rel.state().is_metric) == (1.0, False)
    with pytest.raises(ValueError, match="scale mode"):
        ScaleEstimator("metres")
    with pytest.raises(ValueError, match="positive"):
        ScaleEstimator("fixed", fixed_scale=0.0)


def _textured_pair(T: np.ndarray):
    """A smooth random texture on a fronto-parallel plane 5 cm away (96x128), seen before and after the
    camera motion ``T`` (current camera points into the previous camera): prev, cur, depth, K."""
    import torch
    import torch.nn.functional as F

    from endo_depth_model import geometry

    g = torch.Generator().manual_seed(0)
    tex = F.interpolate(torch.rand(1, 3, 24, 32, generator=g), size=(96, 128), mode="bicubic").clamp(0, 1)
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
    depth = np.full((96, 128), 0.05, np.float32)
    d = torch.from_numpy(depth)[None, None]
    Kt = torch.as_tensor(K, dtype=torch.float32)
    pix, _ = geometry.project(geometry.backproject(d, Kt), Kt, torch.as_tensor(T, dtype=torch.float32)[None])
    cur = geometry.sample(tex, pix).reshape(1, 3, 96, 128)
    return tex, cur, depth, K


def test_photometric_scale_recovers_the_depth_unit_from_the_measured_motion():
    from endo_depth_model.odometry import photometric_scale

    T = np.eye(4)
    T[:3, 3] = [0.002, -0.001, 0.001]  # measured (metric) motion: 2 mm sideways
    prev, cur, depth, K = _textured_pair(T)
    # the relative depth is the true depth in an unknown unit: 0.05 m read as 0.0125, i.e. 4 m per unit
    s = photometric_scale(prev, cur, depth / 4.0, K, T)
    assert abs(s / 4.0 - 1) < 0.1, s
    assert abs(photometric_scale(prev, cur, depth * 2.5, K, T) * 2.5 - 1) < 0.1  # 0.4 m per unit
    # no information: a still camera (the measured motion is not in the images), no known depth
    assert np.isnan(photometric_scale(prev, prev, depth, K, T))
    assert np.isnan(photometric_scale(prev, cur, np.full_like(depth, np.nan), K, T))


def test_zero_motion_errors_tell_a_moving_camera_from_a_still_one():
    import torch

    from endo_depth_model.geometry import matrix_to_axis_angle
    from endo_depth_model.odometry import scale_motion, zero_motion_errors

    T = np.eye(4)
    T[:3, 3] = [0.002, -0.001, 0.001]  # 2 mm sideways: about 4 pixels of image motion
    prev, cur, depth, K = _textured_pair(T)
    still, moved = zero_motion_errors(prev, cur, depth, K, T)
    assert moved < 0.3 * still  # the true motion explains the frame; no motion does not
    wrong_way = zero_motion_errors(prev, cur, depth, K, np.linalg.inv(T))[1]
    assert wrong_way > still
    # a motion of the wrong size is still told from none when the test weighs several sizes
    half = scale_motion(T, 0.3)
    assert zero_motion_errors(prev, cur, depth, K, half, scales=(0.3, 1.0, 3.0))[1] < 0.3 * still
    # a camera held still (the same frame twice with sensor noise) against a predicted motion: unmoved
    # wins at every size of the motion weighed
    noisy = (prev + 0.01 * torch.randn(prev.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    still, moved = zero_motion_errors(prev, noisy, depth, K, T, scales=(0.1, 0.3, 1.0, 3.0))
    assert still < 0.7 * moved
    # scale_motion: k = 1 is the motion, k = 0 the identity, angles scale linearly
    R = np.eye(4)
    R[:3, :3] = [[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]]
    assert np.allclose(scale_motion(R, 1.0), R, atol=1e-9) and np.allclose(scale_motion(R, 0.0), np.eye(4))
    assert np.allclose(matrix_to_axis_angle(scale_motion(R, 2.0)[:3, :3]), [0, 0, 0.2], atol=1e-9)
    # nothing known (all NaN depth): no verdict
    assert all(np.isnan(zero_motion_errors(prev, cur, np.full_like(depth, np.nan), K, T)))


def _bumpy_pair(T: np.ndarray, size=(96, 128)):
    """A smooth random texture on a bumpy surface 4-6 cm away, seen before and after the camera motion
    ``T`` (current camera points into the previous camera), rendered by backward warping with the
    current frame's exact depth: prev, cur, depth (of the current frame), K."""
    import torch
    import torch.nn.functional as F

    from endo_depth_model import geometry

    h, w = size
    g = torch.Generator().manual_seed(3)
    tex = F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic").clamp(
        0, 1
    )
    K = np.array([[100.0, 0, (w - 1) / 2], [0, 100.0, (h - 1) / 2], [0, 0, 1]])
    v, u = np.mgrid[0:h, 0:w]
    depth = (0.05 + 0.006 * np.sin(u / 11.0) * np.cos(v / 9.0) + 0.004 * (u / w - 0.5)).astype(np.float32)
    d = torch.from_numpy(depth)[None, None]
    Kt = torch.as_tensor(K, dtype=torch.float32)
    pix, _ = geometry.project(geometry.backproject(d, Kt), Kt, torch.as_tensor(T, dtype=torch.float32)[None])
    cur = geometry.sample(tex, pix).reshape(1, 3, h, w)
    return tex, cur, depth, K


def _rotation(axis, degrees):
    import cv2

    axis = np.asarray(axis, dtype=np.float64)
    return cv2.Rodrigues((axis / np.linalg.norm(axis) * np.radians(degrees)).reshape(3, 1))[0]


def _angle_deg(R):
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def test_refine_motion_recovers_the_true_step_from_a_poor_prediction():
    """Direct photometric alignment: from a prediction with 60 % of the translation and a wrong 1.5 deg
    rotation, the refined step is close to the truth; where nothing moved it goes back to no motion."""
    import torch

    from endo_depth_model.odometry import refine_motion, scale_motion

    T = np.eye(4)
    T[:3, :3] = _rotation([0.2, 1.0, 0.1], 1.0)
    T[:3, 3] = [0.002, -0.001, 0.001]
    prev, cur, depth, K = _bumpy_pair(T)
    init = scale_motion(T, 0.4)
    init[:3, :3] = _rotation([1.0, 0.0, 0.3], 1.5) @ init[:3, :3]
    refined = refine_motion(prev, cur, depth, K, init)
    before = np.linalg.norm(init[:3, 3] - T[:3, 3])
    after = np.linalg.norm(refined[:3, 3] - T[:3, 3])
    assert after < 0.15 * before, (before, after)
    assert _angle_deg(refined[:3, :3] @ T[:3, :3].T) < 0.2
    assert _angle_deg(init[:3, :3] @ T[:3, :3].T) > 1.0  # the start was clearly off
    # a still camera (the same view with sensor noise) and a predicted motion: back to (almost) none
    noisy = (prev + 0.01 * torch.randn(prev.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    still = refine_motion(prev, noisy, depth, K, T)
    assert np.linalg.norm(still[:3, 3]) < 0.1 * np.linalg.norm(T[:3, 3])
    assert _angle_deg(still[:3, :3]) < 0.1


def test_refine_motion_gives_back_the_prediction_when_it_cannot_tell():
    """No known depth, a black frame (no texture to align) or a non-finite prediction: the prediction
    comes back unchanged, never NaN."""
    import torch

    from endo_depth_model.odometry import refine_motion

    T = np.eye(4)
    T[:3, 3] = [0.002, 0.0, 0.0]
    prev, cur, depth, K = _bumpy_pair(T)
    assert np.array_equal(refine_motion(prev, cur, np.full_like(depth, np.nan), K, T), T)
    black = torch.zeros_like(prev)
    out = refine_motion(black, black, depth, K, T)
    assert np.all(np.isfinite(out)) and np.allclose(out, T, atol=1e-9)
    bad = T.copy()
    bad[0, 3] = np.nan
    assert np.array_equal(refine_motion(prev, cur, depth, K, bad), bad, equal_nan=True)
