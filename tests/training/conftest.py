"""Shared helpers for the training tests: an analytic endoscopy-like scene.

The camera sits inside a textured sphere (a cavity). Every view is rendered independently by
ray casting, so depth and images are exact and consistent across views without any warping: the
losses see the same kind of data as with real frames, only with known depth and pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from endo_depth_model import geometry

SPHERE_RADIUS = 20.0  # mm
HEIGHT, WIDTH = 48, 64


@dataclass
class Scene:
    images: torch.Tensor  # (N, 3, H, W) float64 in [0, 1]
    depths: torch.Tensor  # (N, 1, H, W) float64, mm
    poses: torch.Tensor  # (N, 4, 4) T_world_cam
    K: torch.Tensor  # (3, 3)

    def T(self, dst: int, src: int) -> torch.Tensor:
        """``T_dst_src`` (1, 4, 4) between two views of the scene."""
        return geometry.relative_pose(self.poses[src : src + 1], self.poses[dst : dst + 1])


def texture(points: torch.Tensor) -> torch.Tensor:
    """World points (..., 3) mm -> RGB (..., 3) in [0.1, 0.9]: smooth sums of sinusoids."""
    gen = torch.Generator().manual_seed(7)
    channels = []
    for _ in range(3):
        freqs = (torch.rand(4, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.6  # rad/mm
        phases = torch.rand(4, generator=gen, dtype=torch.float64) * 2 * math.pi
        value = torch.sin(points @ freqs.T + phases).sum(-1) / 4
        channels.append(0.5 + 0.4 * value)
    return torch.stack(channels, -1)


def render(T_world_cam: torch.Tensor, K: torch.Tensor, height: int = HEIGHT, width: int = WIDTH):
    """Ray-cast the textured sphere (centre at origin) from one camera: image (3, H, W), depth (1, H, W)."""
    rays = torch.linalg.inv(K) @ geometry.pixel_grid(height, width, dtype=torch.float64)  # (3, N), z = 1
    rot, origin = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rot @ rays  # world directions, scaled so that the camera z component is 1
    a = (d * d).sum(0)
    b = 2 * (origin[:, None] * d).sum(0)
    c = (origin * origin).sum() - SPHERE_RADIUS**2
    s = (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)  # far root: camera is inside the sphere
    points = origin[:, None] + s * d
    image = texture(points.T).T.reshape(3, height, width)
    return image, s.reshape(1, height, width)


def make_pose(position, axis_angle) -> torch.Tensor:
    return geometry.pose_vec_to_mat(
        torch.tensor([axis_angle], dtype=torch.float64), torch.tensor([position], dtype=torch.float64)
    )[0]


def build_scene(n: int = 3, height: int = HEIGHT, width: int = WIDTH) -> Scene:
    """``n`` views along a gently turning forward trajectory inside the sphere."""
    K = torch.tensor(
        [[0.82 * width, 0, 0.5 * width], [0, 1.02 * height, 0.5 * height], [0, 0, 1]], dtype=torch.float64
    )
    poses = [make_pose([0.4 * i, -0.2 * i, -8.0 + 1.0 * i], [0.0, 0.02 * i, 0.01 * i]) for i in range(n)]
    images, depths = zip(*(render(p, K, height, width) for p in poses), strict=True)
    return Scene(torch.stack(images), torch.stack(depths), torch.stack(poses), K)


@pytest.fixture(scope="session")
def scene() -> Scene:
    return build_scene()
