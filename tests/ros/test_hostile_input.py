"""Hostile input to the node's message handling: random images (encodings including unknown ones,
sizes, steps, byte strings of the wrong length, stamps), camera_info and robot poses.

In process, hypothesis drives the node's own subscription callbacks (a real DepthNode with a small
model; no DDS in between): nothing raises and every message is either taken or counted under a
reason. Over DDS, a burst of hostile images between good ones: diagnostics count every one."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.context import Context
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from endo_depth_ros import conversions as conv

from .node_harness import SMALL, textured_frames
from .test_depth_node import _diag, _header, _image, _start

pytestmark = pytest.mark.ros

ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1", "8UC3", "yuv422",
             "bayer_rggb8", "", "RGB8", "rgb16"]  # fmt: skip


IMAGE_UNRELATED = ("bad_camera_info", "bad_robot_pose")  # rejection reasons of the other inputs


@pytest.fixture(scope="module")
def depth_node(weights):
    """A DepthNode in this process (own context), small model, fixed intrinsics."""
    from endo_depth_ros.depth_node import DepthNode

    context = Context()
    rclpy.init(context=context)
    params = {
        **SMALL,
        "model.weights": str(weights["weights"]),
        "model.pose_weights": str(weights["pose_weights"]),
    }
    params.update(queue_size=8, queue_policy="drop_oldest")
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    overrides.append(Parameter("intrinsics", Parameter.Type.DOUBLE_ARRAY, [50.0, 50.0, 31.5, 23.5]))
    node = DepthNode(context=context, parameter_overrides=overrides)
    yield node
    node.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def _accounted(node) -> int:
    """Images the node has taken (into its queue, dropped by it, or waiting for camera_info) or rejected."""
    q = node.queue.counters
    rejected = sum(n for reason, n in node.rejected.items() if reason not in IMAGE_UNRELATED)
    return rejected + q.accepted + q.rejected_full + len(node._awaiting_info)


def _stamp(sec: int, nanosec: int) -> Header:
    h = Header(frame_id="endoscope")
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


image_messages = st.builds(
    lambda enc, h, w, step, big, data, sec, nsec: Image(
        header=_stamp(sec, nsec), height=h, width=w, encoding=enc, step=step, is_bigendian=big, data=data
    ),
    enc=st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=12)),
    h=st.integers(0, 12),
    w=st.integers(0, 12),
    step=st.one_of(st.integers(0, 60), st.integers(0, 2**32 - 1)),
    big=st.integers(0, 1),
    data=st.binary(max_size=600),
    sec=st.integers(0, 2**31 - 1),
    nsec=st.integers(0, 999_999_999),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(image_messages, min_size=1, max_size=4))
def test_random_images_never_raise_and_every_one_is_counted(depth_node, msgs):
    node = depth_node
    for msg in msgs:
        before_received, before_accounted = node.frames_received, _accounted(node)
        before_bad = node.rejected["bad_image"]
        try:
            conv.image_msg_to_rgb(msg)
            valid = True
        except conv.ImageEncodingError:
            valid = False
        node._on_image(msg)  # the subscription callback itself
        assert node.frames_received == before_received + 1
        assert _accounted(node) == before_accounted + 1  # taken or rejected, exactly once
        assert node.rejected["bad_image"] == before_bad + (0 if valid else 1)
    # then a good frame of the stream's size with a later stamp is taken into the queue
    h, w = node._image_hw or (6, 8)
    rgb = np.random.default_rng(len(msgs)).integers(0, 255, (h, w, 3), dtype=np.uint8)
    stamp_ns = (node._last_stamp_ns or 0) + 1
    good = conv.array_to_image_msg(rgb, "rgb8", _stamp(stamp_ns // 10**9, stamp_ns % 10**9))
    accepted = node.queue.counters.accepted
    node._on_image(good)
    assert node.queue.counters.accepted == accepted + (1 if node._K_hw in (None, (h, w)) else 0)
    assert node.frames_received == _accounted(node)


finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e3, 1e3))


plausible_k = st.tuples(
    st.floats(-10, 1e4), st.floats(-10, 1e4), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3),
    st.sampled_from([1.0, 0.0, -1.0, math.nan]),
).map(lambda v: [v[0], 0.0, v[2], 0.0, v[1], v[3], 0.0, 0.0, v[4]])  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.one_of(st.lists(finite_or_not, min_size=9, max_size=9), plausible_k),
    hw=st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    pose=st.lists(finite_or_not, min_size=7, max_size=7),
)
def test_random_camera_info_and_robot_poses_are_taken_or_counted(depth_node, k, hw, pose):
    node = depth_node
    info = CameraInfo(header=_stamp(1, 0), height=hw[0], width=hw[1])
    info.k = [float(v) for v in k]
    bad_info = node.rejected["bad_camera_info"]
    node._on_camera_info(info)
    K = np.reshape(k, (3, 3))
    usable = bool(np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0 and K[2, 2] == 1.0)
    assert node.rejected["bad_camera_info"] == bad_info + (0 if usable else 1)
    if usable:
        assert np.array_equal(node._K, K) and node._K_hw == hw

    msg = PoseStamped(header=_stamp(1, 0))
    p, o = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z, o.x, o.y, o.z, o.w = (float(v) for v in pose)
    bad_pose, n_poses = node.rejected["bad_robot_pose"], len(node._robot_poses)
    with np.errstate(all="ignore"):
        node._on_robot_pose(msg)
        T = conv.pose_to_matrix(msg.pose)
    taken = len(node._robot_poses) == min(n_poses + 1, node._robot_poses.maxlen)
    if np.all(np.isfinite(T)):
        assert taken and node.rejected["bad_robot_pose"] == bad_pose
    else:
        assert node.rejected["bad_robot_pose"] == bad_pose + 1


def _hostile_burst(rgb: np.ndarray, n: int, seed: int = 0) -> list[Image]:
    """``n`` images that are all invalid, in six different ways, with random content."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = _image(rgb, 1000 + i)
        kind = i % 6
        if kind == 0:  # an encoding nobody knows
            m.encoding = "".join(rng.choice(list("abcxyz0123_"), size=int(rng.integers(1, 10))))
        elif kind == 1:  # a step shorter than a row
            m.step = int(rng.integers(0, m.width * 3))
        elif kind == 2:  # fewer bytes than step x height
            m.data = bytes(m.data)[: int(rng.integers(0, len(m.data)))]
        elif kind == 3:  # random bytes of a random length with random dimensions
            m.height, m.width = int(rng.integers(1, 100)), int(rng.integers(1, 100))
            m.step = m.width * 3
            m.data = rng.integers(0, 255, int(rng.integers(0, m.step * m.height)), dtype=np.uint8).tobytes()
        elif kind == 4:  # a depth image on the colour input
            m = conv.array_to_image_msg(rng.random(rgb.shape[:2], dtype=np.float32), "32FC1", m.header)
        else:  # zero size
            m = Image(header=m.header, height=0, width=int(rng.integers(0, 9)), encoding="rgb8", step=0)
        out.append(m)
    return out


def test_a_burst_of_hostile_images_over_dds_is_counted_one_by_one(weights):
    H, W = 48, 64
    node, peer, pub_img, _ = _start(
        weights, intrinsics=[50, 50, 31.5, 23.5], queue_size=100, queue_policy="drop_newest"
    )
    frames = textured_frames(6, H, W)
    burst = _hostile_burst(frames[0], 60)
    try:
        for i in range(3):
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.05)
        for m in burst:  # back to back
            pub_img.publish(m)
        for i in range(3, 6):
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.05)
        n = 6 + len(burst)
        assert peer.wait_for(lambda: _diag(peer).get("frames_received") == str(n), 30), _diag(peer)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 6, 60), _diag(peer)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    diag = _diag(peer)
    assert diag["rejected.bad_image"] == str(len(burst)) and diag["frames_rejected"] == str(len(burst))
    assert diag["frames_published"] == "6" and diag["frames_dropped"] == "0" and diag["errors"] == "0"
    stamps = sorted(conv.stamp_to_ns(m.header.stamp) for m in peer.received["/test/depth/image"])
    assert stamps == [conv.stamp_to_ns(_header(i).stamp) for i in range(6)]
    assert "Traceback" not in node.output
    assert math.isfinite(float(diag["latency_p95_ms"]))
