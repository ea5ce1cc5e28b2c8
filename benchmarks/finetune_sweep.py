"""Benchmark: the shipped model's whole recipe, with variants of its fine-tuning stage, on one machine.

Renders the data, trains stage 1 (supervised source-domain depth and pose, ``endo-depth pretrain``),
then several stage-2 variants of ``recipes/train_synthetic.yaml`` side by side (``endo-depth train``),
and measures each against the base on the held-out target sequences (``endo-depth eval``, both
protocols) and with ``scripts/diagnose_finetune.py`` (pose errors, scale agreement of the pair). Meant
for a GPU machine, where the whole sweep takes minutes; on a 2-core CPU one variant takes about 10.

    .venv/bin/python benchmarks/finetune_sweep.py --work runs/sweep --out runs/sweep/report
    .venv/bin/python benchmarks/finetune_sweep.py --work /tmp/s --out /tmp/s/r --quick   # smoke run

Writes ``summary.json`` and ``summary.md`` (one row per model: per-sequence AbsRel, delta<1.25 and TAE,
their change against the base, per-frame AbsRel, pose rotation / translation-direction errors, scale
agreement) under ``--out``, and with ``--ship`` the best variant's shipped files
(``scripts/ship_default_model.py``) under ``<out>/ship``. The best variant is the one with the lowest
per-sequence AbsRel among those whose scale agreement is within [0.5, 2] (the closed loop's
kinematic scale needs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> overrides of recipes/train_synthetic.yaml (dotted keys). "warm_pose" first trains the pose
# network alone (SSB learning rate ~0, so the depth network stays the base) and then runs the recipe
# from that pose network.
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "pose_lr_1e-3": {"optim.pose_lr": 1e-3},
    "long_1200": {"schedule.steps": 1200, "optim.lr_decay_steps": 900},
    "clip_8": {"data.clip_length": 8},
    "ssb_lr_0.02": {"optim.lr": 0.02},
    "no_projection": {"loss.projection": 0.0},
    "smooth_1e-2": {"loss.smoothness": 1e-2},
    "warm_pose": {"__warm_pose__": 300},
    "long_pose_lr_1e-3": {"schedule.steps": 1200, "optim.lr_decay_steps": 900, "optim.pose_lr": 1e-3},
    "ssb_lr_0.05": {"optim.lr": 0.05},
    "ssb_lr_0.02_600": {"optim.lr": 0.02, "schedule.steps": 600, "optim.lr_decay_steps": 450},
    "ssb_lr_0.02_clip_8_600": {
        "optim.lr": 0.02,
        "data.clip_length": 8,
        "schedule.steps": 600,
        "optim.lr_decay_steps": 450,
    },
}
SCALE_AGREEMENT = (0.5, 2.0)


def sh(cmd: list[str], log: Path) -> float:
    """Run ``cmd``, output to ``log``; raise on failure. Returns seconds."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}); see {log}:\n{log.read_text()[-2000:]}")
    return time.perf_counter() - t0


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "endo_depth_model.cli", *map(str, args)]


def render(work: Path, frames: dict, jobs: int) -> None:
    """Every sequence of the recipe, in parallel processes."""
    logs = work / "logs"
    tasks = [("source", s) for s in range(1000, 1012)]
    specs = [
        ("target", s, frames["train"], (224, 280), work / f"ft_data/target_s{s}") for s in (11, 12, 13, 14)
    ]
    specs.append(("target", 21, frames["val"], (224, 280), work / "ft_data/val_s21"))
    specs += [
        ("target", s, frames["eval"], (256, 320), work / f"eval_target/target_s{s}") for s in (31, 32, 33)
    ]

    def one(task):
        if task[0] == "source":
            # render_dataset caches one .npz per sequence under <out>/data; each subprocess renders one
            code = (
                "from endo_depth_model.training.pretrain import PretrainConfig, render_dataset; "
                f"render_dataset(PretrainConfig(out={str(work / 'pretrain')!r}, sequences=1, "
                f"first_seed={task[1]}, frames={frames['source']}))"
            )
            return sh([sys.executable, "-c", code], logs / f"render_source_{task[1]}.log")
        _, seed, n, (h, w), out = task
        return sh(
            cli(
                "synth",
                "--preset",
                "target",
                "--seed",
                seed,
                "--frames",
                n,
                "--size",
                h,
                w,
                "--out",
                out,
                "--formats",
                "folder",
                "--depth-format",
                "npy",
                "--overwrite",
            ),
            logs / f"render_{out.name}.log",
        )

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, tasks + specs))


def variant_config(work: Path, name: str, overrides: dict, quick: bool) -> Path:
    base = yaml.safe_load((ROOT / "recipes/train_synthetic.yaml").read_text())
    base["output_dir"] = str(work / "runs" / name)
    base["data"]["train"] = [str(work / f"ft_data/target_s{s}/frames") for s in (11, 12, 13, 14)]
    base["data"]["val"] = [str(work / "ft_data/val_s21/frames")]
    base["model"]["weights"] = str(work / "pretrain/vitt_pretrained.safetensors")
    base["model"]["pose_weights"] = str(work / "pretrain/vitt_pose_pretrained.safetensors")
    base["tensorboard"] = False
    for key, value in overrides.items():
        section, field = key.split(".")
        base[section][field] = value
    if quick:
        base["schedule"].update(steps=4, spatial_steps=2, temporal_steps=2, val_every=2, checkpoint_every=2)
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(base))
    return path


def train_variant(work: Path, name: str, overrides: dict, quick: bool) -> dict:
    logs = work / "logs"
    t = 0.0
    overrides = dict(overrides)
    warm = overrides.pop("__warm_pose__", 0)
    if warm:
        pre = variant_config(
            work,
            f"{name}_phase1",
            {"optim.lr": 1e-12, "optim.pose_lr": 1e-3, "schedule.steps": warm, "schedule.val_every": warm},
            quick,
        )
        t += sh(cli("train", "--config", pre), logs / f"train_{name}_phase1.log")
        overrides["model.pose_weights"] = str(
            work / "runs" / f"{name}_phase1/checkpoints/last/pose_net.safetensors"
        )
    cfg = variant_config(work, name, overrides, quick)
    t += sh(cli("train", "--config", cfg), logs / f"train_{name}.log")
    return {"name": name, "train_s": t, "checkpoint": str(work / "runs" / name / "checkpoints/best")}


def measure(work: Path, name: str, checkpoint: str | None, device: str) -> dict:
    logs, out = work / "logs", work / "eval" / name
    weights = work / "pretrain/vitt_pretrained.safetensors"
    args = [
        "eval",
        work / "eval_target",
        "--encoder",
        "vitt",
        "--weights",
        weights,
        "--min-depth",
        0.001,
        "--max-depth",
        0.3,
        "--protocol",
        "both",
        "--out",
        out,
        "--device",
        device,
    ]
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    sh(cli(*args), logs / f"eval_{name}.log")
    results = json.loads((out / "results.json").read_text())
    row = {"name": name}
    seq = results["per-sequence"][0]
    row.update(
        abs_rel=seq["metrics"]["abs_rel"],
        a1=seq["metrics"]["a1"],
        rmse=seq["metrics"]["rmse"],
        tae=seq["tae"],
        abs_rel_frame=results["per-frame"][0]["metrics"]["abs_rel"],
    )
    diag = [
        sys.executable,
        str(ROOT / "scripts/diagnose_finetune.py"),
        str(work / "eval_target"),
        "--weights",
        str(weights),
        "--device",
        device,
        "--json",
        str(out / "diagnose.json"),
    ]
    diag += (
        ["--checkpoint", checkpoint]
        if checkpoint
        else ["--pose", str(work / "pretrain/vitt_pose_pretrained.safetensors")]
    )
    sh(diag, logs / f"diagnose_{name}.log")
    mean = json.loads((out / "diagnose.json").read_text())["mean"]
    row.update(
        {
            k: mean[k]
            for k in ("rot_err_deg", "rot_gt_deg", "t_dir_err_deg", "scale_agreement", "abs_rel_disp_fit")
        }
    )
    return row


def to_markdown(rows: list[dict], base: dict, best: str | None, meta: dict) -> str:
    lines = [
        f"Fine-tuning sweep on {meta['machine']} ({meta['minutes']:.1f} min in all); held-out target "
        "sequences 31-33 (3 x {eval} frames, 256x320), EndoDAV streaming inference, depth in mm.".format(
            **meta["frames"]
        ),
        "",
        "| model | AbsRel (seq) | vs base | δ<1.25 | TAE % | vs base | AbsRel (frame) | rot. err ° (true) "
        "| t dir err ° | scale agreement | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:

        def rel(k: str, r: dict = r) -> str:
            return f"{100 * (r[k] / base[k] - 1):+.1f} %"

        mark = " **(best)**" if r["name"] == best else ""
        lines.append(
            f"| {r['name']}{mark} | {r['abs_rel']:.3f} | {rel('abs_rel')} | {r['a1']:.3f} | {r['tae']:.2f} | "
            f"{rel('tae')} | {r['abs_rel_frame']:.3f} | {r['rot_err_deg']:.2f} ({r['rot_gt_deg']:.2f}) | "
            f"{r['t_dir_err_deg']:.0f} | {r['scale_agreement']:.2f} | {r.get('train_s', 0):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="working folder (data, runs, logs)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel renders / trainings")
    p.add_argument("--device", default="auto", help="device for training and evaluation (auto)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (a smoke test)")
    p.add_argument("--ship", action="store_true", help="write the best variant's shipped files")
    args = p.parse_args()

    import platform

    import torch

    # the subprocesses share the cores: a few threads each instead of all of them each
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // args.jobs)))
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    machine = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "CPU"
    t0 = time.perf_counter()
    work, out = args.work.resolve(), args.out.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    frames = {"source": 24, "train": 48, "val": 24, "eval": 48}
    if args.quick:
        frames = {"source": 8, "train": 10, "val": 8, "eval": 8}
    timings = {}
    print(f"[sweep] rendering on {args.jobs} workers", flush=True)
    t = time.perf_counter()
    render(work, frames, args.jobs)
    timings["render_s"] = time.perf_counter() - t
    print(f"[sweep] stage 1 (depth and pose in parallel) on {device}", flush=True)
    steps, pose_steps = ("4", "4") if args.quick else ("500", "1200")
    common = [
        "pretrain",
        "--out",
        work / "pretrain",
        "--sequences",
        12,
        "--frames",
        frames["source"],
        "--device",
        device,
    ]
    with ThreadPoolExecutor(2) as pool:
        depth = pool.submit(
            sh, cli(*common, "--steps", steps, "--clip", 3, "--lr", 0.0005), work / "logs/pretrain.log"
        )
        pose = pool.submit(
            sh,
            cli(*common, "--steps", 0, "--pose-steps", pose_steps, "--pose-lr", 0.001),
            work / "logs/pretrain_pose.log",
        )
        timings["stage1_depth_s"], timings["stage1_pose_s"] = depth.result(), pose.result()
    print(f"[sweep] stage 2: {len(args.variants)} variants, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(min(args.jobs, len(args.variants))) as pool:
        futures = {n: pool.submit(train_variant, work, n, VARIANTS[n], args.quick) for n in args.variants}
        trained = {}
        for n, f in futures.items():
            try:
                trained[n] = f.result()
            except RuntimeError as exc:
                print(f"[sweep] variant {n} failed: {exc}", flush=True)
    print("[sweep] evaluating", flush=True)
    with ThreadPoolExecutor(min(args.jobs, len(trained) + 1)) as pool:
        base_f = pool.submit(measure, work, "base", None, device)
        fs = {n: pool.submit(measure, work, n, t["checkpoint"], device) for n, t in trained.items()}
        base = base_f.result()
        rows = []
        for n, f in fs.items():
            try:
                rows.append({**f.result(), "train_s": trained[n]["train_s"]})
            except RuntimeError as exc:
                print(f"[sweep] evaluation of {n} failed: {exc}", flush=True)
    ok = [r for r in rows if SCALE_AGREEMENT[0] <= r["scale_agreement"] <= SCALE_AGREEMENT[1]]
    best = min(ok, key=lambda r: r["abs_rel"])["name"] if ok else None
    meta = {
        "machine": machine,
        "device": device,
        "minutes": (time.perf_counter() - t0) / 60,
        "frames": frames,
        "timings": timings,
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
    }
    (out / "summary.json").write_text(
        json.dumps({"meta": meta, "base": base, "variants": rows, "best": best}, indent=1)
    )
    table = to_markdown([base] + rows, base, best, meta)
    (out / "summary.md").write_text(table)
    print(table)
    if args.ship and best:
        sh(
            [
                sys.executable,
                str(ROOT / "scripts/ship_default_model.py"),
                str(work / "pretrain/vitt_pretrained.safetensors"),
                trained[best]["checkpoint"],
                "--out",
                str(out / "ship"),
            ],
            work / "logs/ship.log",
        )
        print(f"[sweep] shipped files of {best}: {out / 'ship'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
