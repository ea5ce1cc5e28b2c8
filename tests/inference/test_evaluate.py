"""Evaluation protocols against hand-computed values, report tables, and the ``endo-depth eval`` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from endo_depth_model.evaluate import (
    EvalConfig,
    MethodResult,
    evaluate_sequence,
    format_params,
    format_table,
    frame_error_map,
    save_report,
    summarise,
)
from endo_depth_model.metrics import MetricError

RAW = EvalConfig(unit_scale=1.0)  # inputs already in the report unit


def test_per_frame_protocol_median_scaling_hand_computed():
    gt = np.array([[[1.0, 2.0, 4.0]], [[2.0, 2.0, np.nan]]])
    pred = np.array([[[1.0, 1.0, 1.0]], [[5.0, 5.0, 5.0]]])
    res = evaluate_sequence("s", gt, pred, "per-frame", RAW)
    # frame 0: ratio 2 -> pred 2, 2, 2: abs_rel (1/1 + 0 + 2/4) / 3 = 0.5; frame 1: exact after scaling
    assert res.frame_errors[0]["abs_rel"] == pytest.approx(0.5)
    assert res.frame_errors[0]["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert res.frame_errors[1]["abs_rel"] == pytest.approx(0.0)
    assert res.alignment["median_ratio"] == pytest.approx(np.median([2.0, 0.4]))


def test_per_frame_protocol_clips_and_masks_like_af_sfmlearner():
    gt = np.array([[[10.0, 200.0, 0.0, 20.0]]])  # 200 and 0 are invalid (outside (1e-3, 150))
    pred = np.array([[[1.0, 1.0, 1.0, 100.0]]])
    res = evaluate_sequence("s", gt, pred, "per-frame", RAW)
    # valid gt [10, 20], pred [1, 100]; median ratio 15 / 50.5; scaled pred [0.297, 29.7]: nothing clipped
    r = 15 / 50.5
    expected = (abs(10 - r) / 10 + abs(20 - 100 * r) / 20) / 2
    assert res.frame_errors[0]["abs_rel"] == pytest.approx(expected)
    # median ratio 20 / 2 = 10; scaled [10, 20, 10000] -> the last is clipped to 150
    gt3 = np.array([[[10.0, 20.0, 30.0]]])
    res = evaluate_sequence("s", gt3, np.array([[[1.0, 2.0, 1000.0]]]), "per-frame", RAW)
    assert res.frame_errors[0]["abs_rel"] == pytest.approx((0 + 0 + 120 / 30) / 3)
    # scaled 1e-5 is clipped up to 1e-3
    res = evaluate_sequence("s", gt3, np.array([[[1e-6, 2.0, 3.0]]]), "per-frame", RAW)
    assert res.frame_errors[0]["abs_rel"] == pytest.approx((10 - 1e-3) / 10 / 3)


def test_frame_error_map_is_the_per_frame_protocol_pixel_by_pixel():
    rng = np.random.default_rng(3)
    gt = rng.uniform(5.0, 140.0, (2, 12, 16))
    gt[0, :2] = 400.0  # beyond the protocol's 150: not scored
    pred = gt * rng.uniform(0.5, 2.0, gt.shape) * np.array([3.0, 0.2])[:, None, None]
    pred[1, 5, 5] = 1e6  # clipped to 150 after scaling
    res = evaluate_sequence("s", gt, pred, "per-frame", RAW)
    for k in range(2):
        mask = (gt[k] > RAW.min_depth) & (gt[k] < RAW.max_depth)
        scaled, err = frame_error_map(gt[k], pred[k], mask, RAW)
        assert np.median(scaled[mask]) == pytest.approx(np.median(gt[k][mask]))
        assert err[mask].mean() == pytest.approx(res.frame_errors[k]["abs_rel"], rel=1e-12)
    g = gt[1, 5, 5]
    assert scaled[5, 5] > RAW.max_depth and err[5, 5] == pytest.approx((RAW.max_depth - g) / g)


def test_per_sequence_protocol_mad_alignment_recovers_affine_prediction():
    rng = np.random.default_rng(0)
    gt_m = rng.uniform(0.02, 0.1, size=(4, 5, 6))
    pred = 0.3 * gt_m * 1000 + 7.0  # one affine map for the whole sequence
    res = evaluate_sequence("s", gt_m, pred, "per-sequence")
    for row in res.frame_errors:
        assert row["abs_rel"] == pytest.approx(0.0, abs=1e-12) and row["a1"] == 1.0
    assert res.alignment["s_gt"] / res.alignment["s_pred"] == pytest.approx(1 / 0.3)
    # per-frame scale changes break a single sequence alignment but not per-frame median scaling
    flicker = pred * np.array([1.0, 1.3, 0.8, 1.1])[:, None, None]
    seq = evaluate_sequence("s", gt_m, flicker, "per-sequence")
    assert np.mean([r["abs_rel"] for r in seq.frame_errors]) > 0.05


def _plane_sequence(n=5, flicker=0.0):
    """A tilted plane about 0.1 m ahead, camera moving forward/sideways: exact depth (ray cast) and poses."""
    h, w = 48, 64
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    poses = np.stack([np.eye(4) for _ in range(n)])
    poses[:, 0, 3] = 0.002 * np.arange(n)
    poses[:, 2, 3] = 0.005 * np.arange(n)
    normal = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])
    v, u = np.mgrid[0:h, 0:w]
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(h * w)])
    gt = np.stack([((0.1 - normal @ T[:3, 3]) / (normal @ rays)).reshape(h, w) for T in poses])
    pred = gt * 1000.0 * (1 + flicker * (-1.0) ** np.arange(n))[:, None, None]
    return gt, pred, poses, K


def test_per_sequence_protocol_tae_zero_when_consistent_and_grows_with_flicker():
    gt, pred, poses, K = _plane_sequence()
    res = evaluate_sequence("s", gt, pred, "per-sequence", T_world_cam=poses, K=K)
    assert len(res.tae_pairs) == 4 and max(res.tae_pairs) < 1.0
    gt, flick, poses, K = _plane_sequence(flicker=0.05)
    res_f = evaluate_sequence("s", gt, flick, "per-sequence", T_world_cam=poses, K=K)
    assert np.mean(res_f.tae_pairs) > 5.0 > 5 * np.mean(res.tae_pairs)


def test_ate_reported_with_predicted_poses():
    gt, pred, poses, K = _plane_sequence(n=7)
    scaled = poses.copy()
    scaled[:, :3, 3] *= 3.0
    res = evaluate_sequence("s", gt, pred, "per-frame", T_world_cam=poses, K=K, pred_T_world_cam=scaled)
    assert res.ate == pytest.approx((0.0, 0.0), abs=1e-12)


def test_summarise_averages_frames_and_pairs():
    gt, pred, poses, K = _plane_sequence()
    a = evaluate_sequence("a", gt, pred, "per-sequence", T_world_cam=poses, K=K)
    b = evaluate_sequence("b", gt[:3], pred[:3] * 1.5, "per-sequence", T_world_cam=poses[:3], K=K)
    b.frame_errors[0]["abs_rel"] = 0.8  # mark one frame to check the frame-weighted mean
    r = summarise("m", [a, b], total_params=28_400_000, trainable_params=49_600, ms_per_frame=16.0)
    assert r.n_frames == 8 and r.n_sequences == 2
    all_rows = a.frame_errors + b.frame_errors
    assert r.metrics["abs_rel"] == pytest.approx(np.mean([x["abs_rel"] for x in all_rows]))
    assert r.tae == pytest.approx(np.mean(a.tae_pairs + b.tae_pairs))
    with pytest.raises(MetricError, match="nothing"):
        summarise("m", [])


def test_table_layout_like_paper():
    r = MethodResult(
        "EndoDAV",
        "per-sequence",
        {
            "abs_rel": 0.0521,
            "sq_rel": 0.3624,
            "rmse": 4.4644,
            "rmse_log": 0.0731,
            "a1": 0.979,
            "a2": 0.998,
            "a3": 1.0,
        },
        n_frames=10,
        n_sequences=1,
        tae=1.234,
        total_params=28_400_000,
        trainable_params=190_000,
        ms_per_frame=16.04,
    )
    table = format_table([r])
    lines = table.splitlines()
    assert lines[0].startswith("| Method | AbsRel ↓ | SqRel ↓ | RMSE ↓ | RMSE log ↓ | δ<1.25 ↑")
    assert "TAE ↓" in lines[0] and "Total params | Trainable params | ms / frame" in lines[0]
    assert lines[2] == (
        "| EndoDAV | 0.052 | 0.362 | 4.464 | 0.073 | 0.979 | 0.998 | 1.000 | 1.23 | 28.4M | 0.19M | 16.0 |"
    )
    assert format_params(49_600) == "0.05M" and format_params(None) == "-" and format_params(0) == "0"


def test_save_report_writes_markdown_and_json(tmp_path):
    gt, pred, poses, K = _plane_sequence()
    r = summarise("m", [evaluate_sequence("a", gt, pred, "per-frame")])
    md = save_report({"per-frame": [r]}, tmp_path, title="t")
    assert md.read_text().startswith("# t")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["per-frame"][0]["method"] == "m" and data["per-frame"][0]["n_frames"] == 5


def test_eval_command_with_ablation_on_synthetic_data(tmp_path, vitt_weights, vitt_adapter, capsys):
    from endo_depth_model.cli import main

    out = tmp_path / "report"
    argv = [
        "eval", "synth:target?n_frames=8&height=28&width=42",
        "--encoder", "vitt", "--input-size", "28", "42",
        "--weights", str(vitt_weights), "--adapter", str(vitt_adapter), "--device", "cpu", "--out", str(out),
        "--ablation", "--window", "6", "--overlap", "4", "--blend", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert set(data) == {"per-frame", "per-sequence"}
    rows = {r["method"]: r for r in data["per-sequence"]}
    baselines = {"light heuristic (1/sqrt grey)", "constant depth"}
    assert set(rows) == {"EndoDAV (ours)", "w/o SSB (base VDA)", "w/o alignment"} | baselines
    for name in baselines:  # scored like the model, over the same frames
        assert rows[name]["n_frames"] == 8 and rows[name]["metrics"]["abs_rel"] > 0
    full, base = rows["EndoDAV (ours)"], rows["w/o SSB (base VDA)"]
    assert full["n_frames"] == 8 and full["tae"] is not None and full["tae"] >= 0
    assert full["trainable_params"] > 0 and base["trainable_params"] == 0
    assert full["total_params"] == base["total_params"] + full["trainable_params"]
    for r in data["per-frame"] + data["per-sequence"]:
        assert 0 < r["metrics"]["abs_rel"] < 10 and 0 <= r["metrics"]["a1"] <= 1
    assert full["metrics"] != base["metrics"]  # the adapter changes the prediction
    md = (out / "results.md").read_text()
    assert "| w/o alignment |" in md and "per-sequence protocol" in md
    assert "report:" in capsys.readouterr().out


def test_eval_command_reports_bad_input(tmp_path, capsys):
    from endo_depth_model.cli import main

    assert main(["eval", str(tmp_path / "missing"), "--encoder", "vitt", "--device", "cpu"]) == 1
    assert "missing" in capsys.readouterr().out


def test_eval_with_training_checkpoint_reports_pose_ate(tmp_path, vitt_weights, vitt_adapter):
    import shutil

    import torch
    from safetensors.torch import save_file

    from endo_depth_model.cli import main
    from endo_depth_model.models.pose_net import PoseNet
    from endo_depth_model.training.trainer import ADAPTER_FILE, META_FILE, POSE_FILE

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(vitt_adapter, ckpt / ADAPTER_FILE)
    torch.manual_seed(2)
    save_file({k: v.contiguous() for k, v in PoseNet().state_dict().items()}, str(ckpt / POSE_FILE))
    (ckpt / META_FILE).write_text("{}")
    out = tmp_path / "r"
    argv = [
        "eval", "synth:target?n_frames=8&height=28&width=42", "--encoder", "vitt",
        "--input-size", "28", "42", "--weights", str(vitt_weights), "--checkpoint", str(ckpt),
        "--device", "cpu", "--out", str(out), "--protocol", "per-sequence",
        "--window", "6", "--overlap", "4", "--blend", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    row = json.loads((out / "results.json").read_text())["per-sequence"][0]
    assert row["ate"] is not None and 0 <= row["ate"] < 1.0  # metres, 5-frame snippets
    assert row["sequences"][0]["ate_std"] >= 0
    assert "ATE ↓" in (out / "results.md").read_text()
