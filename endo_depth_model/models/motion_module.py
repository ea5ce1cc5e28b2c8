"""Temporal (motion) module of Video Depth Anything: attention across frames at every pixel.

One module, with the official key names under ``temporal_transformer.``::

    norm                GroupNorm(32, C, eps=1e-6)
    proj_in             Linear(C, C)
    transformer_blocks.0
        attention_blocks.{0,1}   to_q / to_k / to_v (no bias), to_out.0, pos_encoder.pe (1, 32, C)
        norms.{0,1}              LayerNorm(C) before each attention
        ff.net.0.proj            Linear(C, 8C)  (GEGLU: value and gate halves of 4C each)
        ff.net.2                 Linear(4C, C)  (the feed-forward output SSB adapts)
        ff_norm                  LayerNorm(C)
    proj_out            Linear(C, C), zero-initialised so that a fresh module is the identity

Each pixel is a sequence of T frames; attention has 8 heads and never mixes pixels. The sinusoidal
position encoding is added to the LayerNorm output before q/k/v in every attention block.

Shape constraints: C divisible by 32 (GroupNorm groups) and by the number of heads; T <= max_len.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "PositionalEncoding",
    "TemporalAttention",
    "GEGLU",
    "FeedForward",
    "TemporalTransformerBlock",
    "TemporalTransformer",
    "TemporalModule",
]


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding, buffer ``pe`` (1, max_len, C): sin on even, cos on odd channels."""

    def __init__(self, dim: int, max_len: int = 32):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, T, C) -> ``x + pe[:, :T]``."""
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention over the frame axis of (N, T, C) sequences (N = batch x pixels)."""

    def __init__(self, dim: int, num_heads: int = 8, max_len: int = 32):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """``causal``: each frame attends only to itself and earlier frames (the streaming reference)."""
        n, t, c = x.shape
        x = self.pos_encoder(x)
        q, k, v = (
            proj(x).reshape(n, t, self.num_heads, c // self.num_heads).transpose(1, 2)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(n, t, c)
        return self.to_out[1](self.to_out[0](out))

    def step(self, y, cache_k, cache_v, positions, key_bias, slot: int | None = None):
        """One causal step for the newest frame.

        ``y`` (N, 1, C): the newest frame's attention input (LayerNorm output, before the position
        encoding). The projections have no bias, so ``to_k(y + pe) = to_k(y) + to_k(pe)``: the cache
        holds the position-free projections ``cache_k = to_k(y)``, ``cache_v = to_v(y)`` (N, L, C) of up to
        L earlier frames, right-aligned (the newest cached frame last), and the position terms are added
        for the slots' current positions, so a sliding window costs no re-projection. ``positions``
        (L + 1,) long: each slot's position in the window (cached slots, then the newest frame);
        ``key_bias`` (L + 1,) float: 0 for valid slots, -inf for empty ones. Returns the newest frame's
        attention output (N, 1, C) and the next caches (oldest slot dropped, the newest appended).

        ``slot`` (eager inference only): the caches are ring buffers of L + 1 slots, (N, L + 1, C), and
        the newest frame's projections are written into ``slot`` in place; ``positions`` and
        ``key_bias`` then describe the slots as they lie in the ring (:func:`endo_depth_model.causal.
        ring_inputs`). Attention is a sum over slots, so the order of the slots does not matter, only
        their positions: the same result without copying every cache per frame (the copies were about
        a quarter of the causal step on our CPU). Returns the two buffers themselves as the next caches.
        """
        n, _, c = y.shape
        h, d = self.num_heads, c // self.num_heads
        pe = self.pos_encoder.pe[0].index_select(0, positions).to(y.dtype)  # (L + 1, C)
        if slot is None:
            keys = torch.cat([cache_k, self.to_k(y)], dim=1)  # (N, L + 1, C), position-free
            values = torch.cat([cache_v, self.to_v(y)], dim=1)
            pe_new, nxt = pe[-1], (keys[:, 1:], values[:, 1:])
        else:
            cache_k[:, slot] = self.to_k(y)[:, 0]
            cache_v[:, slot] = self.to_v(y)[:, 0]
            keys, values = cache_k, cache_v
            pe_new, nxt = pe[slot], (cache_k, cache_v)
        # One query per pixel with a few channels per head: as (N x heads) batched products of 1 x d by
        # d x (L + 1) they are slow on CPU (tiny GEMMs, strided copies). Instead each pixel's query becomes
        # a block-diagonal (heads, C) matrix, so the key and value products are one batched GEMM per pixel
        # over all heads, straight on the cached (N, L + 1, C) tensors; the off-diagonal blocks are
        # dropped afterwards. The position terms are separate small GEMMs: q . (k + pk) = q . k + q . pk,
        # and sum_j a_j (v_j + pv_j) = sum_j a_j v_j + sum_j a_j pv_j. The vitt temporal modules went from
        # 41.2 to 29.7 ms per frame against adding the positions to the whole cache (one thread,
        # benchmarks/node_profile.py, results node_profile_bf16_224x280_causal_s9{_before,}.json); equal
        # to 3e-7 in fp32 (tests/inference/test_causal.py checks the engine against the masked window).
        q = self.to_q(y + pe_new).float().reshape(n, h, d) * (d**-0.5)
        pk = self.to_k(pe).float().reshape(-1, h, d).permute(1, 2, 0)  # (h, d, L + 1)
        pv = self.to_v(pe).float().reshape(-1, h, d).transpose(0, 1)  # (h, L + 1, d)
        with torch.autocast(device_type=y.device.type, enabled=False):
            eye = torch.eye(h, dtype=torch.float32, device=y.device)
            blocks = (q.unsqueeze(2) * eye.view(1, h, h, 1)).reshape(n, h, c)
            scores = torch.bmm(blocks.to(keys.dtype), keys.transpose(1, 2)).float()  # (N, h, L + 1)
            scores = scores + torch.matmul(q.transpose(0, 1), pk).transpose(0, 1)
            attn = torch.softmax(scores + key_bias.float().view(1, 1, -1), dim=-1)
            mixed = torch.bmm(attn.to(values.dtype), values).float().reshape(n, h, h, d)
            out = (mixed * eye.view(1, h, h, 1)).sum(2)  # (N, h, d): each head's own channels
            out = out + torch.matmul(attn.transpose(0, 1), pv).transpose(0, 1)
            out = out.reshape(n, 1, c).to(y.dtype)
        return self.to_out[1](self.to_out[0](out)), *nxt


class GEGLU(nn.Module):
    """``proj`` to 2 x hidden, then value * GELU(gate)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net = [GEGLU(C -> 4C), Dropout, Linear(4C -> C)]`` (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalTransformerBlock(nn.Module):
    """``num_attention_blocks`` x [LayerNorm -> temporal attention -> residual], then
    [LayerNorm -> GEGLU feed-forward -> residual]."""

    def __init__(self, dim: int, num_heads: int = 8, num_attention_blocks: int = 2, max_len: int = 32):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, num_heads, max_len) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, num_frames: int, causal: bool = False) -> torch.Tensor:
        """``x`` (B*T, P, C) frame-major tokens -> same shape."""
        bt, p, c = x.shape
        b = bt // num_frames
        # (B*T, P, C) -> (B*P, T, C): every pixel becomes one sequence over time.
        x = x.reshape(b, num_frames, p, c).transpose(1, 2).reshape(b * p, num_frames, c)
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x), causal) + x
        x = self.ff(self.ff_norm(x)) + x
        # contiguous: a strided view would make proj_out's GEMM path (and its last bits) depend on
        # whether its weight requires grad, so an SSB-adapted (frozen) model would not be bit-exact
        return x.reshape(b, p, num_frames, c).transpose(1, 2).reshape(bt, p, c).contiguous()

    def step(self, x, caches, positions, key_bias, slot=None):
        """The newest frame only: ``x`` (P, 1, C); ``caches`` two (P, L, C) per attention block (keys,
        values; (P, L + 1, C) ring buffers with ``slot``). Returns (x, next caches)."""
        out = []
        for i, (attention, norm) in enumerate(zip(self.attention_blocks, self.norms, strict=True)):
            a, k, v = attention.step(norm(x), caches[2 * i], caches[2 * i + 1], positions, key_bias, slot)
            x = a + x
            out += [k, v]
        x = self.ff(self.ff_norm(x)) + x
        return x, out


class TemporalTransformer(nn.Module):
    """GroupNorm -> proj_in -> transformer blocks -> proj_out, plus the input as residual."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 8,
        num_layers: int = 1,
        num_attention_blocks: int = 2,
        norm_groups: int = 32,
        max_len: int = 32,
    ):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(channels, num_heads, num_attention_blocks, max_len)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, num_frames: int, causal: bool = False) -> torch.Tensor:
        bt, c, h, w = x.shape
        hidden = self.norm(x).permute(0, 2, 3, 1).reshape(bt, h * w, c)
        hidden = self.proj_in(hidden)
        for block in self.transformer_blocks:
            hidden = block(hidden, num_frames, causal)
        hidden = self.proj_out(hidden)
        return hidden.reshape(bt, h, w, c).permute(0, 3, 1, 2) + x

    def step(self, x, caches, positions, key_bias, slot=None):
        """Causal step for one frame ``x`` (1, C, H, W); ``caches``: two (H*W, L, C) per attention block
        (keys, values) of every transformer block, in order (ring buffers with ``slot``, see
        :meth:`TemporalAttention.step`). Returns (output (1, C, H, W), next caches)."""
        _, c, h, w = x.shape
        hidden = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(h * w, 1, c))
        out, k = [], 0
        for block in self.transformer_blocks:
            n = 2 * len(block.attention_blocks)
            hidden, nxt = block.step(hidden, caches[k : k + n], positions, key_bias, slot)
            out += nxt
            k += n
        hidden = self.proj_out(hidden)
        return hidden.reshape(1, h, w, c).permute(0, 3, 1, 2) + x, out


class TemporalModule(nn.Module):
    """Identity-initialised temporal module on a (B*T, C, H, W) feature map of T-frame windows."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 8,
        num_layers: int = 1,
        num_attention_blocks: int = 2,
        norm_groups: int = 32,
        max_len: int = 32,
    ):
        super().__init__()
        if channels % norm_groups:
            raise ValueError(
                f"temporal module channels {channels} not divisible by GroupNorm groups {norm_groups}"
            )
        if channels % num_heads:
            raise ValueError(f"temporal module channels {channels} not divisible by {num_heads} heads")
        if channels % 2:
            raise ValueError(f"temporal module channels {channels} must be even (sinusoidal encoding)")
        self.max_len = max_len
        self.temporal_transformer = TemporalTransformer(
            channels, num_heads, num_layers, num_attention_blocks, norm_groups, max_len
        )
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero ``proj_out`` so the module returns its input unchanged."""
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    @property
    def cache_slots(self) -> int:
        """Cache tensors of a causal step: keys and values of every attention block."""
        return 2 * sum(len(b.attention_blocks) for b in self.temporal_transformer.transformer_blocks)

    def step(self, x, caches, positions, key_bias, slot=None):
        """Causal step (see :meth:`TemporalTransformer.step`)."""
        return self.temporal_transformer.step(x, caches, positions, key_bias, slot)

    def forward(self, x: torch.Tensor, num_frames: int, causal: bool = False) -> torch.Tensor:
        """``x`` (B*T, C, H, W), frames of each clip contiguous -> same shape."""
        if num_frames > self.max_len:
            raise ValueError(
                f"window of {num_frames} frames exceeds the temporal module's maximum {self.max_len}"
            )
        if x.shape[0] % num_frames:
            raise ValueError(f"batch {x.shape[0]} is not a whole number of {num_frames}-frame windows")
        return self.temporal_transformer(x, num_frames, causal)
