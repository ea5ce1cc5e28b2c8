"""The shared geometry module: pose algebra, projection round trips, intrinsics scaling, quaternions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endo_depth_model import geometry as g


def test_axis_angle_matches_known_rotation_and_is_orthonormal():
    R = g.axis_angle_to_matrix(torch.tensor([[0.0, 0.0, np.pi / 2]], dtype=torch.float64))[0]
    assert torch.allclose(
        R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64), atol=1e-12
    )
    aa = torch.randn(16, 3, dtype=torch.float64)
    R = g.axis_angle_to_matrix(aa)
    assert torch.allclose(
        R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(16, 3, 3), atol=1e-12
    )
    assert torch.allclose(torch.linalg.det(R), torch.ones(16, dtype=torch.float64))
    # zero rotation is the identity, without NaN
    assert torch.equal(g.axis_angle_to_matrix(torch.zeros(1, 3))[0], torch.eye(3))


def test_pose_inverse_and_relative_pose():
    aa, t = torch.randn(4, 3, dtype=torch.float64) * 0.5, torch.randn(4, 3, dtype=torch.float64)
    T = g.pose_vec_to_mat(aa, t)
    assert torch.allclose(g.pose_vec_to_mat(aa, t, invert=True), torch.linalg.inv(T), atol=1e-12)
    assert torch.allclose(g.invert_pose(T) @ T, torch.eye(4, dtype=torch.float64).expand(4, 4, 4), atol=1e-12)
    T_world_a, T_world_b = T[0], T[1]
    p_a = torch.tensor([0.1, -0.2, 0.5, 1.0], dtype=torch.float64)
    p_world = T_world_a @ p_a
    assert torch.allclose(g.relative_pose(T_world_a, T_world_b) @ p_a, torch.linalg.inv(T_world_b) @ p_world)


def test_backproject_then_project_returns_pixels_and_depth():
    K = torch.tensor([[50.0, 0, 15.5], [0, 60.0, 11.5], [0, 0, 1]], dtype=torch.float64)
    depth = torch.rand(2, 1, 24, 32, dtype=torch.float64) + 0.5
    pts = g.backproject(depth, K)
    pix, z = g.project(pts, K)
    assert torch.allclose(z, depth.reshape(2, -1))
    assert torch.allclose(pix[0], g.pixel_grid(24, 32, dtype=torch.float64)[:2].T, atol=1e-9)
    # moving the camera 1 unit forward reduces depth by 1 for every point
    T = torch.eye(4, dtype=torch.float64)[None].repeat(2, 1, 1)
    T[:, 2, 3] = -0.25
    _, z2 = g.project(pts, K, T)
    assert torch.allclose(z2, depth.reshape(2, -1) - 0.25)


def test_identity_warp_samples_the_image_itself():
    img = torch.rand(1, 3, 8, 10)
    pix = g.pixel_grid(8, 10)[:2].T[None]
    assert torch.allclose(g.sample(img, pix), img, atol=1e-6)


def test_scale_intrinsics_maps_pixel_centres():
    K = np.array([[100.0, 0, 159.5], [0, 100.0, 127.5], [0, 0, 1]])
    K2 = g.scale_intrinsics(K, 0.5, 0.5)
    # the image centre stays the image centre of a half-size image
    assert K2[0, 2] == pytest.approx(79.5) and K2[1, 2] == pytest.approx(63.5)
    assert K2[0, 0] == 50.0 and K2[1, 1] == 50.0
    Kt = g.scale_intrinsics(torch.tensor(K), 0.5, 0.5)
    assert np.allclose(Kt.numpy(), K2)
    assert np.allclose(
        g.intrinsics_from_normalised(0.82, 1.02, 0.5, 0.5, 320, 256)[:2], [[262.4, 0, 160], [0, 261.12, 128]]
    )


def test_quaternion_round_trip_all_branches():
    rng = np.random.default_rng(0)
    for aa in [*rng.normal(size=(50, 3)), [np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi], [0, 0, 0]]:
        R = g.axis_angle_to_matrix(torch.tensor(np.asarray(aa, dtype=np.float64))[None])[0].numpy()
        q = g.matrix_to_quaternion(R)
        assert np.linalg.norm(q) == pytest.approx(1.0)
        assert np.allclose(g.quaternion_to_matrix(q), R, atol=1e-9)
    assert np.allclose(g.matrix_to_quaternion(np.eye(3)), [0, 0, 0, 1])


def test_axis_angle_round_trip():
    rng = np.random.default_rng(3)
    for aa in [*rng.normal(size=(30, 3)) * 0.8, [0.0, 0.0, 0.0], [0.0, 1e-9, 0.0]]:
        R = g.axis_angle_to_matrix(torch.tensor(np.asarray(aa, dtype=np.float64))[None])[0].numpy()
        assert np.allclose(g.matrix_to_axis_angle(R), aa, atol=1e-8)


def test_backproject_np_matches_torch():
    K = np.array([[40.0, 0, 9.5], [0, 40.0, 7.5], [0, 0, 1]])
    depth = np.full((16, 20), 2.0, np.float32)
    pts = g.backproject_np(depth, K)
    assert pts.shape == (16, 20, 3) and pts.dtype == np.float32
    assert np.allclose(pts[..., 2], 2.0)
    assert np.allclose(pts[7, 19], [2.0 * (19 - 9.5) / 40, 2.0 * (7 - 7.5) / 40, 2.0])
