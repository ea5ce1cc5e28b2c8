"""Benchmark: where the node's per-frame time goes (shipped vitt model, default node layout, one thread).

Run ``.venv/bin/python benchmarks/node_profile.py [--precision auto|fp32|bf16] [--out FILE]`` (default
output ``benchmarks/results/node_profile_<precision>.json``). Two measurements at the resolved
precision, printed and saved as JSON with the machine and its load average:

* CPU time of one encoder call (one 224x280 frame) and of one head pass over a 16-frame window,
  computing the output for all 16 frames, the last 8 (what the default layout uses) and the last 2;
* the online pipeline (``DepthPipeline`` with the default ``PipelineConfig``) on 40 simulator frames
  after a 20-frame warm-up, CPU ms per frame split into head, pose network and encoder (aligned
  engine) or the causal step, its encoder and its temporal modules (causal engine; cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from endo_depth_model.data.simulator import EndoscopySimulator, preset  # noqa: E402
from endo_depth_model.loading import load_depth_model, shipped_weights  # noqa: E402
from endo_depth_model.pipeline import DepthPipeline, PipelineConfig  # noqa: E402
from endo_depth_model.runtime.precision import resolve_precision  # noqa: E402
from endo_depth_model.runtime.torch_backend import TorchBackend  # noqa: E402


def cpu_ms(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    c0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / repeats * 1e3


def head_costs(precision: str) -> dict:
    """Encoder and head CPU time through the torch backend (what the node runs: channels-last head)."""
    model = load_depth_model("vitt", shipped_weights("vitt")).model
    backend = TorchBackend(model, "cpu", precision=precision)
    x = torch.randn(1, 16, 3, 224, 280)
    feats = backend.encode(x)
    out = {"encoder_ms_per_frame": cpu_ms(lambda: backend.encode(x[:, :1]))}
    for name, sel in (
        ("head_all_16_ms", None),
        ("head_last_8_ms", slice(8, None)),
        ("head_last_2_ms", slice(14, None)),
    ):
        out[name] = cpu_ms(lambda sel=sel: backend.decode(feats, output_frames=sel))
    return out


def pipeline_split(precision: str, frames: int = 40, warmup: int = 20, frame_hw=(224, 280)) -> dict:
    """``frame_hw``: the camera's frame size; frames rendered at 224x280 are resized to it (a camera of
    that resolution; the network input stays 224x280)."""
    import cv2

    # the pose network in the calling thread (concurrent_pose off), so that cProfile attributes its time and
    # the one-thread setting of main() holds for both networks
    pipe = DepthPipeline(PipelineConfig(precision=precision, concurrent_pose=False))
    sim = EndoscopySimulator(preset("target", seed=5, n_frames=frames + warmup, height=224, width=280))
    rgbs = [f.rgb for f in sim]
    if tuple(frame_hw) != (224, 280):
        rgbs = [cv2.resize(x, (frame_hw[1], frame_hw[0]), interpolation=cv2.INTER_LINEAR) for x in rgbs]
    for i, rgb in enumerate(rgbs[:warmup]):
        pipe.push(rgb, i)
    prof = cProfile.Profile()
    c0 = time.process_time()
    prof.enable()
    for i, rgb in enumerate(rgbs[warmup:], start=warmup):
        pipe.push(rgb, i)
    prof.disable()
    total = (time.process_time() - c0) / frames * 1e3
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)

    def cumulative(name: str, file_part: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[2] == name and file_part in k[0]) / frames * 1e3

    return {
        "cpu_ms_per_frame": total,
        # aligned engine (latency_mode aligned): window head passes and per-frame encoder calls
        "head_ms_per_frame": cumulative("decode", "torch_backend.py"),
        "pose_ms_per_frame": cumulative("_pose_step", "pipeline.py"),
        "encoder_ms_per_frame": cumulative("encode", "torch_backend.py"),
        # causal engine (the default): the whole step, its ViT encoder and its four temporal modules
        "causal_step_ms_per_frame": cumulative("forward", "causal.py"),
        "causal_encoder_ms_per_frame": cumulative("forward_intermediates", "vit.py"),
        "causal_temporal_ms_per_frame": cumulative("temporal", "dpt.py"),
        "pose_input_hw": list(pipe.pose_input_hw),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--frame-size", type=int, nargs=2, default=(224, 280), metavar=("H", "W"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    precision = resolve_precision(args.precision, "cpu")
    out = args.out or f"benchmarks/results/node_profile_{precision}.json"
    torch.set_num_threads(1)
    result = {
        "precision": precision,
        "frame_hw": list(args.frame_size),
        "head": head_costs(precision),
        "pipeline": pipeline_split(precision, frame_hw=args.frame_size),
    }
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    for section in ("head", "pipeline"):
        for k, v in result[section].items():
            print(f"{section:9s} {k:22s} {v if isinstance(v, list) else f'{v:.1f}'}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"precision {precision}; saved {out}; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
