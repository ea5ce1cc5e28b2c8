"""The documentation's shell blocks run: every ```bash block in the README, docs/ and the model card
is either executed here, verbatim, or carries a marker saying why not and what covers it instead.

Markers, on the line before the block:

* ``<!-- docs-test: run -->``: the block runs in a scratch directory that sees the repository's files
  (recipes, scripts, shipped weights) but writes its own ``runs/``; all run-blocks of one page run in
  order in one ``bash -euo pipefail`` shell, with ``endo-depth`` and ``.venv/bin/python`` from this
  checkout. Every path a block announces with ``# -> path`` must exist afterwards.
* ``<!-- docs-test: skip: <reason> -->``: GPU-only, needs a dataset or a ROS install, runs forever, or
  takes long; when the reason names a test (``tests/...py::test_name``), that test must exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docs_commands import PAGES, ROOT  # the pages whose commands must also parse

BLOCK = re.compile(r"(?:^|\n)(?P<before>[^\n]*)\n```bash\n(?P<body>.*?)```", re.S)
MARKER = re.compile(r"<!-- docs-test: (?P<kind>run|skip: (?P<reason>.+?)) -->")
# what the scratch directory sees of the repository (everything else, e.g. runs/, stays out)
SHARED = (
    "recipes",
    "configs",
    "scripts",
    "endo_depth_model",
    "endo_depth_ros",
    "launch",
    "config",
    "msg",
    ".venv",
)


def _blocks(page: Path) -> list[tuple[str, str | None, str]]:
    """(kind, reason, body) for every bash block; kind is run, skip or missing."""
    out = []
    for m in BLOCK.finditer(page.read_text()):
        marker = MARKER.search(m.group("before"))
        if marker is None:
            out.append(("missing", None, m.group("body")))
        elif marker.group("kind") == "run":
            out.append(("run", None, m.group("body")))
        else:
            out.append(("skip", marker.group("reason"), m.group("body")))
    return out


ALL = [(page, *b) for page in PAGES for b in _blocks(page)]
RUN_PAGES = sorted({page for page, kind, _, _ in ALL if kind == "run"})


def test_every_shell_block_is_run_or_says_why_not():
    assert len(ALL) >= 10, "the docs lost their command blocks"
    missing = [
        f"{p.relative_to(ROOT)}: {body.splitlines()[0]}" for p, kind, _, body in ALL if kind == "missing"
    ]
    assert not missing, "bash blocks without a docs-test marker:\n" + "\n".join(missing)
    assert len(RUN_PAGES) >= 3, RUN_PAGES


def test_skip_reasons_name_tests_that_exist():
    for page, kind, reason, _ in ALL:
        if kind != "skip":
            continue
        assert len(reason) > 10, f"{page.name}: say why the block is not run"
        for file, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", reason):
            path = ROOT / file
            assert path.is_file(), f"{page.name}: {file} does not exist"
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), f"{page.name}: no {file}::{name}"


@pytest.mark.parametrize("page", RUN_PAGES, ids=[p.name for p in RUN_PAGES])
def test_documented_commands_run(page, tmp_path):
    for name in SHARED:
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    bodies = [body for p, kind, _, body in ALL if p == page and kind == "run"]
    script = "set -euo pipefail\n" + "\n".join(bodies)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, not an older install
    env["MPLBACKEND"] = "Agg"
    env["ENDO_DEPTH_CACHE"] = str(tmp_path / "cache")  # exported graphs stay out of the user's cache
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    log = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"{page.name}: documented commands failed:\n{log}"
    announced = [p.strip() for body in bodies for p in re.findall(r"# -> ([^\s#]+)", body)]
    assert announced, f"{page.name}: a run block should announce what it writes (# -> path)"
    for path in announced:
        assert (tmp_path / path).exists(), f"{page.name}: the docs say the commands write {path}:\n{log}"


def test_the_readme_links_every_guide():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
