"""``endo-depth synth``: render a synthetic endoscopy sequence with exact ground truth.

Example::

    endo-depth synth --preset target --seed 3 --frames 64 --size 256 320 --out runs/synth3 \\
        --formats folder mp4 mcap

Writes under ``--out``: ``frames/`` (PNG + 16-bit depth PNG in 0.1 mm + poses.txt + K.json, see
``data/folder.py``), ``video.mp4``, ``bag_mcap/`` and/or ``bag_sqlite3/`` (rosbag2 with image,
camera_info, ground-truth depth and pose topics), plus ``config.yaml`` (the full SimulatorConfig, so
the sequence can be rendered again bit-identically).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

FORMATS = ("folder", "mp4", "mcap", "sqlite3")


def register(subparsers) -> None:
    from endo_depth_model.data.laparoscopy import LAPAROSCOPY_PRESETS

    p = subparsers.add_parser(
        "synth",
        help="render a synthetic endoscopy sequence with exact depth and poses",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument(
        "--preset",
        default="target",
        choices=("source", "target", "colon", *LAPAROSCOPY_PRESETS),
        help="scene: source/target tube presets, colon (randomised lumen), lap (randomised laparoscopy with "
        "instruments; per seed), lap_unseen (held-out textures and lighting), lap_near (lap with large "
        "organs close to the scope; training only)",
    )
    p.add_argument("--config", type=Path, help="YAML SimulatorConfig (replaces the preset)")
    p.add_argument("--seed", type=int, help="random seed (default: preset/config value)")
    p.add_argument("--frames", type=int, help="number of frames")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image height and width")
    p.add_argument("--fps", type=float, help="frame rate")
    p.add_argument("--shape", choices=("tube", "cavity"), help="open tube or closed cavity (geometry.shape)")
    p.add_argument("--formats", nargs="+", default=["folder", "mp4", "mcap"], choices=FORMATS)
    p.add_argument(
        "--depth-format",
        default="png16",
        choices=("png16", "npy"),
        help="folder depth: 0.1 mm PNG or npy metres",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    from dataclasses import replace

    import numpy as np
    import yaml
    from tqdm import tqdm

    from endo_depth_model.config import ConfigError, load_yaml, to_dict
    from endo_depth_model.data.folder import FolderWriter
    from endo_depth_model.data.laparoscopy import LAPAROSCOPY_PRESETS
    from endo_depth_model.data.rosbag import RosbagWriter
    from endo_depth_model.data.sequence import DataError
    from endo_depth_model.data.simulator import (
        EndoscopySimulator,
        SimulatorConfig,
        SimulatorConfigError,
        colon_preset,
        preset,
    )
    from endo_depth_model.data.video import VideoWriter

    if args.preset in LAPAROSCOPY_PRESETS and not args.config:
        return _run_laparoscopy(args)
    try:
        if args.config:
            cfg = load_yaml(SimulatorConfig, args.config)
        elif args.preset == "colon":
            cfg = colon_preset(args.seed if args.seed is not None else 0)
        else:
            cfg = preset(args.preset)
        overrides = _frame_overrides(args)
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.shape is not None:
            overrides["geometry"] = replace(cfg.geometry, shape=args.shape)
        cfg = replace(cfg, **overrides)
        cfg.validate()
    except (ConfigError, SimulatorConfigError) as exc:
        print(f"endo-depth synth: error: {exc}")
        return 2
    out: Path = args.out
    targets = {
        "folder": out / "frames",
        "mp4": out / "video.mp4",
        "mcap": out / "bag_mcap",
        "sqlite3": out / "bag_sqlite3",
    }
    existing = [str(targets[f]) for f in args.formats if targets[f].exists()]
    if existing and not args.overwrite:
        print(f"endo-depth synth: error: output exists (use --overwrite): {', '.join(existing)}")
        return 2
    for f in args.formats:
        if targets[f].is_dir():
            shutil.rmtree(targets[f])
        elif targets[f].exists():
            targets[f].unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    t0 = time.perf_counter()
    sim = EndoscopySimulator(cfg)
    setup_s = time.perf_counter() - t0
    writers = []
    try:
        if "folder" in args.formats:
            writers.append(
                FolderWriter(
                    targets["folder"],
                    cfg.fps,
                    args.depth_format,
                    {"source": f"endo-depth synth preset={args.preset} seed={cfg.seed}"},
                )
            )
        if "mp4" in args.formats:
            if cfg.height % 2 or cfg.width % 2:
                raise DataError(f"mp4 needs an even image size, got {cfg.height}x{cfg.width}")
            writers.append(VideoWriter(targets["mp4"], cfg.fps))
        for storage in ("mcap", "sqlite3"):
            if storage in args.formats:
                writers.append(RosbagWriter(targets[storage], storage))
        render_s = 0.0
        valid = []
        depth_range = [np.inf, -np.inf]
        for k in tqdm(range(cfg.n_frames), desc="synth", unit="frame"):
            t1 = time.perf_counter()
            frame = sim.render(k)
            render_s += time.perf_counter() - t1
            ok = np.isfinite(frame.depth)
            valid.append(ok.mean())
            if ok.any():
                depth_range = [
                    min(depth_range[0], float(frame.depth[ok].min())),
                    max(depth_range[1], float(frame.depth[ok].max())),
                ]
            for w in writers:
                w.add(frame.rgb if isinstance(w, VideoWriter) else frame)
        for w in writers:
            w.close()
    except DataError as exc:
        print(f"endo-depth synth: error: {exc}")
        return 1
    total_s = time.perf_counter() - t0
    poses = sim.poses
    path_m = float(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum())
    print(f"\nsynthetic sequence: preset {args.preset if not args.config else args.config}, seed {cfg.seed}")
    print(
        f"  frames           {cfg.n_frames} x {cfg.height}x{cfg.width} at {cfg.fps:g} fps, "
        f"fov {cfg.fov_deg:g} deg"
    )
    print(
        f"  depth            {depth_range[0] * 1000:.1f} .. {depth_range[1] * 1000:.1f} mm, "
        f"valid {100 * float(np.mean(valid)):.1f} % of pixels (NaN beyond {cfg.far_mm:g} mm)"
    )
    print(f"  camera path      {path_m * 1000:.1f} mm, {len(sim.trajectory.events)} rotation event(s)")
    print(
        f"  time             {total_s:.1f} s total, {1000 * render_s / cfg.n_frames:.0f} ms/frame render, "
        f"{setup_s:.1f} s scene setup"
    )
    for f in args.formats:
        print(f"  {f:<16} {targets[f]}")
    print(f"  config           {out / 'config.yaml'}")
    return 0


def _frame_overrides(args: argparse.Namespace) -> dict:
    """Config fields both simulators share, from ``--frames``, ``--size`` and ``--fps``."""
    overrides = {}
    if args.frames is not None:
        overrides["n_frames"] = args.frames
    if args.size is not None:
        overrides["height"], overrides["width"] = args.size
    if args.fps is not None:
        overrides["fps"] = args.fps
    return overrides


def _run_laparoscopy(args: argparse.Namespace) -> int:
    """``--preset lap`` / ``lap_unseen`` / ``lap_near``: the laparoscopy simulator into a folder (rgb, depth,
    poses, K and ``instruments/`` masks as 8-bit PNGs, 255 = instrument) and/or an MP4."""
    import time

    import cv2
    import numpy as np
    from tqdm import tqdm

    from endo_depth_model.data.folder import FolderWriter
    from endo_depth_model.data.laparoscopy import LaparoscopySimulator, laparoscopy_preset
    from endo_depth_model.data.sequence import DataError
    from endo_depth_model.data.simulator import SimulatorConfigError
    from endo_depth_model.data.video import VideoWriter

    overrides = _frame_overrides(args)
    unsupported = [f for f in args.formats if f not in ("folder", "mp4")]
    try:
        if unsupported:
            raise SimulatorConfigError(f"--preset {args.preset} writes folder and mp4, not {unsupported}")
        cfg = laparoscopy_preset(args.preset, args.seed if args.seed is not None else 0, **overrides)
    except SimulatorConfigError as exc:
        print(f"endo-depth synth: error: {exc}")
        return 2
    out: Path = args.out
    if (out / "frames").exists() and not args.overwrite:
        print(f"endo-depth synth: error: output exists (use --overwrite): {out / 'frames'}")
        return 2
    t0 = time.perf_counter()
    sim = LaparoscopySimulator(cfg)
    writers = []
    try:
        if "folder" in args.formats:
            writers.append(
                FolderWriter(out / "frames", cfg.fps, args.depth_format,
                             {"source": f"endo-depth synth preset={args.preset} seed={cfg.seed}"})
            )  # fmt: skip
            (out / "frames" / "instruments").mkdir(parents=True, exist_ok=True)
        if "mp4" in args.formats:
            writers.append(VideoWriter(out / "video.mp4", cfg.fps))
        shown = 0
        for k in tqdm(range(cfg.n_frames), desc="synth", unit="frame"):
            frame = sim.render(k)
            mask = sim.instrument_mask(k)
            shown += int(mask.any())
            for w in writers:
                w.add(frame.rgb if isinstance(w, VideoWriter) else frame)
            if "folder" in args.formats:
                cv2.imwrite(str(out / "frames" / "instruments" / f"{k:06d}.png"), mask.astype(np.uint8) * 255)
        for w in writers:
            w.close()
    except DataError as exc:
        print(f"endo-depth synth: error: {exc}")
        return 1
    print(f"\nsynthetic laparoscopy: preset {args.preset}, seed {cfg.seed}")
    print(
        f"  frames           {cfg.n_frames} x {cfg.height}x{cfg.width} at {cfg.fps:g} fps, "
        f"fov {cfg.fov_deg:.0f} deg"
    )
    print(
        f"  scene            {cfg.organs} organs, {cfg.bowel_loops} bowel loops, {cfg.instruments} "
        f"instruments (in view in {shown} frames), border {cfg.border}, smoke {cfg.smoke:.2f}"
    )
    print(f"  time             {time.perf_counter() - t0:.1f} s")
    for f in args.formats:
        print(f"  {f:<16} {out / ('frames' if f == 'folder' else 'video.mp4')}")
    return 0
