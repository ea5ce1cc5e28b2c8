"""Benchmark: odometry accuracy and cost of the shipped pose network at several input sizes.

Run ``.venv/bin/python benchmarks/pose_resolution.py [SEQUENCE_FOLDER ...] [--out FILE.json]`` on image
folders with ground-truth poses (default: the held-out target sequences of the model card,
``runs/eval_target/target_s3{1,2,3}/frames``, made by the commands there). For each input size it runs
the pose network on every consecutive pair, chains the relative poses, and reports the 5-frame snippet
ATE (SfMLearner, scale-aligned, ``metrics.compute_ate``), the mean rotation error per pair in degrees,
and the CPU time per pair. Prints a table and saves JSON with the machine and its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from endo_depth_model.data import open_source  # noqa: E402
from endo_depth_model.geometry import pose_vec_to_mat  # noqa: E402
from endo_depth_model.loading import load_pose_model, shipped_weights  # noqa: E402
from endo_depth_model.metrics import compute_ate  # noqa: E402
from endo_depth_model.models.pose_net import PoseNet  # noqa: E402
from endo_depth_model.preprocess import Preprocessor  # noqa: E402

DEFAULT = [f"runs/eval_target/target_s{s}/frames" for s in (31, 32, 33)]
SIZES = [(224, 280), (168, 210), (112, 140)]


def evaluate(net: PoseNet, folders: list[str], size: tuple[int, int]) -> dict:
    pre = Preprocessor(input_hw=(224, 280))
    ates, rot, pairs, cpu = [], [], 0, 0.0
    for folder in folders:
        seq = list(open_source(folder))
        x = torch.from_numpy(np.stack([f.rgb for f in seq])).permute(0, 3, 1, 2).float() / 255
        x = pre.resize(x, size)
        c0 = time.process_time()
        with torch.inference_mode():
            axis_angle, translation = net(x[:-1], x[1:])[:2]
        cpu += time.process_time() - c0
        T = pose_vec_to_mat(axis_angle, translation, invert=True).double().numpy()  # T_prev_cur
        pairs += len(T)
        first = np.linalg.inv(seq[0].T_world_cam)
        G = np.stack([first @ f.T_world_cam for f in seq])
        P = [np.eye(4)]
        for t in T:
            P.append(P[-1] @ t)
        P = np.stack(P)
        for k in range(len(seq) - 4):
            g = np.stack([(np.linalg.inv(G[k]) @ G[k + j])[:3, 3] for j in range(5)])
            p = np.stack([(np.linalg.inv(P[k]) @ P[k + j])[:3, 3] for j in range(5)])
            ates.append(compute_ate(g, p))
        for i, t in enumerate(T):
            R_gt = (np.linalg.inv(G[i]) @ G[i + 1])[:3, :3]
            cos = np.clip((np.trace(R_gt.T @ t[:3, :3]) - 1) / 2, -1, 1)
            rot.append(np.degrees(np.arccos(cos)))
    return {
        "size": f"{size[0]}x{size[1]}",
        "ate_mm": float(np.mean(ates) * 1e3),
        "rot_err_deg": float(np.mean(rot)),
        "cpu_ms_per_pair": cpu / pairs * 1e3,
        "pairs": pairs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="*", default=DEFAULT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/pose_resolution.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = load_pose_model(shipped_weights("vitt", pose=True), predict_intrinsics=False)
    rows = [evaluate(net, args.folders, size) for size in SIZES]
    print("| pose input | 5-frame ATE (mm) | rotation error per pair (deg) | CPU ms per pair |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['ate_mm']:.3f} | {r['rot_err_deg']:.3f} | {r['cpu_ms_per_pair']:.1f} |")
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "threads": args.threads,
        "folders": args.folders,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
