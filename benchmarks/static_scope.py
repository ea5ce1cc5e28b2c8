"""Benchmark: does a scope held still stay still, and do moving scopes keep their odometry?

The node's pipeline (causal, the shipped depth and pose networks) in four odometry configurations:
``net`` (the pose network's steps as they are), ``net_test`` (with the zero-motion test at
``--net-ratio``, the default before photometric refinement), ``refined`` (``pose_refine`` on, no test)
and ``refined_test`` (the defaults: refinement and the test at ``--ratio``), over

* the real EndoNeRF clip (camera fixed, tissue pulled; ``../shared/data/real``, skipped when absent):
  integrated path length over the median predicted depth, and the final rotation;
* the held-out synthetic sequences of ``benchmarks/model_quality.py`` (tube, lap, lap_unseen: 32 frames
  at 256x320, ground-truth poses): 5-frame snippet ATE (SfMLearner's, best scale per snippet) on moving
  sequences, path over depth on still ones, and how many steps the test set to the identity.

    .venv/bin/python benchmarks/static_scope.py --out benchmarks/results/static_scope.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_quality import PRESETS, REAL, read_clip, render  # noqa: E402


def run(
    rgbs: np.ndarray, K: np.ndarray, ratio: float, weights: str, pose_weights: str = "", refine: bool = True
) -> dict:
    from endo_depth_model.geometry import matrix_to_axis_angle
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig

    cfg = PipelineConfig(weights=weights, pose_weights=pose_weights, static_ratio=ratio, pose_refine=refine)
    pipe = DepthPipeline(cfg)
    poses, depths = [], []
    for i, rgb in enumerate(rgbs):
        out, motion = pipe.push(rgb, i, K=K)
        depths += [float(np.nanmedian(d.depth)) for d in out]
        poses.append(motion.T_odom_cam)
    xyz = np.stack([p[:3, 3] for p in poses])
    return {
        "poses": np.stack(poses),
        "path_over_depth": float(np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum() / np.nanmedian(depths)),
        "final_rotation_deg": float(np.degrees(np.linalg.norm(matrix_to_axis_angle(poses[-1][:3, :3])))),
        "static_steps": pipe.stats.static_frames,
        "refined_steps": pipe.stats.refined_steps,
        "steps": len(rgbs) - 1,
    }


def main() -> int:
    import torch
    from tqdm import tqdm

    from endo_depth_model.geometry import scale_intrinsics
    from endo_depth_model.metrics import snippet_ate
    from endo_depth_model.pipeline import PipelineConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="", help="depth weights (default: the shipped model)")
    ap.add_argument("--pose-weights", default="", help="pose network weights (default: the shipped one)")
    default_ratio = PipelineConfig().static_ratio
    ap.add_argument("--ratio", type=float, default=default_ratio, help="static_ratio with refinement")
    ap.add_argument("--net-ratio", type=float, default=0.85, help="static_ratio without refinement")
    ap.add_argument("--data", type=Path, default=ROOT / "runs/quality_data", help="rendered held-out cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/static_scope.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    results: dict = {
        "ratio": args.ratio,
        "net_ratio": args.net_ratio,
        "weights": args.weights or "shipped",
        "pose_weights": args.pose_weights or "shipped",
        "synthetic": {},
        "real": {},
    }
    configs = (
        ("net", 0.0, False),
        ("net_test", args.net_ratio, False),
        ("refined", 0.0, True),
        ("refined_test", args.ratio, True),
    )
    clip = REAL / "endonerf_pulling/pulling_gt.mp4"
    if clip.is_file():
        meta = json.loads((REAL / "endonerf_pulling/pulling_intrinsics.json").read_text())
        rgbs = read_clip(clip, 63, width=320)
        K = np.array([[meta["fx"], 0, meta["cx"]], [0, meta["fy"], meta["cy"]], [0, 0, 1.0]])
        K = scale_intrinsics(K, rgbs.shape[2] / meta["width"], rgbs.shape[1] / meta["height"])
        for name, ratio, refine in configs:
            r = run(rgbs, K, ratio, args.weights, args.pose_weights, refine)
            r.pop("poses")
            results["real"][f"endonerf_pulling_{name}"] = r
    else:
        print(f"real clip {clip} not found: skipped")
    for preset, seeds in PRESETS.items():
        for seed in tqdm(seeds, desc=preset, unit="seq"):
            data = render(preset, seed, 32, (256, 320), args.data)
            gt = data["poses"]
            moving = bool(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).max() > 1e-6)
            row = {"moving": moving}
            for name, ratio, refine in configs:
                r = run(data["rgb"], data["K"], ratio, args.weights, args.pose_weights, refine)
                row[f"static_steps_{name}"] = r["static_steps"]
                if moving:
                    row[f"ate_mm_{name}"] = snippet_ate(gt, r["poses"])[0] * 1e3
                else:
                    row[f"path_over_depth_{name}"] = r["path_over_depth"]
                    row[f"rotation_deg_{name}"] = r["final_rotation_deg"]
            results["synthetic"][f"{preset}_{seed}"] = row
    names = [c[0] for c in configs]
    moving = [row for row in results["synthetic"].values() if row["moving"]]
    if moving:
        means = {n: float(np.mean([row[f"ate_mm_{n}"] for row in moving])) for n in names}
        results["mean_moving_ate_mm"] = means
    results["minutes"] = (time.time() - t0) / 60
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    ratios = f"static_ratio {args.net_ratio} without, {args.ratio} with refinement"
    print(f"\nodometry: {' | '.join(names)} ({ratios})")
    for name in names:
        r = results["real"].get(f"endonerf_pulling_{name}")
        if r:
            print(
                f"  EndoNeRF (still scope) {name:>12}: path / depth {r['path_over_depth']:.3f}, rotation "
                f"{r['final_rotation_deg']:.2f} deg, identity steps {r['static_steps']}/{r['steps']}"
            )
    for key, row in results["synthetic"].items():
        if row["moving"]:
            shown = " | ".join(f"{row[f'ate_mm_{n}']:.3f}" for n in names)
            print(f"  {key:<16} moving: ATE mm {shown}; identity steps {row['static_steps_refined_test']}")
        else:
            shown = " | ".join(f"{row[f'path_over_depth_{n}']:.3f}" for n in names)
            print(f"  {key:<16} still : path / depth {shown}")
    if moving:
        means = results["mean_moving_ate_mm"]
        print("  mean moving ATE mm: " + " | ".join(f"{means[n]:.3f}" for n in names))
    print(f"{results['minutes']:.1f} min; saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
