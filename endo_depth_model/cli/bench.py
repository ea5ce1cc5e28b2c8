"""``endo-depth bench``: the command line of :func:`endo_depth_model.bench.run_bench`; prints the tables
and writes JSON and markdown. The command's description is the docstring of
:mod:`endo_depth_model.bench`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from endo_depth_model import bench
from endo_depth_model.bench import BenchConfig, BenchError, run_bench, to_markdown


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x280, got {text!r}") from None
    return h, w


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="latency, throughput and memory of each backend (streaming vs full-window re-run)",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--encoder", default="vits", help="VDA size (vits)")
    p.add_argument("--sizes", type=_parse_size, nargs="+", default=[(224, 280)], help="HxW list (224x280)")
    p.add_argument("--windows", type=int, nargs="+", default=[32], help="windows T (32)")
    p.add_argument("--strides", type=int, nargs="+", default=[22], help="strides (22 = EndoDAV offline)")
    p.add_argument(
        "--backends",
        nargs="+",
        default=["all"],
        help="torch onnxruntime tensorrt, or all (every one available here; default)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (cpu)")
    p.add_argument("--passes", type=int, default=3, help="head passes after the first per stream (3)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of encoder/head calls (3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT precision (fp16)")
    p.add_argument("--fp16", action="store_true", help="torch on CUDA: fp16 autocast")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="torch (and --official): bf16 autocast; CPU with AMX / AVX512-BF16, or CUDA",
    )
    p.add_argument("--cuda-graphs", action="store_true", help="torch on CUDA: CUDA graphs")
    p.add_argument("--cache-dir", default="", help="graph/engine cache (default ~/.cache/endo_depth)")
    p.add_argument("--pipeline", action="store_true", help="also time the ROS node's pipeline (T=16 rows)")
    p.add_argument(
        "--official",
        default="",
        metavar="PATH",
        help="Video-Depth-Anything checkout: also time its forward pass (skipped when not given)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the markdown tables here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        encoder=args.encoder,
        sizes=[tuple(s) for s in args.sizes],
        windows=list(args.windows),
        strides=list(args.strides),
        backends=list(args.backends),
        device=args.device,
        passes=args.passes,
        repeats=args.repeats,
        threads=args.threads,
        precision=args.precision,
        fp16=args.fp16,
        bf16=args.bf16,
        cuda_graphs=args.cuda_graphs,
        cache_dir=args.cache_dir,
        pipeline=args.pipeline,
        official=args.official,
    )
    command = "endo-depth " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.perf_counter()
    try:
        result = run_bench(cfg)
    except BenchError as exc:
        print(f"endo-depth bench: error: {exc}")
        return 1
    result["command"] = command
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    table = to_markdown(result, command)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    failed = sum("error" in r for r in result["rows"])
    print(f"done: {len(result['rows'])} runs ({failed} failed) in {time.perf_counter() - t0:.0f} s")
    return 1 if failed == len(result["rows"]) else 0
