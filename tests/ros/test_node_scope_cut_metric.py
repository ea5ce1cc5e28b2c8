"""The depth node over real DDS with what a surgical scope adds: the field-of-view border, a recording
spliced from two scenes (a real rosbag2 file played into the node), a metric-depth checkpoint, and an
environment without tf2_msgs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from endo_depth_ros import conversions as conv
from endo_depth_ros.tools import bag as bagmod

from .test_depth_node import _diag, _header, _image, _start

pytestmark = pytest.mark.ros

H, W = 48, 64
K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
FX_FY_CX_CY = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]


def _published(peer, n: int) -> bool:
    """Wait for a /diagnostics message that counts ``n`` frames published (the figures then cover them)."""
    return peer.wait_for(lambda: int(_diag(peer).get("frames_published", 0)) >= n, 15)


def _depths(peer) -> dict[int, np.ndarray]:
    return {
        conv.stamp_to_ns(m.header.stamp): np.frombuffer(bytes(m.data), np.float32).reshape(H, W)
        for m in peer.received["/test/depth/image"]
    }


def test_outside_the_scopes_field_of_view_depth_is_nan_and_there_are_no_points(weights):
    """Frames behind a circular stop: every depth image is NaN outside it and valid inside, the point
    clouds have no point outside it, and /diagnostics names the border."""
    from endo_depth_model.data.laparoscopy import fov_border_mask

    stop = fov_border_mask(H, W, "circle", 0.8)
    rng = np.random.default_rng(1)
    node, peer, pub_img, pub_info = _start(weights, queue_size=100, queue_policy="drop_newest")
    try:
        for i in range(10):
            rgb = rng.integers(40, 256, (H, W, 3), dtype=np.uint8)
            rgb[~stop] = 0
            pub_img.publish(_image(rgb, i))
            pub_info.publish(conv.make_camera_info(K, H, W, _header(i)))
            time.sleep(0.05)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 10, 60), _diag(peer)
        assert peer.wait_for(lambda: len(peer.received["/test/points"]) >= 10, 10)
        assert _published(peer, 10)  # a diagnostics message that has every frame
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    depths = _depths(peer)
    assert len(depths) == 10
    for d in depths.values():
        assert np.isnan(d[~stop]).all()
        assert np.isfinite(d[stop]).mean() > 0.85
    for cloud in peer.received["/test/points"]:
        xyz = conv.pointcloud2_to_xyz(cloud)  # points_stride 2
        outside = ~stop[::2, ::2]
        assert np.isnan(xyz[outside]).all() and np.isfinite(xyz[~outside]).any()
    diag = _diag(peer)
    assert diag["field_of_view"] == "border" and 0.3 < float(diag["field_of_view_fraction"]) < 0.95


def test_a_bag_spliced_from_two_scenes_reanchors_depth_odometry_and_scale_at_the_cut(weights, tmp_path):
    """A rosbag2 file of a tube scene spliced onto a laparoscopic one (stamps continuous), played into the
    node: one scene cut, counted with its reason; the depth re-anchors on the first frame after the splice
    and nowhere else after the start; the odometry starts a new segment there (no step across the cut)."""
    from endo_depth_model.data.rosbag import write_rosbag
    from endo_depth_model.data.sequence import Frame
    from endo_depth_model.training.pretrain import render_sequence

    a = render_sequence("target", 31, 8, H, W)
    b = render_sequence("lap", 9003, 8, H, W)
    rgbs = list(a["rgb"]) + list(b["rgb"])
    frames = [
        Frame(rgb=np.ascontiguousarray(rgb), K=K, stamp_ns=10**9 + i * 100_000_000, index=i)
        for i, rgb in enumerate(rgbs)
    ]
    path = tmp_path / "spliced"
    write_rosbag(frames, path, "mcap")
    node, peer, _, _ = _start(weights, queue_size=100, queue_policy="drop_newest")
    try:
        player = bagmod.BagPlayer(
            peer.node,
            path,
            ["/endoscope/image_raw", "/endoscope/camera_info"],
            rate=0,
            remap={"/endoscope/image_raw": "/test/image", "/endoscope/camera_info": "/test/camera_info"},
            pace_topic="/test/depth/image",
            max_in_flight=2,
        )
        assert player.wait_for_subscribers(30)
        player.play()
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 16, 90), _diag(peer)
        assert peer.wait_for(lambda: len(peer.received["/test/pose"]) >= 16, 10)
        assert _published(peer, 16)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    diag = _diag(peer)
    assert diag["scene_cuts"] == "1" and diag.get("reanchors.scene_cut") == "1", diag
    cut_ns = frames[8].stamp_ns
    anchors = sorted(
        conv.stamp_to_ns(m.header.stamp) for m in peer.received["/test/depth/alignment"] if m.reanchored
    )
    assert anchors == [frames[0].stamp_ns, cut_ns], anchors
    poses = {
        conv.stamp_to_ns(p.header.stamp): conv.pose_to_matrix(p.pose) for p in peer.received["/test/pose"]
    }
    before, at = poses[frames[7].stamp_ns], poses[cut_ns]
    # no step integrated across the splice (up to float32 rounding of the message): a new segment starts
    assert np.abs(at - before).max() < 1e-6, np.abs(at - before).max()
    after = [poses[f.stamp_ns] for f in frames[9:] if f.stamp_ns in poses]
    assert max(np.abs(p - at).max() for p in after) > 1e-4  # and the odometry goes on after it


def test_a_metric_checkpoint_publishes_its_own_metres_as_metric_depth(weights, tmp_path):
    """A checkpoint tagged ``output_kind: metric_depth``: the node publishes the network's output as depth
    (no disparity conversion: the same depth as the in-process pipeline with that file), and says it is
    metric (``scale_source`` model, ``is_metric`` true) on depth/alignment and /diagnostics."""
    from endo_depth_model.checkpoint import read_state_dict, save_safetensors
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig

    from .node_harness import SMALL, textured_frames

    state = read_state_dict(weights["weights"])
    # the random head made to output about 0.1 (m), varying a little with the image, as a metric model
    state["head.scratch.output_conv2.2.weight"] = state["head.scratch.output_conv2.2.weight"] * 0.05
    state["head.scratch.output_conv2.2.bias"] = state["head.scratch.output_conv2.2.bias"] * 0 + 0.1
    tagged = save_safetensors(
        state,
        tmp_path / "metric.safetensors",
        metadata={"output_kind": "metric_depth"},
    )
    frames = textured_frames(6, H, W)
    node, peer, pub_img, _ = _start(weights, **{"model.weights": str(tagged), "intrinsics": FX_FY_CX_CY})
    try:
        for i, rgb in enumerate(frames):
            pub_img.publish(_image(rgb, i))
            time.sleep(0.15)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 6, 60), _diag(peer)
        assert _published(peer, 6)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    alignment = peer.received["/test/depth/alignment"]
    assert alignment and all(a.scale_source == "model" and a.is_metric for a in alignment), [
        (a.scale_source, a.is_metric) for a in alignment
    ]
    diag = _diag(peer)
    assert diag["scale_source"] == "model" and diag["is_metric"] == "True"
    cfg = PipelineConfig(weights=str(tagged), pose_weights=weights["pose_weights"])
    for key, value in SMALL.items():
        setattr(cfg, key, value)
    pipe = DepthPipeline(cfg)
    assert pipe.metric
    expected = {}
    for i, rgb in enumerate(frames):
        out, _ = pipe.push(rgb, i, K=K)
        expected.update({d.stamp: d.depth for d in out})
    published = _depths(peer)
    last = conv.stamp_to_ns(_header(5).stamp)
    ok = np.isfinite(expected[5]) & np.isfinite(published[last])
    assert ok.mean() > 0.9
    assert 0.07 < np.median(published[last][ok]) < 0.13  # the head's ~0.1 as metres, not as a disparity
    np.testing.assert_allclose(published[last][ok], expected[5][ok], rtol=2e-2, atol=1e-4)


def test_without_tf2_msgs_the_node_says_so_and_still_publishes_pose(weights, tmp_path):
    """An environment where tf2_msgs does not import (a pip install without the package bootstrap
    builds): the node warns at start, /diagnostics says ``tf`` is unavailable, and depth, pose and odom
    are still published for every frame."""
    fake = tmp_path / "hide" / "tf2_msgs"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("tf2_msgs hidden by the test")\n')
    import os

    path = os.pathsep.join(p for p in (str(fake.parent), os.environ.get("PYTHONPATH", "")) if p)
    node, peer, pub_img, _ = _start(weights, _env={"PYTHONPATH": path}, intrinsics=FX_FY_CX_CY)
    try:
        for i in range(4):
            pub_img.publish(_image(np.full((H, W, 3), 60 + 20 * i, np.uint8), i))
            time.sleep(0.1)
        assert peer.wait_for(lambda: len(peer.received["/test/pose"]) >= 4, 60), _diag(peer)
        assert _published(peer, 4)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    assert "tf2_msgs is not importable" in node.output
    assert _diag(peer)["tf"] == "unavailable (no tf2_msgs)"
    assert len(peer.received["/test/depth/image"]) == 4 and len(peer.received["/test/odom"]) == 4
