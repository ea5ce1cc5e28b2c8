"""``endo-depth train``: the command line of self-supervised fine-tuning.

The configuration is a tree of dataclasses loaded from YAML (see ``recipes/train_*.yaml``), defined in
:mod:`endo_depth_model.training.config`; the trainer itself lives in
:mod:`endo_depth_model.training.trainer` and is imported only when the command runs, so that
building the ``endo-depth`` parser stays light.

Multi-GPU / multi-node: launch the same command with ``torchrun`` (e.g. ``torchrun --nproc-per-node 4
-m endo_depth_model.cli train --config ...``); each process trains ``batch_size`` clips, so the global
batch is ``batch_size * world_size``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from endo_depth_model.config import ConfigError
from endo_depth_model.training.config import load_train_config


def register(subparsers) -> None:
    """Add ``endo-depth train`` to the CLI."""
    p = subparsers.add_parser(
        "train",
        help="self-supervised EndoDAV fine-tuning (SSB adapters + pose network)",
        description="Fine-tune Video Depth Anything with SSB adapters on endoscopy video without ground "
        "truth (EndoDAV). Run under torchrun for several GPUs or nodes.",
    )
    p.add_argument("--config", required=True, type=Path, help="training YAML (see recipes/train_*.yaml)")
    p.add_argument("--output-dir", type=Path, help="override output_dir of the config")
    p.add_argument("--steps", type=int, help="override schedule.steps")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device")
    p.add_argument(
        "--resume",
        help="checkpoint folder to resume from exactly, or 'auto' for <output_dir>/checkpoints/last",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    try:
        cfg = load_train_config(args.config)
        if args.output_dir is not None:
            cfg.output_dir = args.output_dir
        if args.steps is not None:
            cfg.schedule = dataclasses.replace(cfg.schedule, steps=args.steps)
        if args.device is not None:
            cfg.device = args.device
        cfg.validate()
    except ConfigError as exc:
        print(f"endo-depth train: {exc}", file=sys.stderr)
        return 2
    from endo_depth_model.training.trainer import TrainError, train

    try:
        train(cfg, resume=args.resume)
    except TrainError as exc:
        print(f"endo-depth train: {exc}", file=sys.stderr)
        return 1
    return 0
