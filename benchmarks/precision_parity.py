"""Benchmark: how far bf16 depth is from fp32 depth (shipped model, the node's streaming layout).

Run ``.venv/bin/python benchmarks/precision_parity.py runs/eval_target`` (the held-out target sequences of
the model card; any folder ``endo-depth eval`` reads works). Each sequence is streamed twice through the
torch backend (fp32, then bf16 autocast) with window 16, overlap 12, blend 4, stride 4 at 224x280;
printed and saved (``benchmarks/results/precision_parity.json``): the mean and 99th percentile of
``|depth_bf16 - depth_fp32| / depth_fp32`` per sequence. Needs a CPU with AMX or AVX512-BF16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from endo_depth_model.data import open_sequences  # noqa: E402
from endo_depth_model.pipeline import PipelineConfig, load_depth_model, resolve_depth_range  # noqa: E402
from endo_depth_model.preprocess import Preprocessor, disparity_to_depth  # noqa: E402
from endo_depth_model.runtime.torch_backend import TorchBackend  # noqa: E402
from endo_depth_model.streaming import StreamingDepth  # noqa: E402


def stream_depth(frames, precision: str, cfg: PipelineConfig) -> np.ndarray:
    pre = Preprocessor((cfg.input_height, cfg.input_width))
    engine = StreamingDepth(
        TorchBackend(load_depth_model(cfg), "cpu", precision=precision),
        lambda rgb: pre(rgb)[0],
        window=cfg.window,
        overlap=cfg.overlap,
        stride=cfg.stride,
        blend=cfg.blend,
    )
    disp = []
    for rgb in frames:
        disp += [r.disparity for r in engine.push(rgb)]
    disp += [r.disparity for r in engine.flush()]
    return disparity_to_depth(np.stack(disp), *resolve_depth_range(cfg))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="folder of sequences (e.g. runs/eval_target)")
    ap.add_argument("--out", default="benchmarks/results/precision_parity.json")
    args = ap.parse_args()
    cfg = PipelineConfig()
    rows = []
    for seq in open_sequences(args.data):
        frames = [f.rgb for f in seq]
        d32, d16 = (stream_depth(frames, p, cfg) for p in ("fp32", "bf16"))
        rel = np.abs(d16 - d32) / d32
        name = seq.meta.get("path", seq.name)
        rows.append({"sequence": name, "frames": len(frames), "mean_rel": float(rel.mean()),
                     "p99_rel": float(np.percentile(rel, 99))})  # fmt: skip
        print(f"{name}: {len(frames)} frames, mean {rel.mean():.5f}, p99 {np.percentile(rel, 99):.5f}")
    result = {
        "data": args.data,
        "layout": {"window": cfg.window, "overlap": cfg.overlap, "blend": cfg.blend, "stride": cfg.stride},
        "input_hw": [cfg.input_height, cfg.input_width],
        "rows": rows,
        "mean_rel": float(np.mean([r["mean_rel"] for r in rows])),
        "load": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"all: mean relative difference {result['mean_rel']:.5f}; saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
