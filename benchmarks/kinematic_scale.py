"""Benchmark: how close the photometric kinematic scale lands to the truth on the closed loop's scene.

A scripted approach in ``sim_endoscope.make_scene("target", seed)`` (3 mm sideways sine with a 2.5 s
period while advancing 3 mm/s, every second frame at 15 Hz, 12 frames at 112 x 140) runs through the
causal pipeline with ``scale_mode: kinematic`` and ``kinematic_source: photometric``; each frame pair
gets its measured motion. The truth is median(GT / relative depth) over the frames. The same approach is
the body of ``tests/inference/test_pipeline_pose.py::test_photometric_kinematic_scale_follows_the_depth_
not_the_pose_network`` (seed 1), which imports :func:`approach` from here.

    .venv/bin/python benchmarks/kinematic_scale.py [--weights W] [--seeds 0 1 2 3] --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def approach(seed: int, weights: str = "") -> dict:
    """The scripted approach on ``seed``: the pipeline's final scale state, the truth, how many frame pairs
    the estimator kept, and how many it kept when offered a pair without the measured motion (none should
    count: the photometric source needs ``T_measured``)."""
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig
    from endo_depth_ros.sim.sim_endoscope import make_scene, start_pose

    sim = make_scene("target", seed, 112, 140)
    T0 = start_pose(sim)
    cfg = dict(input_height=112, input_width=140, torch_threads=1, scale_mode="kinematic")
    pipe = DepthPipeline(
        PipelineConfig(weights=weights, kinematic_source="photometric", kinematic_min_pairs=3, **cfg)
    )
    ratios, kept, kept_without_motion, prev = [], 0, 0, None
    for i in range(12):
        t = 2 * i / 15.0
        T = T0.copy()
        T[:3, 3] += T0[:3, :3] @ np.array([0.003 * np.sin(2 * np.pi * t / 2.5), 0.0, 0.003 * t])
        frame = sim.render_pose(T, i)
        out, motion = pipe.push(frame.rgb, i, K=frame.K)
        if prev is not None:
            Tm = np.linalg.inv(prev) @ T  # camera i into camera i - 1, metres
            kept_without_motion += pipe.push_measured_motion(motion.T_prev_cur[:3, 3], Tm[:3, 3])
            kept += pipe.push_measured_motion(motion.T_prev_cur[:3, 3], Tm[:3, 3], Tm)
        prev = T
        for fd in out:
            ok = np.isfinite(frame.depth) & np.isfinite(fd.relative_depth) & (fd.relative_depth > 0)
            ratios.append(np.median(frame.depth[ok] / fd.relative_depth[ok]))
    return {
        "state": pipe.scale.state(),
        "truth": float(np.median(ratios)),
        "kept": kept,
        "kept_without_motion": kept_without_motion,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="", help="depth weights (default: the shipped model)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out = {}
    for seed in args.seeds:
        r = approach(seed, args.weights)
        out[seed] = r["state"].scale / r["truth"]
        print(f"seed {seed}: kinematic scale / truth {out[seed]:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"weights": args.weights or "shipped", "scale_over_truth": out}, indent=1))


if __name__ == "__main__":
    main()
