"""The ``endo-depth`` command's help texts read as plain text: no reST markup from the docstrings that
serve as descriptions."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from endo_depth_model.cli import build_parser, main, plain
from endo_depth_ros.cli import ROS_COMMANDS

ROOT = Path(__file__).resolve().parents[1]
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


BROKEN = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"


def _train_config(tmp_path, bad):
    import yaml

    cfg = yaml.safe_load((ROOT / "recipes" / "train_quick.yaml").read_text())
    cfg["model"]["weights"] = str(bad)
    cfg["output_dir"] = str(tmp_path / "train")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["train", "--config", str(path)]


CORRUPT_CASES = {
    "infer": lambda t, bad: ["infer", str(t / "nope.mp4"), "--weights", str(bad), "--device", "cpu"],
    "eval": lambda t, bad: ["eval", str(t / "nope"), "--weights", str(bad), "--device", "cpu"],
    "export": lambda t, bad: ["export", "--weights", str(bad), "--out", str(t / "x")],
    "export --adapter": lambda t, bad: ["export", "--adapter", str(bad), "--out", str(t / "x")],
    "pretrain --init": lambda t, bad: ["pretrain", "--init", str(bad), "--out", str(t / "p"), "--steps", "1"],
    "pretrain --pose-init": lambda t, bad: [
        *("pretrain", "--pose-init", str(bad), "--pose-steps", "1", "--out", str(t / "p"), "--steps", "1")
    ],
    "train": _train_config,
    "demo": lambda t, bad: ["demo", "--weights", str(bad), "--out", str(t / "d")],
    "loop --pose-weights": lambda t, bad: ["loop", "--pose-weights", str(bad), "--out", str(t / "l")],
}


@pytest.mark.parametrize("case", list(CORRUPT_CASES))
def test_corrupt_weights_are_one_line_and_exit_code_1_in_every_command(case, tmp_path, capfd):
    """A truncated .safetensors given to any command that takes weights: exit code 1 and one line that
    names the file and says what is wrong, no traceback, and nothing rendered or started before."""
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(BROKEN)
    argv = CORRUPT_CASES[case](tmp_path, bad)
    assert main(argv, extra_commands=ROS_COMMANDS) == 1
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if "broken.safetensors" in line]
    assert lines and ("not a valid safetensors" in lines[0] or "corrupt or truncated" in lines[0]), out + err
    assert "Traceback" not in out + err
    assert not any(p.name in ("p", "d", "l", "train") for p in tmp_path.iterdir())  # nothing made


def test_every_pretrain_option_says_what_it_is():
    """``endo-depth pretrain --help``: every option has its meaning (from PretrainConfig's comments)."""
    parser = dict(PARSERS)[("pretrain",)]
    empty = [
        a.dest
        for a in parser._actions
        if a.dest != "help" and not (a.help or "").split("(default")[0].strip()
    ]
    assert not empty, empty
