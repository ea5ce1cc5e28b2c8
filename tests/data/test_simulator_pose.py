"""Rendering from an arbitrary camera pose (the closed-loop simulator's entry point)."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.data.simulator import EndoscopySimulator, preset


@pytest.fixture(scope="module")
def sim():
    return EndoscopySimulator(preset("target", seed=1, n_frames=3, height=33, width=41))


def test_render_pose_of_a_trajectory_pose_is_that_frame(sim):
    k = 2
    a, b = sim.render(k), sim.render_pose(sim.poses[k], index=k)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_allclose(a.T_world_cam, b.T_world_cam)


def test_centre_pixel_depth_is_the_axis_distance_and_shrinks_by_the_forward_motion(sim):
    T = sim.poses[0]
    cy, cx = (sim.config.height - 1) // 2, (sim.config.width - 1) // 2
    assert sim.K[0, 2] == cx and sim.K[1, 2] == cy  # odd size: a pixel sits on the optical axis
    d0 = sim.axis_distance(T)
    assert 0.005 < d0 < sim.config.far_mm / 1000.0
    assert sim.render_pose(T).depth[cy, cx] == pytest.approx(d0, abs=1e-6)
    step = 0.4 * d0
    T2 = T.copy()
    T2[:3, 3] += step * T[:3, 2]  # forward along the optical axis
    assert sim.axis_distance(T2) == pytest.approx(d0 - step, abs=1e-7)
    assert sim.render_pose(T2).depth[cy, cx] == pytest.approx(d0 - step, abs=1e-6)


def test_wall_distance_is_zero_outside_and_bounded_by_the_axis_distance_inside(sim):
    T = sim.poses[0]
    inside = sim.wall_distance(T[:3, 3])
    assert 0 < inside <= sim.axis_distance(T) + 1e-9
    assert inside <= 1.3 * sim.config.geometry.radius_mm / 1000.0
    outside = T[:3, 3] + np.array([0.05, 0.0, 0.0])  # 50 mm sideways: beyond any wall
    assert sim.wall_distance(outside) == 0.0
    T_out = T.copy()
    T_out[:3, 3] = outside
    with pytest.raises(ValueError, match="not inside the lumen"):
        sim.render_pose(T_out)
    with pytest.raises(ValueError, match="finite"):
        sim.render_pose(np.full((4, 4), np.nan))
