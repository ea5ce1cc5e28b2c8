"""Camera geometry shared by losses, evaluation (TAE), the simulator and point clouds.

Conventions
-----------
* Pinhole intrinsics ``K`` (3, 3) in pixels of the image they are used with.
* Camera frames are REP 103 optical frames: x right, y down, z forward.
* ``T_world_cam`` maps points from the camera frame to the world frame (camera-to-world pose).
* ``T_dst_src`` maps points expressed in camera ``src`` to camera ``dst``; for camera-to-world poses
  ``T_dst_src = inv(T_world_dst) @ T_world_src``.
* Every function accepts batched torch tensors; numpy helpers at the bottom wrap the same maths.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "axis_angle_to_matrix",
    "pose_vec_to_mat",
    "relative_pose",
    "invert_pose",
    "backproject",
    "project",
    "pixel_grid",
    "pixels_to_grid",
    "scale_intrinsics",
    "intrinsics_from_normalised",
    "warp_points",
    "sample",
    "backproject_np",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "matrix_to_axis_angle",
]


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. ``axis_angle`` (..., 3) radians -> rotation matrices (..., 3, 3)."""
    angle = axis_angle.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    axis = axis_angle / angle
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*x.shape, 3, 3)
    s = torch.sin(angle)[..., None]
    c = torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + s * skew + (1.0 - c) * (skew @ skew)


def pose_vec_to_mat(
    axis_angle: torch.Tensor, translation: torch.Tensor, invert: bool = False
) -> torch.Tensor:
    """Pose vector -> 4x4 rigid transform.

    ``axis_angle`` and ``translation`` (B, 3). Returns (B, 4, 4) ``[R | t]``. With ``invert`` the
    inverse transform ``[R^T | -R^T t]`` is returned (Monodepth2 convention for the frame before).
    """
    rot = axis_angle_to_matrix(axis_angle)
    t = translation
    if invert:
        rot = rot.transpose(-1, -2)
        t = -(rot @ t[..., None])[..., 0]
    out = torch.zeros(*rot.shape[:-2], 4, 4, dtype=rot.dtype, device=rot.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms (..., 4, 4) without a general matrix inverse."""
    rot_t = T[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def relative_pose(T_world_src: torch.Tensor, T_world_dst: torch.Tensor) -> torch.Tensor:
    """``T_dst_src`` from two camera-to-world poses (..., 4, 4)."""
    return invert_pose(T_world_dst) @ T_world_src


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel centres as (3, H*W): rows u (column index), v (row index), 1."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], dim=0)


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift a depth map to 3-D camera points.

    ``depth`` (B, 1, H, W) or (B, H, W), ``K`` (B, 3, 3) or (3, 3). Returns (B, 3, H*W) points in the
    camera frame, in the unit of ``depth``.
    """
    if depth.dim() == 3:
        depth = depth[:, None]
    b, _, h, w = depth.shape
    if K.dim() == 2:
        K = K.expand(b, 3, 3)
    pix = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    rays = torch.linalg.inv(K[:, :3, :3].to(depth.dtype)) @ pix
    return rays * depth.reshape(b, 1, h * w)


def warp_points(points: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Apply rigid transforms ``T`` (B, 4, 4) to points (B, 3, N)."""
    return T[:, :3, :3] @ points + T[:, :3, 3:4]


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor | None = None, eps: float = 1e-7):
    """Project camera points (B, 3, N), optionally moved by ``T`` (B, 4, 4) first, with ``K``.

    Returns ``(pix, z)``: pixel coordinates (B, N, 2) as (u, v) and depth along the optical axis (B, N)
    in the destination camera.
    """
    if T is not None:
        points = warp_points(points, T)
    b = points.shape[0]
    if K.dim() == 2:
        K = K.expand(b, 3, 3)
    cam = K[:, :3, :3].to(points.dtype) @ points
    z = cam[:, 2]
    pix = cam[:, :2] / z[:, None].clamp_min(eps)
    return pix.permute(0, 2, 1), z


def pixels_to_grid(pix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates (B, N, 2) -> ``grid_sample`` grid (B, H, W, 2) in [-1, 1] (align_corners=False)."""
    b = pix.shape[0]
    grid = pix.reshape(b, height, width, 2).clone()
    grid[..., 0] = (grid[..., 0] + 0.5) / width * 2.0 - 1.0
    grid[..., 1] = (grid[..., 1] + 0.5) / height * 2.0 - 1.0
    return grid


def sample(image: torch.Tensor, pix: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) at pixel coordinates (B, H*W, 2) of the same size grid."""
    _, _, h, w = image.shape
    grid = pixels_to_grid(pix, h, w)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)


def scale_intrinsics(K, sx: float, sy: float):
    """Intrinsics for an image resized by ``sx`` horizontally and ``sy`` vertically.

    Pixel centres move as ``u' = (u + 0.5) * sx - 0.5``. Works on numpy arrays and torch tensors (..., 3, 3).
    """
    out = K.clone() if isinstance(K, torch.Tensor) else np.array(K, dtype=np.float64, copy=True)
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def intrinsics_from_normalised(
    fx: float, fy: float, cx: float, cy: float, width: int, height: int
) -> np.ndarray:
    """3x3 K from intrinsics normalised by image size (e.g. SCARED's [[0.82, 0, 0.5], [0, 1.02, 0.5]])."""
    return np.array([[fx * width, 0.0, cx * width], [0.0, fy * height, cy * height], [0.0, 0.0, 1.0]])


# ---- numpy conveniences (same maths) --------------------------------------------------------------


def backproject_np(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``depth`` (H, W), ``K`` (3, 3) -> points (H, W, 3) float32 in the camera frame."""
    pts = backproject(
        torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float64))[None],
        torch.from_numpy(np.asarray(K, dtype=np.float64)),
    )
    h, w = depth.shape
    return pts[0].T.reshape(h, w, 3).numpy().astype(np.float32)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (x, y, z, w) with w >= 0 (ROS order)."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quaternion_to_matrix(q) -> np.ndarray:
    """Quaternion (x, y, z, w), any norm > 0 -> rotation matrix (3, 3)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> axis-angle (3,) radians, the inverse of :func:`axis_angle_to_matrix`."""
    x, y, z, w = matrix_to_quaternion(R)
    s = np.sqrt(x * x + y * y + z * z)
    if s < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(s, w)
    return np.array([x, y, z]) / s * angle
