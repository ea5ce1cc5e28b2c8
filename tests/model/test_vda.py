"""Video Depth Anything: key set, parameter counts, numerics against the official code, encode/decode."""

from __future__ import annotations

import re

import pytest
import torch
from vda_testing import GOLDEN, assert_matches_golden

from endo_depth_model.models import VDA_CONFIGS, FrameFeatures, VDAConfig, build_vda

# Parameter counts of the official DepthAnything/Video-Depth-Anything code (sum of parameter sizes of
# DINOv2(model_name) + DPTHeadTemporal, as in video_depth.py; buffers not counted), measured on
# commit 4f5ae23. Our models reproduce them exactly; the issue asks for 0.1 %.
OFFICIAL_PARAMS = {"vits": 29_035_137, "vitb": 114_441_409, "vitl": 384_390_337}
OFFICIAL_TEMPORAL_PARAMS = {"vits": 4_250_048, "vitb": 16_970_624, "vitl": 49_074_688}
ISSUE_PARAMS_M = {"vits": 29.04, "vitb": 114.44, "vitl": 384.39}
OFFICIAL_KEYS = {"vits": 351, "vitb": 351, "vitl": 519}

DOCUMENTED_KEYS = [
    "pretrained.cls_token",
    "pretrained.pos_embed",
    "pretrained.mask_token",
    "pretrained.patch_embed.proj.weight",
    "pretrained.blocks.0.attn.qkv.weight",
    "pretrained.blocks.0.ls1.gamma",
    "pretrained.blocks.11.ls2.gamma",
    "pretrained.blocks.11.mlp.fc2.bias",
    "pretrained.norm.weight",
    "head.projects.3.weight",
    "head.resize_layers.0.weight",
    "head.resize_layers.3.weight",
    "head.scratch.layer4_rn.weight",
    "head.scratch.refinenet1.resConfUnit1.conv1.weight",
    "head.scratch.refinenet4.resConfUnit1.conv1.weight",
    "head.scratch.output_conv1.weight",
    "head.scratch.output_conv2.0.weight",
    "head.scratch.output_conv2.2.bias",
    "head.motion_modules.0.temporal_transformer.norm.weight",
    "head.motion_modules.0.temporal_transformer.proj_in.weight",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_out.0.bias",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.norms.1.weight",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.2.weight",
    "head.motion_modules.0.temporal_transformer.transformer_blocks.0.ff_norm.weight",
    "head.motion_modules.3.temporal_transformer.proj_out.weight",
]


def meta_model(name: str, **overrides):
    with torch.device("meta"):
        return build_vda(name, **overrides)


@pytest.mark.parametrize("name", ["vits", "vitb", "vitl"])
def test_state_dict_has_exactly_the_official_key_count(name):
    state = meta_model(name).state_dict()
    assert len(state) == OFFICIAL_KEYS[name]
    assert all(k.startswith(("pretrained.", "head.")) for k in state)


def test_vits_state_dict_names_and_shapes():
    state = meta_model("vits").state_dict()
    missing = [k for k in DOCUMENTED_KEYS if k not in state]
    assert not missing
    assert state["pretrained.pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert state["pretrained.blocks.0.attn.qkv.weight"].shape == (3 * 384, 384)
    pe = "head.motion_modules.{}.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    assert [state[pe.format(i)].shape for i in range(4)] == [
        (1, 32, 192),
        (1, 32, 384),
        (1, 32, 64),
        (1, 32, 64),
    ]
    ff = "head.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.{}.weight"
    assert state[ff.format("0.proj")].shape == (8 * 192, 192) and state[ff.format(2)].shape == (192, 4 * 192)
    # q/k/v have no bias; one transformer block with two attention blocks per module
    assert not any(re.search(r"to_[qkv]\.bias$", k) for k in state)
    assert not any("transformer_blocks.1." in k or "attention_blocks.2." in k for k in state)
    assert {
        int(m.group(1)) for k in state for m in [re.match(r"pretrained\.blocks\.(\d+)\.", k)] if m
    } == set(range(12))
    # 14 tensors per ViT block, 28 per temporal module, 64 in the DPT head proper
    assert sum(k.startswith("pretrained.blocks.0.") for k in state) == 14
    assert sum(k.startswith("head.motion_modules.0.") for k in state) == 28
    assert sum(k.startswith("head.") and "motion_modules" not in k for k in state) == 64


@pytest.mark.parametrize("name", ["vits", "vitb", "vitl"])
def test_parameter_counts_equal_official(name):
    model = meta_model(name)
    total = sum(p.numel() for p in model.parameters())
    temporal = sum(p.numel() for p in model.head.motion_modules.parameters())
    assert total == OFFICIAL_PARAMS[name]
    assert abs(total / 1e6 - ISSUE_PARAMS_M[name]) / ISSUE_PARAMS_M[name] < 1e-3
    assert temporal == OFFICIAL_TEMPORAL_PARAMS[name]


def test_tiny_config_is_small_and_same_architecture():
    tiny, small = meta_model("vitt"), meta_model("vits")
    assert sum(p.numel() for p in tiny.parameters()) <= 5_000_000
    strip = lambda k: re.sub(r"\.\d+\.", ".N.", k)  # noqa: E731 - same module names, other counts
    assert {strip(k) for k in tiny.state_dict()} == {strip(k) for k in small.state_dict()}
    assert VDA_CONFIGS["vitt"].num_frames == 32


def test_config_validation_names_the_constraint():
    with pytest.raises(ValueError, match="GroupNorm"):
        VDAConfig(
            "bad",
            embed_dim=192,
            depth=6,
            num_heads=3,
            intermediate_layers=(1, 2, 4, 5),
            features=48,
            out_channels=(24, 48, 96, 192),
        )
    with pytest.raises(ValueError, match="divisible by num_heads"):
        VDAConfig(
            "bad",
            embed_dim=190,
            depth=6,
            num_heads=3,
            intermediate_layers=(1, 2, 4, 5),
            features=32,
            out_channels=(24, 48, 96, 192),
        )
    with pytest.raises(ValueError, match="unknown VDA config"):
        build_vda("vitx")


def test_official_key_set_loads_strictly(det_state):
    model = build_vda("vitt")
    state = det_state(model.state_dict())
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_fresh_temporal_modules_are_identity(det_frames):
    torch.manual_seed(0)
    model = build_vda("vitt").eval()
    for module in model.head.motion_modules:
        proj_out = module.temporal_transformer.proj_out
        assert torch.count_nonzero(proj_out.weight) == 0 and torch.count_nonzero(proj_out.bias) == 0
        x = torch.randn(4, module.temporal_transformer.norm.num_channels, 3, 5)
        assert torch.equal(module(x, num_frames=2), x)


def test_forward_matches_official_code(det_state, det_frames):
    model = build_vda("vits").eval()
    model.load_state_dict(det_state(model.state_dict()), strict=True)
    x = det_frames(1, 3, 42, 56)
    with torch.no_grad():
        assert_matches_golden(model(x), GOLDEN["vda"])
        # without the temporal modules it is the Depth Anything V2 image model
        assert_matches_golden(model(x, temporal=False), GOLDEN["dav2"])


def test_encode_features_structure(tiny_model, det_frames):
    x = det_frames(2, 3, 56, 70)
    with torch.no_grad():
        features = tiny_model.encode(x)
    assert isinstance(features, FrameFeatures)
    assert features.patch_hw == (4, 5) and features.image_hw == (56, 70) and features.num_frames == 3
    assert len(features.layers) == 4
    assert all(layer.shape == (2, 3, 20, 192) for layer in features.layers)


def test_encode_decode_equals_forward_with_per_frame_caching(tiny_model, det_frames):
    x = det_frames(1, 5, 84, 112)
    with torch.no_grad():
        reference = tiny_model(x)
        whole = tiny_model.decode(tiny_model.encode(x))
        per_frame = FrameFeatures.cat([tiny_model.encode(x[:, t : t + 1]) for t in range(5)])
        cached = tiny_model.decode(per_frame)
        # a ring buffer drops the oldest frames and appends new ones
        shifted = FrameFeatures.cat([per_frame.frames(slice(2, 5)), tiny_model.encode(x[:, :2])])
        reordered = tiny_model(torch.cat([x[:, 2:], x[:, :2]], dim=1))
    assert reference.shape == (1, 5, 84, 112)
    assert reference.std() > 0.1  # a non-trivial output, so equality means something
    assert (whole - reference).abs().max().item() <= 1e-5
    assert (cached - reference).abs().max().item() <= 1e-5
    assert (tiny_model.decode(shifted) - reordered).abs().max().item() <= 1e-5


def test_window_is_temporal_and_frames_interact(tiny_model, det_frames):
    x = det_frames(1, 4, 56, 70)
    with torch.no_grad():
        full = tiny_model(x)
        alone = tiny_model(x[:, :1])
    # frame 0 sees frames 1..3 through the temporal modules
    assert (full[:, 0] - alone[:, 0]).abs().max().item() > 1e-3


def test_decode_resizes_and_rejects_long_windows(tiny_model, det_frames):
    x = det_frames(1, 2, 56, 70)
    with torch.no_grad():
        features = tiny_model.encode(x)
        out = tiny_model.decode(features, image_hw=(60, 80))
    assert out.shape == (1, 2, 60, 80) and out.min() >= 0
    too_long = FrameFeatures.cat([features] * 17)  # 34 frames > num_frames = 32
    with pytest.raises(ValueError, match="exceeds num_frames"):
        tiny_model.decode(too_long)
    with pytest.raises(ValueError, match="multiple of 14"):
        tiny_model.encode(torch.zeros(1, 1, 3, 50, 70))


def test_metric_flag_keeps_architecture():
    relative, metric = meta_model("vits"), meta_model("vits", metric=True)
    assert metric.metric and not relative.metric
    assert {k: v.shape for k, v in relative.state_dict().items()} == {
        k: v.shape for k, v in metric.state_dict().items()
    }


def test_build_vda_refuses_encoder_as_a_keyword():
    """``encoder=`` would only rename the default tiny config: refused with the right call named."""
    from endo_depth_model.models import build_vda

    with pytest.raises(ValueError, match=r"build_vda\('vits'\)"):
        build_vda(encoder="vits")
