"""The ament package: generated interfaces, DDS between processes, the install tree, package metadata."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_depth_alignment_round_trips_through_rclpy_serialization():
    from rclpy.serialization import deserialize_message, serialize_message

    from endo_depth_ros.msg import DepthAlignment

    msg = DepthAlignment()
    msg.header.frame_id = "endoscope_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 123_456_789
    msg.snippet_index = 2**40 + 7
    msg.scale, msg.shift, msg.fit_residual = 1.25, -0.5, 0.0029296875  # exact in float32
    msg.n_overlap_frames = 8
    msg.reanchored = True
    msg.scale_source = DepthAlignment.SCALE_KINEMATIC
    msg.metric_scale = 0.046875
    msg.is_metric = True
    back = deserialize_message(serialize_message(msg), DepthAlignment)
    assert back == msg
    assert back.snippet_index == 2**40 + 7
    assert back.header.stamp.nanosec == 123_456_789
    assert (DepthAlignment.SCALE_RELATIVE, DepthAlignment.SCALE_FIXED, DepthAlignment.SCALE_KINEMATIC) == (
        "relative",
        "fixed",
        "kinematic",
    )


def test_msg_fields_match_the_documented_interface():
    from endo_depth_ros.msg import DepthAlignment

    fields = DepthAlignment.get_fields_and_field_types()
    assert fields == {
        "header": "std_msgs/Header",
        "snippet_index": "uint64",
        "scale": "float",
        "shift": "float",
        "fit_residual": "float",
        "n_overlap_frames": "uint32",
        "reanchored": "boolean",
        "scale_source": "string",
        "metric_scale": "float",
        "is_metric": "boolean",
    }


def _spawn_talker(kind: str, count: int, topic: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.foundation._talker", kind, str(count), topic],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _receive(msg_type, topic: str, qos, count: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> list:
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    received = []
    try:
        node = rclpy.create_node("endo_depth_test_listener", context=context)
        node.create_subscription(msg_type, topic, received.append, qos)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout_s
        while len(received) < count and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):  # drain what is still in flight
            executor.spin_once(timeout_sec=0.02)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    return received


@pytest.mark.ros
def test_message_published_in_one_process_is_received_in_another_over_dds():
    from rclpy.qos import QoSProfile

    from endo_depth_ros.msg import DepthAlignment

    topic = "/endo_depth_test/alignment"
    proc = _spawn_talker("alignment", 5, topic)
    try:
        received = _receive(DepthAlignment, topic, QoSProfile(depth=10), 5, proc)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert [m.snippet_index for m in received] == [0, 1, 2, 3, 4]
    assert [m.scale for m in received] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(m.header.frame_id == "endoscope_optical" and m.n_overlap_frames == 8 for m in received)


@pytest.mark.ros
def test_large_images_with_sensor_data_qos_cross_processes_with_the_shipped_profile():
    """640x512 rgb8 (~1 MB) best-effort frames: the shared-memory profile delivers them; the default
    UDP transport loses most (see shared notes)."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_shm.xml")
    topic = "/endo_depth_test/image"
    n = 30
    proc = _spawn_talker("image", n, topic)
    try:
        received = _receive(Image, topic, qos_profile_sensor_data, n, proc)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    ids = [int(m.header.frame_id) for m in received]
    assert len(ids) >= n - 2, f"received {len(ids)}/{n}: {ids}"
    assert ids == sorted(ids)
    first = received[0]
    assert (first.height, first.width, first.encoding, len(first.data)) == (512, 640, "rgb8", 512 * 640 * 3)
    assert first.data[0] == ids[0]


def _venv_prefix() -> Path:
    return Path(sys.prefix)


def test_install_tree_has_share_directory_index_and_executables():
    prefix = _venv_prefix()
    share = prefix / "share" / "endo_depth_ros"
    assert (share / "package.xml").is_file()
    assert (share / "config" / "fastdds_shm.xml").is_file()
    assert (share / "config" / "depth.yaml").is_file()
    assert sorted(p.name for p in (ROOT / "launch").glob("*.py")) == sorted(
        p.name for p in (share / "launch").glob("*.py")
    )
    assert (share / "launch" / "depth.launch.py").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "endo_depth_ros").is_file()
    # the generated interface definition is installed beside them
    assert (share / "msg" / "DepthAlignment.msg").is_file()
    for name in ("endo_depth", "depth_node"):
        assert os.access(prefix / "lib" / "endo_depth_ros" / name, os.X_OK), name
    from endo_depth_model import __version__

    for exe in (prefix / "lib" / "endo_depth_ros" / "endo_depth", prefix / "bin" / "endo-depth"):
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, cwd="/")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == __version__, exe


def test_installed_package_imports_outside_the_source_tree():
    """From a directory outside the checkout, both the generated message and hand-written modules import
    from the install tree."""
    code = (
        "import endo_depth_ros, endo_depth_model\n"
        "from endo_depth_ros.msg import DepthAlignment\n"
        "from endo_depth_ros import ros_env\n"
        "print(endo_depth_model.__file__)\n"
        "print(ros_env.config_path('fastdds_shm.xml'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    model_file, profile = out.stdout.split()
    assert model_file.startswith(str(_venv_prefix()))
    assert profile == str(_venv_prefix() / "share" / "endo_depth_ros" / "config" / "fastdds_shm.xml")


def test_package_xml_is_a_valid_format3_ament_cmake_interface_package():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))
    pkg.validate()
    assert pkg.name == "endo_depth_ros"
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]
    buildtool = {d.name for d in pkg.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= buildtool
    assert "rosidl_default_runtime" in {d.name for d in pkg.exec_depends}


def test_cmake_generates_every_msg_file():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"rosidl_generate_interfaces\((.*?)\)", cmake, re.S).group(1)
    listed = set(re.findall(r'"(msg/[A-Za-z0-9]+\.msg)"', block))
    on_disk = {f"msg/{p.name}" for p in (ROOT / "msg").glob("*.msg")}
    assert listed == on_disk and on_disk
    version = ET.parse(ROOT / "package.xml").getroot().findtext("version")
    assert re.search(rf'version="{re.escape(version)}"', (ROOT / "setup.py").read_text())
