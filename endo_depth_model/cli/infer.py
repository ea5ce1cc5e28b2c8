"""``endo-depth infer``: the command line of :func:`endo_depth_model.infer.run_infer`, and the model and
engine options it shares with ``endo-depth eval`` (:func:`add_model_arguments`,
:func:`resolve_model_defaults`). The command's description is the docstring of
:mod:`endo_depth_model.infer`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from endo_depth_model import infer, loading
from endo_depth_model.infer import InferError, InferOptions, load_depth_model, run_infer, source_path
from endo_depth_model.runtime import BACKENDS


def resolve_model_defaults(args: argparse.Namespace) -> None:
    """Fill in what the user left out: when no weights are given, the base of ``--checkpoint`` (from its
    config) or else the shipped default model (for ``--encoder vitt``); the depth range stored in the
    weights' metadata (else EndoDAV's 0.1 / 150)."""
    if args.weights is None and args.checkpoint is not None:
        args.weights = loading.checkpoint_base_weights(args.checkpoint)
    if args.weights is None and loading.shipped_weights(args.encoder).is_file():
        args.weights = loading.shipped_weights(args.encoder)
    min_depth = max_depth = None
    if args.weights is not None:
        try:
            min_depth, max_depth = loading.weights_depth_range(args.weights)
        except loading.LoadError as exc:
            raise InferError(str(exc)) from None
    if getattr(args, "per_frame", False):
        args.window, args.overlap, args.blend, args.stride = 1, 0, 0, None
    if args.min_depth is None:
        args.min_depth = 0.1 if min_depth is None else min_depth
    if args.max_depth is None:
        args.max_depth = 150.0 if max_depth is None else max_depth


def add_model_arguments(p: argparse.ArgumentParser, precision_default: str = "auto") -> None:
    """Model and engine options shared by ``infer`` and ``eval``."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--encoder",
        default="vitt",
        help="VDA size: vitt (the shipped CPU model), vits, vitb, vitl (default vitt)",
    )
    g.add_argument(
        "--weights",
        type=Path,
        help="base VDA or Depth-Anything-V2 weights (.safetensors / .pth); default: the shipped model "
        "of --encoder when there is one",
    )
    g.add_argument("--adapter", type=Path, help="SSB adapter file (.safetensors) from training")
    g.add_argument("--checkpoint", type=Path, help="training checkpoint folder (adapter + pose net)")
    g.add_argument(
        "--device", default="cuda" if _cuda() else "cpu", help="torch device (default: cuda if present)"
    )
    g.add_argument(
        "--backend",
        default="torch",
        choices=("auto", *BACKENDS),
        help="inference backend (infer only; default torch; auto = fastest available)",
    )
    g.add_argument(
        "--precision",
        default=precision_default,
        choices=("auto", "fp32", "bf16", "fp16"),
        help=f"PyTorch compute precision (default {precision_default}; auto = bf16 on a CPU with AMX or "
        "AVX512-BF16, else fp32; fp16 needs CUDA)",
    )
    g.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=(224, 280),
        metavar=("H", "W"),
        help="network input size, multiples of 14 (EndoDAV: 224 280)",
    )
    e = p.add_argument_group("streaming (EndoDAV defaults)")
    e.add_argument("--window", type=int, default=32, help="frames per head pass (32)")
    e.add_argument("--overlap", type=int, default=10, help="positions of earlier frames per window (10)")
    e.add_argument(
        "--stride", type=int, default=None, help="new frames per head pass (default window-overlap)"
    )
    e.add_argument("--blend", type=int, default=8, help="cross-faded frames between windows (8)")
    e.add_argument(
        "--min-depth",
        type=float,
        default=None,
        help="disparity_to_depth min depth (default: from the weights, else 0.1)",
    )
    e.add_argument(
        "--max-depth",
        type=float,
        default=None,
        help="disparity_to_depth max depth (default: from the weights, else 150)",
    )
    e.add_argument("--max-frames", type=int, default=None, help="stop each sequence after this many frames")
    e.add_argument(
        "--causal",
        action="store_true",
        help="causal streaming, each frame as it arrives with cached earlier frames (the node's default "
        "live mode) instead of EndoDAV's aligned windows",
    )
    e.add_argument(
        "--per-frame",
        action="store_true",
        help="each frame alone (T = 1, no alignment), to compare against the aligned video depth",
    )
    e.add_argument(
        "--no-fov-mask",
        action="store_true",
        help="do not detect the scope's black border (default: NaN depth and no points outside it)",
    )


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no usable torch: CPU default
        return False


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "infer",
        help="aligned video depth for a video, image folder, dataset sequence or rosbag2",
        description=infer.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", help="video file, image folder, dataset path or spec (e.g. rosbag:BAG?topic=/image)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <input>_depth beside the input)"
    )
    add_model_arguments(p)
    o = p.add_argument_group("outputs")
    o.add_argument("--no-npy", action="store_true", help="do not write float32 .npy depth")
    o.add_argument("--no-png", action="store_true", help="do not write 16-bit PNG depth")
    o.add_argument("--no-video", action="store_true", help="do not write the colourised MP4")
    o.add_argument(
        "--video-path",
        type=Path,
        default=None,
        help="colourised MP4 path (default: in --out when given, else beside the input)",
    )
    o.add_argument(
        "--pointcloud-every", type=int, default=0, metavar="N", help="write a PLY every N frames (0: none)"
    )
    o.add_argument("--cmap", default="turbo", choices=("turbo", "inferno", "gray"), help="colour map (turbo)")
    p.set_defaults(func=main)


def _default_out(source: str) -> Path:
    path = source_path(source)
    if path is None or not path.exists():
        return Path("depth_out")
    return path.parent / f"{path.stem if path.is_file() else path.name}_depth"


def main(args: argparse.Namespace) -> int:
    from endo_depth_model.checkpoint import CheckpointError
    from endo_depth_model.data import DataError
    from endo_depth_model.runtime import BackendError
    from endo_depth_model.streaming import StreamError

    t0 = time.perf_counter()
    try:
        resolve_model_defaults(args)
        bundle = load_depth_model(args.encoder, args.weights, args.adapter, args.checkpoint, args.device)
        if args.backend == "torch":
            bundle.set_precision(args.precision, args.device)
        else:
            from endo_depth_model.runtime import load_backend
            from endo_depth_model.runtime.precision import resolve_precision

            # auto precision with a graph backend runs the graph at its own precision
            precision = resolve_precision(args.precision, args.device)
            if args.precision == "auto" and args.backend != "auto":
                precision = "fp32"
            bundle.model = load_backend(
                args.backend,
                bundle.model,
                device=args.device,
                input_hw=tuple(args.input_size),
                window=args.window,
                bf16=precision == "bf16",
                fp16=precision == "fp16",
            )
            bundle.precision = getattr(bundle.model, "precision", "fp32")
            bundle.description += f", backend {bundle.model.name}, {bundle.precision}"
        out = args.out or _default_out(args.source)
        print(f"model: {bundle.description}; output: {out}")
        opts = InferOptions(
            input_hw=tuple(args.input_size),
            window=args.window,
            overlap=args.overlap,
            stride=args.stride,
            blend=args.blend,
            min_depth=args.min_depth,
            max_depth=args.max_depth,
            save_npy=not args.no_npy,
            save_png=not args.no_png,
            video=not args.no_video,
            video_path=args.video_path,
            pointcloud_every=args.pointcloud_every,
            cmap=args.cmap,
            max_frames=args.max_frames,
            device=args.device,
            align=not args.per_frame,
            fov_mask=not args.no_fov_mask,
            video_in_out=args.out is not None,  # an explicit --out receives every output
            causal=args.causal,
        )
        summaries = run_infer(args.source, out, bundle, opts)
    except (InferError, DataError, CheckpointError, StreamError, BackendError, ValueError) as exc:
        print(f"endo-depth infer: error: {exc}")
        return 1
    n = sum(s["n_frames"] for s in summaries)
    print(f"done: {len(summaries)} sequence(s), {n} frames in {time.perf_counter() - t0:.1f} s -> {out}")
    return 0
