"""Message conversions of the node and its bounded frame queue (no DDS needed)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from endo_depth_model import geometry
from endo_depth_ros import conversions as conv
from endo_depth_ros.frame_queue import FrameQueue


def test_pointcloud_matches_backprojection_and_keeps_nan():
    K = np.array([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]])
    depth = np.random.default_rng(0).uniform(0.02, 0.1, (24, 32)).astype(np.float32)
    depth[3, 4] = np.nan
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[..., 0] = 255
    msg = conv.depth_to_pointcloud2(depth, K, Header(frame_id="cam"), rgb)
    xyz = conv.pointcloud2_to_xyz(msg)
    ref = geometry.backproject_np(np.nan_to_num(depth), K)
    finite = np.isfinite(depth)
    assert np.allclose(xyz[finite], ref[finite], atol=1e-6)
    assert np.isnan(xyz[3, 4]).all() and not msg.is_dense
    packed = np.frombuffer(bytes(msg.data), np.float32).reshape(24, 32, 4)[..., 3].view(np.uint32)
    assert np.all(packed == 0xFF0000)
    sub = conv.pointcloud2_to_xyz(conv.depth_to_pointcloud2(depth, K, Header(), stride=4))
    assert sub.shape == (6, 8, 3)
    assert np.allclose(sub[1, 2], xyz[4, 8], atol=1e-6)  # the strided cloud samples the same points


def test_pose_round_trip_through_messages():
    T = geometry.pose_vec_to_mat(torch.tensor([[0.3, -0.2, 1.0]]), torch.tensor([[0.01, 0.02, -0.5]]))[
        0
    ].numpy()
    assert np.allclose(conv.pose_to_matrix(conv.matrix_to_pose(T)), T, atol=1e-6)
    header = Header()
    header.stamp.sec = 5
    ps, odom, tf = conv.pose_msgs(T, header.stamp, "odom", "cam")
    assert ps.header.frame_id == odom.header.frame_id == tf.header.frame_id == "odom"
    assert odom.child_frame_id == tf.child_frame_id == "cam"
    assert tf.transform.translation.z == pytest.approx(-0.5)


def test_image_to_rgb_rejects_depth_and_converts_bgr():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    msg = conv.array_to_image_msg(bgr, "bgr8", Header())
    rgb = conv.image_msg_to_rgb(msg)
    assert rgb[0, 0].tolist() == [0, 0, 200]
    with pytest.raises(conv.ImageEncodingError, match="depth encoding"):
        conv.image_msg_to_rgb(conv.array_to_image_msg(np.ones((2, 2), np.float32), "32FC1", Header()))


@settings(max_examples=200, deadline=None)
@given(
    encoding=st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "16UC1", "yuv422", "", "8UC3", "rgb16"]),
    height=st.integers(0, 6),
    width=st.integers(0, 6),
    step=st.integers(0, 40),
    bigendian=st.integers(0, 1),
    data=st.binary(max_size=200),
)
def test_hostile_image_messages_convert_or_raise_the_codec_error(
    encoding, height, width, step, bigendian, data
):
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian)
    msg.data = data
    try:
        rgb = conv.image_msg_to_rgb(msg)
    except conv.ImageEncodingError:
        return
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8


def test_frame_queue_policies_count_every_loss():
    q = FrameQueue(2, "drop_oldest")
    assert [q.put(i) for i in range(5)] == [None, None, 0, 1, 2]
    assert (q.counters.accepted, q.counters.dropped_oldest, q.counters.dropped) == (5, 3, 3)
    assert [q.get(0), q.get(0), q.get(0)] == [3, 4, None]
    q = FrameQueue(2, "drop_newest")
    assert [q.put(i) for i in range(4)] == [None, None, 2, 3]
    assert (q.counters.accepted, q.counters.rejected_full) == (2, 2)
    assert [q.get(0), q.get(0)] == [0, 1]
    with pytest.raises(ValueError, match="policy"):
        FrameQueue(2, "block")


def test_frame_queue_wakes_a_waiting_consumer_and_closes():
    q = FrameQueue(4)
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    q.put("frame")
    t.join(timeout=5)
    assert got == ["frame"]
    q.close()
    assert q.get(timeout=5) is None
