"""Training configuration (typed YAML), the spatial/temporal schedule and ``endo-depth train``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from endo_depth_model.cli import main
from endo_depth_model.config import ConfigError, to_dict
from endo_depth_model.training.config import ScheduleConfig, TrainConfig, load_train_config

ROOT = Path(__file__).resolve().parents[2]


def test_training_recipes_live_in_recipes_and_the_old_configs_path_still_works():
    recipes = sorted(p.name for p in (ROOT / "recipes").glob("train_*.yaml"))
    assert "train_synthetic.yaml" in recipes and "train_rosbag.yaml" in recipes
    assert sorted(p.name for p in (ROOT / "configs").glob("train_*.yaml")) == recipes  # the old name
    assert (ROOT / "configs").resolve() == (ROOT / "recipes").resolve()


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("train_*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_train_config(path)
    assert isinstance(cfg, TrainConfig) and cfg.data.train
    assert cfg.data.input_height % 14 == 0 and cfg.data.input_width % 14 == 0
    # YAML round trip (what every checkpoint stores as config.yaml) gives the same config back
    from endo_depth_model.config import from_dict

    assert from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg


def test_endodav_schedule_defaults():
    sched = ScheduleConfig()
    assert (sched.spatial_steps, sched.temporal_steps) == (400, 100)
    phases = [sched.phase(s) for s in range(1000)]
    assert phases[:400] == ["spatial"] * 400 and phases[400:500] == ["temporal"] * 100
    assert phases[500:900] == ["spatial"] * 400 and phases.count("temporal") == 200
    only_spatial = ScheduleConfig(spatial_steps=5, temporal_steps=0)
    assert {only_spatial.phase(s) for s in range(20)} == {"spatial"}


def test_bad_configs_are_rejected_with_the_path(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  clip_lenght: 16\n")
    with pytest.raises(ConfigError, match="clip_lenght"):
        load_train_config(bad)
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "clip_lenght" in err
    bad.write_text("data:\n  input_height: 100\n")
    with pytest.raises(ConfigError, match="multiple of 14"):
        load_train_config(bad)
    bad.write_text("schedule:\n  spatial_steps: 0\n  temporal_steps: 0\n")
    with pytest.raises(ConfigError, match="not both 0"):
        load_train_config(bad)
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_cli_trains_on_a_rosbag_recording(tmp_path, capsys):
    """``endo-depth train`` end to end on what users have: a rosbag2 recording of their endoscope
    (images + camera_info, no ground truth) -> clip sampler -> 1 temporal step -> validation on a
    simulator spec (with ground truth) -> logs and checkpoints."""
    import dataclasses

    from endo_depth_model.checkpoint import save_safetensors
    from endo_depth_model.data import simulator
    from endo_depth_model.data.rosbag import write_rosbag
    from endo_depth_model.models import build_vda

    sim = simulator.EndoscopySimulator(simulator.preset("target", height=28, width=42, n_frames=6, seed=1))
    recording = tmp_path / "recording"
    write_rosbag((dataclasses.replace(f, depth=None, T_world_cam=None) for f in sim), recording)

    torch.manual_seed(0)
    model = build_vda("vitt")
    with torch.no_grad():
        model.head.scratch.output_conv2[2].bias.fill_(0.05)  # positive disparity (see test_trainer)
    save_safetensors(model.state_dict(), tmp_path / "vitt.safetensors")
    spec = "synth:source?seed={}&n_frames=6&height=28&width=42"
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {
            "train": [f"rosbag:{recording}?topic=/endoscope/image_raw"],
            "val": [spec.format(2)],
            "clip_length": 2,
            "input_height": 28,
            "input_width": 42,
            "num_workers": 0,
        },
        "model": {"name": "vitt", "weights": str(tmp_path / "vitt.safetensors")},
        "loss": {"scales": [0]},
        "schedule": {"steps": 1, "spatial_steps": 0, "temporal_steps": 1, "val_every": 1, "log_every": 1},
        "tensorboard": True,
        "device": "cpu",
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 0
    finally:
        torch.backends.mkldnn.enabled = enabled
    err = capsys.readouterr().err
    assert "Training summary" in err and "best val abs_rel" in err
    # what the data was, before training: sequences, frames, clips and where the intrinsics came from
    assert "data.train: 1 sequence(s)" in err and "6 frames" in err and "data.val: 1 sequence(s)" in err
    assert "intrinsics:" in err
    # the base model's validation at step 0, to compare the fine-tuned checkpoints against
    assert "validation at step 0 (before training):" in err and "abs_rel" in err.split("step 0")[1]
    run = tmp_path / "run"
    with (run / "train_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["phase"] for r in rows] == ["temporal"] and float(rows[0]["projection"]) > 0
    for name in ("adapter.safetensors", "pose_net.safetensors", "meta.json", "config.yaml"):
        assert (run / "checkpoints/last" / name).is_file() and (run / "checkpoints/best" / name).is_file()
    # last resumes exactly (full state); best holds the selected weights only
    assert (run / "checkpoints/last/trainer_state.pt").is_file()
    assert not (run / "checkpoints/best/trainer_state.pt").exists()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert load_train_config(run / "checkpoints/last/config.yaml").data.val == [spec.format(2)]


def test_cli_reports_a_missing_weight_file(tmp_path, capsys):
    missing = tmp_path / "nowhere/vits.pth"
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {
            "train": ["synth:source?n_frames=6&height=28&width=42"],
            "input_height": 28,
            "input_width": 42,
        },
        "model": {"name": "vitt", "weights": str(missing)},
        "device": "cpu",
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 1
    assert str(missing) in capsys.readouterr().err
