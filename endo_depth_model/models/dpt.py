"""DPT head of Depth Anything V2 with the four temporal modules of Video Depth Anything.

Key names match the official checkpoints under ``head.``: ``projects.{0..3}``,
``resize_layers.{0,1,3}`` (2 is an identity), ``scratch.layer{1..4}_rn``,
``scratch.refinenet{1..4}.{out_conv,resConfUnit1,resConfUnit2}``, ``scratch.output_conv1``,
``scratch.output_conv2.{0,2}`` and ``motion_modules.{0..3}``.

Data flow for patch grid (h, w) = (H/14, W/14), T frames per window::

    4 token maps (B*T, h*w, C) -> 1x1 project -> resize to 4h, 2h, h, h/2 (layer_1..layer_4)
    motion_modules.0 on layer_3 (1/14), motion_modules.1 on layer_4 (1/28)
    3x3 convs to `features` channels (layerN_rn); refinenet4 -> motion_modules.2 (1/14)
    -> refinenet3 -> motion_modules.3 (1/7) -> refinenet2 -> refinenet1 -> output_conv1
    -> bilinear to (14h, 14w) -> output_conv2 (conv3x3 -> 32, ReLU, conv1x1 -> 1, ReLU), in fp32
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .motion_module import TemporalModule

__all__ = ["ResidualConvUnit", "FeatureFusionBlock", "DPTHead"]


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FeatureFusionBlock(nn.Module):
    """RefineNet-style fusion: ``[x + rcu1(skip)] -> rcu2 -> bilinear resize -> 1x1 out_conv``.

    ``resConfUnit1`` exists (and is in the checkpoints) even for ``refinenet4``, which has no skip input.
    """

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


def _make_scratch(in_channels: Sequence[int], features: int) -> nn.Module:
    scratch = nn.Module()
    for i, channels in enumerate(in_channels, start=1):
        setattr(scratch, f"layer{i}_rn", nn.Conv2d(channels, features, kernel_size=3, padding=1, bias=False))
    for i in range(1, 5):
        setattr(scratch, f"refinenet{i}", FeatureFusionBlock(features))
    scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
    scratch.output_conv2 = nn.Sequential(
        nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
        nn.ReLU(True),
        nn.Conv2d(32, 1, kernel_size=1),
        nn.ReLU(True),
        nn.Identity(),
    )
    return scratch


class DPTHead(nn.Module):
    """DPT decoder over a window of frames; temporal modules mix information across the window.

    ``forward(tokens, patch_hw, num_frames)`` takes four (B*T, h*w, in_channels) token maps, frames of a
    window contiguous, and returns (B*T, 1, 14h, 14w) non-negative output. ``micro_batch`` bounds
    the number of frames run at once through the full-resolution tail (refinenet2 onwards); the
    result does not depend on it.
    """

    def __init__(
        self,
        in_channels: int,
        features: int,
        out_channels: Sequence[int],
        num_frames: int = 32,
        temporal_heads: int = 8,
        temporal_groups: int = 32,
        micro_batch: int = 4,
    ):
        super().__init__()
        out_channels = list(out_channels)
        self.micro_batch = micro_batch
        self.projects = nn.ModuleList([nn.Conv2d(in_channels, c, kernel_size=1) for c in out_channels])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = _make_scratch(out_channels, features)
        module_channels = (out_channels[2], out_channels[3], features, features)
        self.motion_modules = nn.ModuleList(
            [
                TemporalModule(c, num_heads=temporal_heads, norm_groups=temporal_groups, max_len=num_frames)
                for c in module_channels
            ]
        )

    def _temporal(
        self, index: int, x: torch.Tensor, num_frames: int, temporal: bool, causal: bool = False
    ) -> torch.Tensor:
        return self.motion_modules[index](x, num_frames, causal) if temporal else x

    def _tail(self, path_3, layer_1_rn, layer_2_rn, patch_hw):
        s = self.scratch
        path_2 = s.refinenet2(path_3, layer_2_rn, size=layer_1_rn.shape[2:])
        path_1 = s.refinenet1(path_2, layer_1_rn)
        out = F.interpolate(s.output_conv1(path_1), (patch_hw[0] * 14, patch_hw[1] * 14), mode="bilinear",
                            align_corners=True)  # fmt: skip
        with torch.autocast(device_type=out.device.type, enabled=False):
            return s.output_conv2(out.float()).to(out.dtype)

    def cache_shapes(self, patch_hw: tuple[int, int], length: int) -> list[tuple[int, int, int]]:
        """Shapes (pixels, L, C) of the causal cache tensors for a patch grid and ``length`` frames."""
        h, w = patch_hw
        pixels = (h * w, ((h + 1) // 2) * ((w + 1) // 2), h * w, 4 * h * w)  # 1/14, 1/28, 1/14, 1/7
        channels = [m.temporal_transformer.proj_in.in_features for m in self.motion_modules]
        return [
            (p, length, c)
            for p, c, m in zip(pixels, channels, self.motion_modules, strict=True)
            for _ in range(m.cache_slots)
        ]

    def forward_causal(self, tokens, patch_hw, caches, positions, key_bias, slot=None):
        """One frame through the head with causal temporal attention over cached earlier frames.

        ``tokens``: four (1, h*w, in_channels) token maps of the newest frame; ``caches``: the tensors
        of :meth:`cache_shapes`, in order; ``positions``, ``key_bias``: see
        :meth:`~endo_depth_model.models.motion_module.TemporalAttention.step`. Returns (output
        (1, 1, 14h, 14w), next caches). With the cache of the earlier frames of a window, the output
        equals the last frame of ``forward(..., causal=True)`` on that window. ``slot``: the caches are
        ring buffers written in place (:meth:`~endo_depth_model.models.motion_module.TemporalAttention.step`).
        """
        patch_h, patch_w = patch_hw
        layers = []
        for project, resize, x in zip(self.projects, self.resize_layers, tokens, strict=True):
            x = x.permute(0, 2, 1).reshape(1, x.shape[-1], patch_h, patch_w)
            layers.append(resize(project(x)))
        layer_1, layer_2, layer_3, layer_4 = layers
        out_caches: list[torch.Tensor] = []
        k = 0

        def temporal(index, x):
            nonlocal k
            module = self.motion_modules[index]
            n = module.cache_slots
            y, nxt = module.step(x, caches[k : k + n], positions, key_bias, slot)
            out_caches.extend(nxt)
            k += n
            return y

        layer_3 = temporal(0, layer_3)
        layer_4 = temporal(1, layer_4)
        s = self.scratch
        layer_1_rn = s.layer1_rn(layer_1)
        layer_2_rn = s.layer2_rn(layer_2)
        layer_3_rn = s.layer3_rn(layer_3)
        layer_4_rn = s.layer4_rn(layer_4)
        path_4 = temporal(2, s.refinenet4(layer_4_rn, size=layer_3_rn.shape[2:]))
        path_3 = temporal(3, s.refinenet3(path_4, layer_3_rn, size=layer_2_rn.shape[2:]))
        return self._tail(path_3, layer_1_rn, layer_2_rn, patch_hw), out_caches

    def forward(
        self,
        tokens: Sequence[torch.Tensor],
        patch_hw: tuple[int, int],
        num_frames: int,
        temporal: bool = True,
        output_frames: slice | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """``temporal=False`` skips the four temporal modules (the Depth Anything V2 image head);
        ``causal`` restricts the temporal attention to each frame and earlier ones.

        ``output_frames`` (a slice along T) returns only those frames of every window: the temporal
        modules still see all ``num_frames``, but the per-frame parts that feed only the output (the
        1/3.5 and 1/7 branches and the full-resolution tail, most of the head's cost) run only for the
        selected frames. The result equals the full output sliced.
        """
        patch_h, patch_w = patch_hw
        rows = None
        if output_frames is not None:
            n, device = tokens[0].shape[0], tokens[0].device
            picked = range(num_frames)[output_frames]
            if len(picked) == 0:
                raise ValueError(f"output_frames {output_frames} selects no frame of {num_frames}")
            if len(picked) < num_frames:
                # built on the tokens' device: a host-to-device copy here would break CUDA graph capture
                first = torch.arange(0, n, num_frames, device=device)[:, None]
                rows = (first + torch.arange(picked.start, picked.stop, picked.step, device=device)).flatten()
        layers = []
        for i, (project, resize, x) in enumerate(zip(self.projects, self.resize_layers, tokens, strict=True)):
            if i < 2 and rows is not None:  # layer_1 / layer_2 feed only the per-frame path
                x = x.index_select(0, rows)
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], patch_h, patch_w)
            layers.append(resize(project(x)))
        layer_1, layer_2, layer_3, layer_4 = layers

        layer_3 = self._temporal(0, layer_3, num_frames, temporal, causal)
        layer_4 = self._temporal(1, layer_4, num_frames, temporal, causal)

        s = self.scratch
        layer_1_rn = s.layer1_rn(layer_1)
        layer_2_rn = s.layer2_rn(layer_2)
        layer_3_rn = s.layer3_rn(layer_3)
        layer_4_rn = s.layer4_rn(layer_4)

        path_4 = s.refinenet4(layer_4_rn, size=layer_3_rn.shape[2:])
        path_4 = self._temporal(2, path_4, num_frames, temporal, causal)
        path_3 = s.refinenet3(path_4, layer_3_rn, size=layer_2_rn.shape[2:])
        path_3 = self._temporal(3, path_3, num_frames, temporal, causal)
        if rows is not None:
            path_3 = path_3.index_select(0, rows)

        step = self.micro_batch if self.micro_batch and self.micro_batch > 0 else path_3.shape[0]
        outputs = []
        for start in range(0, path_3.shape[0], step):
            sl = slice(start, start + step)
            # the last convolutions run in fp32 (as upstream) even under autocast
            outputs.append(self._tail(path_3[sl], layer_1_rn[sl], layer_2_rn[sl], patch_hw))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
