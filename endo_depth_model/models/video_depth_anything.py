"""Video Depth Anything: DINOv2 encoder per frame, temporal DPT head per window, plus the config registry.

State-dict keys equal the official checkpoints (``pretrained.*`` for the encoder, ``head.*`` for the
head): 351 entries for ``vits``/``vitb``, 519 for ``vitl``. The encoder never sees more than one frame
at a time, so the model is exposed as two calls that a ring buffer can split::

    features = model.encode(frames)          # per frame; slice / concatenate along T freely
    disparity = model.decode(features)       # per window of T <= num_frames frames

``forward(frames) == decode(encode(frames))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dpt import DPTHead
from .vit import VisionTransformer

__all__ = ["VDAConfig", "VDA_CONFIGS", "FrameFeatures", "VideoDepthAnything", "build_vda"]

PATCH_SIZE = 14


@dataclass(frozen=True)
class VDAConfig:
    """Architecture of one Video Depth Anything size.

    ``encoder`` names the size (``vitt``, ``vits``, ``vitb``, ``vitl``); ``intermediate_layers`` are the
    ViT blocks fed to the head; ``features`` / ``out_channels`` size the DPT head; ``num_frames`` is the
    longest window the temporal modules accept (the length of ``pos_encoder.pe``); ``metric`` marks a
    model whose output is depth in metres rather than relative disparity (same architecture).
    """

    encoder: str
    embed_dim: int
    depth: int
    num_heads: int
    intermediate_layers: tuple[int, ...]
    features: int
    out_channels: tuple[int, ...]
    num_frames: int = 32
    metric: bool = False
    mlp_ratio: float = 4.0
    img_size: int = 518
    layer_scale_init: float = 1.0
    interpolate_offset: float = 0.1
    temporal_heads: int = 8
    temporal_groups: int = 32
    head_micro_batch: int = 4

    def validate(self) -> None:
        """Raise ``ValueError`` for an inconsistent architecture."""
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"{self.encoder}: embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}"
            )
        if len(self.intermediate_layers) != 4 or len(self.out_channels) != 4:
            raise ValueError(f"{self.encoder}: the DPT head needs 4 intermediate layers and 4 out_channels")
        if min(self.intermediate_layers) < 0 or max(self.intermediate_layers) >= self.depth:
            raise ValueError(
                f"{self.encoder}: intermediate_layers {self.intermediate_layers} outside 0..{self.depth - 1}"
            )
        if self.features % 2:
            raise ValueError(f"{self.encoder}: features {self.features} must be even")
        for name, channels in (
            ("out_channels[2]", self.out_channels[2]),
            ("out_channels[3]", self.out_channels[3]),
            ("features", self.features),
        ):
            if channels % self.temporal_groups or channels % self.temporal_heads:
                raise ValueError(
                    f"{self.encoder}: {name}={channels} feeds a temporal module and must be divisible by "
                    f"GroupNorm groups {self.temporal_groups} and heads {self.temporal_heads}"
                )
        if self.num_frames < 1:
            raise ValueError(f"{self.encoder}: num_frames must be >= 1")
        if self.img_size % PATCH_SIZE:
            raise ValueError(f"{self.encoder}: img_size {self.img_size} is not a multiple of {PATCH_SIZE}")

    def __post_init__(self) -> None:
        object.__setattr__(self, "intermediate_layers", tuple(int(i) for i in self.intermediate_layers))
        object.__setattr__(self, "out_channels", tuple(int(c) for c in self.out_channels))
        self.validate()


VDA_CONFIGS: dict[str, VDAConfig] = {
    # Tiny CPU model (not an official size): same architecture, ~4.8M parameters. Used by the tests
    # and as the shipped default; widths keep every temporal module divisible by GroupNorm(32).
    "vitt": VDAConfig(
        "vitt",
        embed_dim=192,
        depth=6,
        num_heads=3,
        intermediate_layers=(1, 2, 4, 5),
        features=32,
        out_channels=(24, 48, 96, 192),
    ),
    "vits": VDAConfig(
        "vits",
        embed_dim=384,
        depth=12,
        num_heads=6,
        intermediate_layers=(2, 5, 8, 11),
        features=64,
        out_channels=(48, 96, 192, 384),
    ),
    "vitb": VDAConfig(
        "vitb",
        embed_dim=768,
        depth=12,
        num_heads=12,
        intermediate_layers=(2, 5, 8, 11),
        features=128,
        out_channels=(96, 192, 384, 768),
    ),
    "vitl": VDAConfig(
        "vitl",
        embed_dim=1024,
        depth=24,
        num_heads=16,
        intermediate_layers=(4, 11, 17, 23),
        features=256,
        out_channels=(256, 512, 1024, 1024),
    ),
}


@dataclass
class FrameFeatures:
    """Per-frame encoder output, the unit the ring buffer caches.

    ``layers``: four tensors (B, T, h*w, C), the final-norm patch tokens of the ViT blocks in
    ``config.intermediate_layers`` (class token dropped; row-major over the patch grid).
    ``patch_hw``: the patch grid (h, w) = (H/14, W/14) of the frames they came from.
    Frame t of every layer depends on frame t alone, so features can be sliced and concatenated
    along T (dimension 1) without changing the result of ``decode``.
    """

    layers: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    patch_hw: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return self.layers[0].shape[1]

    @property
    def image_hw(self) -> tuple[int, int]:
        """Network input size (H, W) the features correspond to."""
        return self.patch_hw[0] * PATCH_SIZE, self.patch_hw[1] * PATCH_SIZE

    def frames(self, index) -> FrameFeatures:
        """Features of the frames selected by ``index`` (a slice, int list or index tensor) along T."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return FrameFeatures(tuple(x[:, index] for x in self.layers), self.patch_hw)  # type: ignore[arg-type]

    @staticmethod
    def cat(items: Sequence[FrameFeatures]) -> FrameFeatures:
        """Concatenate along T; all items must share the patch grid."""
        if not items:
            raise ValueError("nothing to concatenate")
        grids = {f.patch_hw for f in items}
        if len(grids) != 1:
            raise ValueError(f"cannot concatenate features of different patch grids {sorted(grids)}")
        layers = tuple(torch.cat([f.layers[i] for f in items], dim=1) for i in range(4))
        return FrameFeatures(layers, items[0].patch_hw)  # type: ignore[arg-type]

    def to(self, *args, **kwargs) -> FrameFeatures:
        return FrameFeatures(tuple(x.to(*args, **kwargs) for x in self.layers), self.patch_hw)  # type: ignore[arg-type]


class VideoDepthAnything(nn.Module):
    """Video Depth Anything (relative disparity, or metric depth when ``config.metric``).

    Input frames (B, T, 3, H, W) float32, ImageNet-normalised, H and W multiples of 14, T at most
    ``config.num_frames``. Output (B, T, H, W) >= 0: affine-invariant disparity for relative models,
    depth in metres for metric ones.
    """

    def __init__(self, config: VDAConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.pretrained = VisionTransformer(
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            patch_size=PATCH_SIZE,
            img_size=config.img_size,
            mlp_ratio=config.mlp_ratio,
            layer_scale_init=config.layer_scale_init,
            interpolate_offset=config.interpolate_offset,
        )
        self.head = DPTHead(
            config.embed_dim,
            config.features,
            config.out_channels,
            num_frames=config.num_frames,
            temporal_heads=config.temporal_heads,
            temporal_groups=config.temporal_groups,
            micro_batch=config.head_micro_batch,
        )

    @property
    def metric(self) -> bool:
        return self.config.metric

    def encode(self, frames: torch.Tensor) -> FrameFeatures:
        """Run the ViT on every frame independently.

        ``frames`` (B, T, 3, H, W) normalised, H and W multiples of 14 -> :class:`FrameFeatures` with four
        (B, T, H/14 * W/14, embed_dim) tensors.
        """
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"expected frames (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, _, h, w = frames.shape
        if h % PATCH_SIZE or w % PATCH_SIZE:
            raise ValueError(f"frame size {h}x{w} is not a multiple of {PATCH_SIZE}")
        tokens = self.pretrained.forward_intermediates(frames.flatten(0, 1), self.config.intermediate_layers)
        layers = tuple(x.unflatten(0, (b, t)) for x in tokens)
        return FrameFeatures(layers, (h // PATCH_SIZE, w // PATCH_SIZE))  # type: ignore[arg-type]

    def decode(
        self,
        features: FrameFeatures,
        image_hw: tuple[int, int] | None = None,
        temporal: bool = True,
        output_frames: slice | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Run the temporal DPT head on one window of cached features (``causal``: every frame attends
        only to itself and earlier frames, the reference of the causal engine).

        Returns (B, T, H, W) disparity (depth for metric models), bilinearly resized to ``image_hw``
        (default: the network input size) and clamped at 0. ``temporal=False`` skips the temporal
        modules (an image model: each frame alone). ``output_frames`` (a slice along T) returns only
        those frames, (B, T', H, W), equal to the full output sliced but computed for less (see
        :meth:`DPTHead.forward`).
        """
        b, t = features.layers[0].shape[:2]
        if t > self.config.num_frames:
            raise ValueError(f"window of {t} frames exceeds num_frames={self.config.num_frames}")
        tokens = [x.flatten(0, 1) for x in features.layers]
        out = self.head(
            tokens, features.patch_hw, t, temporal=temporal, output_frames=output_frames, causal=causal
        )
        out_hw = tuple(image_hw) if image_hw is not None else features.image_hw
        if tuple(out.shape[-2:]) != out_hw:
            out = F.interpolate(out, size=out_hw, mode="bilinear", align_corners=True)
        return F.relu(out).squeeze(1).unflatten(0, (b, out.shape[0] // b))

    def forward(self, frames: torch.Tensor, temporal: bool = True, causal: bool = False) -> torch.Tensor:
        """(B, T, 3, H, W) normalised frames -> (B, T, H, W) disparity (or metric depth); ``causal``: each
        frame's temporal attention sees only itself and earlier frames (what the causal engine computes)."""
        return self.decode(
            self.encode(frames), image_hw=tuple(frames.shape[-2:]), temporal=temporal, causal=causal
        )


def build_vda(name_or_config: str | VDAConfig = "vitt", **overrides) -> VideoDepthAnything:
    """Build a randomly initialised model from a registry name or a :class:`VDAConfig`.

    ``overrides`` replace config fields, e.g. ``build_vda("vits", metric=True)``. Load weights with
    :func:`endo_depth_model.checkpoint.load_vda_weights`. Build under ``torch.device("meta")`` to
    inspect shapes and parameter counts without allocating memory.
    """
    if isinstance(name_or_config, VDAConfig):
        config = name_or_config
    else:
        try:
            config = VDA_CONFIGS[name_or_config]
        except KeyError:
            raise ValueError(f"unknown VDA config {name_or_config!r}; known: {sorted(VDA_CONFIGS)}") from None
    if "encoder" in overrides:
        raise ValueError(
            f"build_vda(encoder={overrides['encoder']!r}) would only rename the {config.encoder} config: "
            f"pass the size as the first argument, build_vda({overrides['encoder']!r})"
        )
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return VideoDepthAnything(config)
