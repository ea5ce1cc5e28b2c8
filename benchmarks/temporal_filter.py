"""Benchmark: the still-pixel temporal filter (``temporal_filter``) against the causal depth as it is.

The node's default causal engine with the shipped model; its depth filtered by
:class:`endo_depth_model.temporal_filter.StillPixelFilter` at several settings (``still`` grey levels,
``min_gain``), scored on

* the two real clips (``../shared/data/real``, skipped when absent): flicker (median relative depth change
  on pixels whose image does not change, ``endo_depth_model.quality.flicker``) over the per-frame
  network's flicker;
* one held-out sequence of each preset of ``benchmarks/model_quality.py`` (32 frames at 256 x 320, moving
  camera, instruments): per-frame and per-sequence AbsRel and TAE, where a filter that lags would lose.

    .venv/bin/python benchmarks/temporal_filter.py --out benchmarks/results/temporal_filter.json
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

from model_quality import INPUT_SIZE, PRESETS, REAL, at_precision, predict, read_clip, render, score  # noqa: E402

SETTINGS = [(6.0, 0.3), (4.0, 0.2), (10.0, 0.15)]


def filtered(depths: np.ndarray, rgbs: np.ndarray, still: float, min_gain: float) -> np.ndarray:
    from endo_depth_model.temporal_filter import StillPixelFilter

    f = StillPixelFilter(still, min_gain)
    return np.stack([f(d.astype(np.float32), r) for d, r in zip(depths, rgbs, strict=True)]).astype(
        np.float64
    )


def main() -> None:
    import torch

    from endo_depth_model.fov import detect_fov
    from endo_depth_model.loading import load_depth_model, shipped_weights, weights_depth_range
    from endo_depth_model.quality import flicker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=shipped_weights("vitt"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/temporal_filter.json")
    ap.add_argument("--data", type=Path, default=ROOT / "runs/quality_data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "auto"), help="as model_quality.py"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    min_depth, max_depth = weights_depth_range(args.weights)
    lo, hi = 0.001 if min_depth is None else min_depth, 0.3 if max_depth is None else max_depth
    bundle = at_precision(load_depth_model("vitt", args.weights), args.precision)
    names = ["causal"] + [f"still{s:g}_gain{g:g}" for s, g in SETTINGS]
    results: dict = {
        "weights": str(args.weights),
        "precision": args.precision,
        "settings": SETTINGS,
        "real": {},
        "presets": {},
    }
    clips = {
        "endonerf_pulling": REAL / "endonerf_pulling/pulling_gt.mp4",
        "laparoscopic_rvim": REAL / "laparoscopic_rvim/endo.mp4",
    }
    for name, path in clips.items():
        if not path.is_file():
            print(f"real clip {path} not found: skipped")
            continue
        rgbs = read_clip(path, 63, width=320)
        fov = detect_fov(rgbs).mask
        causal = predict(bundle, rgbs, "none", lo, hi, INPUT_SIZE)
        per_frame = flicker(predict(bundle, rgbs, True, lo, hi, INPUT_SIZE), rgbs, fov)
        row = {"per_frame": per_frame, "causal": flicker(causal, rgbs, fov)}
        for (s, g), label in zip(SETTINGS, names[1:], strict=True):
            row[label] = flicker(filtered(causal, rgbs, s, g), rgbs, fov)
        results["real"][name] = {
            "flicker": row,
            "ratio_to_per_frame": {k: v / per_frame for k, v in row.items()},
        }
    for preset, seeds in PRESETS.items():
        data = render(preset, seeds[0], 32, (256, 320), args.data)
        fov = detect_fov(data["rgb"]).mask
        causal = predict(bundle, data["rgb"], "none", lo, hi, INPUT_SIZE)
        row = {"causal": score(causal, data, fov)}
        for (s, g), label in zip(SETTINGS, names[1:], strict=True):
            row[label] = score(filtered(causal, data["rgb"], s, g), data, fov)
        results["presets"][f"{preset}_{seeds[0]}"] = row
    results["minutes"] = (time.time() - t0) / 60
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\n{'':18s}" + "".join(f"{n:>22s}" for n in names))
    for name, r in results["real"].items():
        print(f"{name + ' flicker':18s}" + "".join(f"{r['ratio_to_per_frame'][n]:>21.3f}x" for n in names))
    for key, r in results["presets"].items():
        cells = "".join(f"{r[n]['per_frame_abs_rel']:>11.4f} / {r[n]['tae']:>7.2f}" for n in names)
        print(f"{key:18s}{cells}   (AbsRel / TAE)")
    print(f"({results['minutes']:.1f} min) -> {args.out}")


if __name__ == "__main__":
    main()
