"""The ``endo-depth`` command.

Each subcommand has a module in this package that exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returns an exit code): the argument wiring,
the checks and the printing. The work itself is the library's (:mod:`endo_depth_model.infer`,
:mod:`endo_depth_model.training.trainer`, ...), which never imports this package. Building the parser imports
each registered module, so keep module imports light: import torch and other heavy dependencies inside
the function that runs the subcommand. Module docstrings serve as descriptions; their reST markup is
removed from every help text (:func:`plain`).
"""

from __future__ import annotations

import argparse
import importlib
import re

# subcommand name -> module providing register(subparsers)
COMMANDS: dict[str, str] = {
    "infer": "endo_depth_model.cli.infer",
    "eval": "endo_depth_model.cli.evaluate",
    "synth": "endo_depth_model.cli.synth",
    "train": "endo_depth_model.cli.train",
    "pretrain": "endo_depth_model.cli.pretrain",
    "export": "endo_depth_model.cli.export",
    "bench": "endo_depth_model.cli.bench",
}


_ROLE = re.compile(r":[\w-]+:`(~?)([^`]+)`")  # :class:`~a.b.C`, :func:`f`, :mod:`m`


def plain(text: str | None) -> str | None:
    """``text`` as a terminal shows it, without reST: ``x`` -> x, :func:`f` -> f, :class:`~a.B` -> B."""
    if not text:
        return text
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return text.replace("``", "")


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Apply :func:`plain` to the description, epilog and option help of ``parser`` and its subcommands."""
    parser.description, parser.epilog = plain(parser.description), plain(parser.epilog)
    for action in parser._actions:
        if action.help is not argparse.SUPPRESS:
            action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
            for sub in set(action.choices.values()):
                _plain_help(sub)


def build_parser(extra_commands: dict[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="endo-depth",
        description="Temporally consistent depth and camera motion from a monocular endoscope (EndoDAV).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in {**COMMANDS, **(extra_commands or {})}.values():
        importlib.import_module(module).register(sub)
    _plain_help(parser)
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
