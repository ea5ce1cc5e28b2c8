"""``endo-depth infer``: aligned video depth for an MP4, an image folder, a dataset sequence or a rosbag2.

For every sequence of the source (see :mod:`endo_depth_model.data`) the streaming engine runs with
EndoDAV's constants and writes, in ``OUT/<sequence>/``:

* ``depth/000000.npy``: float32 (H, W) depth (relative units unless the model is calibrated);
* ``depth_png/000000.png``: the same as 16-bit PNG, ``depth = value / png_scale`` (in ``meta.json``);
* ``points/000000.ply``: optional coloured point clouds (every ``--pointcloud-every`` frames);
* ``meta.json``: model, constants, units, per-pass alignment statistics and timing;

and a colourised MP4 (input | depth side by side), ``<input>_depth.mp4``: inside ``OUT`` when ``--out``
is given (nothing is written outside it), else beside the input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from endo_depth_model import loading
from endo_depth_model.loading import ModelBundle, weights_are_metric  # noqa: F401 - re-exported

__all__ = [
    "InferError",
    "InferOptions",
    "ModelBundle",
    "load_depth_model",
    "write_ply",
    "run_infer",
]

PNG_MAX = 65535


class InferError(RuntimeError):
    """Bad arguments or unusable input/output for ``endo-depth infer`` / ``eval``."""


def load_depth_model(*args, **kwargs) -> ModelBundle:
    """:func:`endo_depth_model.loading.load_depth_model` for the commands: a
    :class:`~endo_depth_model.loading.LoadError` becomes an :class:`InferError`."""
    try:
        return loading.load_depth_model(*args, **kwargs)
    except loading.LoadError as exc:
        raise InferError(str(exc)) from exc


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> int:
    """Binary little-endian PLY of finite ``points`` (N, 3) float32 with ``colors`` (N, 3) uint8;
    returns the number of vertices written."""
    keep = np.isfinite(points).all(axis=1)
    pts, cols = points[keep].astype("<f4"), colors[keep].astype(np.uint8)
    vertex = np.empty(
        len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")]
    )
    for i, name in enumerate("xyz"):
        vertex[name] = pts[:, i]
    for i, name in enumerate("rgb"):
        vertex[name] = cols[:, i]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(vertex)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertex.tobytes())
    return len(vertex)


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else rgb


def source_path(source: str) -> Path | None:
    """The file system path inside a source spec (``kind:PATH?options`` or a plain path), if any."""
    head = str(source).partition("?")[0]
    kind, sep, rest = head.partition(":")
    if sep and kind.replace("-", "").isalpha() and len(kind) > 1:
        head = rest
    return Path(head) if head else None


def _video_path(source: str, sequence_name: str, n_sequences: int, out_dir: Path) -> Path:
    """``<input>_depth.mp4`` beside a file or folder input; inside ``out_dir`` for specs without a path."""
    path = source_path(source)
    if path is None or not path.exists():
        return out_dir / f"{sequence_name or 'video'}_depth.mp4"
    stem = path.stem if path.is_file() else path.name
    suffix = f"_{sequence_name.replace('/', '_')}" if n_sequences > 1 and sequence_name else ""
    return path.parent / f"{stem}{suffix}_depth.mp4"


def make_engine(
    bundle,
    input_hw,
    window,
    overlap,
    stride,
    blend,
    align,
    causal,
    device,
    depth_fn=None,
    causal_fit="none",
    causal_context=None,
):
    """The streaming engine ``infer`` and ``eval`` run: causal (one frame at a time, no hold-back; its
    temporal attention sees ``causal_context`` earlier frames, default all the model allows) or EndoDAV's
    aligned windows."""
    from endo_depth_model.preprocess import Preprocessor
    from endo_depth_model.streaming import StreamingDepth

    preprocess = Preprocessor(input_hw=tuple(input_hw))
    if causal:
        from endo_depth_model.causal import CausalDepth

        engine = CausalDepth(
            bundle.model, preprocess, context=causal_context, depth_fn=depth_fn, fit=causal_fit, device=device
        )
    else:
        engine = StreamingDepth(
            bundle.model,
            preprocess,
            window=window,
            overlap=overlap,
            stride=stride,
            blend=blend,
            depth_fn=depth_fn,
            align=align,
            device=device,
        )
    engine.fill_border = getattr(bundle, "fill_border", False)
    return engine


@dataclass
class InferOptions:
    """Options of :func:`run_infer` (see ``endo-depth infer --help``)."""

    input_hw: tuple[int, int] = (224, 280)
    window: int = 32
    overlap: int = 10
    stride: int | None = None
    blend: int = 8
    min_depth: float = 0.1
    max_depth: float = 150.0
    save_npy: bool = True
    save_png: bool = True
    video: bool = True
    video_path: str | Path | None = None
    pointcloud_every: int = 0
    cmap: str = "turbo"
    max_frames: int | None = None
    device: str = "cpu"
    progress: bool = True
    align: bool = True  #: False: each window as it comes (with window 1: per-frame inference)
    video_in_out: bool = False  #: the colourised MP4 goes into the output folder, not beside the input
    causal: bool = False  #: the causal engine (zero hold-back, the node's default) instead of aligned windows
    fov_mask: bool = True  #: detect the scope's black border: NaN depth and no points there, not fitted


def run_infer(
    source: str,
    out_dir: str | Path,
    bundle: ModelBundle,
    options: InferOptions | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run the engine over every sequence of ``source``; returns one summary dict (``meta.json``) per
    sequence."""
    from endo_depth_model.data import open_sequences

    opts = options or InferOptions()
    sequences = open_sequences(source)
    if not sequences:
        raise InferError(f"no sequences found in {source}")
    summaries = []
    for seq in sequences:
        meta = _infer_sequence(seq, source, len(sequences), Path(out_dir), bundle, opts, log)
        if meta is not None:
            summaries.append(meta)
    return summaries


def _infer_sequence(seq, source, n_sequences, out_dir, bundle, opts: InferOptions, log) -> dict | None:
    import torch
    from tqdm import tqdm

    from endo_depth_model.colormap import ColorRange, colorize
    from endo_depth_model.data.video import VideoWriter
    from endo_depth_model.fov import FovTracker
    from endo_depth_model.geometry import backproject_np
    from endo_depth_model.preprocess import output_to_depth

    name = seq.name or "sequence"
    seq_dir = out_dir / name.replace("/", "_")
    n_total = len(seq) if opts.max_frames is None else min(len(seq), opts.max_frames)
    if n_total == 0:
        log(f"skipping {name}: no frames")
        return None
    outputs = {"depth": opts.save_npy, "depth_png": opts.save_png, "points": opts.pointcloud_every > 0}
    subs = [seq_dir / sub for sub, on in outputs.items() if on]
    # the folders this run creates, deepest first: a failed run removes those it left empty
    made = [d for d in (*subs, seq_dir, *seq_dir.parents) if not d.exists()]
    pass_stats: list[dict] = []

    metric = bool(getattr(getattr(bundle.model, "config", None), "metric", False))

    def to_depth(output: np.ndarray) -> np.ndarray:
        return np.asarray(output_to_depth(output, metric, opts.min_depth, opts.max_depth), dtype=np.float32)

    def on_pass(st, idx) -> None:
        pass_stats.append(
            {"first": idx[0], "last": idx[-1], "scale": st.scale, "shift": st.shift,
             "residual": st.residual, "reanchored": st.reanchored, "reason": st.reason}
        )  # fmt: skip

    engine = make_engine(bundle, opts.input_hw, opts.window, opts.overlap, opts.stride, opts.blend,
                         opts.align, opts.causal, opts.device, depth_fn=to_depth)  # fmt: skip
    engine.on_pass = on_pass
    fov = FovTracker() if opts.fov_mask else None
    fov_kinds: dict[str, int] = {}
    if opts.video_path:
        mp4 = Path(opts.video_path)
    elif opts.video_in_out:
        mp4 = out_dir / f"{name.replace('/', '_')}_depth.mp4"
    else:
        mp4 = _video_path(source, name, n_sequences, out_dir)
    writer = VideoWriter(mp4, float(seq.fps or 30.0)) if opts.video else None
    colors = ColorRange(warmup=max(1, opts.window - opts.blend))
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    state = {"done": 0, "points": 0, "png_scale": None}

    def consume(results) -> None:
        if writer is not None:  # settle the colour range on the whole first batch
            for r in results[: colors.warmup]:
                colors.update(r.disparity)
        for r in results:
            rgb, K, mask = frames.pop(r.index)
            depth = r.depth if mask is None else np.where(mask, r.depth, np.float32(np.nan))
            if opts.save_npy:
                np.save(seq_dir / "depth" / f"{r.index:06d}.npy", depth)
            if opts.save_png:
                if state["png_scale"] is None:  # fixed per sequence: 2x the 99th percentile = full scale
                    finite = depth[np.isfinite(depth)]
                    p99 = float(np.percentile(finite, 99)) if finite.size else 1.0
                    state["png_scale"] = PNG_MAX / max(2.0 * p99, 1e-9)
                _write_png16(seq_dir / "depth_png" / f"{r.index:06d}.png", depth, state["png_scale"])
            if writer is not None:
                lo, hi = colors.update(r.disparity)
                disp = r.disparity if mask is None else np.where(mask, r.disparity, np.nan)
                writer.add(_even(np.concatenate([rgb, colorize(disp, lo, hi, opts.cmap)], axis=1)))
            if opts.pointcloud_every and r.index % opts.pointcloud_every == 0:
                pts = backproject_np(depth, K).reshape(-1, 3)
                ply = seq_dir / "points" / f"{r.index:06d}.ply"
                state["points"] += write_ply(ply, pts, rgb.reshape(-1, 3))
            state["done"] += 1

    seq_dir.mkdir(parents=True, exist_ok=True)
    for d in subs:
        d.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    bar = tqdm(total=n_total, unit="frame", desc=name, disable=not opts.progress)
    finished = False
    try:
        for i, frame in enumerate(seq):
            if i >= n_total:
                break
            mask = None
            if fov is not None:
                found = fov.update(frame.rgb)
                fov_kinds[found.kind] = fov_kinds.get(found.kind, 0) + 1
                mask = found.mask if found.kind != "none" else None
                engine.fov_mask = found.mask if found.kind == "border" else None
            frames[i] = (frame.rgb, frame.K, mask)
            consume(engine.push(frame.rgb, frame.stamp_ns))
            bar.update(1)
        consume(engine.flush())
        finished = True
    finally:
        bar.close()
        if writer is not None and writer.n:
            writer.close()
        if not finished:
            for d in made:
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
    if torch.cuda.is_available() and str(opts.device).startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    n_done = state["done"]
    meta = {
        "sequence": name,
        "source": str(source),
        "n_frames": n_done,
        "model": bundle.description,
        "units": "metres: a metric-depth model's output"
        if metric
        else "relative depth: Monodepth2 disparity_to_depth of the aligned disparity",
        "min_depth": opts.min_depth,
        "max_depth": opts.max_depth,
        "png_scale": state["png_scale"],
        "png_note": "depth = png_value / png_scale; 0 = invalid",
        "window": opts.window,
        "overlap": opts.overlap,
        "stride": engine.stride,
        "blend": opts.blend,
        "input_hw": list(opts.input_hw),
        "head_passes": engine.head_passes,
        "encoded_frames": engine.encoded_frames,
        "ms_per_frame": 1000.0 * elapsed / max(n_done, 1),
        "video": str(mp4) if opts.video else None,
        "alignment": pass_stats,
        "per_frame": not opts.align and opts.window == 1,
        "field_of_view": fov_kinds or "not detected (fov mask off)",
    }
    (seq_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    reanchors = sum(1 for p in pass_stats if p["reanchored"] and p["reason"] != "first")
    log(
        f"{name}: {n_done} frames in {elapsed:.1f} s ({meta['ms_per_frame']:.1f} ms/frame), "
        f"{engine.head_passes} head passes, {reanchors} re-anchors -> {seq_dir}"
        + (f", video {mp4}" if opts.video else "")
        + (f", {state['points']} points" if opts.pointcloud_every else "")
    )
    return meta


def _write_png16(path: Path, depth: np.ndarray, scale: float) -> None:
    import cv2

    value = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * scale), 0)
    if not cv2.imwrite(str(path), np.clip(value, 0, PNG_MAX).astype(np.uint16)):
        raise InferError(f"could not write {path}")
