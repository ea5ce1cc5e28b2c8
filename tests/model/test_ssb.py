"""SSB adapters through peft: identity at init, exact counts, group toggling, save/load, merge."""

from __future__ import annotations

import copy

import pytest
import torch
from peft.tuners.lora.layer import LoraLayer
from safetensors import safe_open

from endo_depth_model import ssb
from endo_depth_model.checkpoint import CheckpointError, load_vda_weights, save_safetensors
from endo_depth_model.models import build_vda

VITS_PARAMS = 29_035_137  # official count, see test_vda.py


def randomise_vectors(model, seed=0, spread=0.2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, _, layer in ssb.ssb_layers(model):
            for vectors in (layer.lora_ssb_in, layer.lora_ssb_out):
                for p in vectors.values():
                    p.copy_(1.0 + spread * torch.randn(p.shape, generator=generator))


@pytest.fixture
def adapted(tiny_model):
    return ssb.apply_ssb(copy.deepcopy(tiny_model))


@pytest.fixture
def frames(det_frames):
    return det_frames(1, 3, 56, 70)


def run(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_adapted_model_equals_base_exactly(tiny_model, adapted, frames):
    assert torch.equal(run(adapted, frames), run(tiny_model, frames))


def test_layers_are_peft_lora_layers_on_the_feed_forward_layers(adapted):
    layers = list(ssb.ssb_layers(adapted))
    assert all(isinstance(layer, LoraLayer) for _, _, layer in layers)
    names = {group: sorted(n for n, g, _ in layers if g == group) for group in ("spatial", "temporal")}
    assert names["spatial"] == sorted(f"pretrained.blocks.{i}.mlp.fc{j}" for i in range(6) for j in (1, 2))
    assert names["temporal"] == [
        f"head.motion_modules.{i}.temporal_transformer.transformer_blocks.0.ff.net.2" for i in range(4)
    ]
    keys = adapted.state_dict()
    assert "pretrained.blocks.0.mlp.fc1.base_layer.weight" in keys
    assert keys["pretrained.blocks.0.mlp.fc1.lora_ssb_in.default"].shape == (192,)
    assert keys["pretrained.blocks.0.mlp.fc1.lora_ssb_out.default"].shape == (768,)
    assert torch.equal(keys["pretrained.blocks.0.mlp.fc1.lora_ssb_in.default"], torch.ones(192))


def test_vits_trainable_counts_and_percentage():
    with torch.device("meta"):
        model = build_vda("vits")
    ssb.apply_ssb(model)
    report = ssb.parameter_report(model)
    assert report["trainable_spatial"] == 46_080 == 12 * (384 + 1536 + 1536 + 384)
    assert report["trainable_temporal"] == 3_520 == 5 * (192 + 384 + 64 + 64)
    assert report["trainable"] == 49_600
    assert report["total"] == VITS_PARAMS + 49_600
    assert report["percent"] == pytest.approx(100 * 49_600 / (VITS_PARAMS + 49_600))
    assert 0.17 < report["percent"] < 0.171


def test_groups_toggle_separately_and_base_stays_frozen(adapted):
    ssb.set_trainable_groups(adapted, spatial=True, temporal=False)
    report = ssb.parameter_report(adapted)
    assert report["trainable_temporal"] == 0 and report["trainable"] == report["trainable_spatial"] > 0
    ssb.set_trainable_groups(adapted, spatial=False, temporal=True)
    report = ssb.parameter_report(adapted)
    assert report["trainable_spatial"] == 0 and report["trainable"] == report["trainable_temporal"] == 5 * (
        96 + 192 + 32 + 32
    )
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_ssb_" in n and "motion_modules" in n for n in trainable)


def test_only_the_trainable_group_receives_gradients(adapted, frames):
    ssb.set_trainable_groups(adapted, spatial=True, temporal=False)
    adapted.train()
    adapted(frames).mean().backward()
    grads = {n: p.grad for n, p in adapted.named_parameters()}
    spatial = [g for n, g in grads.items() if ".lora_ssb_" in n and n.startswith("pretrained.")]
    assert spatial and all(g is not None and g.abs().sum() > 0 for g in spatial)
    assert all(g is None for n, g in grads.items() if not (".lora_ssb_" in n and n.startswith("pretrained.")))


def test_single_group_and_missing_group_errors(tiny_model):
    model = ssb.apply_ssb(copy.deepcopy(tiny_model), groups=("temporal",))
    assert {g for _, g, _ in ssb.ssb_layers(model)} == {"temporal"}
    with pytest.raises(ValueError, match="no SSB layers in group"):
        ssb.set_trainable_groups(model, spatial=True, temporal=False)
    with pytest.raises(ValueError, match="already has SSB layers"):
        ssb.apply_ssb(model)
    with pytest.raises(ValueError, match="SSB groups"):
        ssb.SSBConfig(groups=("attention",))


def test_merged_model_equals_adapted_and_has_official_keys(tiny_model, adapted, frames):
    randomise_vectors(adapted)
    out_adapted = run(adapted, frames)
    assert (out_adapted - run(tiny_model, frames)).abs().max() > 1e-3  # the vectors matter
    merged = ssb.merge_ssb(copy.deepcopy(adapted))
    assert not list(ssb.ssb_layers(merged))
    assert (run(merged, frames) - out_adapted).abs().max().item() <= 1e-5
    assert list(merged.state_dict()) == list(tiny_model.state_dict())
    plain = build_vda("vitt")
    plain.load_state_dict(merged.state_dict(), strict=True)
    assert (run(plain, frames) - out_adapted).abs().max().item() <= 1e-5


def test_adapter_save_load_round_trip(tmp_path, tiny_model, adapted, frames):
    randomise_vectors(adapted, seed=1)
    path = ssb.save_adapter(adapted, tmp_path / "adapter.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert len(keys) == 2 * (12 + 4) and all(k.endswith((".lora_ssb_in", ".lora_ssb_out")) for k in keys)
    assert metadata["format"] == "endo_depth.ssb" and metadata["groups"] == "spatial,temporal"
    assert path.stat().st_size < 100_000  # vectors only, no base weights

    restored = ssb.load_adapter(copy.deepcopy(tiny_model), path)  # adapts the plain model first
    assert torch.equal(run(restored, frames), run(adapted, frames))


def test_adapter_errors(tmp_path, tiny_model, adapted):
    with torch.device("meta"):
        other = ssb.apply_ssb(build_vda("vits"))
    other = other.to_empty(device="cpu")
    wrong_size = ssb.save_adapter(other, tmp_path / "vits_adapter.safetensors")
    with pytest.raises(CheckpointError, match="does not match the model|another model size"):
        ssb.load_adapter(copy.deepcopy(adapted), wrong_size)

    not_adapter = save_safetensors({"a": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not an SSB adapter file"):
        ssb.load_adapter(copy.deepcopy(adapted), not_adapter)

    adapter = ssb.save_adapter(adapted, tmp_path / "adapter.safetensors")
    with pytest.raises(CheckpointError, match="holds SSB adapter vectors"):
        load_vda_weights(build_vda("vitt"), adapter)


def test_base_weights_load_into_an_adapted_model(tmp_path, tiny_model, frames):
    base = save_safetensors(tiny_model, tmp_path / "base.safetensors")
    model = ssb.apply_ssb(build_vda("vitt"))
    load_vda_weights(model, base)
    assert torch.equal(run(model, frames), run(tiny_model, frames))
    assert (
        ssb.parameter_report(model)["trainable"]
        == ssb.parameter_report(model)["trainable_spatial"]
        + ssb.parameter_report(model)["trainable_temporal"]
    )


def test_ssb_layer_formula_merge_unmerge_and_disable():
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 4)
    layer = ssb.SSBLinear(copy.deepcopy(base), "default")
    s_in, s_out = torch.rand(5) + 0.5, torch.rand(4) + 0.5
    with torch.no_grad():
        layer.lora_ssb_in["default"].copy_(s_in)
        layer.lora_ssb_out["default"].copy_(s_out)
        x = torch.randn(7, 5)
        expected = x @ (torch.diag(s_out) @ base.weight @ torch.diag(s_in)).T + base.bias  # bias untouched
        assert torch.allclose(layer(x), expected, atol=1e-6)
        layer.merge()
        assert layer.merged and torch.allclose(
            layer.base_layer.weight, torch.diag(s_out) @ base.weight @ torch.diag(s_in)
        )
        assert torch.allclose(layer(x), expected, atol=1e-6)
        layer.unmerge()
        assert not layer.merged and torch.allclose(layer.base_layer.weight, base.weight, atol=1e-6)
        layer.enable_adapters(False)
        assert torch.equal(layer(x), layer.base_layer(x)) and torch.allclose(layer(x), base(x), atol=1e-6)
