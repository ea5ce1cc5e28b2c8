"""``endo-depth pretrain``: the command line of :func:`endo_depth_model.training.pretrain.pretrain`, one
option per field of :class:`~endo_depth_model.training.pretrain.PretrainConfig` with its default."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from endo_depth_model.training.pretrain import PretrainConfig, pretrain


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="supervised pretraining of a small VDA on simulator ground truth"
    )
    d = PretrainConfig()
    for name, value in asdict(d).items():
        if isinstance(value, bool):
            p.add_argument(f"--{name.replace('_', '-')}", action="store_true", default=value)
        else:
            p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pretrain(PretrainConfig(**{k: getattr(args, k) for k in asdict(PretrainConfig())}))
    return 0
