"""Supervised pretraining: the field's losses, and a resumed run that equals an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from endo_depth_model.training.pretrain import (
    PretrainConfig,
    albedo_field,
    apply_albedo,
    apply_illumination,
    clip_log_loss,
    depth_abs_rel_loss,
    depth_log_loss,
    fill_clip_border,
    illumination_gain,
    log_scale_loss,
    parse_mix,
    pretrain,
    recolour_instruments,
    scale_only_loss,
    ssi_terms,
    temporal_gradient_loss,
)


def _disparity(n=3, h=32, w=40):
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = 1.0 + 0.02 * u + 0.5 * ((u > 15) & (u < 28) & (v > 8) & (v < 24))
    return torch.stack([base * (1 + 0.05 * k) + 0.01 * k for k in range(n)]).float()


def test_ssi_and_gradient_matching_ignore_scale_and_shift_but_see_blur():
    t = _disparity()
    valid = torch.ones_like(t, dtype=torch.bool)
    ssi, grad = ssi_terms(3.0 * t + 2.0, t, valid, level_weight=0.0, grad_scales=4)
    assert ssi < 1e-5 and grad < 1e-5
    blurred = torch.nn.functional.avg_pool2d(t[:, None], 5, 1, 2, count_include_pad=False)[:, 0]
    ssi_b, grad_b = ssi_terms(blurred, t, valid, level_weight=0.0, grad_scales=4)
    assert grad_b > 0.05 and ssi_b > 0
    # invalid pixels (the scope border) do not count: garbage there changes nothing
    valid[:, :, :4] = False
    junk = t.clone()
    junk[:, :, :4] = 1e3
    a = ssi_terms(junk, t, valid, 0.0, 4)
    b = ssi_terms(t, t, valid, 0.0, 4)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)


def test_temporal_gradient_matching_sees_flicker_only():
    t = _disparity(4)
    valid = torch.ones_like(t, dtype=torch.bool)
    assert temporal_gradient_loss(2.0 * t + 1.0, t, valid) < 1e-5
    flick = t * (1 + 0.1 * (torch.arange(4) % 2)).view(4, 1, 1)
    assert temporal_gradient_loss(flick, t, valid) > 0.05
    assert temporal_gradient_loss(t[:1], t[:1], valid[:1]) == 0


def test_scale_only_loss_anchors_the_shift():
    t = _disparity()
    valid = torch.ones_like(t, dtype=torch.bool)
    assert scale_only_loss(5.0 * t, t, valid) < 1e-6  # scale is free
    shifted = t - 0.9 * t.amin()  # far pixels pushed towards zero disparity
    assert scale_only_loss(shifted, t, valid) > 0.05
    assert ssi_terms(shifted, t, valid, level_weight=0.0)[0] < 1e-5  # which the SSI loss cannot see


def test_log_scale_loss_punishes_zero_disparity_where_the_truth_is_not_far():
    t = _disparity()
    valid = torch.ones_like(t, dtype=torch.bool)
    assert log_scale_loss(7.0 * t, t, valid) < 1e-6  # scale is free
    dark = t.clone()
    dark[:, :, :8] = 0.0  # a dark corner read as infinitely far
    assert log_scale_loss(dark, t, valid) > 2 * scale_only_loss(dark, t, valid)
    invalid = valid.clone()
    invalid[:, :, :8] = False  # unless it is outside the field of view
    assert log_scale_loss(dark, t, invalid) < 1e-6


def test_depth_log_loss_is_the_median_scaled_evaluation_after_the_conversion():
    from endo_depth_model.preprocess import depth_to_disparity

    lo, hi = 0.001, 0.3
    depth = 0.02 + 0.1 * _disparity() / _disparity().amax()
    valid = torch.ones_like(depth, dtype=torch.bool)
    exact = depth_to_disparity(depth, lo, hi)
    assert depth_log_loss(exact, depth, valid, lo, hi) < 1e-5
    # a depth scale is free (the evaluation median-scales), but a disparity shift is not, even though the
    # scale-and-shift-invariant loss cannot tell the two apart
    assert depth_log_loss(depth_to_disparity(2.5 * depth, lo, hi), depth, valid, lo, hi) < 1e-5
    shifted = exact - 0.9 * exact.amin()  # far pixels pushed towards zero disparity
    assert ssi_terms(shifted, exact, valid, level_weight=0.0)[0] < 1e-5
    assert depth_log_loss(shifted, depth, valid, lo, hi) > 0.05
    invalid = valid.clone()
    garbage = exact.clone()
    garbage[:, :, :8] = 0.0
    invalid[:, :, :8] = False  # pixels outside the field of view do not count
    assert depth_log_loss(garbage, depth, invalid, lo, hi) < 1e-5
    assert depth_log_loss(garbage, depth, valid, lo, hi) > 0.05


def test_depth_abs_rel_loss_is_the_evaluations_abs_rel_and_weighs_too_far_more():
    from endo_depth_model.preprocess import depth_to_disparity, disparity_to_depth

    lo, hi = 0.001, 0.3
    depth = 0.02 + 0.1 * _disparity() / _disparity().amax()
    valid = torch.ones_like(depth, dtype=torch.bool)
    noisy = depth * torch.exp(0.2 * torch.randn(depth.shape, generator=torch.Generator().manual_seed(1)))
    pred = depth_to_disparity(0.5 * noisy, lo, hi)  # any scale (inside the conversion's range)
    # the evaluation's AbsRel with the median ratio as the scale, frame by frame, in numpy
    d = disparity_to_depth(pred, lo, hi).numpy().astype(np.float64)
    t = depth.numpy().astype(np.float64)
    expected = np.mean(
        [np.mean(np.abs(dk / np.median(dk / tk) - tk) / tk) for dk, tk in zip(d, t, strict=True)]
    )
    assert depth_abs_rel_loss(pred, depth, valid, lo, hi).item() == pytest.approx(expected, rel=1e-3)
    assert depth_abs_rel_loss(depth_to_disparity(depth, lo, hi), depth, valid, lo, hi) < 1e-5
    # a tenth of the pixels twice too far costs about twice as much as twice too near; the log term is even
    near = torch.zeros_like(valid)
    near[:, :, :4] = True
    far_wrong, near_wrong = depth.clone(), depth.clone()
    far_wrong[near] *= 2.0
    near_wrong[near] *= 0.5
    far_cost = depth_abs_rel_loss(depth_to_disparity(far_wrong, lo, hi), depth, valid, lo, hi)
    near_cost = depth_abs_rel_loss(depth_to_disparity(near_wrong, lo, hi), depth, valid, lo, hi)
    assert far_cost / near_cost == pytest.approx(2.0, rel=0.05)
    log_far = depth_log_loss(depth_to_disparity(far_wrong, lo, hi), depth, valid, lo, hi)
    log_near = depth_log_loss(depth_to_disparity(near_wrong, lo, hi), depth, valid, lo, hi)
    assert log_far == pytest.approx(log_near.item(), rel=0.05)
    invalid = valid.clone()
    invalid[near] = False  # pixels outside the field of view do not count
    assert depth_abs_rel_loss(depth_to_disparity(far_wrong, lo, hi), depth, invalid, lo, hi) < 1e-5


def test_instrument_focus_weighs_the_instrument_pixels_with_the_frames_median():
    from endo_depth_model.preprocess import depth_to_disparity

    lo, hi = 0.001, 0.3
    depth = torch.full((2, 24, 32), 0.08)
    tool = torch.zeros_like(depth, dtype=torch.bool)
    tool[:, 4:10, 20:32] = True  # a shaft entering from the right, near the scope
    depth[tool] = 0.02
    valid = torch.ones_like(tool)
    far_tool = depth.clone()
    far_tool[tool] = 0.04  # its depth predicted twice too far, the tissue exact
    pred = depth_to_disparity(far_tool, lo, hi)
    whole = depth_log_loss(pred, depth, valid, lo, hi)
    on_tool = depth_log_loss(pred, depth, valid, lo, hi, focus=tool)
    # the tissue's median sets the scale, so the tool's pixels carry the full log error, log 2
    assert abs(on_tool - np.log(2.0)) < 1e-3 and on_tool > 5 * whole
    assert depth_log_loss(pred, depth, valid, lo, hi, focus=~tool) < 1e-5  # the tissue is right
    assert depth_log_loss(pred, depth, valid, lo, hi, focus=torch.zeros_like(tool)) == 0
    with pytest.raises(ValueError, match="instrument_weight"):
        pretrain(PretrainConfig(instrument_weight=-1.0))


def test_clip_log_loss_frees_one_scale_per_clip_not_per_frame():
    from endo_depth_model.preprocess import depth_to_disparity

    lo, hi = 0.001, 0.3
    depth = 0.02 + 0.1 * _disparity() / _disparity().amax()
    valid = torch.ones_like(depth, dtype=torch.bool)
    # one scale for the whole clip: free in both
    same = depth_to_disparity(2.0 * depth, lo, hi)
    assert clip_log_loss(same, depth, valid, lo, hi) < 1e-5
    # a scale that drifts from frame to frame: free per frame, costs per clip (the per-sequence evaluation)
    drift = depth * torch.tensor([1.0, 1.3, 1.7]).view(3, 1, 1)
    pred = depth_to_disparity(drift, lo, hi)
    assert depth_log_loss(pred, depth, valid, lo, hi) < 1e-5
    assert clip_log_loss(pred, depth, valid, lo, hi) > 0.1
    # pixels outside the field of view do not count
    garbage = same.clone()
    garbage[:, :, :8] = 0.0
    invalid = valid.clone()
    invalid[:, :, :8] = False
    assert clip_log_loss(garbage, depth, invalid, lo, hi) < 1e-5


def test_instrument_albedo_changes_only_instrument_pixels_by_one_factor_per_clip():
    rgb = torch.rand(1, 4, 3, 16, 20) * 0.8 + 0.1
    mask = np.zeros((4, 16, 20), bool)
    mask[:, 4:10, 5:12] = True  # the tool, in every frame
    mask[2, 0, 0] = True
    out = recolour_instruments(rgb, mask, np.random.default_rng(0), 1.0)
    factor = float(np.exp(np.random.default_rng(0).uniform(-1.0, 1.0)))  # the draw: 1.32, a brighter tool
    m = torch.from_numpy(mask)[None, :, None].expand_as(rgb)
    assert torch.equal(out[~m], rgb[~m])  # tissue untouched
    # the tool scaled by that one factor in linear light, in every frame (where nothing clips at 1)
    ratio = (out[m] ** 2.2) / (rgb[m] ** 2.2)
    ok = out[m] < 0.999
    assert int(ok.sum()) > 100
    np.testing.assert_allclose(ratio[ok].numpy(), factor, rtol=1e-3)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # a clip without an instrument is unchanged and draws nothing from the RNG (older runs replay exactly)
    rng = np.random.default_rng(5)
    assert torch.equal(recolour_instruments(rgb, np.zeros_like(mask), rng, 1.0), rgb)
    assert rng.random() == np.random.default_rng(5).random()


def test_illumination_augmentation_varies_light_not_geometry():
    rng = np.random.default_rng(0)
    rgb = torch.rand(1, 3, 3, 32, 40)
    rgb[..., :4] = 0.0  # scope border
    a = illumination_gain(rng, 32, 40, 1.0)
    out = apply_illumination(rgb, a)
    assert out.shape == rgb.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.all(out[..., :4] == 0)  # black stays black
    # the same light for every frame of the clip: equal frames stay equal
    same = apply_illumination(rgb[:, :1].expand(1, 3, 3, 32, 40), a)
    assert torch.allclose(same[:, 0], same[:, 2])
    assert (out - rgb).abs().mean() > 0.01  # it changes the image
    # deterministic by the RNG; strength 0 is the identity
    b = illumination_gain(np.random.default_rng(0), 32, 40, 1.0)
    assert np.array_equal(a["gain"], b["gain"]) and a["gamma"] == b["gamma"]
    ident = apply_illumination(rgb, illumination_gain(rng, 32, 40, 0.0))
    assert torch.allclose(ident, rgb, atol=1e-4)


def test_albedo_augmentation_recolours_surfaces_not_geometry():
    rgb = torch.rand(1, 3, 3, 48, 64)
    rgb[..., :4] = 0.0  # scope border
    fields = [albedo_field(np.random.default_rng(seed), 48, 64, 1.0) for seed in range(8)]
    for f in fields:
        out = apply_albedo(rgb, f)
        assert out.shape == rgb.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.all(out[..., :4] == 0)  # black stays black
        # one field for the whole clip: equal frames stay equal
        same = apply_albedo(rgb[:, :1].expand(1, 3, 3, 48, 64), f)
        assert torch.allclose(same[:, 0], same[:, 2])
    # blotches: some clearly darker (stains, blood) and some paler, in a small part of the image
    assert min(float(f["gain"].min()) for f in fields) < 0.3
    assert max(float(f["gain"].max()) for f in fields) > 1.3
    assert np.median([np.mean(np.abs(np.log(f["gain"])) < 0.05) for f in fields]) > 0.5
    # the hue rotation and saturation scaling keep grey pixels grey, and change coloured ones
    grey = torch.full((1, 3, 8, 8), 0.5)
    flat = {"gain": np.ones((3, 8, 8), np.float32), "hue": 0.8, "saturation": 0.5}
    assert torch.allclose(apply_albedo(grey, flat), grey, atol=1e-5)
    # hue alone (saturation 1) turns a colour's chroma (its part off the grey axis) by the angle, about the
    # grey axis, keeping its length and its grey level
    colour = torch.tensor([0.7, 0.3, 0.2]).view(1, 3, 1, 1)
    turned = apply_albedo(colour, {"gain": np.ones((3, 1, 1), np.float32), "hue": 0.8, "saturation": 1.0})
    c0 = (colour - colour.mean(1, keepdim=True)).flatten()
    c1 = (turned - turned.mean(1, keepdim=True)).flatten()
    assert torch.isclose(turned.mean(), colour.mean(), atol=1e-5)
    assert torch.isclose(c1.norm(), c0.norm(), atol=1e-5)
    angle = torch.atan2(torch.dot(torch.cross(c0, c1, dim=0), torch.ones(3) / 3**0.5), torch.dot(c0, c1))
    assert abs(float(angle) - 0.8) < 1e-4
    # saturation alone scales the chroma, keeps the hue
    faded = apply_albedo(colour, {"gain": np.ones((3, 1, 1), np.float32), "hue": 0.0, "saturation": 0.5})
    assert torch.allclose((faded - faded.mean(1, keepdim=True)).flatten(), 0.5 * c0, atol=1e-5)
    for bad in (-0.1, 2.5):
        with pytest.raises(ValueError, match="albedo_aug"):
            pretrain(PretrainConfig(albedo_aug=bad))
    with pytest.raises(ValueError, match="photometric_aug"):
        pretrain(PretrainConfig(photometric_aug=-1.0))
    # deterministic by the RNG; strength 0 is the identity
    again = albedo_field(np.random.default_rng(0), 48, 64, 1.0)
    assert np.array_equal(again["gain"], fields[0]["gain"]) and again["hue"] == fields[0]["hue"]
    ident = apply_albedo(rgb, albedo_field(np.random.default_rng(3), 48, 64, 0.0))
    assert torch.allclose(ident, rgb, atol=1e-4)


def test_mix_parsing():
    assert parse_mix(PretrainConfig(mix="lap:3, colon:2")) == [("lap", 3), ("colon", 2)]
    assert parse_mix(PretrainConfig(preset="source", sequences=4)) == [("source", 4)]
    with pytest.raises(ValueError, match="kind:count"):
        parse_mix(PretrainConfig(mix="abdomen:3"))


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    common = dict(
        mix="lap:1,colon:1",
        frames=5,
        input_height=42,
        input_width=56,
        clip=3,
        steps=4,
        lr=1e-3,
        grad_weight=0.5,
        temporal_weight=0.5,
        log_weight=0.5,
        photometric_aug=1.0,
        albedo_aug=1.0,
        causal_fraction=0.75,
        instrument_weight=1.0,  # the masks follow the clip's flip
        abs_rel_weight=0.5,
        schedule="cosine",
        device="cpu",
    )
    whole = PretrainConfig(out=str(tmp_path / "whole"), checkpoint_minutes=1000.0, **common)
    pretrain(whole)
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    shutil.copytree(tmp_path / "whole/data", split_dir / "data")  # same rendered data, no re-render
    pretrain(PretrainConfig(out=str(split_dir), stop_at=2, **common))
    state = torch.load(split_dir / "state.pt", weights_only=True)
    assert state["step"] == 2
    pretrain(PretrainConfig(out=str(split_dir), resume=True, **common))
    a = load_file(tmp_path / "whole/vitt_pretrained.safetensors")
    b = load_file(split_dir / "vitt_pretrained.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((split_dir / "pretrain_log.json").read_text())["log"]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {r["causal"] for r in log} == {True, False}  # both attention modes drawn, and replayed on resume
    # and training moved the weights
    first = PretrainConfig(out=str(tmp_path / "zero"), **{**common, "steps": 1})
    shutil.copytree(tmp_path / "whole/data", tmp_path / "zero/data")
    pretrain(first)
    c = load_file(tmp_path / "zero/vitt_pretrained.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert np.isfinite([r["loss"] for r in log]).all()


def test_pose_pretraining_can_start_from_the_shipped_pose_network(tmp_path):
    from endo_depth_model.checkpoint import read_state_dict
    from endo_depth_model.pipeline import SHIPPED_MODEL_DIR

    torch.set_num_threads(1)
    shipped_path = SHIPPED_MODEL_DIR / "vitt_endodav_pose.safetensors"
    shipped = read_state_dict(shipped_path)
    common = dict(mix="lap:1", frames=4, input_height=64, input_width=80, steps=0, pose_steps=2, pose_batch=2)
    out = {}
    for name, init in (("init", str(shipped_path)), ("scratch", "")):
        cfg = PretrainConfig(out=str(tmp_path / name), pose_init=init, pose_lr=1e-5, device="cpu", **common)
        pretrain(cfg)
        out[name] = load_file(tmp_path / name / "vitt_pose_pretrained.safetensors")
    key = next(k for k in shipped if k.endswith("weight") and shipped[k].dim() == 4)
    near = (out["init"][key] - shipped[key]).abs().max()
    far = (out["scratch"][key] - shipped[key]).abs().max()
    assert 0 < near < 0.01 * far  # fine-tuned from the shipped weights, and moved by training


def test_validation_during_pretraining_keeps_the_best_step(tmp_path):
    from safetensors import safe_open

    torch.set_num_threads(1)
    cfg = PretrainConfig(
        out=str(tmp_path / "run"), mix="lap:1", frames=4, input_height=42, input_width=56, clip=2, steps=3,
        lr=1e-3, schedule="cosine", device="cpu", eval_every=1, val_kinds="target,lap", val_sequences=2,
    )  # fmt: skip
    pretrain(cfg)
    log = json.loads((tmp_path / "run/pretrain_log.json").read_text())["log"]
    scores = [r["val_abs_rel"] for r in log]
    # per frame, and whole sequences through the causal attention with one scale (kind/seq)
    assert len(scores) == 3 and all(set(s) == {"target", "lap", "target/seq", "lap/seq"} for s in scores)
    assert all(0 < v < 10 for s in scores for v in s.values())
    means = [np.mean(list(s.values())) for s in scores]
    with safe_open(tmp_path / "run/vitt_best.safetensors", "pt") as f:
        meta = f.metadata()
    assert int(meta["step"]) == 1 + int(np.argmin(means))
    assert json.loads(meta["val_abs_rel"]) == scores[int(np.argmin(means))]
    # the validation seeds are neither training's nor the benchmarks'
    names = sorted(p.name for p in (tmp_path / "run/data").glob("val_*"))
    assert names == [
        "val_lap_7004_8_42x56.npz",
        "val_lap_7104_8_42x56.npz",
        "val_target_7002_8_42x56.npz",
        "val_target_7102_8_42x56.npz",
    ]
    with pytest.raises(ValueError, match="unknown kind"):
        pretrain(PretrainConfig(out=str(tmp_path / "bad"), mix="lap:1", frames=4, input_height=42,
                                input_width=56, steps=1, eval_every=1, val_kinds="abdomen"))  # fmt: skip
    with pytest.raises(ValueError, match="held-out"):  # more would reach the benchmark's seeds
        pretrain(PretrainConfig(out=str(tmp_path / "bad"), mix="lap:1", frames=4, input_height=42,
                                input_width=56, steps=1, eval_every=1, val_sequences=21))  # fmt: skip


def test_a_resumed_run_keeps_its_earlier_best_step(tmp_path, monkeypatch):
    from safetensors import safe_open

    import endo_depth_model.training.pretrain as pt

    torch.set_num_threads(1)
    means = iter([0.5, 0.2, 0.4])  # the best is step 2, before the pause; step 3 must not replace it
    monkeypatch.setattr(pt, "validate", lambda *a: {"lap": next(means), "lap/seq": 0.1})
    cfg = PretrainConfig(
        out=str(tmp_path / "run"), mix="lap:1", frames=4, input_height=42, input_width=56, clip=2, steps=3,
        lr=1e-3, schedule="cosine", device="cpu", eval_every=1, val_kinds="lap", checkpoint_minutes=60,
        stop_at=2,
    )  # fmt: skip
    pretrain(cfg)
    pretrain(dataclasses.replace(cfg, stop_at=0, resume=True))
    with safe_open(tmp_path / "run/vitt_best.safetensors", "pt") as f:
        assert f.metadata()["step"] == "2"


def test_dome_scenes_look_at_a_closed_end_with_exact_depth():
    from endo_depth_model.training.pretrain import render_sequence

    assert parse_mix(PretrainConfig(mix="dome:2,lap:1")) == [("dome", 2), ("lap", 1)]
    seq = render_sequence("dome", 61_001, 3, 36, 48)
    depth = seq["depth"]
    # every ray hits tissue, and the closed end is nearer than the open tube's far lumen of the same seed
    assert seq["rgb"].shape == (3, 36, 48, 3) and np.isfinite(depth).all() and (depth > 0).all()
    tube = render_sequence("target", 61_001, 3, 36, 48)["depth"]
    assert np.nanmax(depth) < 0.8 * np.nanmax(tube)
    # deterministic by seed, different across seeds
    again = render_sequence("dome", 61_001, 3, 36, 48)
    assert np.array_equal(again["rgb"], seq["rgb"])
    assert not np.array_equal(render_sequence("dome", 61_003, 3, 36, 48)["depth"], depth)


def test_input_scales_train_at_patch_multiples_and_keep_unknown_depth_unknown():
    from endo_depth_model.training.pretrain import parse_input_scales, resize_clip

    cfg = PretrainConfig(input_height=224, input_width=280, input_scales="1, 0.5,0.25")
    assert parse_input_scales(cfg) == [(224, 280), (112, 140), (56, 70)]
    assert parse_input_scales(PretrainConfig()) == []
    assert parse_input_scales(PretrainConfig(input_scales="0.01")) == [(14, 14)]
    for bad in ("0", "1.5", "half"):
        with pytest.raises(ValueError, match="input_scales"):
            parse_input_scales(PretrainConfig(input_scales=bad))
    rgb = torch.rand(1, 2, 3, 8, 12)
    depth = torch.full((2, 8, 12), 0.05)
    depth[:, :, :3] = float("nan")  # a border column band
    small_rgb, small_depth = resize_clip(rgb, depth, (4, 6))
    assert small_rgb.shape == (1, 2, 3, 4, 6) and small_depth.shape == (2, 4, 6)
    # area averaging: the mean brightness is kept; the band is NaN and nothing else is
    assert torch.allclose(small_rgb.mean(), rgb.mean(), atol=1e-5)
    nan = torch.isnan(small_depth)
    assert nan[:, :, :1].all() and not nan[:, :, 2:].any()
    assert resize_clip(rgb, depth, (8, 12))[0] is rgb


def test_causal_attention_keeps_the_future_out():
    """``forward(causal=True)``, what causal pretraining steps run: a frame's output does not depend on
    later frames and equals the last frame of the run on the frames up to it; without it, it does."""
    from endo_depth_model.models import build_vda

    torch.manual_seed(0)
    model = build_vda("vitt").eval()
    for module in model.head.motion_modules:  # identity-initialised: give the temporal modules an effect
        torch.nn.init.normal_(module.temporal_transformer.proj_out.weight, std=0.2)
    last = model.head.scratch.output_conv2[2]  # and keep the last ReLU alive, as pretraining does
    torch.nn.init.normal_(last.weight, std=0.1)
    torch.nn.init.constant_(last.bias, 1.0)
    frames = torch.randn(1, 4, 3, 28, 42)
    changed = frames.clone()
    changed[:, 3] = torch.randn(3, 28, 42)
    with torch.no_grad():
        a, b = model(frames, causal=True), model(changed, causal=True)
        torch.testing.assert_close(a[:, :3], b[:, :3], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(frames[:, :3], causal=True)[:, 2], a[:, 2], rtol=1e-4, atol=1e-5)
        full_a, full_b = model(frames), model(changed)
    assert (full_a[:, :3] - full_b[:, :3]).abs().max() > 1e-4  # full attention sees the changed frame
    with pytest.raises(ValueError, match="causal_fraction"):
        pretrain(PretrainConfig(causal_fraction=1.5))


def test_clips_longer_than_half_a_sequence_fit():
    """A 16-frame clip in 24-frame sequences draws stride 1 only (stride 2 would need 31 frames); shorter
    clips keep strides 1 and 2; a clip longer than the sequences is refused before any rendering."""
    from endo_depth_model.training.pretrain import PretrainConfig, _sample_clip, pretrain

    seqs = [{"rgb": np.zeros((24, 1, 1, 3), np.uint8)}]
    rng = np.random.default_rng(0)
    for clip, strides in ((16, {1}), (8, {1, 2})):
        seen = set()
        for _ in range(200):
            _, idx, _ = _sample_clip(PretrainConfig(clip=clip, frames=24), seqs, rng)
            assert len(idx) == clip and idx.min() >= 0 and idx.max() <= 23
            seen.add(int(abs(idx[1] - idx[0])))
        assert seen == strides, (clip, seen)
    with pytest.raises(ValueError, match="clip 30 must be 1..frames"):
        pretrain(PretrainConfig(clip=30, frames=24, out="/nonexistent/never_written"))


def test_validation_per_sequence_sees_a_scale_that_drifts_from_frame_to_frame():
    from endo_depth_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, depth_to_disparity
    from endo_depth_model.training.pretrain import validate

    lo, hi = 0.001, 0.3
    depth = (0.02 + 0.1 * _disparity(n=4) / _disparity(n=4).amax()).numpy()
    rgb = np.repeat(np.arange(4, dtype=np.uint8)[:, None, None, None] * 40, 32 * 40 * 3).reshape(4, 32, 40, 3)

    class Oracle(torch.nn.Module):
        """The true depth of the frame whose index the image encodes (grey level 40 k), times ``drift[k]``."""

        def __init__(self, drift):
            super().__init__()
            self.drift = drift
            self.calls = []

        def forward(self, x, causal=False):
            self.calls.append((x.shape[1], causal))
            grey = x[0, :, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
            idx = torch.round(grey * 255 / 40).long()
            d = torch.as_tensor(depth)[idx] * torch.as_tensor(self.drift)[idx].view(-1, 1, 1)
            return depth_to_disparity(d, lo, hi)[None].float()

    cfg = PretrainConfig(min_depth=lo, max_depth=hi)
    val = [{"kind": "lap", "rgb": rgb, "depth": depth}]
    steady = validate(Oracle([2.0] * 4), cfg, val, "cpu")
    oracle = Oracle([1.0, 1.3, 1.6, 2.0])
    drifting = validate(oracle, cfg, val, "cpu")
    # per frame: each frame alone; per sequence: the whole sequence with causal attention (the node's engine)
    assert oracle.calls == [(1, False)] * 4 + [(4, True)]
    assert steady["lap"] < 1e-3 and steady["lap/seq"] < 1e-3
    assert drifting["lap"] < 1e-3  # each frame's own scale is free per frame
    assert drifting["lap/seq"] > 0.1  # one scale for the sequence is not


def test_rendering_in_worker_processes_gives_the_same_data(tmp_path):
    from endo_depth_model.training.pretrain import render_dataset

    cfg = PretrainConfig(
        out=str(tmp_path / "one"), mix="lap:2,colon:1", frames=3, input_height=28, input_width=42
    )
    serial = render_dataset(cfg)
    parallel = render_dataset(dataclasses.replace(cfg, out=str(tmp_path / "two"), render_workers=2))
    assert [(s["kind"], s["seed"]) for s in serial] == [(s["kind"], s["seed"]) for s in parallel]
    for a, b in zip(serial, parallel, strict=True):
        assert set(a) == set(b)
        for key in ("rgb", "depth"):
            np.testing.assert_array_equal(a[key], b[key])
    assert not list((tmp_path / "two/data").glob("*.tmp.npz"))  # every file whole, no leftovers
    with pytest.raises(ValueError, match="render_workers"):
        pretrain(dataclasses.replace(cfg, clip=2, render_workers=0))


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command (state, ppid, ...); empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _state(pid: int) -> str:
    """The process's state letter; "Z" (as a zombie) when it is gone."""
    return (_stat(pid) or ["Z"])[0]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(stat.parent.name)
        if not fields or int(fields[1]) != pid:
            continue
        try:
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:  # a pool worker, not multiprocessing's resource tracker
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_render_workers_end_with_a_killed_run(tmp_path):
    """A ``pretrain`` killed while its worker processes render (``kill PID`` of the run only) must not
    leave them rendering on as orphans."""
    import os
    import signal
    import subprocess
    import time

    script = (
        "from endo_depth_model.training.pretrain import PretrainConfig, render_dataset\n"
        f"render_dataset(PretrainConfig(out={str(tmp_path)!r}, mix='lap:40', frames=24, render_workers=2))\n"
    )
    root = str(Path(__file__).resolve().parents[2])  # this checkout, not an installed copy
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    run = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(_children(run.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _children(run.pid)
        assert len(workers) >= 2, "the render workers never started"
        time.sleep(3)  # past their initializer
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 30
    while any(_state(w) != "Z" for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [w for w in workers if _state(w) != "Z"]  # gone, or a zombie: no longer rendering
    for w in alive:  # do not leave them running if the test fails
        os.kill(w, signal.SIGKILL)
    assert not alive, f"render workers {alive} outlived their killed parent"


def test_fill_border_training_fills_the_detected_border_and_marks_the_weights(tmp_path):
    from safetensors import safe_open

    from endo_depth_model.data.laparoscopy import laparoscopy_preset
    from endo_depth_model.training.pretrain import render_sequence

    seed = next(
        s for s in range(40, 80) if laparoscopy_preset("lap", s).border != "none"
        and laparoscopy_preset("lap", s).border_radius < 0.9
    )  # fmt: skip
    data = render_sequence("lap", seed, 3, 56, 70)
    rgb = torch.from_numpy(data["rgb"]).permute(0, 3, 1, 2).float().div(255.0)[None]
    filled = fill_clip_border(rgb)
    outside = torch.from_numpy(~np.isfinite(data["depth"][0]))  # the border: no depth
    changed = (filled != rgb).any(2)[0]  # (T, H, W)
    assert outside.float().mean() > 0.02 and bool(changed[:, outside].float().mean() > 0.9)
    assert not bool(changed[:, ~outside].float().mean() > 0.05)  # only the detection's soft-edge margin
    assert float(filled[0, :, :, outside].mean()) > 0.05  # no longer black
    torch.set_num_threads(1)
    cfg = PretrainConfig(
        out=str(tmp_path / "run"), mix="lap:1", frames=4, input_height=42, input_width=56, clip=2, steps=2,
        device="cpu", fill_border=True, eval_every=2, val_kinds="lap",
    )  # fmt: skip
    pretrain(cfg)
    with safe_open(tmp_path / "run/vitt_pretrained.safetensors", "pt") as f:
        assert f.metadata()["fill_border"] == "1"
