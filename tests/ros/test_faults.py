"""Faults around the live node: bad model files, a missing GPU, late camera_info, the robot pose topic
stopping, and SIGINT mid-stream. Each gives one clear message and the behaviour docs/RELIABILITY.md
states (refuse to start, or continue and report), never a traceback or a hang."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped

from endo_depth_ros import conversions as conv

from .node_harness import SMALL, NodeProcess, textured_frames
from .test_depth_node import H, K, W, _diag, _header, _image, _start

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, weights):
    from endo_depth_model import ssb
    from endo_depth_model.models import build_vda

    d = tmp_path_factory.mktemp("bad")
    full = weights["weights"].read_bytes()
    (d / "truncated.safetensors").write_bytes(full[: len(full) // 2])  # a copy cut short
    (d / "pose_truncated.safetensors").write_bytes(weights["pose_weights"].read_bytes()[:1000])
    marker = d / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"pretrained.cls_token": torch.zeros(1), "x": Payload()}, d / "pickled.pth")
    ssb.save_adapter(ssb.apply_ssb(build_vda("vits")), d / "vits_adapter.safetensors")
    return d


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model.weights": "{bad}/truncated.safetensors"},
            "truncated.safetensors: not a valid safetensors file",
        ),
        (
            {"model.weights": "{bad}/pickled.pth"},
            "pickled.pth: refused: the file contains pickled Python objects",
        ),
        (
            {"model.adapter": "{bad}/vits_adapter.safetensors"},
            "vits_adapter.safetensors: adapter does not match the model",
        ),
        (
            {"model.pose_weights": "{bad}/pose_truncated.safetensors"},
            "pose_truncated.safetensors: not a valid safetensors file",
        ),
        pytest.param(
            {"device": "cuda"},
            "device 'cuda' requested but CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour"),
        ),
    ],
)
def test_bad_model_files_and_no_gpu_refuse_to_start_with_one_line(weights, bad_files, params, message):
    params = {k: v.format(bad=bad_files) for k, v in params.items()}
    node = NodeProcess({**SMALL, "model.weights": weights["weights"], **params})
    out, _ = node.proc.communicate(timeout=60)
    assert node.proc.returncode == 2, out
    assert "[endo_depth] cannot start:" in out and message in out
    assert "Traceback" not in out
    assert not (bad_files / "payload_ran").exists()  # the pickle payload was never executed


def test_camera_info_arriving_late_holds_frames_and_loses_none(weights):
    """Frames that arrive before the first camera_info (within camera_info_timeout) wait for it."""
    node, peer, pub_img, pub_info = _start(
        weights, queue_size=100, queue_policy="drop_newest", camera_info_timeout=2.0
    )
    try:
        frames = textured_frames(12, H, W)
        for i in range(4):  # the driver's camera_info comes late
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.1)
        assert peer.wait_for(lambda: _diag(peer).get("frames_received") == "4", 10), _diag(peer)
        assert _diag(peer)["frames_published"] == "0"
        for i in range(4, 12):
            pub_info.publish(conv.make_camera_info(K, H, W, _header(i)))
            time.sleep(0.01)
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.08)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 12, 60), _diag(peer)
        assert peer.wait_for(lambda: _diag(peer).get("frames_published") == "12", 10)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    stamps = sorted(conv.stamp_to_ns(m.header.stamp) for m in peer.received["/test/depth/image"])
    assert stamps == [conv.stamp_to_ns(_header(i).stamp) for i in range(12)]
    diag = _diag(peer)
    assert diag["frames_rejected"] == "0" and diag["frames_dropped"] == "0" and diag["errors"] == "0"
    infos = peer.received["/test/depth/camera_info"]  # the held frames got the late intrinsics
    assert len(infos) == 12 and all(np.allclose(np.reshape(m.k, (3, 3)), K) for m in infos)


def test_robot_pose_stopping_keeps_depth_flowing_and_holds_the_kinematic_scale(weights):
    """The robot pose topic stops for a while (the robot keeps moving), then resumes with the robot
    standing still: every frame still gets depth; /diagnostics warns that the pose is stale and
    counts the unpaired frames; the scale keeps its last value and the motion across the gap is
    never taken for one frame step (so the scale is unchanged after the pose resumes)."""
    node, peer, pub_img, _ = _start(
        weights, intrinsics=[50, 50, 31.5, 23.5], queue_size=100, queue_policy="drop_newest",
        scale_mode="kinematic", kinematic_min_pairs=6, kinematic_window=30, kinematic_source="pose",
        diagnostics_period=0.2,
    )  # fmt: skip
    pub_robot = peer.publisher(PoseStamped, "/test/robot_pose")
    assert peer.wait_for(lambda: pub_robot.get_subscription_count() > 0, 30)
    frames = textured_frames(30, H, W)

    def robot_at(i: int, z: float) -> None:
        T = np.eye(4)
        T[2, 3] = z
        msg = PoseStamped(header=_header(i), pose=conv.matrix_to_pose(T))
        msg.header.frame_id = "ecm_base"
        pub_robot.publish(msg)
        time.sleep(0.01)

    try:
        for i in range(14):  # the robot advances the scope 2 mm per frame
            robot_at(i, 0.002 * i)
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.1)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 14, 60)

        # a diagnostics message from after the 14th frame (zero hold-back: depth can arrive before the
        # next periodic diagnostics)
        def settled() -> bool:
            d = _diag(peer)
            return d.get("is_metric") == "True" and d.get("frames_published") == "14"

        assert peer.wait_for(settled, 10), _diag(peer)
        scale_before = _diag(peer)["metric_scale"]
        n_diag = len(peer.received["/diagnostics"])
        for i in range(14, 22):  # robot_pose stops; the robot moves on by 50 mm meanwhile
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.25)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 22, 60)
        gap_diag = peer.received["/diagnostics"][n_diag:]
        for i in range(22, 30):  # robot_pose resumes; the robot stands still
            robot_at(i, 0.002 * 13 + 0.05)
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.1)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 30, 60)
        assert peer.wait_for(lambda: float(_diag(peer).get("robot_pose_age_s", "9")) > 0.5, 10)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    assert sorted(conv.stamp_to_ns(m.header.stamp) for m in peer.received["/test/depth/image"]) == [
        conv.stamp_to_ns(_header(i).stamp) for i in range(30)
    ]
    stale = [s.status[0] for s in gap_diag if s.status[0].level == DiagnosticStatus.WARN]
    assert stale and "kinematic scale held at its last value" in stale[-1].message
    diag = _diag(peer)
    assert diag["scale_source"] == "kinematic" and diag["is_metric"] == "True"
    assert diag["frames_without_robot_pose"] == "8"
    assert diag["metric_scale"] == scale_before  # neither the gap nor the standing robot changed it
    assert diag["errors"] == "0" and diag["frames_rejected"] == "0"
    alignment = peer.received["/test/depth/alignment"]
    assert all(a.scale_source == "kinematic" for a in alignment) and alignment[-1].is_metric
    assert "no robot_pose within robot_pose_tolerance" in node.output


def test_sigint_mid_stream_exits_cleanly_with_final_diagnostics(weights):
    node, peer, pub_img, _ = _start(weights, intrinsics=[50, 50, 31.5, 23.5], queue_size=100)
    try:
        for i, rgb in enumerate(textured_frames(16, H, W)):
            pub_img.publish(_image(rgb, i))
            time.sleep(0.02)
        assert peer.wait_for(lambda: _diag(peer).get("frames_received") == "16", 30), _diag(peer)
        node.proc.send_signal(signal.SIGINT)  # frames still queued and held back in the window
        out, _ = node.proc.communicate(timeout=30)
        time.sleep(0.5)  # the final diagnostics, published during the shutdown
    finally:
        node.stop()
        peer.close()
    assert node.proc.returncode == 0, out
    assert "Traceback" not in out and "Fatal Python error" not in out and "terminate called" not in out
    diag = _diag(peer)
    assert diag["frames_received"] == "16" and diag["errors"] == "0"
    assert int(diag["frames_published"]) == len(peer.received["/test/depth/image"])
