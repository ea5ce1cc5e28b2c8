"""rosbag2 record / play / convert over real DDS, with real mcap and sqlite3 files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from endo_depth_model.data.sequence import Frame
from endo_depth_ros import conversions as conv
from endo_depth_ros.msg import DepthAlignment
from endo_depth_ros.tools import bag as bagmod

from .node_harness import ROOT, Peer

pytestmark = pytest.mark.ros


def _frames(n: int, h: int = 12, w: int = 16) -> list[Frame]:
    rng = np.random.default_rng(0)
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    out = []
    for i in range(n):
        T = np.eye(4)
        T[2, 3] = 0.001 * i
        out.append(
            Frame(
                rgb=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                K=K,
                depth=np.full((h, w), 0.05, np.float32),
                T_world_cam=T,
                stamp_ns=10**9 + i * 33_333_333,
                index=i,
            )
        )
    return out


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory):
    from endo_depth_model.data.rosbag import write_rosbag

    path = tmp_path_factory.mktemp("bags") / "sim"
    write_rosbag(_frames(15), path, "mcap")
    return path


def test_info_lists_topics_counts_and_duration(sim_bag):
    info = bagmod.bag_info(sim_bag)
    assert info.storage == "mcap"
    assert info.topics["/endoscope/image_raw"] == ("sensor_msgs/msg/Image", 15)
    assert info.topics["/endoscope/camera_info"] == ("sensor_msgs/msg/CameraInfo", 15)
    assert info.duration_s == pytest.approx(14 * 0.033333333, abs=1e-6)
    with pytest.raises(bagmod.BagError, match="bag not found"):
        bagmod.bag_info(sim_bag.parent / "missing")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_play_then_record_round_trips_every_message_byte_for_byte(sim_bag, tmp_path, storage):
    from rosbags.rosbag2 import Reader

    peer = Peer("endo_depth_test_bag")
    out = tmp_path / f"rec_{storage}"
    try:
        recorder = bagmod.BagRecorder(
            peer.node, out, ["/endoscope/image_raw", "/endoscope/camera_info"], storage
        )
        player = bagmod.BagPlayer(
            peer.node, sim_bag, ["/endoscope/image_raw", "/endoscope/camera_info"], rate=0
        )
        assert peer.wait_for(lambda: len(recorder.discover()) >= 0 and len(recorder.stats.messages) == 2, 10)
        assert player.wait_for_subscribers(10)
        counts = player.play()
        assert counts == {"/endoscope/image_raw": 15, "/endoscope/camera_info": 15}
        assert peer.wait_for(lambda: recorder.stats.total == 30, 10)
        stats = recorder.close()
    finally:
        peer.close()
    assert stats.messages == {"/endoscope/image_raw": 15, "/endoscope/camera_info": 15}
    with Reader(sim_bag) as a, Reader(out) as b:

        def payloads(reader, topic):
            conns = [c for c in reader.connections if c.topic == topic]
            return [bytes(raw) for _, _, raw in reader.messages(connections=conns)]

        for topic in ("/endoscope/image_raw", "/endoscope/camera_info"):
            assert payloads(a, topic) == payloads(b, topic)
    assert bagmod.bag_info(out).storage == storage


def test_replay_keeps_the_recorded_timing_and_rate(sim_bag):
    peer = Peer("endo_depth_test_timing")
    arrivals = []
    peer.node.create_subscription(
        Image, "/timed", lambda m: arrivals.append(time.monotonic()), QoSProfile(depth=100)
    )
    try:
        for rate, expected in ((1.0, 14 / 30), (2.0, 7 / 30)):
            arrivals.clear()
            player = bagmod.BagPlayer(
                peer.node,
                sim_bag,
                ["/endoscope/image_raw"],
                rate=rate,
                remap={"/endoscope/image_raw": "/timed"},
            )
            assert player.wait_for_subscribers(10)
            player.play()
            assert peer.wait_for(lambda: len(arrivals) == 15, 10)
            assert arrivals[-1] - arrivals[0] == pytest.approx(expected, abs=0.06)
    finally:
        peer.close()


def test_paced_replay_waits_for_the_consumer(sim_bag):
    """A consumer that answers slowly: the player never runs more than max_in_flight frames ahead."""
    peer = Peer("endo_depth_test_pacing")
    answer = peer.publisher(Image, "/consumer/out")
    ahead = []
    received = []

    def consume(msg):
        received.append(msg)

    peer.node.create_subscription(Image, "/consumer/in", consume, QoSProfile(depth=100))
    stop = threading.Event()

    def slow_consumer():
        done = 0
        while not stop.is_set():
            if done < len(received):
                time.sleep(0.02)
                answer.publish(received[done])
                done += 1
            time.sleep(0.005)

    worker = threading.Thread(target=slow_consumer, daemon=True)
    worker.start()
    try:
        player = bagmod.BagPlayer(
            peer.node,
            sim_bag,
            ["/endoscope/image_raw"],
            rate=0,
            remap={"/endoscope/image_raw": "/consumer/in"},
            pace_topic="/consumer/out",
            max_in_flight=3,
        )
        assert player.wait_for_subscribers(10)
        player.play(on_message=lambda *_: ahead.append(player.paced - player.consumed))
        assert peer.wait_for(lambda: player.consumed == 15, 10)
    finally:
        stop.set()
        worker.join(timeout=5)
        peer.close()
    assert max(ahead) <= 3 and len(ahead) == 15


def test_recording_our_own_interface_type(tmp_path):
    from rosbags.rosbag2 import Reader

    peer = Peer("endo_depth_test_own_type")
    pub = peer.publisher(DepthAlignment, "/alignment")
    out = tmp_path / "align"
    try:
        recorder = bagmod.BagRecorder(peer.node, out, ["/alignment"])
        assert peer.wait_for(lambda: bool(recorder.discover()) or "/alignment" in recorder.stats.messages, 10)
        assert peer.wait_for(lambda: pub.get_subscription_count() > 0, 10)
        for i in range(3):
            pub.publish(DepthAlignment(snippet_index=i, scale=0.5 * i, scale_source="relative"))
        assert peer.wait_for(lambda: recorder.stats.total == 3, 10)
        recorder.close()
    finally:
        peer.close()
    ts = bagmod.typestore()
    with Reader(out) as reader:
        msgs = [ts.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()]
    assert [m.snippet_index for m in msgs] == [0, 1, 2] and msgs[2].scale == 1.0


def test_cli_record_survives_sigint_with_a_readable_bag(tmp_path):
    """`endo-depth bag record` stopped by SIGINT mid-stream: every message received is in the bag."""
    out = tmp_path / "sigint"
    proc = subprocess.Popen(
        [sys.executable, "-m", "endo_depth_ros.cli", "bag", "record", str(out), "-t", "/cam"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peer = Peer("endo_depth_test_sigint")
    pub = peer.publisher(CameraInfo, "/cam")
    try:
        assert peer.wait_for(lambda: pub.get_subscription_count() > 0, 30)
        for i in range(50):
            pub.publish(conv.make_camera_info(np.eye(3), 10, 10, Header(frame_id=str(i))))
            time.sleep(0.01)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        peer.close()
    assert proc.returncode == 0, output
    assert "wrote 50 messages" in output
    info = bagmod.bag_info(out)
    assert info.topics["/cam"] == ("sensor_msgs/msg/CameraInfo", 50)


def test_cli_convert_and_info(tmp_path):
    out = tmp_path / "synth_bag"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "endo_depth_ros.cli",
            "bag",
            "convert",
            "synth:target?seed=2&n_frames=3&height=32&width=40",
            str(out),
            "--storage",
            "sqlite3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 frames" in proc.stdout
    info = bagmod.bag_info(out)
    assert info.storage == "sqlite3"
    assert {t: c for t, (_, c) in info.topics.items()} == {
        "/endoscope/image_raw": 3,
        "/endoscope/camera_info": 3,
        "/ground_truth/depth": 3,
        "/ground_truth/pose": 3,
    }
    shown = subprocess.run(
        [sys.executable, "-m", "endo_depth_ros.cli", "bag", "info", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "/ground_truth/depth" in shown.stdout and "sensor_msgs/msg/Image" in shown.stdout
