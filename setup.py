"""pip installation of the endo_depth Python packages (distribution ``endo-depth``).

On a ROS 2 install, build with colcon instead (package.xml + CMakeLists.txt): that also generates the
interfaces in msg/. pip installs the same Python packages, the ``endo-depth`` command, the share
directory (package.xml, launch/, config/), the ament index marker, and the node executables under
``lib/endo_depth_ros/``. Dependency names come from requirements/*.txt; versions are pinned only in
requirements/constraints.txt.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
PACKAGE = "endo_depth_ros"


def requirements(name: str) -> list[str]:
    lines = (ROOT / "requirements" / f"{name}.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def executables() -> list[tuple[str, str]]:
    out = []
    for line in (ROOT / "executables.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, module = line.split()
            out.append((name, module))
    return out


def executable_wrappers() -> list[str]:
    """Shell wrappers for lib/endo_depth_ros/: they run the module with <prefix>/bin/python3."""
    out_dir = ROOT / "build" / "pip_executables"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, module in executables():
        path = out_dir / name
        path.write_text(
            "#!/bin/sh\n"
            "# installed by pip as <prefix>/lib/endo_depth_ros/<name>: run with <prefix>/bin/python3\n"
            'prefix="$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)"\n'
            f'exec "$prefix/bin/python3" -m {module} "$@"\n'
        )
        path.chmod(0o755)
        paths.append(os.path.relpath(path, ROOT))
    return paths


def share_files(folder: str) -> list[str]:
    return sorted(p for p in glob.glob(f"{folder}/**/*", recursive=True) if os.path.isfile(p))


data_files = [
    (f"share/{PACKAGE}", ["package.xml"]),
    ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
    (f"lib/{PACKAGE}", executable_wrappers()),
]
for folder in ("launch", "config"):
    by_dir: dict[str, list[str]] = {}
    for path in share_files(folder):
        by_dir.setdefault(os.path.dirname(path), []).append(path)
    data_files += [(f"share/{PACKAGE}/{d}", files) for d, files in sorted(by_dir.items())]

setup(
    name="endo-depth",
    version="0.1.0",
    description="Temporally consistent depth and camera motion from a monocular endoscope (EndoDAV), "
    "with a ROS 2 node.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["endo_depth_model", "endo_depth_model.*", PACKAGE, f"{PACKAGE}.*"]),
    package_data={"endo_depth_model": ["**/*.txt", "**/*.json", "**/*.yaml", "**/*.safetensors"]},
    data_files=data_files,
    install_requires=requirements("base"),
    extras_require={
        "ros": requirements("ros"),
        "tensorrt": requirements("tensorrt"),
        "dev": requirements("dev"),
        "build": requirements("build"),
    },
    entry_points={"console_scripts": ["endo-depth = endo_depth_ros.cli:main"]},
    zip_safe=False,
)
