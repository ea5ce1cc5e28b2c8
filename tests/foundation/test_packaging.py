"""pip packaging (setup.py) and the pinned dependency set."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("endo_depth-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_both_packages_share_directory_and_executables(wheel):
    names = set(wheel.namelist())
    assert "endo_depth_model/__init__.py" in names and "endo_depth_model/geometry.py" in names
    assert "endo_depth_ros/__init__.py" in names and "endo_depth_ros/ros_env.py" in names
    data = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    assert "share/endo_depth_ros/package.xml" in data
    assert "share/endo_depth_ros/config/fastdds_shm.xml" in data
    assert "share/ament_index/resource_index/packages/endo_depth_ros" in data
    executables = [
        line.split()[0]
        for line in (ROOT / "executables.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for exe in executables:
        assert f"lib/endo_depth_ros/{exe}" in data
    assert not any("tests/" in n for n in names)


def test_wheel_declares_console_script_and_extras(wheel):
    meta_dir = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    entry_points = wheel.read(f"{meta_dir}/entry_points.txt").decode()
    assert re.search(r"^endo-depth = endo_depth_ros\.cli:main$", entry_points, re.M)
    metadata = wheel.read(f"{meta_dir}/METADATA").decode()
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M))
    assert {"tensorrt", "dev", "ros"} <= extras
    assert re.search(r"^Requires-Dist: tensorrt; extra == \"tensorrt\"$", metadata, re.M)
    assert re.search(r"^Requires-Dist: pycuda; extra == \"tensorrt\"$", metadata, re.M)
    assert re.search(r"^Requires-Dist: torch$", metadata, re.M)


def _requirement_names() -> set[str]:
    names = set()
    for f in (ROOT / "requirements").glob("*.txt"):
        if f.name in {"constraints.txt", "tensorrt.txt"}:
            continue
        names |= {
            line.strip().lower()
            for line in f.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
    return names


def test_every_dependency_is_pinned_once_in_constraints():
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert name.lower() not in pins, f"{name} pinned twice"
            pins[name.lower()] = version
    missing = {
        n for n in _requirement_names() if n.replace("_", "-") not in {p.replace("_", "-") for p in pins}
    }
    assert not missing, f"not pinned in constraints.txt: {missing}"
    assert pins["torch"] == "2.13.0"
    # no other file pins a version
    for f in (ROOT / "requirements").glob("*.txt"):
        if f.name != "constraints.txt":
            assert "==" not in f.read_text(), f"{f} pins a version; pins belong in constraints.txt"


def test_installed_versions_match_the_pins():
    from importlib import metadata

    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, version = line.split("==")
        if name.lower() in _requirement_names():
            assert metadata.version(name).split("+")[0] == version.split("+")[0], name
