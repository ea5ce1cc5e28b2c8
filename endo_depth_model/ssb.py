"""SSB adapters (Si, Yang, Shen 2024) on Video Depth Anything, registered with ``peft``.

On a frozen ``nn.Linear`` SSB learns two vectors and uses ``W' = diag(s_out) . W . diag(s_in)``; the
bias is untouched. Both vectors start at ones, so an adapted model equals its base model exactly.

EndoDAV adapts only feed-forward layers, in two groups that train in alternation:

* ``spatial``: every ViT block's ``mlp.fc1`` and ``mlp.fc2`` (``pretrained.blocks.{i}.mlp.fc{1,2}``);
* ``temporal``: each temporal module's feed-forward output
  (``head.motion_modules.{j}.temporal_transformer.transformer_blocks.{k}.ff.net.2``).

On ``vits`` that is 46,080 spatial + 3,520 temporal trainable values.

``peft`` has no SSB tuner; :class:`SSBLinear` is a custom LoRA layer registered through
``LoraConfig._register_custom_module({nn.Linear: SSBLinear})`` and injected with
``peft.inject_adapter_in_model``, which keeps the model's own class and key names (an adapted
layer's weight moves to ``<layer>.base_layer.weight``; the vectors are ``<layer>.lora_ssb_in.<adapter>``
and ``<layer>.lora_ssb_out.<adapter>``). The registration is not saved with the adapter, so
:func:`load_adapter` registers it again before injecting.

Adapter files are safetensors holding only the vectors (``<layer>.lora_ssb_in`` / ``.lora_ssb_out``)
with metadata ``format=endo_depth.ssb`` and the groups; :func:`merge_ssb` folds the vectors into
the weights and restores the official key names for export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge

from .checkpoint import CheckpointError

__all__ = [
    "SSBConfig",
    "SSBLinear",
    "GROUP_PATTERNS",
    "apply_ssb",
    "set_trainable_groups",
    "ssb_layers",
    "save_adapter",
    "load_adapter",
    "merge_ssb",
    "parameter_report",
]

GROUP_PATTERNS: dict[str, str] = {
    "spatial": r"pretrained\.blocks\.\d+\.mlp\.fc[12]",
    "temporal": r"head\.motion_modules\.\d+\.temporal_transformer\.transformer_blocks\.\d+\.ff\.net\.2",
}
ADAPTER_FORMAT = "endo_depth.ssb"
ADAPTER_VERSION = "1"


@dataclass(frozen=True)
class SSBConfig:
    """Which groups to adapt and the peft adapter name."""

    groups: tuple[str, ...] = ("spatial", "temporal")
    adapter_name: str = "default"

    def __post_init__(self) -> None:
        groups = tuple(dict.fromkeys(self.groups))
        unknown = [g for g in groups if g not in GROUP_PATTERNS]
        if unknown or not groups:
            raise ValueError(
                f"SSB groups must be a non-empty subset of {sorted(GROUP_PATTERNS)}, got {list(self.groups)}"
            )
        object.__setattr__(self, "groups", groups)

    @property
    def target_regex(self) -> str:
        """Full-match regex over module names selecting every layer of the chosen groups."""
        return "|".join(f"(?:{GROUP_PATTERNS[g]})" for g in self.groups)

    def to_lora_config(self) -> LoraConfig:
        """peft config targeting the groups, with :class:`SSBLinear` registered for ``nn.Linear``."""
        config = LoraConfig(
            r=1, lora_alpha=1, lora_dropout=0.0, bias="none", target_modules=self.target_regex
        )
        config._register_custom_module({nn.Linear: SSBLinear})
        return config


def group_of(module_name: str) -> str | None:
    """SSB group of a (base) module name, or ``None``."""
    for group, pattern in GROUP_PATTERNS.items():
        if re.fullmatch(pattern, module_name):
            return group
    return None


class SSBLinear(nn.Module, LoraLayer):
    """``y = x . (s_out[:, None] * W * s_in[None, :])^T + b`` around a frozen ``nn.Linear``.

    peft custom LoRA layer: the vectors live in ``ParameterDict``s keyed by adapter name whose names
    start with ``lora_`` (peft's adapter prefix), and ``merge``/``unmerge`` follow peft's contract.
    """

    adapter_layer_names = ("lora_ssb_in", "lora_ssb_out")
    other_param_names = ()

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LoraConfig | None = None, **kwargs):
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self.lora_ssb_in = nn.ParameterDict({})
        self.lora_ssb_out = nn.ParameterDict({})
        self._active_adapter = adapter_name
        self.update_layer(adapter_name)

    def update_layer(self, adapter_name: str, *args, **kwargs) -> None:
        """Add adapter ``adapter_name`` with both vectors at ones (the identity)."""
        weight = self.get_base_layer().weight
        self.lora_ssb_in[adapter_name] = nn.Parameter(
            torch.ones(self.in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_ssb_out[adapter_name] = nn.Parameter(
            torch.ones(self.out_features, dtype=weight.dtype, device=weight.device)
        )
        self.set_adapter(self.active_adapters)

    def scaled_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        s_in = self.lora_ssb_in[adapter_name]
        s_out = self.lora_ssb_out[adapter_name]
        return s_out.to(weight.dtype)[:, None] * weight * s_in.to(weight.dtype)[None, :]

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``W' - W`` for the current base weight (peft's notion of an adapter's contribution)."""
        weight = self.get_base_layer().weight
        return self.scaled_weight(weight, adapter_name) - weight

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold the active adapters' vectors into the base weight."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base = self.get_base_layer()
        for name in adapter_names:
            if name not in self.lora_ssb_in:
                continue
            merged = self.scaled_weight(base.weight.data, name)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"NaNs or infs when merging SSB adapter {name!r}")
            base.weight.data = merged
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Undo :meth:`merge` by dividing the vectors back out (fails if a vector has zeros)."""
        base = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name not in self.lora_ssb_in:
                continue
            s_in, s_out = self.lora_ssb_in[name].data, self.lora_ssb_out[name].data
            if (s_in == 0).any() or (s_out == 0).any():
                raise ValueError(f"cannot unmerge SSB adapter {name!r}: a scale vector has zeros")
            base.weight.data = base.weight.data / (s_out[:, None] * s_in[None, :]).to(base.weight.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.get_base_layer()
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return base(x, *args, **kwargs)
        if self.merged:
            return base(x, *args, **kwargs)
        weight = base.weight
        for name in self.active_adapters:
            if name in self.lora_ssb_in:
                weight = self.scaled_weight(weight, name)
        return F.linear(x, weight, base.bias)

    def __repr__(self) -> str:
        return "ssb." + super().__repr__()


# ---- model-level API --------------------------------------------------------------------------------


def ssb_layers(model: nn.Module) -> Iterator[tuple[str, str, SSBLinear]]:
    """Yield ``(module_name, group, layer)`` for every SSB layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, SSBLinear):
            yield name, group_of(name) or "other", module


def apply_ssb(
    model: nn.Module, groups: Iterable[str] = ("spatial", "temporal"), config: SSBConfig | None = None
) -> nn.Module:
    """Wrap the target layers of ``groups`` in :class:`SSBLinear` (in place) and return ``model``.

    Afterwards every base parameter is frozen and the SSB vectors of all adapted groups are trainable
    (use :func:`set_trainable_groups` to alternate). The adapted model's output equals the base model's.
    """
    config = config or SSBConfig(groups=tuple(groups))
    if any(True for _ in ssb_layers(model)):
        raise ValueError("model already has SSB layers; merge_ssb it first or load_adapter into it")
    # peft also records its config as ``model.peft_config`` (kept for peft's own helpers).
    inject_adapter_in_model(config.to_lora_config(), model, adapter_name=config.adapter_name)
    found = {group for _, group, _ in ssb_layers(model)}
    missing = set(config.groups) - found
    if missing:
        raise ValueError(f"no layers found for SSB group(s) {sorted(missing)}")
    set_trainable_groups(model, spatial="spatial" in found, temporal="temporal" in found)
    return model


def set_trainable_groups(model: nn.Module, spatial: bool, temporal: bool) -> None:
    """Make the SSB vectors of each group trainable or frozen; base weights stay frozen.

    Raises ``ValueError`` when asked to train a group the model has no SSB layers for.
    """
    wanted = {"spatial": spatial, "temporal": temporal}
    present = set()
    for _, group, layer in ssb_layers(model):
        present.add(group)
        for param in layer.base_layer.parameters():
            param.requires_grad_(False)
        for vectors in (layer.lora_ssb_in, layer.lora_ssb_out):
            for param in vectors.values():
                param.requires_grad_(bool(wanted.get(group, False)))
    absent = [g for g, on in wanted.items() if on and g not in present]
    if absent:
        raise ValueError(f"model has no SSB layers in group(s) {absent}")


def _adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Vectors keyed ``<layer>.lora_ssb_in`` / ``<layer>.lora_ssb_out`` (adapter name dropped)."""
    state = {}
    for name, _, layer in ssb_layers(model):
        for attr in SSBLinear.adapter_layer_names:
            vectors = getattr(layer, attr)
            if len(vectors) != 1:
                raise ValueError(f"{name}: expected one SSB adapter, found {list(vectors)}")
            state[f"{name}.{attr}"] = next(iter(vectors.values()))
    return state


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write only the SSB vectors of ``model`` to a safetensors file; returns the path."""
    from .checkpoint import save_safetensors

    state = _adapter_state(model)
    if not state:
        raise ValueError("model has no SSB layers to save")
    groups = sorted({group for _, group, _ in ssb_layers(model)})
    metadata = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "groups": ",".join(groups)}
    return save_safetensors(state, path, metadata)


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Load SSB vectors saved by :func:`save_adapter` into ``model`` (in place) and return it.

    A model without SSB layers is adapted first with the groups recorded in the file (registering
    the custom peft module again). Every vector must match a layer by name and shape.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(path, f"not a valid safetensors file ({exc})") from exc
    if metadata.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(
            path,
            f"not an SSB adapter file (metadata format={metadata.get('format')!r}, "
            f"expected {ADAPTER_FORMAT!r})",
        )
    groups = tuple(g for g in metadata.get("groups", "").split(",") if g)
    if not any(True for _ in ssb_layers(model)):
        apply_ssb(model, groups=groups)
    current = _adapter_state(model)
    missing, unexpected = set(current) - set(state), set(state) - set(current)
    if missing or unexpected:
        raise CheckpointError(
            path,
            f"adapter does not match the model: {len(missing)} missing "
            f"({sorted(missing)[:4]}), {len(unexpected)} unexpected ({sorted(unexpected)[:4]})",
        )
    wrong = [k for k in state if state[k].shape != current[k].shape]
    if wrong:
        raise CheckpointError(
            path, f"adapter vectors of another model size: shapes differ for {sorted(wrong)[:4]}"
        )
    with torch.no_grad():
        for key, value in state.items():
            current[key].copy_(value)
    return model


def merge_ssb(model: nn.Module) -> nn.Module:
    """Fold every SSB layer into its base ``nn.Linear`` and put that back (in place; returns ``model``).

    The result has the official key names and computes the adapted function. Parameters keep their
    ``requires_grad`` flags (base weights stay frozen).
    """
    for name, _, layer in list(ssb_layers(model)):
        layer.merge()
        base = layer.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, (nn.ModuleList, nn.Sequential)):
            parent[int(child)] = base
        else:
            setattr(parent, child, base)
    model.__dict__.pop("peft_config", None)  # no adapters left for peft's helpers to find
    return model


def parameter_report(model: nn.Module) -> dict:
    """Parameter counts of ``model``: ``total`` (all parameters, SSB vectors included), ``trainable``,
    ``trainable_spatial`` and ``trainable_temporal`` (trainable SSB values per group) and ``percent``
    (100 * trainable / total)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_group = {"spatial": 0, "temporal": 0}
    for _, group, layer in ssb_layers(model):
        if group in per_group:
            per_group[group] += sum(
                p.numel()
                for attr in SSBLinear.adapter_layer_names
                for p in getattr(layer, attr).values()
                if p.requires_grad
            )
    return {
        "total": total,
        "trainable": trainable,
        "trainable_spatial": per_group["spatial"],
        "trainable_temporal": per_group["temporal"],
        "percent": 100.0 * trainable / total if total else 0.0,
    }
