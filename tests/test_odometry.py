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
