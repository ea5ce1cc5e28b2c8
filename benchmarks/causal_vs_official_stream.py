"""Benchmark: our causal step against the official Video Depth Anything streaming mode, per frame.

Run ``.venv/bin/python benchmarks/causal_vs_official_stream.py --official <Video-Depth-Anything checkout>
[--encoder vits] [--size 224 280] [--precision bf16] [--threads 1] [--frames 40] [--out FILE]``.

Both sides get the same uint8 RGB frames of the given size, one at a time, in the same process, at the
same thread count and precision, with random weights of the same config (timing does not depend on the
weights):

* official: ``VideoDepthAnything.infer_video_depth_one`` of ``video_depth_anything/video_depth_stream.py``
  (their streaming mode: one encoder pass per frame, the head over cached hidden states of 31 earlier
  frames; ``input_size`` = the frame's short side, so the network sees the frame at its own size; their
  autocast on CPU is bf16 unless ``fp32``);
* ours: :class:`~endo_depth_model.causal.CausalDepth` (the node's causal engine, 31 cached frames) on
  the torch backend with the same precision.

Per-frame wall time after ``--warmup`` frames: median, p95 and mean, and the speed-up of the medians.
The official code is only imported from the checkout given (never part of this package); its module's
``torchvision`` import is stood in for when torchvision is absent (``endo_depth_model.bench``).
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


def frames(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth, slowly moving textured RGB frames (uint8)."""
    rng = np.random.default_rng(seed)
    import cv2

    base = cv2.resize(rng.random((hw[0] // 8 + 4, hw[1] // 8 + 4, 3)).astype(np.float32), None, fx=8, fy=8)
    return [
        np.ascontiguousarray((255 * base[i % 16 : i % 16 + hw[0], : hw[1]]).astype(np.uint8))
        for i in range(n)
    ]


def time_frames(fn, images: list[np.ndarray], warmup: int) -> dict:
    times = []
    for i, image in enumerate(images):
        t = time.perf_counter()
        fn(image)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    t = np.asarray(times)
    return {
        "median_ms": float(np.median(t)),
        "p95_ms": float(np.percentile(t, 95)),
        "mean_ms": float(t.mean()),
    }


def official_stream(path: str, encoder: str, hw, precision: str):
    from endo_depth_model.bench import import_official
    from endo_depth_model.models import VDA_CONFIGS

    module = import_official(path, "video_depth_anything.video_depth_stream")
    c = VDA_CONFIGS[encoder]
    net = module.VideoDepthAnything(encoder=encoder, features=c.features, out_channels=list(c.out_channels))
    net = net.eval()
    if precision not in ("fp32", "bf16"):
        raise SystemExit("the official CPU streaming path runs fp32 or its CPU autocast (bf16)")

    def encoder(x):  # their per-frame encoder pass, under their CPU autocast
        with torch.autocast(device_type="cpu", enabled=precision != "fp32"):
            return net.forward_features(x[:, None])

    def step(image):
        return net.infer_video_depth_one(image, input_size=min(hw), device="cpu", fp32=precision == "fp32")

    return step, encoder


def ours(encoder: str, hw, precision: str):
    from endo_depth_model.causal import CausalDepth
    from endo_depth_model.models import build_vda
    from endo_depth_model.preprocess import Preprocessor
    from endo_depth_model.runtime.torch_backend import TorchBackend

    model = build_vda(encoder).eval()
    backend = TorchBackend(model, "cpu", precision=precision)
    pre = Preprocessor(hw)
    engine = CausalDepth(backend, lambda rgb: pre(rgb)[0], precision=precision)
    state = {"i": 0}

    def push(image):
        engine.push(image, state["i"])
        state["i"] += 1

    def encoder(x):
        from endo_depth_model.runtime.precision import autocast

        with autocast(precision, "cpu"):
            return model.pretrained.forward_intermediates(x, model.config.intermediate_layers)

    return push, encoder


def encoder_ms(encoder, hw, repeats: int = 5) -> float:
    """Median wall time of one encoder pass on one (normalised) frame."""
    x = torch.randn(1, 3, *hw)
    encoder(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        encoder(x)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True, metavar="PATH", help="Video-Depth-Anything checkout")
    ap.add_argument("--encoder", default="vits", choices=("vits", "vitb", "vitl"))
    ap.add_argument("--size", type=int, nargs=2, default=(224, 280), metavar=("H", "W"))
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/causal_vs_official_stream.json")
    args = ap.parse_args()
    hw = (int(args.size[0]), int(args.size[1]))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = frames(args.frames, hw)
    result = {"encoder": args.encoder, "size": list(hw), "precision": args.precision, "threads": args.threads,
              "frames": args.frames, "warmup": args.warmup}  # fmt: skip
    with torch.inference_mode():
        # interleaved twice (A B A B), so a drift of the machine's speed does not favour one side
        runs: dict[str, list[dict]] = {"official": [], "ours": []}
        for _ in range(2):
            for name in ("official", "ours"):
                if name == "official":
                    step, encoder = official_stream(args.official, args.encoder, hw, args.precision)
                else:
                    step, encoder = ours(args.encoder, hw, args.precision)
                row = time_frames(step, images, args.warmup)
                row["encoder_ms"] = encoder_ms(encoder, hw)
                runs[name].append(row)
    for name, rows in runs.items():
        result[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"runs": rows}
    result["speedup_median"] = result["official"]["median_ms"] / result["ours"]["median_ms"]
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(),
                         "torch": torch.__version__}  # fmt: skip
    print(f"{args.encoder} {hw[0]}x{hw[1]} {args.precision}, {args.threads} thread(s), per frame after "
          f"{args.warmup} warm-up frames (median / p95 / mean ms; the encoder's share):")  # fmt: skip
    for name in ("official", "ours"):
        r = result[name]
        print(
            f"  {name:9s} {r['median_ms']:7.1f} {r['p95_ms']:7.1f} {r['mean_ms']:7.1f}"
            f"   encoder {r['encoder_ms']:.1f}"
        )
    print(f"  speed-up (medians): {result['speedup_median']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
