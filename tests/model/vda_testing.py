"""Model-test helpers: deterministic weights and inputs (no RNG), golden outputs of the official code."""

from __future__ import annotations

import math
import re

import pytest
import torch

NORM_WEIGHT = re.compile(r"(norm\d?|norms\.\d+|ff_norm)\.weight$")


def hash_uniform(n: int, seed: float) -> torch.Tensor:
    """``n`` pseudo-random values in [-1, 1) from the sin-hash ``frac(sin(k * 12.9898 + seed) * 43758.5453)``
    in float64 (no random number generator, so identical on every platform and torch version)."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.frac(torch.sin(k * 12.9898 + seed).mul(43758.5453)).abs() * 2.0 - 1.0


def deterministic_state(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights for every key of ``reference`` from a fixed formula (keys in sorted order).

    The :data:`GOLDEN` values below were produced by loading this state into the official
    DepthAnything/Video-Depth-Anything code; any key set with the same names and shapes gets the
    same numbers.
    """
    out = {}
    for i, key in enumerate(sorted(reference)):
        t = reference[key]
        if key.endswith("pos_encoder.pe"):
            out[key] = t.clone()
            continue
        u = hash_uniform(t.numel(), seed=78.233 * (i + 1)).reshape(t.shape)
        if key.endswith("output_conv2.0.bias"):
            value = 0.5 + 0.05 * u  # keep the ReLUs of the last two convolutions open
        elif key.endswith("output_conv2.2.weight"):
            value = 1e-3 * u.abs()  # positive and small: outputs of order 1
        elif NORM_WEIGHT.search(key):
            value = 1.0 + 0.1 * u
        elif key.endswith("gamma"):
            value = 0.5 + 0.1 * u
        elif key.endswith("bias"):
            value = 0.05 * u
        elif key.startswith("pretrained.") and key.split(".")[1] in ("cls_token", "pos_embed", "mask_token"):
            value = 0.02 * u
        else:
            value = u * math.sqrt(6.0 / t[0].numel())  # He-uniform over the fan-in
        out[key] = value.to(t.dtype)
    return out


def deterministic_frames(b: int, t: int, h: int, w: int) -> torch.Tensor:
    """Frames (B, T, 3, H, W), values in [-2, 2) like normalised images, from the same hash."""
    return (2.0 * hash_uniform(b * t * 3 * h * w, seed=0.5)).reshape(b, t, 3, h, w).float()


# Golden outputs of the official code at commit 4f5ae23: DINOv2("vits") + DPTHeadTemporal(384, 64,
# out_channels=[48, 96, 192, 384]) as in video_depth.py, weights deterministic_state(official.state_dict()),
# input deterministic_frames(1, 3, 42, 56). Rows are frames, columns the pixels in GOLDEN_PIXELS.
# "vda" is VideoDepthAnything.forward; "dav2" is the official image head (video_depth_anything/dpt.py
# DPTHead, i.e. Depth Anything V2) with the same weights on the same encoder features.
GOLDEN_PIXELS = [(0, 0), (20, 30), (41, 55), (10, 5), (33, 12), (5, 50)]
GOLDEN = {
    "vda": {
        "mean": 0.95596600,
        "std": 0.28300068,
        "values": [
            [0.264706, 0.776059, 0.462272, 1.103853, 1.4313, 0.714546],
            [0.250482, 1.037607, 0.425239, 1.285383, 1.573799, 0.840579],
            [0.222169, 0.799533, 0.413257, 1.015504, 1.256251, 0.630547],
        ],
    },
    "dav2": {
        "mean": 0.18463908,
        "std": 0.05305997,
        "values": [
            [0.074308, 0.232197, 0.104734, 0.202759, 0.244243, 0.175093],
            [0.064849, 0.167694, 0.038314, 0.152817, 0.185039, 0.176669],
            [0.05217, 0.215498, 0.107227, 0.197386, 0.267291, 0.128887],
        ],
    },
}


def assert_matches_golden(out: torch.Tensor, golden: dict, atol: float = 2e-5) -> None:
    assert out.shape == (1, 3, 42, 56)
    assert out.mean().item() == pytest.approx(golden["mean"], abs=atol)
    assert out.std().item() == pytest.approx(golden["std"], abs=atol)
    values = [[out[0, t, i, j].item() for i, j in GOLDEN_PIXELS] for t in range(3)]
    assert torch.allclose(torch.tensor(values), torch.tensor(golden["values"]), atol=atol, rtol=0)
