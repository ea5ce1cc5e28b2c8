"""Benchmark: render a 64-frame 256x320 synthetic sequence (per preset) and report the time.

Run ``.venv/bin/python benchmarks/bench_synth.py [--frames 64] [--out benchmarks/results/synth.json]``.
Prints a table and saves JSON with the machine (and its load average: other processes inflate wall
time), per-preset setup, total wall and CPU seconds, and per-frame times.
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

from endo_depth_model.data.simulator import EndoscopySimulator, preset  # noqa: E402


def bench(name: str, frames: int, height: int, width: int, seed: int) -> dict:
    t0 = time.perf_counter()
    c0 = time.process_time()
    sim = EndoscopySimulator(preset(name, n_frames=frames, height=height, width=width, seed=seed))
    setup_s = time.perf_counter() - t0
    per_frame = []
    for k in range(frames):
        t1 = time.perf_counter()
        sim.render(k)
        per_frame.append(time.perf_counter() - t1)
    total_s = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    per_frame.sort()
    return {
        "preset": name,
        "frames": frames,
        "height": height,
        "width": width,
        "setup_s": round(setup_s, 3),
        "total_s": round(total_s, 3),
        "cpu_s": round(cpu_s, 3),
        "median_frame_ms": round(1000 * per_frame[len(per_frame) // 2], 1),
        "max_frame_ms": round(1000 * per_frame[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synth.json")
    args = parser.parse_args()
    results = [bench(name, args.frames, *args.size, args.seed) for name in ("source", "target")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min_before": load,
    }
    print(f"synthetic sequence benchmark ({machine['cores']} cores, {machine['cpu']})")
    print(
        f"{'preset':<8} {'frames':>6} {'size':>9} {'setup s':>8} {'total s':>8} {'cpu s':>7} "
        f"{'median ms':>10} {'max ms':>8}"
    )
    for r in results:
        size = f"{r['height']}x{r['width']}"
        print(
            f"{r['preset']:<8} {r['frames']:>6} {size:>9} {r['setup_s']:>8.2f} {r['total_s']:>8.2f} "
            f"{r['cpu_s']:>7.1f} "
            f"{r['median_frame_ms']:>10.1f} {r['max_frame_ms']:>8.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
