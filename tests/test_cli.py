"""The ``endo-depth`` command's help texts read as plain text: no reST markup from the docstrings that
serve as descriptions."""

from __future__ import annotations

import argparse
import re

import pytest

from endo_depth_model.cli import build_parser, main, plain
from endo_depth_ros.cli import ROS_COMMANDS

MARKUP = re.compile(r"``|:[\w-]+:`")  # ``literal``, :class:`X`, :func:`f`, :mod:`m` ...


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for ``parser`` and every subcommand below it (``bag play`` included)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = list(_parsers(build_parser(ROS_COMMANDS)))


def test_plain_removes_literals_and_roles():
    text = "see :class:`~endo_depth_model.streaming.StreamingDepth` and :func:`f`, in ``OUT/<seq>/``"
    assert plain(text) == "see StreamingDepth and f, in OUT/<seq>/"
    assert plain(":mod:`endo_depth_model.data`") == "endo_depth_model.data"
    assert plain(None) is None


def test_every_command_is_checked():
    names = {" ".join(path) for path, _ in PARSERS}
    assert {"", "infer", "eval", "synth", "train", "pretrain", "export", "bench", "demo", "bag play"} <= names


@pytest.mark.parametrize(("path", "parser"), PARSERS, ids=[" ".join(p) or "endo-depth" for p, _ in PARSERS])
def test_help_text_has_no_rest_markup(path, parser):
    text = parser.format_help()
    assert len(text) > 100
    found = [line.strip() for line in text.splitlines() if MARKUP.search(line)]
    assert not found, f"endo-depth {' '.join(path)} --help shows reST markup:\n" + "\n".join(found)


def test_help_as_the_user_sees_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["infer", "--help"], extra_commands=ROS_COMMANDS)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "endo-depth infer: aligned video depth" in out and "see endo_depth_model.data)" in out
    assert not MARKUP.search(out)
