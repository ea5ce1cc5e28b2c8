"""The ``endo-depth`` command.

Each subcommand lives in the module that owns the work and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (called with the parsed arguments, returns an exit code).
Building the parser imports each registered module, so keep module imports light: import torch and
other heavy dependencies inside the function that runs the subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module providing register(subparsers)
COMMANDS: dict[str, str] = {
    "infer": "endo_depth_model.infer",
    "eval": "endo_depth_model.evaluate",
    "synth": "endo_depth_model.data.synth_cli",
    "train": "endo_depth_model.train",
    "pretrain": "endo_depth_model.pretrain",
    "export": "endo_depth_model.export",
    "bench": "endo_depth_model.bench",
}


def build_parser(extra_commands: dict[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="endo-depth",
        description="Temporally consistent depth and camera motion from a monocular endoscope (EndoDAV).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in {**COMMANDS, **(extra_commands or {})}.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None, extra_commands: dict[str, str] | None = None) -> int:
    """Run the command; ``extra_commands`` adds subcommands of other packages (endo_depth_ros.cli)."""
    parser = build_parser(extra_commands)
    args = parser.parse_args(argv)
    if args.version:
        from endo_depth_model import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
