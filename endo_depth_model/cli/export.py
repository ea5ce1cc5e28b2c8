"""``endo-depth export``: the command line of :func:`endo_depth_model.export.export_model` and
:func:`~endo_depth_model.export.export_causal_step` (optionally building TensorRT engines). The command's
description is the docstring of :mod:`endo_depth_model.export`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from endo_depth_model import export
from endo_depth_model.export import DEFAULT_OPSET, ExportError, export_causal_step, export_model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export ONNX graphs (per-frame encoder + window head) and optionally TensorRT engines",
        description=export.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("exported"), help="output folder (default ./exported)")
    g = p.add_argument_group("model")
    g.add_argument("--encoder", default="vits", help="VDA size: vitt, vits, vitb, vitl (default vits)")
    g.add_argument("--weights", type=Path, help="base VDA weights (.safetensors / .pth); none = random init")
    g.add_argument("--adapter", type=Path, help="SSB adapter (.safetensors), merged before export")
    g.add_argument("--checkpoint", type=Path, help="training checkpoint folder (adapter + pose net)")
    s = p.add_argument_group("shapes (one graph pair per input size and window)")
    s.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=(224, 280),
        metavar=("H", "W"),
        help="network input size, multiples of 14 (224 280)",
    )
    s.add_argument("--window", type=int, default=32, help="frames per head pass T (32)")
    s.add_argument("--encoder-frames", type=int, default=1, help="frames per encoder call N (1)")
    s.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 18 ({DEFAULT_OPSET})")
    s.add_argument(
        "--causal",
        action="store_true",
        help="also export the causal step (one frame + cached keys/values in, depth + next cache out)",
    )
    s.add_argument("--context", type=int, default=31, help="causal step: earlier frames cached (31)")
    t = p.add_argument_group("TensorRT (needs tensorrt >= 10, pycuda and a CUDA GPU)")
    t.add_argument(
        "--tensorrt",
        choices=("none", "fp32", "fp16", "both"),
        default="none",
        help="also build TensorRT engines of this precision (default none)",
    )
    t.add_argument(
        "--engine-cache", type=Path, default=None, help="engine cache folder (default <out>/engines)"
    )
    t.add_argument("--workspace-gib", type=float, default=4.0, help="TensorRT builder workspace (4 GiB)")
    p.add_argument("--verbose", action="store_true", help="show the exporter's own output")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from endo_depth_model.checkpoint import CheckpointError

    t0 = time.perf_counter()
    try:
        from endo_depth_model.loading import LoadError, load_depth_model

        bundle = load_depth_model(args.encoder, args.weights, args.adapter, args.checkpoint, "cpu")
        print(f"model: {bundle.description}")
        graphs = export_model(
            bundle.model,
            args.out,
            tuple(args.input_size),
            args.window,
            args.encoder_frames,
            args.opset,
            progress=True,
            verbose=args.verbose,
        )
        causal = None
        if args.causal:
            h, w = args.input_size
            causal = export_causal_step(
                bundle.model,
                args.out / f"{args.encoder}_{h}x{w}_causal{args.context}.onnx",
                (h, w),
                args.context,
                args.opset,
                verbose=args.verbose,
            )
        engines = []
        if args.tensorrt != "none":
            from endo_depth_model.runtime.tensorrt_backend import build_or_load_engine

            precisions = ("fp32", "fp16") if args.tensorrt == "both" else (args.tensorrt,)
            cache = args.engine_cache or args.out / "engines"
            for precision in precisions:
                for graph in (graphs.encoder, graphs.head):
                    engines.append(
                        build_or_load_engine(graph, precision, cache, workspace_gib=args.workspace_gib)
                    )
    except (ExportError, CheckpointError, LoadError, ValueError, RuntimeError) as exc:
        print(f"endo-depth export: error: {exc}")
        return 1
    enc_meta, head_meta = graphs.metadata()
    print(
        f"done in {time.perf_counter() - t0:.1f} s "
        f"({enc_meta.output_kind}, fingerprint {enc_meta.fingerprint})"
    )
    for path in (graphs.encoder, graphs.head, *([causal] if causal else []), *engines):
        print(f"  {path}  {path.stat().st_size / 2**20:.1f} MiB")
    return 0
