"""Training clips: their deterministic order over any number of processes (:class:`ClipOrder`), the
Monodepth2-style augmentation of a clip (:func:`augment_clip`), and the conversion of clip-dataset items
into the tensors the trainer uses."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["TrainError", "ClipOrder", "augment_clip"]


class TrainError(RuntimeError):
    """Training cannot start or continue (bad data, missing checkpoint, inconsistent resume)."""


class ClipOrder:
    """Deterministic order of training clips: a fresh permutation per pass over the data.

    Global sample ``g = step * global_batch + j`` is clip ``perm_e[g % n]`` of pass ``e = g // n``;
    process ``rank`` takes ``j`` in ``[rank * batch, (rank + 1) * batch)``. Each key is
    ``(clip index, augmentation seed)`` where the seed depends only on ``(seed, g)``, so the same
    global batch is seen for any number of processes and resuming needs only the step.
    """

    def __init__(
        self, n: int, batch: int, world_size: int, rank: int, seed: int, start_step: int, end_step: int
    ):
        if n < 1:
            raise TrainError("the training split holds no clips")
        self.n, self.batch, self.world, self.rank = n, batch, world_size, rank
        self.seed, self.start, self.end = seed, start_step, end_step
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _perm_for(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=gen).tolist()
            self._perm_epoch = epoch
        return self._perm

    def keys(self, step: int) -> list[tuple[int, int]]:
        global_batch = self.batch * self.world
        out = []
        for j in range(self.rank * self.batch, (self.rank + 1) * self.batch):
            g = step * global_batch + j
            epoch, pos = divmod(g, self.n)
            out.append((self._perm_for(epoch)[pos], (self.seed * 7_919 + g) % (2**63 - 1)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.end):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def _rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    m = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    return torch.einsum("ij,...jhw->...ihw", m, x)


def _yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    m = x.new_tensor([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    return torch.einsum("ij,...jhw->...ihw", m, x)


def augment_clip(
    frames: torch.Tensor, K: torch.Tensor, seed: int, depth: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Monodepth2-style augmentation of one clip, the same for all its frames.

    ``frames`` (N, 3, H, W) float in [0, 1], ``K`` (3, 3), optional ``depth`` (N, H, W). With
    probability 1/2 the clip is mirrored horizontally (frames, depth and ``K``: cx -> W - 1 - cx); with
    probability 1/2 the networks' copy gets brightness, contrast, saturation (factors in [0.8, 1.2]) and
    hue (±0.1 turn) jitter. Returns ``(frames, frames_net, K, depth)``: the geometric copy for the
    losses and the jittered copy for the networks. Deterministic in ``seed``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(6, generator=gen, dtype=torch.float64).tolist()
    if u[0] < 0.5:
        frames = frames.flip(-1)
        depth = depth.flip(-1) if depth is not None else None
        K = K.clone()
        K[0, 2] = (frames.shape[-1] - 1) - K[0, 2]
    net = frames
    if u[1] < 0.5:
        brightness, contrast, saturation = (0.8 + 0.4 * v for v in u[2:5])
        hue = (u[5] - 0.5) * 0.2
        net = net * brightness
        mean = net.mean(dim=(-3, -2, -1), keepdim=True)
        net = (net - mean) * contrast + mean
        grey = 0.299 * net[:, 0:1] + 0.587 * net[:, 1:2] + 0.114 * net[:, 2:3]
        net = (net - grey) * saturation + grey
        yiq = _rgb_to_yiq(net)
        c, s = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], 1)
        net = _yiq_to_rgb(yiq).clamp(0, 1)
    return frames, net, K, depth


# ---- clips ----------------------------------------------------------------------------------------


def clip_tensors(item) -> dict[str, torch.Tensor]:
    """One clip-dataset item -> ``frames`` (N, 3, H, W) float32 in [0, 1], N = T + 2 (the clip with one
    neighbour each side), ``K`` (3, 3) float32 and, when the source has it, ``depth`` (N, H, W) float32
    (NaN invalid).

    Accepts the items of :class:`endo_depth_model.data.sampler.ClipDataset` (``rgb`` (N, 3, H, W),
    ``K`` (N, 3, 3), ``depth`` (N, 1, H, W), ``has_depth``) and plain dicts with ``frames`` as
    (N, 3, H, W) / (N, H, W, 3), float or uint8, ``K`` (3, 3) and an optional ``depth`` (N, H, W).
    """
    if not isinstance(item, dict):
        raise TrainError(f"clip dataset items must be mappings, got {type(item).__name__}")
    key = "rgb" if "rgb" in item else "frames"
    if key not in item or "K" not in item:
        raise TrainError(f"clip dataset item needs 'rgb' (or 'frames') and 'K', got keys {sorted(item)}")
    frames = torch.as_tensor(np.asarray(item[key]) if not isinstance(item[key], torch.Tensor) else item[key])
    if frames.dim() != 4:
        raise TrainError(f"clip frames must be (N, 3, H, W) or (N, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[1] != 3 and frames.shape[-1] == 3:
        frames = frames.permute(0, 3, 1, 2)
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    K = torch.as_tensor(
        np.asarray(item["K"]) if not isinstance(item["K"], torch.Tensor) else item["K"]
    ).float()
    if K.dim() == 3:  # per-frame intrinsics of one sequence: the clip shares the first frame's
        K = K[0]
    out = {"frames": frames.contiguous(), "K": K[:3, :3].contiguous()}
    depth = item.get("depth")
    if depth is not None and item.get("has_depth", True):
        depth = torch.as_tensor(np.asarray(depth) if not isinstance(depth, torch.Tensor) else depth).float()
        out["depth"] = depth[:, 0] if depth.dim() == 4 else depth
    return out


def every_nth(sequence, step: int):
    """A view of ``sequence`` keeping every ``step``-th frame (a longer baseline between frames)."""
    from endo_depth_model.data import Sequence

    if step == 1:
        return sequence
    return Sequence(
        name=f"{sequence.name}@{step}",
        length=(len(sequence) + step - 1) // step,
        load=lambda i: sequence.load(i * step),
        meta=dict(sequence.meta),
    )


class AugmentedClips(torch.utils.data.Dataset):
    """Wraps a clip dataset; keys are ``(index, augmentation seed or None)``."""

    def __init__(self, clips, augment: bool):
        self.clips = clips
        self.augment = augment

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key):
        index, seed = key
        item = clip_tensors(self.clips[index])
        frames, K, depth = item["frames"], item["K"], item.get("depth")
        net = frames
        if self.augment and seed is not None:
            frames, net, K, depth = augment_clip(frames, K, seed, depth)
        out = {"frames": frames, "frames_net": net, "K": K}
        if depth is not None:
            out["depth"] = depth
        return out


def collate_clips(items: list[dict]) -> dict[str, torch.Tensor]:
    out = {key: torch.stack([it[key] for it in items]) for key in ("frames", "frames_net", "K")}
    if all("depth" in it for it in items):
        out["depth"] = torch.stack([it["depth"] for it in items])
    return out
