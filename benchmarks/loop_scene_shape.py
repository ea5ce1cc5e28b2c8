"""Benchmark: is the relative depth one scale away from the truth in the closed loop's scene?

The closed loop's kinematic scale is one factor for the whole image, while the controller reads the depth
in a central window. When the network's relative depth is not proportional to the truth, the two differ,
whatever estimates the scale. For each seed of the loop's scene (``sim_endoscope.make_scene``, target
preset, cavity), a scripted approach (3 mm sideways sine, 3 mm/s forward, 15 Hz, 75 frames) runs through
the causal pipeline; every 10th frame gives

* ``window_over_all``: median(GT / relative depth) in the central window over the same on all pixels
  (1 = the window's scale is the image's);
* ``range_gt`` / ``range_pred``: p95/p5 of the true and the predicted depth.

    .venv/bin/python benchmarks/loop_scene_shape.py --weights W --input-size 56 70 --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import cv2
    import torch

    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig
    from endo_depth_ros.sim.sim_endoscope import central_window, make_scene, start_pose

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="", help="depth weights (default: the shipped model)")
    ap.add_argument("--input-size", type=int, nargs=2, default=(56, 70), help="network input H W")
    ap.add_argument("--image-size", type=int, nargs=2, default=(72, 96), help="rendered image H W")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    (h, w), (sh, sw) = args.input_size, args.image_size
    rows = {}
    for seed in args.seeds:
        sim = make_scene("target", seed, sh, sw)
        T0 = start_pose(sim)
        pipe = DepthPipeline(PipelineConfig(input_height=h, input_width=w, weights=args.weights))
        samples = []
        for k in range(75):
            t = k / 15.0
            T = T0.copy()
            T[:3, 3] += T0[:3, :3] @ np.array([0.003 * np.sin(2 * np.pi * t / 2.5), 0.0, 0.003 * t])
            frame = sim.render_pose(T, k)
            out, _ = pipe.push(frame.rgb, k, K=frame.K)
            if k % 10:
                continue
            gt = frame.depth.astype(np.float64)
            rel = cv2.resize(
                out[-1].relative_depth.astype(np.float64), (sw, sh), interpolation=cv2.INTER_NEAREST
            )
            ok = np.isfinite(gt) & np.isfinite(rel) & (rel > 0) & (gt > 0)
            win = np.zeros_like(ok)
            win[central_window(ok.shape, 0.33)] = True
            ratio = gt / np.where(ok, rel, np.nan)
            samples.append(
                (
                    np.nanmedian(ratio[ok & win]) / np.nanmedian(ratio[ok]),
                    np.percentile(gt[ok], 95) / np.percentile(gt[ok], 5),
                    np.percentile(rel[ok], 95) / np.percentile(rel[ok], 5),
                )
            )
        med = np.median(np.asarray(samples), axis=0)
        rows[seed] = {"window_over_all": med[0], "range_gt": med[1], "range_pred": med[2]}
        print(
            f"seed {seed}: window/all {med[0]:.2f}, range true {med[1]:.2f}, predicted {med[2]:.2f}",
            flush=True,
        )
    result = {
        "weights": args.weights or "shipped",
        "input_size": [h, w],
        "image_size": [sh, sw],
        "seeds": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
