"""Supervised pretraining of a small VDA on simulator ground truth (the shipped base model's first stage).

EndoDAV starts from Video Depth Anything, pretrained on large natural-video data. Our shipped CPU model
(``vitt``) has no such checkpoint, so its base is trained here on the simulator's *source* domain with
ground-truth depth, then SSB-fine-tuned self-supervised on the *target* domain (``endo-depth train``),
as EndoDAV does with VDA and SCARED.

Loss, per frame, on disparity: the scale-and-shift-invariant L1 of MiDaS/Depth Anything (prediction and
target each normalised by median and mean absolute deviation) plus a weak log-median term that anchors
the absolute level to ``depth_to_disparity(gt, min_depth, max_depth)``, so that the output is usable by
the Monodepth2-style depth conversion of the self-supervised stage.

    endo-depth pretrain --out runs/pretrain --sequences 16 --frames 32 --steps 600
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class PretrainConfig:
    out: str = "runs/pretrain"
    model: str = "vitt"
    preset: str = "source"
    sequences: int = 16
    frames: int = 32
    first_seed: int = 1000
    input_height: int = 224
    input_width: int = 280
    clip: int = 4
    steps: int = 600
    lr: float = 2e-4
    weight_decay: float = 1e-4
    min_depth: float = 0.001
    max_depth: float = 0.3
    level_weight: float = 0.1
    seed: int = 0
    threads: int = 0
    pose_steps: int = 0  # > 0: also pretrain the pose network on ground-truth relative poses
    pose_batch: int = 4
    pose_lr: float = 3e-4
    device: str = "auto"  # auto (CUDA when available), cpu, cuda[:N]


def _device(name: str):
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _normalise(x, valid):
    """Per-frame median / mean-absolute-deviation normalisation over valid pixels. x, valid (N, P)."""
    import torch

    xs = torch.where(valid, x, torch.nan)
    med = xs.nanmedian(dim=1, keepdim=True).values
    mad = (xs - med).abs().nanmean(dim=1, keepdim=True).clamp_min(1e-6)
    return (x - med) / mad, med


def ssi_loss(pred, target, valid, level_weight: float = 0.1):
    """Scale-and-shift-invariant L1 on disparity + weak log-median level term.

    ``pred``, ``target`` (N, H, W) disparity, ``valid`` (N, H, W) bool. Returns a scalar tensor.
    """
    import torch

    n = pred.shape[0]
    p, t, v = pred.reshape(n, -1), target.reshape(n, -1), valid.reshape(n, -1)
    pn, pmed = _normalise(p, v)
    tn, tmed = _normalise(t, v)
    l1 = ((pn - tn).abs() * v).sum() / v.sum().clamp_min(1)
    level = (torch.log(pmed.clamp_min(1e-6)) - torch.log(tmed.clamp_min(1e-6))).abs().mean()
    return l1 + level_weight * level


def render_dataset(cfg: PretrainConfig) -> list[dict]:
    """Render (or load from ``out/data``) the source-domain sequences at the network input size."""
    from tqdm import tqdm

    from endo_depth_model.data.simulator import EndoscopySimulator, preset

    cache = Path(cfg.out) / "data"
    cache.mkdir(parents=True, exist_ok=True)
    seqs = []
    for i in tqdm(range(cfg.sequences), desc=f"render {cfg.preset} sequences", unit="seq"):
        path = (
            cache / f"{cfg.preset}_{cfg.first_seed + i}_{cfg.frames}_{cfg.input_height}x{cfg.input_width}.npz"
        )
        if not path.is_file():
            sim = EndoscopySimulator(
                preset(
                    cfg.preset,
                    seed=cfg.first_seed + i,
                    n_frames=cfg.frames,
                    height=cfg.input_height,
                    width=cfg.input_width,
                )
            )
            frames = list(sim)
            np.savez_compressed(
                path,
                rgb=np.stack([f.rgb for f in frames]),
                depth=np.stack([f.depth for f in frames]),
            )
        with np.load(path) as data:
            poses = EndoscopySimulator(
                preset(
                    cfg.preset,
                    seed=cfg.first_seed + i,
                    n_frames=cfg.frames,
                    height=cfg.input_height,
                    width=cfg.input_width,
                )
            ).poses  # camera-to-world, metres (cheap: the trajectory only)
            seqs.append(
                {"rgb": data["rgb"], "depth": data["depth"], "poses": np.asarray(poses, dtype=np.float64)}
            )
    return seqs


def pretrain_pose(cfg: PretrainConfig, seqs: list[dict]) -> Path:
    """Supervised pose pretraining on the source sequences' ground-truth relative poses.

    EndoDAV starts its pose network from ImageNet ResNet-18 weights, which are not available here; a pose
    network pretrained on the simulator's exact relative motion plays that role. ``PoseNet(a, b)`` is
    trained to give ``T_b_a`` (frame a's camera to frame b's) for pairs 1 or 2 frames apart, both ways.
    Loss: L1 on translation in millimetres plus L1 on axis-angle in centiradians.
    """
    import torch
    from tqdm import tqdm

    from endo_depth_model.checkpoint import save_safetensors
    from endo_depth_model.geometry import matrix_to_axis_angle, relative_pose
    from endo_depth_model.models.pose_net import PoseNet

    torch.manual_seed(cfg.seed + 1)
    rng = np.random.default_rng(cfg.seed + 1)
    device = _device(cfg.device)
    net = PoseNet().to(device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.pose_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.pose_lr, total_steps=cfg.pose_steps, pct_start=0.05
    )
    log = []
    bar = tqdm(range(cfg.pose_steps), desc="pretrain pose", unit="step")
    for _ in bar:
        a_list, b_list, aa_list, t_list = [], [], [], []
        for _ in range(cfg.pose_batch):
            seq = seqs[rng.integers(len(seqs))]
            gap = int(rng.integers(1, 3))
            i = int(rng.integers(0, len(seq["rgb"]) - gap))
            a, b = (i, i + gap) if rng.random() < 0.5 else (i + gap, i)
            T_b_a = relative_pose(
                torch.from_numpy(seq["poses"][a]), torch.from_numpy(seq["poses"][b])
            ).numpy()
            a_list.append(seq["rgb"][a])
            b_list.append(seq["rgb"][b])
            aa_list.append(matrix_to_axis_angle(T_b_a[:3, :3]))
            t_list.append(T_b_a[:3, 3])

        def batch(images):
            return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div(255.0)

        axis_angle, translation = net(batch(a_list), batch(b_list))[:2]
        aa_gt = torch.tensor(np.stack(aa_list), dtype=torch.float32, device=device)
        t_gt = torch.tensor(np.stack(t_list), dtype=torch.float32, device=device)
        loss = (translation - t_gt).abs().mean() * 1000.0 + (axis_angle - aa_gt).abs().mean() * 100.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(log[-20:]):.4f}")
    path = save_safetensors(
        net,
        Path(cfg.out) / f"{cfg.model}_pose_pretrained.safetensors",
        metadata={"stage": "supervised-source-pose", "steps": str(cfg.pose_steps)},
    )
    print(
        f"pose network: loss {np.mean(log[:20]):.4f} -> {np.mean(log[-20:]):.4f} (mm + crad); weights: {path}"
    )
    return path


def pretrain(cfg: PretrainConfig) -> Path:
    import torch
    from tqdm import tqdm

    from endo_depth_model.checkpoint import save_safetensors
    from endo_depth_model.models import build_vda
    from endo_depth_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, depth_to_disparity

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seqs = render_dataset(cfg)
    if cfg.pose_steps > 0:
        pretrain_pose(cfg, seqs)
    if cfg.steps <= 0:
        return out / f"{cfg.model}_pretrained.safetensors"
    device = _device(cfg.device)
    model = build_vda(cfg.model)
    # A randomly initialised final conv can leave the last ReLU dead everywhere (zero output, no gradient):
    # start it alive, at a typical disparity level.
    last = model.head.scratch.output_conv2[2]
    torch.nn.init.normal_(last.weight, std=1e-3)
    torch.nn.init.constant_(last.bias, 0.02)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
    log = []
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="pretrain", unit="step")
    for step in bar:
        seq = seqs[rng.integers(len(seqs))]
        n = len(seq["rgb"])
        stride = int(rng.integers(1, 3))
        start = int(rng.integers(0, n - (cfg.clip - 1) * stride))
        idx = start + stride * np.arange(cfg.clip)
        if rng.random() < 0.5:
            idx = idx[::-1].copy()  # time reversal: the temporal modules see both directions
        rgb = torch.from_numpy(seq["rgb"][idx]).to(device).permute(0, 3, 1, 2).float().div(255.0)[None]
        depth = torch.from_numpy(seq["depth"][idx]).to(device)
        if rng.random() < 0.5:
            rgb, depth = rgb.flip(-1), depth.flip(-1)
        valid = torch.isfinite(depth) & (depth > cfg.min_depth) & (depth < cfg.max_depth)
        target = depth_to_disparity(torch.nan_to_num(depth, nan=cfg.max_depth), cfg.min_depth, cfg.max_depth)
        pred = model((rgb - mean) / std)[0]
        loss = ssi_loss(pred, target, valid, cfg.level_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.append({"step": step + 1, "loss": float(loss), "lr": sched.get_last_lr()[0]})
        bar.set_postfix(loss=f"{np.mean([r['loss'] for r in log[-20:]]):.4f}")
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            save_safetensors(
                model,
                out / f"{cfg.model}_pretrained.safetensors",
                metadata={"config": cfg.model, "stage": "supervised-source", "step": str(step + 1)},
            )
    minutes = (time.time() - t0) / 60
    (out / "pretrain_log.json").write_text(
        json.dumps({"config": asdict(cfg), "minutes": minutes, "log": log})
    )
    first, last = np.mean([r["loss"] for r in log[:20]]), np.mean([r["loss"] for r in log[-20:]])
    print(
        f"\npretrained {cfg.model} for {cfg.steps} steps in {minutes:.1f} min: loss {first:.4f} -> {last:.4f}"
    )
    print(f"weights: {out / f'{cfg.model}_pretrained.safetensors'}")
    return out / f"{cfg.model}_pretrained.safetensors"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="supervised pretraining of a small VDA on simulator ground truth"
    )
    d = PretrainConfig()
    for name, value in asdict(d).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.set_defaults(func=lambda a: pretrain(PretrainConfig(**{k: getattr(a, k) for k in asdict(d)})) and 0)
