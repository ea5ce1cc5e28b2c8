"""Benchmark: large frames at a working size (``PipelineConfig.work_resolution``), accuracy and cost.

Run ``.venv/bin/python benchmarks/work_resolution.py [--size 720 1280] [--input-sizes 224x280 182x322]
[--out FILE]`` (default output ``benchmarks/results/work_resolution.json``). Held-out simulator sequences
(``lap`` with instruments, the ``tube``) rendered at ``--size`` (cached under ``runs/quality_data``; a
1280x720 sequence of 24 frames takes 2-4 minutes to render) go through the causal engine, as the node runs
it, in two ways:

* ``full``: the frames as they are (the network input interpolated bicubically from the full frame, the
  depth interpolated back to it): ``work_resolution: full``;
* ``work``: the frames area-averaged to :func:`~endo_depth_model.preprocess.work_size` first
  (:func:`~endo_depth_model.preprocess.shrink_rgb`), the depth upsampled with
  :func:`~endo_depth_model.preprocess.upsample_depth`: ``work_resolution: auto``.

Both are scored against the rendered depth at the frames' size (per-frame and per-sequence AbsRel, delta,
TAE, range, edges, instruments; ``benchmarks/model_quality.py``'s scoring). Further ``--input-sizes`` run
the ``work`` way with other network inputs (e.g. one with the frames' 16:9 aspect instead of 224x280's
4:5). The CPU time of the pipeline (``DepthPipeline``, default configuration, one thread, concurrent
pose off, the frames of the real laparoscopic clip when ``../shared/data/real`` is there) is measured
per frame for both settings too.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from model_quality import PRESETS as HELD_OUT  # noqa: E402

PRESETS = {name: HELD_OUT[name] for name in ("lap", "tube")}  # model_quality's held-out seeds


def pipeline_ms(frames: list, K: np.ndarray, mode: str) -> float:
    """Median CPU ms per frame of ``DepthPipeline.push`` (one thread, networks in turn) after 10 frames,
    the clip played once in order (a jump back would be a scene cut)."""
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig

    pipe = DepthPipeline(PipelineConfig(concurrent_pose=False, torch_threads=1, work_resolution=mode))
    for f in frames[:10]:
        pipe.push(f, None, K)
    times = []
    for f in frames[10:]:
        c0 = time.process_time()
        pipe.push(f, None, K)
        times.append((time.process_time() - c0) * 1e3)
    return float(np.median(times))


def main() -> int:
    import model_quality as mq
    import torch
    from tqdm import tqdm

    from endo_depth_model.fov import detect_fov
    from endo_depth_model.loading import load_depth_model, shipped_weights, weights_depth_range
    from endo_depth_model.preprocess import shrink_rgb, upsample_depth, work_size

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=(720, 1280), help="rendered frame size H W")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--input-sizes", nargs="+", default=["224x280"], help="network inputs HxW (first: A/B)")
    ap.add_argument("--data", type=Path, default=ROOT / "runs/quality_data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/work_resolution.json")
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = tuple(args.size)
    inputs = [tuple(int(v) for v in s.lower().split("x")) for s in args.input_sizes]
    weights = shipped_weights("vitt")
    lo, hi = weights_depth_range(weights)
    bundle = load_depth_model("vitt", weights)
    ways = ["full", *[f"work_{h}x{w}" for h, w in inputs]]
    results: dict = {
        "command": "benchmarks/work_resolution.py " + " ".join(sys.argv[1:]),
        "weights": str(weights.name),
        "frame_size": list(size),
        "work_sizes": {f"{h}x{w}": list(work_size(size, (h, w))) for h, w in inputs},
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        "presets": {},
    }
    for preset in args.presets:
        rows: dict = {k: [] for k in ways}
        for seed in tqdm(PRESETS[preset], desc=preset, unit="seq"):
            data = mq.render(preset, seed, args.frames, size, args.data)
            fov = detect_fov(data["rgb"]).mask
            preds = {"full": mq.predict(bundle, data["rgb"], "none", lo, hi, input_hw=inputs[0])}
            for h, w in inputs:
                hw = work_size(size, (h, w))
                small = np.stack([shrink_rgb(f, hw) for f in data["rgb"]])
                d = mq.predict(bundle, small, "none", lo, hi, input_hw=(h, w)).astype(np.float32)
                preds[f"work_{h}x{w}"] = np.stack([upsample_depth(x, size) for x in d]).astype(np.float64)
            for k in ways:
                rows[k].append(mq.score(preds[k], data, fov))
        results["presets"][preset] = {
            k: {m: float(np.nanmean([r[m] for r in v])) for m in v[0]} for k, v in rows.items()
        }
    clip = mq.REAL / "laparoscopic_rvim" / "endo.mp4"
    if not args.skip_timing and clip.is_file():
        frames = list(mq.read_clip(clip, 70, width=0))
        h, w = frames[0].shape[:2]
        K = np.array([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1]], float)
        results["pipeline_cpu_ms_per_frame"] = {
            "clip": f"laparoscopic_rvim {w}x{h}, frames 10-69 once, median",
            "full": [],
            "auto": [],
        }
        for mode in ("full", "auto", "full", "auto"):  # A B A B: the machine's drift falls on both
            results["pipeline_cpu_ms_per_frame"][mode].append(pipeline_ms(frames, K, mode))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"frames {size[0]}x{size[1]}, network inputs {', '.join(args.input_sizes)}")
    head = ("AbsRel/f", "d1/f", "AbsRel/s", "range", "instr")
    print(f"{'preset':10s} {'way':16s} " + " ".join(f"{h:>9s}" for h in head))
    for preset, table in results["presets"].items():
        for k, m in table.items():
            print(
                f"{preset:10s} {k:16s} {m['per_frame_abs_rel']:9.4f} {m['per_frame_a1']:9.3f} "
                f"{m['per_seq_abs_rel']:9.4f} {m['range_ratio']:9.2f} {m['instrument_nearer']:9.2f}"
            )
    if "pipeline_cpu_ms_per_frame" in results:
        t = results["pipeline_cpu_ms_per_frame"]
        full, auto = (" / ".join(f"{v:.1f}" for v in t[m]) for m in ("full", "auto"))
        print(f"pipeline CPU ms per frame ({t['clip']}): full {full}, auto {auto}")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
