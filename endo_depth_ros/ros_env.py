"""The environment of every ROS process this project starts.

* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: DDS discovery stays on this host.
* ``ROS_LOG_DIR``: a temporary directory unless the user set one.
* ``FASTDDS_DEFAULT_PROFILES_FILE``: the shipped shared-memory profile (``config/fastdds_shm.xml``).
* ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp`` (the middleware the profile is written for).
* ``AMENT_PREFIX_PATH``: ``sys.prefix`` prepended when this package is installed there (a pip install),
  so that the ament index (``ros2 launch``'s ``FindPackageShare``, ``ros2 run``) finds it.

rclpy reads these at ``rclpy.init``, not at import. Python code calls :func:`apply` before
``rclpy.init``; shell scripts use ``eval "$(python -m endo_depth_ros.ros_env)"``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PACKAGE = "endo_depth_ros"
FASTDDS_PROFILE = "fastdds_shm.xml"
INDEX_MARKER = Path("share", "ament_index", "resource_index", "packages", PACKAGE)  # under an install prefix


def share_dir() -> Path:
    """The package's share directory: the source checkout's root, or ``<prefix>/share/endo_depth_ros``."""
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "package.xml").is_file() and (source_root / "config").is_dir():
        return source_root
    for prefix in (sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        if prefix and (Path(prefix) / "share" / PACKAGE / "package.xml").is_file():
            return Path(prefix) / "share" / PACKAGE
    raise FileNotFoundError(
        f"cannot find the share directory of {PACKAGE}: not a source checkout and not under "
        f"{sys.prefix}/share or AMENT_PREFIX_PATH"
    )


def config_path(name: str) -> Path:
    """Path of a file shipped in ``config/``."""
    path = share_dir() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE}: no config file {path}")
    return path


def ros_environment(base: Mapping[str, str] | None = None, domain_id: int | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with this project's ROS settings added.

    The discovery range and the middleware are always set; ``ROS_LOG_DIR`` and the FastDDS profile only
    when the user has not chosen their own; ``sys.prefix`` goes first on ``AMENT_PREFIX_PATH`` when the
    package is installed there and the path lacks it. ``domain_id`` sets ``ROS_DOMAIN_ID`` (tests use a
    random one).
    """
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes and (Path(sys.prefix) / INDEX_MARKER).is_file():
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *prefixes])
    if not env.get("ROS_LOG_DIR"):
        env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="endo_depth_ros_log_")
    if not env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_path(FASTDDS_PROFILE))
    if domain_id is not None:
        if not 0 <= domain_id <= 232:
            raise ValueError(f"ROS_DOMAIN_ID must be in [0, 232], got {domain_id}")
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def apply(environ: MutableMapping[str, str] | None = None, domain_id: int | None = None) -> dict[str, str]:
    """Set this project's ROS settings in ``environ`` (default ``os.environ``); call before ``rclpy.init``."""
    target = os.environ if environ is None else environ
    env = ros_environment(target, domain_id)
    target.update(env)
    return env


KEYS = (
    "ROS_AUTOMATIC_DISCOVERY_RANGE",
    "RMW_IMPLEMENTATION",
    "ROS_LOG_DIR",
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "ROS_DOMAIN_ID",
    "AMENT_PREFIX_PATH",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print shell `export` lines for the project's ROS environment (eval them)."
    )
    parser.add_argument("--domain-id", type=int, default=None)
    args = parser.parse_args(argv)
    env = ros_environment(domain_id=args.domain_id)
    for key in KEYS:
        if key in env:
            print(f"export {key}={shlex.quote(env[key])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
