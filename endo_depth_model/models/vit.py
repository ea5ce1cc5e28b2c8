"""DINOv2 Vision Transformer: the per-frame encoder of Video Depth Anything.

Layers follow DINOv2 (patch embed, attention, MLP, layer scale, block) with the module names of the
official checkpoints, so a state dict loads under the ``pretrained.`` prefix unchanged:
``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``mask_token``, ``blocks.{i}.norm1``,
``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.ls1.gamma``, ``blocks.{i}.norm2``,
``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``, ``blocks.{i}.ls2.gamma``, ``norm``.

VDA builds the ViT for 518x518 inputs (a 37x37 grid of 14-pixel patches), uses no register tokens,
LayerScale initialised to 1, and resizes the positional embedding bicubically for other inputs.
The head reads the final-norm output of four intermediate blocks; the class token is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PatchEmbed", "Attention", "Mlp", "LayerScale", "Block", "VisionTransformer"]


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: (N, 3, H, W) -> tokens (N, H/p * W/p, C)."""

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 384):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


#: up to this many tokens (a 224x280 input has 321), bf16 attention on a CPU runs as explicit matmuls
EXPLICIT_ATTENTION_MAX_TOKENS = 640


class Attention(nn.Module):
    """Multi-head self-attention over the token axis, fused ``qkv`` projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if q.dtype == torch.bfloat16 and q.device.type == "cpu" and n <= EXPLICIT_ATTENTION_MAX_TOKENS:
            # CPU bf16 with few tokens: two matmuls and a softmax beat the fused kernel about 2x (one
            # thread, 321 tokens: 0.66 against 1.20 ms at 3 heads, 1.26 against 2.42 ms at 6); from
            # about 1200 tokens on, the fused kernel wins (docs/BENCHMARKS.md, "Causal streaming")
            scores = ((q * (q.shape[-1] ** -0.5)) @ k.transpose(-1, -2)).float()  # softmax in fp32, as fused
            out = torch.softmax(scores, dim=-1).to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Feed-forward ``fc1 -> GELU -> fc2`` (the layers SSB adapts in EndoDAV)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale ``gamma`` (DINOv2 initialises it to 1.0 in VDA)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layer_scale_init: float = 1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DINOv2 ViT without registers, built for ``img_size`` square inputs.

    ``forward_intermediates(x, indices)`` is the only entry point the depth model uses.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 14,
        img_size: int = 518,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1.0,
        interpolate_offset: float = 0.1,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.interpolate_offset = interpolate_offset
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        # Unused at inference; kept because the official checkpoints carry it (strict loading).
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, layer_scale_init) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DINOv2 initialisation: truncated-normal pos-embed and linear weights, tiny cls token."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_embed(self, patch_h: int, patch_w: int) -> torch.Tensor:
        """Positional embedding (1, 1 + patch_h * patch_w, C) for a ``patch_h`` x ``patch_w`` grid.

        Bicubic resize of the stored square grid with DINOv2's scale factors ``(n + offset) / grid``
        (computed in fp32, cast back), exactly as the official code does.
        """
        num_stored = self.pos_embed.shape[1] - 1
        grid = int(math.sqrt(num_stored))
        if patch_h == grid and patch_w == grid:
            return self.pos_embed
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        scale = ((patch_h + self.interpolate_offset) / grid, (patch_w + self.interpolate_offset) / grid)
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", antialias=False)
        if patch_pos.shape[-2:] != (patch_h, patch_w):
            raise RuntimeError(
                f"positional embedding resized to {tuple(patch_pos.shape[-2:])}, "
                f"expected {(patch_h, patch_w)}"
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, patch_h * patch_w, -1)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> tokens (N, 1 + H/14 * W/14, C) with class token and positions."""
        patch_h, patch_w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.interpolate_pos_embed(patch_h, patch_w).to(tokens.dtype)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Final-norm patch tokens of the blocks in ``indices``.

        ``x`` (N, 3, H, W) normalised images, H and W multiples of 14. Returns one (N, H/14 * W/14, C)
        tensor per index, in the order given; blocks after the last index are not run.
        """
        wanted = {int(i): k for k, i in enumerate(indices)}
        if min(wanted) < 0 or max(wanted) >= len(self.blocks):
            raise ValueError(f"block indices {list(indices)} outside 0..{len(self.blocks) - 1}")
        out: list[torch.Tensor | None] = [None] * len(indices)
        tokens = self.prepare_tokens(x)
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            tokens = block(tokens)
            if i in wanted:
                out[wanted[i]] = self.norm(tokens)[:, 1:]
        return out  # type: ignore[return-value]
