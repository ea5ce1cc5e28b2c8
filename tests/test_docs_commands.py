"""Every `endo-depth ...` command line in the README, docs/ and the model card parses with the real
command-line parser (its subcommand and every option exist), and the config files it names exist, so
the documented commands cannot drift from the code. Commands with placeholders (`<...>`, `...`, `[...]`)
are skipped; running the commands is covered by their own tests and the demo."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "endo_depth_model/weights/MODEL_CARD.md",
]


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        lines = []
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            lines += block.replace("\\\n", " ").splitlines()
        # inline mentions that carry options (a bare `endo-depth synth` names the command, it is no call)
        lines += [
            c for c in re.findall(r"`(endo-depth [^`]+)`", text.replace("\n", " ")) if len(c.split()) > 2
        ]
        for line in lines:
            line = line.split("  #", 1)[0]
            for m in re.finditer(r"(?:endo-depth|-m endo_depth_ros\.cli) ([^;]+)", line):
                cmd = m.group(1).strip()
                if not cmd or re.search(r"<|\.\.\.|\[|\$", cmd):
                    continue
                found.append((page.name, cmd))
    return found


COMMANDS = _commands()


def test_the_docs_contain_commands_for_every_subcommand():
    used = {shlex.split(cmd)[0] for _, cmd in COMMANDS}
    assert {"synth", "pretrain", "train", "eval", "bag", "bench"} <= used, used


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:40]}" for p, c in COMMANDS])
def test_documented_command_parses(page, command, capsys):
    from endo_depth_model.cli import build_parser
    from endo_depth_ros.cli import ROS_COMMANDS

    argv = shlex.split(command)
    try:
        args = build_parser(ROS_COMMANDS).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(
            f"{page}: `endo-depth {command}` does not parse: {capsys.readouterr().err.strip()} ({exc})"
        )
    assert getattr(args, "func", None) is not None
    for value in vars(args).values():
        if isinstance(value, (str, Path)) and str(value).startswith("recipes/"):
            assert (ROOT / str(value)).is_file(), f"{page}: {value} does not exist"
