"""Unreadable bags (truncated, corrupt, unknown, missing) for ``endo-depth bag info|play|convert`` and the
demo: one clear line and a non-zero exit code, never a traceback, a hang or a half-written output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from endo_depth_ros.tools import bag as bagmod
from endo_depth_ros.tools.soak import textured_bag

from .node_harness import ROOT

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bags")
    good = textured_bag(d / "good", 8, 24, 32)
    out = {"good": good}
    mcap = next(good.glob("*.mcap"))
    data = mcap.read_bytes()

    truncated = shutil.copytree(good, d / "truncated")  # a recording cut off (disk full, power loss)
    (truncated / mcap.name).write_bytes(data[: len(data) // 2])
    out["truncated"] = truncated

    corrupt = shutil.copytree(good, d / "corrupt")  # same size, scrambled bytes in the middle
    b = bytearray(data)
    for i in range(len(b) // 4, len(b) // 2):
        b[i] = (b[i] * 7 + 13) % 256
    (corrupt / mcap.name).write_bytes(bytes(b))
    out["corrupt"] = corrupt

    unknown = d / "unknown"  # something else with a metadata.yaml
    unknown.mkdir()
    (unknown / "metadata.yaml").write_text("hello: [this is not a rosbag2 metadata file\n")
    out["unknown"] = unknown
    out["missing"] = d / "does_not_exist"
    return out


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "endo_depth_ros.cli", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated", "cannot read bag"),
        ("unknown", "cannot read bag"),
        ("missing", "bag not found"),
    ],
)
def test_bag_info_on_an_unreadable_bag_names_it(bags, name, message):
    with pytest.raises(bagmod.BagError, match=message) as err:
        bagmod.bag_info(bags[name])
    assert str(bags[name]) in str(err.value)


def test_cli_info_and_play_of_truncated_and_corrupt_bags_fail_cleanly(bags):
    info = _cli("bag", "info", str(bags["truncated"]))
    assert info.returncode == 2 and f"error: cannot read bag {bags['truncated']}" in info.stdout
    # the corrupt bag opens (its metadata is intact) but holds fewer messages than it claims
    play = _cli("bag", "play", str(bags["corrupt"]), "--rate", "0", "--wait", "0")
    assert play.returncode == 2, play.stdout + play.stderr
    assert "fewer messages than its metadata records" in play.stdout
    assert "the bag is truncated or corrupt" in play.stdout
    good = _cli("bag", "play", str(bags["good"]), "--rate", "0", "--wait", "0")
    assert good.returncode == 0 and "played 16 messages" in good.stdout  # 8 images + 8 camera_info
    for p in (info, play, good):
        assert "Traceback" not in p.stdout + p.stderr


def test_convert_of_a_missing_source_leaves_no_half_written_bag(tmp_path):
    out = tmp_path / "converted"
    p = _cli("bag", "convert", str(tmp_path / "missing.mp4"), str(out))
    assert p.returncode == 2 and "error: data source not found" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr
    assert not out.exists()


def test_demo_refuses_a_truncated_bag_and_stops_on_a_corrupt_one(bags, tmp_path):
    truncated = _cli(
        "demo", "--input", str(bags["truncated"]), "--out", str(tmp_path / "t"), "--timeout", "60"
    )
    assert truncated.returncode == 1
    assert f"[demo] failed: cannot read bag {bags['truncated']}" in truncated.stderr
    # the corrupt bag is found short while it is replayed: the demo stops instead of waiting for frames
    corrupt = _cli("demo", "--input", str(bags["corrupt"]), "--out", str(tmp_path / "c"), "--timeout", "30")
    assert corrupt.returncode == 1, corrupt.stdout[-2000:] + corrupt.stderr[-2000:]
    assert "the bag is truncated or corrupt" in corrupt.stderr
    for p in (truncated, corrupt):
        assert "Traceback" not in p.stdout + p.stderr
