"""The trainer: gradients reach only SSB vectors and the pose net, exact resume, DDP == one process.

Tiny runs: the ``vitt`` model on 28x42 simulator clips of T=2 frames (+2 neighbours), 2-3 steps.
"""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from endo_depth_model.config import from_dict, to_dict
from endo_depth_model.training.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)
from endo_depth_model.training.trainer import STATE_FILE, AugmentedClips, Trainer, collate_clips, train

H, W, T = 28, 42, 2


@pytest.fixture(autouse=True)
def _fast_cpu():
    # oneDNN spends seconds building kernels for each new shape; the reference kernels are faster here
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Stands in for pretrained weights: a random vitt whose disparity output is positive (a random
    head outputs ReLU zeros: no gradient at all) and whose temporal modules are not the identity
    (``proj_out`` is zero-initialised, which would block every gradient to the temporal SSB)."""
    from endo_depth_model.checkpoint import save_safetensors
    from endo_depth_model.models import build_vda

    torch.manual_seed(0)
    model = build_vda("vitt")
    with torch.no_grad():
        model.head.scratch.output_conv2[2].bias.fill_(0.05)
        for name, param in model.named_parameters():
            if "proj_out" in name and name.endswith("weight"):
                param.normal_(0.0, 0.02)
    path = tmp_path_factory.mktemp("weights") / "vitt_warm.safetensors"
    save_safetensors(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clips() -> dict:
    from endo_depth_model.data import simulator

    sim = simulator.EndoscopySimulator(simulator.preset("source", height=H, width=W, n_frames=10, seed=5))
    frames = [sim.render(k) for k in range(10)]

    def clip(start: int) -> dict:
        fr = frames[start : start + T + 2]
        return {
            "frames": np.stack([f.rgb for f in fr]),
            "K": fr[0].K,
            "depth": np.stack([f.depth for f in fr]),
        }

    return {"train": [clip(i) for i in range(5)], "val": [clip(6)]}


def make_cfg(out: Path, weights: Path, **schedule) -> TrainConfig:
    sched = {"steps": 3, "spatial_steps": 2, "temporal_steps": 1, "val_every": 2, "checkpoint_every": 2}
    sched.update(schedule)
    return TrainConfig(
        output_dir=out,
        data=DataConfig(clip_length=T, input_height=H, input_width=W, num_workers=0, augment=True),
        model=ModelConfig(name="vitt", weights=weights),
        loss=LossConfig(scales=[0, 1]),
        optim=OptimConfig(lr=1e-3, lr_decay_steps=2, lr_decay_gamma=0.5),
        schedule=ScheduleConfig(log_every=1, **sched),
        batch_size=2,
        device="cpu",
        tensorboard=False,
    )


def test_gradients_reach_only_ssb_vectors_and_pose_net(tmp_path, weights, clips):
    cfg = make_cfg(tmp_path, weights, spatial_steps=1, temporal_steps=1)
    trainer = Trainer(cfg, train_clips=clips["train"], val_clips=clips["val"])
    data = AugmentedClips(clips["train"], augment=False)
    batch = collate_clips([data[(0, None)]])
    named = dict(trainer.module.named_parameters())
    before = {k: v.detach().clone() for k, v in named.items()}

    def kind(name: str) -> str:
        if name.startswith("pose_net."):
            return "pose"
        if ".lora_ssb_" in name:
            return "temporal" if ".motion_modules." in name else "spatial"
        return "base"

    for step, phase in enumerate(["spatial", "temporal"]):
        values = trainer.train_step(batch)
        assert values["phase"] == phase
        with_grad = {kind(k) for k, p in named.items() if p.grad is not None and p.grad.abs().sum() > 0}
        assert with_grad == {phase, "pose"}, (phase, with_grad)
        # projection loss only in the temporal phase
        assert (values["projection"] > 0) == (phase == "temporal")
        assert trainer.step == step + 1
    changed = {kind(k) for k, p in named.items() if not torch.equal(p.detach(), before[k])}
    assert changed == {"spatial", "temporal", "pose"}
    frozen = [k for k, p in named.items() if kind(k) == "base"]
    assert frozen and all(torch.equal(named[k].detach(), before[k]) for k in frozen)

    # a validation split without ground truth (e.g. a rosbag): selection falls back to the loss
    trainer.val_clips = [{k: v for k, v in clips["val"][0].items() if k != "depth"}]
    metrics = trainer.validate()
    assert set(metrics) == {"loss"} and metrics["loss"] > 0
    assert trainer._select_metric(metrics) == "loss"


def _read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_exact_resume_equals_uninterrupted_run(tmp_path, weights, clips):
    """2 steps in one go == 1 step, stop, resume from checkpoints/last, 1 more step: bit-identical.

    The resumed step is the first temporal one (phase switch) and the learning rate decays every step,
    so the phase, optimizer, scheduler, data order and augmentation must all be restored exactly."""
    kwargs = {"steps": 2, "spatial_steps": 1, "temporal_steps": 1, "val_every": 1, "checkpoint_every": 10}
    full = make_cfg(tmp_path / "full", weights, **kwargs)
    full.optim.lr_decay_steps, full.batch_size = 1, 1
    summary = train(full, train_clips=clips["train"], val_clips=clips["val"])
    assert summary.steps == 2

    split = make_cfg(tmp_path / "split", weights, **kwargs)
    split.optim.lr_decay_steps, split.batch_size = 1, 1
    first = train(split, stop_after=1, train_clips=clips["train"], val_clips=clips["val"])
    assert first.steps == 1
    state = torch.load(tmp_path / "split/checkpoints/last" / STATE_FILE, weights_only=True)
    assert state["step"] == 1 and state["scheduler"]["last_epoch"] == 1
    second = train(split, resume="auto", train_clips=clips["train"], val_clips=clips["val"])
    assert second.start_step == 1 and second.steps == 2

    for name in ("adapter.safetensors", "pose_net.safetensors"):
        a = load_file(str(tmp_path / "full/checkpoints/last" / name))
        b = load_file(str(tmp_path / "split/checkpoints/last" / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # the logs of the resumed run continue the same trajectory
    rows_a = _read_rows(tmp_path / "full/train_log.csv")
    rows_b = _read_rows(tmp_path / "split/train_log.csv")
    assert [r["step"] for r in rows_b] == ["1", "2"]
    assert [(r["loss"], r["lr"]) for r in rows_a] == [(r["loss"], r["lr"]) for r in rows_b]
    assert [r["phase"] for r in rows_a] == ["spatial", "temporal"]

    # checkpoint files: adapter vectors only, safetensors; trainer state loads with weights_only
    last = tmp_path / "full/checkpoints/last"
    adapter = load_file(str(last / "adapter.safetensors"))
    assert adapter and all(".lora_ssb_" in k for k in adapter)
    assert sum(v.numel() for v in adapter.values()) == summary.trainable["depth"]
    state = torch.load(last / STATE_FILE, weights_only=True)
    assert set(state) >= {"optimizer", "scheduler", "rng", "step", "best"}

    # selection on the validation split (it has ground truth: median-scaled AbsRel): the base model
    # (step 0) and steps 1 and 2
    val_rows = _read_rows(tmp_path / "full/val_log.csv")
    assert [int(r["step"]) for r in val_rows] == [0, 1, 2]
    assert summary.best_metric == "abs_rel"
    values = [float(r["abs_rel"]) for r in val_rows]
    best_step = int(val_rows[int(np.argmin(values))]["step"])
    assert summary.best_step == best_step
    meta = json.loads((tmp_path / "full/checkpoints/best/meta.json").read_text())
    assert meta["step"] == best_step and meta["metrics"]["abs_rel"] == pytest.approx(min(values))
    assert second.best_step == best_step  # the resumed run kept the best-so-far from its checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, train_clips: list) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    import torch.distributed as dist

    cfg = from_dict(TrainConfig, cfg_dict)
    try:
        train(cfg, train_clips=train_clips)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_processes_match_one_process(tmp_path, weights, clips):
    """2 gloo processes x 1 clip == 1 process x 2 clips (same global batch), through a phase switch."""
    one = make_cfg(tmp_path / "one", weights, steps=2, spatial_steps=1, temporal_steps=1, val_every=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each worker: the same kernels, the same float rounding
    try:
        train(one, train_clips=clips["train"])
    finally:
        torch.set_num_threads(threads)

    two = make_cfg(tmp_path / "two", weights, steps=2, spatial_steps=1, temporal_steps=1, val_every=10)
    two.batch_size = 1
    mp.spawn(_ddp_worker, args=(2, _free_port(), to_dict(two), clips["train"]), nprocs=2, join=True)

    worst = 0.0
    for name in ("adapter.safetensors", "pose_net.safetensors"):
        a = load_file(str(tmp_path / "one/checkpoints/last" / name))
        b = load_file(str(tmp_path / "two/checkpoints/last" / name))
        for k in a:
            if a[k].is_floating_point() and "running" not in k:  # BatchNorm running stats: see below
                worst = max(worst, float((a[k] - b[k]).abs().max()))
    # Measured: 0.0 (bitwise equal). Each clip is computed alone with the same kernels in both runs, and
    # the two-rank all-reduce (g0 + g1) / 2 equals autograd's 0.5 g0 + 0.5 g1 exactly (halving is exact
    # in float32). The bound allows for other summation orders (more ranks, other hardware): a 1-ulp
    # gradient change moves an Adam update (at most lr = 1e-3 here) by far less than 1e-6.
    assert worst <= 1e-6, worst
    # BatchNorm running statistics (eval-mode only) are not compared: DDP keeps rank 0's, which saw
    # half of each global batch.
    rows_one = _read_rows(tmp_path / "one/train_log.csv")
    rows_two = _read_rows(tmp_path / "two/train_log.csv")
    for r1, r2 in zip(rows_one, rows_two, strict=True):
        assert float(r1["loss"]) == pytest.approx(float(r2["loss"]), rel=1e-6)


@pytest.mark.gpu
def test_trains_on_cuda_and_resumes_on_cpu(tmp_path, weights, clips):
    """A CUDA run (nccl is only used under torchrun) writes checkpoints that a CPU run resumes."""
    cfg = make_cfg(tmp_path, weights, steps=2, spatial_steps=1, temporal_steps=1, val_every=2)
    cfg.device = "cuda"
    summary = train(cfg, train_clips=clips["train"], val_clips=clips["val"])
    assert summary.steps == 2 and all(np.isfinite(v) for v in summary.final.values())
    assert summary.final["projection"] > 0
    cfg.device = "cpu"
    cfg.schedule.steps = 3
    resumed = train(cfg, resume="auto", train_clips=clips["train"], val_clips=clips["val"])
    assert resumed.start_step == 2 and resumed.steps == 3 and np.isfinite(resumed.final["loss"])


def test_streaming_mode_fine_tuning_keeps_later_frames_out(tmp_path, weights, clips):
    """``model.causal``: the clip's depth comes from causal temporal attention (what the node's causal
    engine computes), so a clip frame's disparity does not change when a later frame does; the aligned
    (default) training window does see it."""
    batch = collate_clips([AugmentedClips(clips["train"], augment=False)[(0, None)]])
    frames = batch["frames"]
    changed = frames.clone()
    changed[:, -2] = torch.rand_like(changed[:, -2])  # the clip's last frame (the last is a neighbour)
    out = {}
    for causal in (False, True):
        cfg = make_cfg(tmp_path / str(causal), weights)
        cfg.model.causal = causal
        module = Trainer(cfg, train_clips=clips["train"], val_clips=clips["val"]).module.eval()
        with torch.no_grad():
            out[causal] = [
                module.forward(x, x, batch["K"], projection=False)["disparity"] for x in (frames, changed)
            ]
    torch.testing.assert_close(out[True][0][:, :-1], out[True][1][:, :-1], rtol=1e-5, atol=1e-7)
    assert (out[False][0][:, :-1] - out[False][1][:, :-1]).abs().max() > 1e-6


def test_summary_says_when_the_base_model_stayed_best():
    from endo_depth_model.training.trainer import TrainSummary

    def summary(best_step):
        return TrainSummary(
            steps=600,
            start_step=0,
            world_size=1,
            seconds=1.0,
            final={"loss": 0.06},
            best_metric="abs_rel",
            best_value=0.0904,
            best_step=best_step,
            last_checkpoint=Path("c/last"),
            best_checkpoint=Path("c/best"),
            trainable={"depth": 10, "percent": 0.1},
        ).table()

    assert "the base model" in summary(0) and "0.0904 at step 0" in summary(0)
    assert "the base model" not in summary(300)
