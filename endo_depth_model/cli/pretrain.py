"""``endo-depth pretrain``: the command line of :func:`endo_depth_model.training.pretrain.pretrain`, one
option per field of :class:`~endo_depth_model.training.pretrain.PretrainConfig` with its default; each
option's help is the field's comment in that class (one place to document it)."""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import asdict

from endo_depth_model.checkpoint import CheckpointError
from endo_depth_model.data.sequence import DataError
from endo_depth_model.training.pretrain import PretrainConfig, check_config, pretrain


def field_help() -> dict[str, str]:
    """Field name -> its comment in :class:`PretrainConfig` (``#:`` lines above it and any comment after
    it on its line), as plain text."""
    helps: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(PretrainConfig).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("#:").strip())
            continue
        m = re.match(r"(\w+): [^=]+=\s*(.*?)(?:\s+#:?\s*(.*))?$", text)
        if m:
            parts = above + ([m.group(3)] if m.group(3) else [])
            helps[m.group(1)] = " ".join(parts).replace("``", "")
        above = []
    return helps


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="supervised pretraining of a small VDA on simulator ground truth",
        description="Supervised pretraining of a small VDA on the simulator's ground truth (resumable).",
    )
    d, helps = PretrainConfig(), field_help()
    for name, value in asdict(d).items():
        flag, text = f"--{name.replace('_', '-')}", helps.get(name, "").replace("%", "%%")
        if isinstance(value, bool):
            p.add_argument(flag, action="store_true", default=value, help=text or None)
        else:
            shown = f"{text} (default: %(default)s)" if text else "default: %(default)s"
            p.add_argument(flag, type=type(value), default=value, help=shown)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = PretrainConfig(**{k: getattr(args, k) for k in asdict(PretrainConfig())})
    try:
        check_config(cfg)  # a bad option or start file: one line, before anything is rendered
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"endo-depth pretrain: error: {exc}")
        return 1
    try:
        pretrain(cfg)
    except (CheckpointError, DataError) as exc:  # a file that turns bad later (resume state, data cache)
        print(f"endo-depth pretrain: error: {exc}")
        return 1
    return 0  # any other error deep in training keeps its traceback
