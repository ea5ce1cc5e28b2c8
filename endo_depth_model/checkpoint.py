"""Safe weight loading and saving for Video Depth Anything.

Files are read with ``torch.load(weights_only=True)`` (``.pth``/``.pt``/``.bin``/``.ckpt``) or
safetensors (``.safetensors``); nothing is ever unpickled beyond tensors and plain containers.
Accepted layouts:

* official VDA checkpoints (``pretrained.*`` + ``head.*``), loaded strictly;
* Depth Anything V2 checkpoints (``pretrained.*`` + ``depth_head.*``): the head is renamed to
  ``head.*`` and the four temporal modules, absent from such files, are reset to identity;
* either of the above wrapped in ``{"state_dict": ...}`` / ``{"model": ...}`` or with a ``module.``
  (DataParallel) prefix.

Every failure is a :class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

__all__ = [
    "CheckpointError",
    "LoadReport",
    "read_state_dict",
    "describe_vda_state",
    "load_vda_weights",
    "save_safetensors",
]

TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}
_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict")
_LIST_LIMIT = 8


class CheckpointError(RuntimeError):
    """A weight file could not be used; ``path`` is the file, ``problem`` says why."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class LoadReport:
    """What :func:`load_vda_weights` did: ``source`` is ``"vda"`` or ``"depth_anything_v2"``."""

    path: Path
    source: str
    num_tensors: int
    temporal_reset: bool


def _short_list(names) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else ""
    return ", ".join(names[:_LIST_LIMIT]) + more


def _unwrap(path: Path, obj) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = dict(obj)
            if all(k.startswith("module.") for k in state):
                state = {k[len("module.") :]: v for k, v in state.items()}
            return state
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if isinstance(obj, Mapping):
        raise CheckpointError(
            path, f"no state dict of tensors found (top-level keys: {_short_list(map(str, obj))})"
        )
    raise CheckpointError(path, f"expected a state dict, found a {type(obj).__name__}")


QSCALE_SUFFIX = ".__int8_scale"


def quantize_int8(state: Mapping[str, torch.Tensor], min_numel: int = 4096) -> dict[str, torch.Tensor]:
    """Weight-only int8 storage: every float tensor with >= 2 dims and ``min_numel`` values becomes int8
    with one float32 scale per output channel (``name + QSCALE_SUFFIX``, symmetric, max-abs / 127); the
    rest is stored as float16. About 4x smaller than float32; :func:`read_state_dict` restores float32.
    Each restored value is within half a quantisation step (scale / 2) of the original."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if t.is_floating_point() and t.dim() >= 2 and t.numel() >= min_numel:
            flat = t.float().reshape(t.shape[0], -1)
            scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            out[name] = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(t.shape)
            out[name + QSCALE_SUFFIX] = scale.contiguous()
        elif t.is_floating_point():
            out[name] = t.to(torch.float16).contiguous()
        else:
            out[name] = t.contiguous()
    return out


def dequantize_int8(state: dict[str, torch.Tensor], path: str | Path = "<memory>") -> dict[str, torch.Tensor]:
    """Inverse of :func:`quantize_int8` (a state dict without int8 tensors is returned unchanged)."""
    if not any(k.endswith(QSCALE_SUFFIX) for k in state):
        return state
    out = {}
    for name, t in state.items():
        if name.endswith(QSCALE_SUFFIX):
            continue
        scale = state.get(name + QSCALE_SUFFIX)
        if scale is not None:
            if t.dtype != torch.int8 or scale.numel() != t.shape[0]:
                raise CheckpointError(
                    path, f"corrupt int8 tensor {name}: {t.dtype}, scale {tuple(scale.shape)}"
                )
            out[name] = (t.float().reshape(t.shape[0], -1) * scale.float()[:, None]).reshape(t.shape)
        else:
            out[name] = t.float() if t.is_floating_point() else t
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (name -> CPU tensor) from ``.safetensors`` or a ``weights_only`` torch file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise CheckpointError(path, f"not a valid safetensors file ({exc})") from exc
        return dequantize_int8(state, path)
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            if "Weights only load failed" in message:
                detail = next((line.strip() for line in message.splitlines() if "nsupported" in line), "")
                raise CheckpointError(
                    path,
                    "refused: the file contains pickled Python objects beyond tensors and plain containers, "
                    "which are not loaded for safety (torch.load weights_only=True). Re-save it as a plain "
                    "state dict or as .safetensors." + (f" Detail: {detail}" if detail else ""),
                ) from exc
            raise CheckpointError(
                path, f"not a PyTorch checkpoint ({message.splitlines()[0] if message else exc!r})"
            ) from exc
        except Exception as exc:  # corrupt zip, truncated or foreign files raise assorted errors
            raise CheckpointError(
                path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
            ) from exc
        return _unwrap(path, obj)
    raise CheckpointError(
        path, f"unsupported file type {suffix or '(none)'!r}; expected .safetensors, .pth or .pt"
    )


def describe_vda_state(state: Mapping[str, torch.Tensor]) -> str:
    """Human-readable size of a VDA/DA-V2 state dict, e.g. ``'vits' (embed 384, 12 blocks, features 64)``."""
    from .models import VDA_CONFIGS

    pos = state.get("pretrained.pos_embed")
    embed = int(pos.shape[-1]) if pos is not None else None
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"pretrained\.blocks\.(\d+)\.", k)] if m}
    depth = max(blocks) + 1 if blocks else None
    rn = state.get("head.scratch.layer1_rn.weight", state.get("depth_head.scratch.layer1_rn.weight"))
    features = int(rn.shape[0]) if rn is not None else None
    name = next(
        (n for n, c in VDA_CONFIGS.items() if (c.embed_dim, c.depth, c.features) == (embed, depth, features)),
        None,
    )
    label = f"'{name}'" if name else "an unknown size"
    return f"{label} (embed {embed}, {depth} blocks, features {features})"


def load_vda_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load VDA or Depth Anything V2 weights from ``path`` into ``model`` (a ``VideoDepthAnything``).

    With ``strict`` every model tensor must be present (except the temporal modules of a DA-V2 file)
    and no extra tensor may appear. Shapes must match; a checkpoint of another size raises a
    :class:`CheckpointError` naming both sizes. Works on SSB-adapted models too (base weights go to
    the wrapped ``base_layer``; the SSB vectors are untouched). Returns a :class:`LoadReport`.
    """
    path = Path(path)
    state = read_state_dict(path)
    if any(".lora_" in k for k in state):
        raise CheckpointError(
            path,
            "holds SSB adapter vectors: load base weights here and the adapter with "
            "endo_depth_model.ssb.load_adapter (or merge_ssb before saving)",
        )
    source = "vda"
    if any(k.startswith("depth_head.") for k in state):
        source = "depth_anything_v2"
        state = {
            ("head." + k[len("depth_head.") :]) if k.startswith("depth_head.") else k: v
            for k, v in state.items()
        }

    # Model keys without SSB wrappers: "x.base_layer.weight" -> "x.weight".
    model_state = model.state_dict()
    name_map = {k.replace(".base_layer.", "."): k for k in model_state if ".lora_" not in k}
    optional = (
        {k for k in name_map if k.startswith("head.motion_modules.")}
        if source == "depth_anything_v2"
        else set()
    )

    mismatched = [
        k
        for k, v in state.items()
        if k in name_map and tuple(v.shape) != tuple(model_state[name_map[k]].shape)
    ]
    if mismatched:
        model_desc = describe_vda_state({k: model_state[v] for k, v in name_map.items()})
        raise CheckpointError(
            path,
            f"checkpoint is {describe_vda_state(state)} but the model is {model_desc}: "
            f"{len(mismatched)} tensor shape(s) differ, e.g. {_short_list(mismatched)}. Build the model "
            "with the matching config.",
        )
    missing = set(name_map) - set(state) - optional
    unexpected = set(state) - set(name_map)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short_list(unexpected)}")
        raise CheckpointError(path, "does not match the model (" + "; ".join(parts) + ")")

    target = {name_map[k]: v for k, v in state.items() if k in name_map}
    model.load_state_dict(target, strict=False)
    temporal_reset = False
    if source == "depth_anything_v2":
        for module in model.head.motion_modules:
            module.reset_to_identity()
        temporal_reset = True
    return LoadReport(path=path, source=source, num_tensors=len(target), temporal_reset=temporal_reset)


def save_safetensors(
    state: nn.Module | Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a module's state dict (or a state dict) to ``path`` as safetensors; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    if isinstance(state, nn.Module):
        state = state.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path
