"""The ROS environment every process of the project gets."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from endo_depth_ros import ros_env

ROOT = Path(__file__).resolve().parents[2]


def test_environment_is_loopback_only_with_temp_logs_and_the_shm_profile():
    env = ros_env.ros_environment(base={"PATH": "/bin"}, domain_id=17)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert env["ROS_DOMAIN_ID"] == "17"
    assert Path(env["ROS_LOG_DIR"]).is_dir() and Path(env["ROS_LOG_DIR"]).name.startswith(
        "endo_depth_ros_log_"
    )
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]) == ROOT / "config" / "fastdds_shm.xml"
    assert env["PATH"] == "/bin"


def test_user_choices_are_kept_but_discovery_is_always_local():
    base = {
        "ROS_LOG_DIR": "/tmp/mine",
        "FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml",
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
    }
    env = ros_env.ros_environment(base=base)
    assert env["ROS_LOG_DIR"] == "/tmp/mine"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == "/x.xml"
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_the_install_prefix_goes_first_on_ament_prefix_path_once():
    """The pip install's share/ files are found through the ament index (ros2 launch's FindPackageShare)."""
    assert (Path(sys.prefix) / ros_env.INDEX_MARKER).is_file()  # the package is installed in this venv
    assert ros_env.ros_environment(base={})["AMENT_PREFIX_PATH"] == sys.prefix
    env = ros_env.ros_environment(base={"AMENT_PREFIX_PATH": "/opt/ros/kilted"})
    assert env["AMENT_PREFIX_PATH"].split(os.pathsep) == [sys.prefix, "/opt/ros/kilted"]
    assert ros_env.ros_environment(base=env)["AMENT_PREFIX_PATH"] == env["AMENT_PREFIX_PATH"]


def test_after_apply_the_ament_index_finds_the_launch_file():
    code = (
        "from endo_depth_ros import ros_env\n"
        "ros_env.apply()\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "print(get_package_share_directory('endo_depth_ros'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    share = Path(out.stdout.strip())
    assert share == Path(sys.prefix) / "share" / "endo_depth_ros"
    assert (share / "launch" / "depth.launch.py").is_file() and (share / "config" / "depth.yaml").is_file()


def test_bad_domain_id_is_refused():
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
        ros_env.ros_environment(base={}, domain_id=300)


def test_shell_exports_evaluate_to_the_same_environment():
    out = subprocess.run(
        ["bash", "-c", f'eval "$({sys.executable} -m endo_depth_ros.ros_env --domain-id 5)"; env'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "FASTDDS_", "AMENT_"))},
    )
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["ROS_DOMAIN_ID"] == "5"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_shm.xml")
    assert env["AMENT_PREFIX_PATH"] == sys.prefix


def test_fastdds_profile_uses_shared_memory_and_loopback_udp_only():
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(ROOT / "config" / "fastdds_shm.xml").getroot()
    descriptors = {
        d.findtext("d:transport_id", namespaces=ns): d for d in root.iterfind(".//d:transport_descriptor", ns)
    }
    types = {tid: d.findtext("d:type", namespaces=ns) for tid, d in descriptors.items()}
    assert sorted(types.values()) == ["SHM", "UDPv4"]
    shm = next(d for d in descriptors.values() if d.findtext("d:type", namespaces=ns) == "SHM")
    assert int(shm.findtext("d:segment_size", namespaces=ns)) >= 8 * 1024 * 1024  # several 1 MB frames
    udp = next(d for d in descriptors.values() if d.findtext("d:type", namespaces=ns) == "UDPv4")
    assert [a.text for a in udp.iterfind(".//d:address", ns)] == ["127.0.0.1"]
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(descriptors)


def test_bootstrap_is_idempotent_and_does_nothing_when_nothing_changed():
    """A second run of the set-up finds every step up to date (the README promises seconds)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap.sh")], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    again = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap.sh")], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines() == [f"[bootstrap] ready: {ROOT / '.venv'}"]
