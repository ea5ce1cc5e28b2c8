"""Numeric precision of PyTorch inference: ``fp32``, ``bf16`` (CPU with AMX / AVX512-BF16, or CUDA),
``fp16`` (CUDA), or ``auto``.

``auto`` is bf16 on a CPU that computes bfloat16 natively and fp32 everywhere else. On such a CPU
(Intel Sapphire Rapids and later, AMD Zen 4 and later) oneDNN runs the ViT's matrix products and the
head's convolutions in bf16. On our machine that made VDA-S 1.8x faster per output frame (its encoder
2x) and the shipped model's node pipeline 1.25x, with depth 0.09 % from fp32 on average
(docs/BENCHMARKS.md). On a CPU without it bf16 would be
emulated and slower than fp32, so asking for it there is refused. On CUDA ``auto`` stays fp32: fp16
parity on a GPU has not been measured by us yet; ask for ``fp16`` (or the TensorRT backend) there.
Autocast runs the heavy operators in the lower precision and the outputs come back as fp32. It casts
each fp32 weight of a matrix product or convolution to bf16 again on every call; on a CPU
:func:`cast_weights` does that once (the torch backend and the pipeline's pose network, on copies of the
models): the same rounding of the weights, though oneDNN may pick other kernels and accumulate in
another order (on a test model a quarter of bf16's own difference from fp32, tests/deploy/
test_precision.py); about 5 % less CPU per frame for the node on our machine (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class PrecisionError(ValueError):
    """The requested precision cannot run on this device."""


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AMX tiles or AVX512-BF16)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - an old torch without the probe: assume no native bf16
            continue
    return False


def resolve_precision(precision: str, device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` on ``device``; :class:`PrecisionError` when it
    cannot run there (fp16 on CPU; bf16 on a CPU without native bf16)."""
    import torch

    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r} must be one of {PRECISIONS}")
    kind = torch.device(device).type
    if precision == "auto":
        return "bf16" if kind == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and kind != "cuda":
        raise PrecisionError("fp16 autocast needs a CUDA device; on CPU use bf16 (AMX / AVX512-BF16) or fp32")
    if precision == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
        raise PrecisionError(
            "bf16 on this CPU would be emulated (no AMX or AVX512-BF16) and slower than fp32; use fp32"
        )
    return precision


def compute_dtype(precision: str):
    """The torch dtype a resolved ``precision`` computes in: float32, bfloat16 or float16."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cast_weights(module, precision: str, keep: tuple[str, ...] = ()):
    """Store the weights and biases of ``module``'s linear and convolution layers in the dtype autocast
    would cast them to on every call (bf16 / fp16), in place; fp32 leaves them as they are. ``keep``:
    qualified names of submodules that stay fp32 (those run with autocast off, e.g. the head's last
    convolutions). Norm layers and buffers are never touched. Convolution weights in channels-last
    layout keep it. Returns ``module``."""
    import torch

    if precision == "fp32":
        return module
    dtype = compute_dtype(precision)
    for name, layer in module.named_modules():
        if any(name == k or name.startswith(k + ".") for k in keep):
            continue
        # _ConvNd: every convolution, transposed ones too
        if isinstance(layer, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            for p in (layer.weight, layer.bias):
                if p is not None:
                    p.data = p.data.to(dtype)  # preserve_format: a channels-last weight stays channels-last
    return module


def autocast(precision: str, device):
    """Context manager running the enclosed PyTorch code at a resolved ``precision`` (fp32: no-op)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=compute_dtype(precision))
