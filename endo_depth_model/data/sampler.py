"""Clip sampler: T-frame clips with their -1/+1 neighbours, never crossing a sequence boundary.

An item covers ``T + 2 * neighbours`` consecutive frames of one sequence: with the default
``neighbours=1`` the clip is ``rgb[1:T+1]``, the previous frames ``rgb[0:T]`` and the next frames
``rgb[2:T+2]`` (frame t's -1 and +1 neighbours sit at the same position of the shifted slices).
Images are resized to the network input and the intrinsics scaled to match
(:func:`endo_depth_model.geometry.scale_intrinsics`).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import torch

from ..geometry import scale_intrinsics
from .sequence import DataError, Frame, Sequence

__all__ = ["clip_windows", "ClipDataset", "resize_frame"]


def clip_windows(
    lengths: Seq[int], clip_len: int, stride: int | None = None, neighbours: int = 1
) -> list[tuple[int, int]]:
    """All (sequence index, first frame) windows of ``clip_len + 2 * neighbours`` frames inside one sequence.

    ``stride`` (default ``clip_len``) is the step between window starts. Sequences shorter than a
    window contribute nothing.
    """
    if clip_len < 1 or neighbours < 0:
        raise DataError(f"clip_len must be >= 1 and neighbours >= 0, got {clip_len}, {neighbours}")
    stride = clip_len if stride is None else stride
    if stride < 1:
        raise DataError(f"stride must be >= 1, got {stride}")
    span = clip_len + 2 * neighbours
    return [(s, start) for s, n in enumerate(lengths) for start in range(0, n - span + 1, stride)]


def resize_frame(
    frame: Frame, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Resize to ``size`` = (H, W): rgb area/bilinear, depth nearest (keeps NaN and edges); K scaled."""
    import cv2

    if size is None or tuple(size) == frame.rgb.shape[:2]:
        return frame.rgb, frame.depth, np.asarray(frame.K, dtype=np.float64)
    h, w = size
    src_h, src_w = frame.rgb.shape[:2]
    interp = cv2.INTER_AREA if (h < src_h and w < src_w) else cv2.INTER_LINEAR
    rgb = cv2.resize(frame.rgb, (w, h), interpolation=interp)
    depth = None
    if frame.depth is not None:
        depth = cv2.resize(frame.depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return rgb, depth, scale_intrinsics(np.asarray(frame.K, np.float64), w / src_w, h / src_h)


class ClipDataset(torch.utils.data.Dataset):
    """Clips from a list of :class:`Sequence`.

    Item (``N = T + 2 * neighbours``):
      ``rgb`` (N, 3, H, W) float32 in [0, 1]; ``K`` (N, 3, 3) float32 pixels of the output size;
      ``depth`` (N, 1, H, W) float32 metres, NaN invalid (all NaN when the source has none);
      ``T_world_cam`` (N, 4, 4) float32 metres (NaN when absent); ``has_depth``, ``has_pose`` bool;
      ``frame_index`` (N,) int64; ``sequence`` str; ``stamp_ns`` (N,) int64.
    """

    def __init__(
        self,
        sequences: Seq[Sequence],
        clip_len: int = 32,
        size: tuple[int, int] | None = (256, 320),
        stride: int | None = None,
        neighbours: int = 1,
    ):
        self.sequences = list(sequences)
        self.clip_len, self.neighbours, self.size = clip_len, neighbours, size
        self.windows = clip_windows([len(s) for s in self.sequences], clip_len, stride, neighbours)
        if not self.windows:
            raise DataError(
                f"no clip of {clip_len}+{2 * neighbours} frames fits in the sequences "
                f"{[(s.name, len(s)) for s in self.sequences]}"
            )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        s, start = self.windows[i]
        seq = self.sequences[s]
        n = self.clip_len + 2 * self.neighbours
        rgbs, depths, Ks, poses, stamps = [], [], [], [], []
        has_depth = has_pose = True
        for k in range(start, start + n):
            frame = seq[k]
            rgb, depth, K = resize_frame(frame, self.size)
            rgbs.append(rgb)
            if depth is None:
                has_depth = False
                depth = np.full(rgb.shape[:2], np.nan, np.float32)
            depths.append(depth)
            Ks.append(K)
            if frame.T_world_cam is None:
                has_pose = False
                poses.append(np.full((4, 4), np.nan))
            else:
                poses.append(frame.T_world_cam)
            stamps.append(frame.stamp_ns)
        rgb = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float().div_(255.0)
        return {
            "rgb": rgb,
            "K": torch.from_numpy(np.stack(Ks)).float(),
            "depth": torch.from_numpy(np.stack(depths)).float()[:, None],
            "T_world_cam": torch.from_numpy(np.stack(poses)).float(),
            "has_depth": has_depth,
            "has_pose": has_pose,
            "frame_index": torch.arange(start, start + n, dtype=torch.int64),
            "stamp_ns": torch.tensor(stamps, dtype=torch.int64),
            "sequence": seq.name,
        }
