"""The depth node in its own process over real DDS on loopback: outputs, bad input, overload, reset."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from endo_depth_ros import conversions as conv
from endo_depth_ros.msg import DepthAlignment

from .node_harness import SMALL, NodeProcess, Peer, textured_frames

pytestmark = pytest.mark.ros

H, W = 48, 64
K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


def _header(i: int, frame_id: str = "endoscope_optical") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = 100 + i // 10, (i % 10) * 100_000_000
    return h


def _image(rgb: np.ndarray, i: int) -> Image:
    return conv.array_to_image_msg(rgb, "rgb8", _header(i))


OUTPUTS = {
    "/test/depth/image": Image,
    "/test/depth/camera_info": CameraInfo,
    "/test/depth/colored": Image,
    "/test/depth/confidence": Image,
    "/test/points": PointCloud2,
    "/test/depth/alignment": DepthAlignment,
    "/test/pose": PoseStamped,
    "/test/odom": Odometry,
    "/diagnostics": DiagnosticArray,
    "/tf": TFMessage,
}


def _start(weights, _env: dict | None = None, **params):
    node = NodeProcess(
        {
            **SMALL,
            "model.weights": weights["weights"],
            "model.pose_weights": weights["pose_weights"],
            "qos": "reliable",
            **params,
        },
        env=_env,
    )
    peer = Peer()
    for topic, t in OUTPUTS.items():
        peer.subscribe(t, topic)
    pub_img = peer.publisher(Image, "/test/image")
    pub_info = peer.publisher(CameraInfo, "/test/camera_info")
    topics = [f"/test/{t}" for t in ("depth/image", "depth/alignment", "pose", "depth/colored", "points")]
    topics.append("/test/depth/confidence")
    topics.append("/diagnostics")

    def ready() -> bool:
        connected = pub_img.get_subscription_count() > 0 and pub_info.get_subscription_count() > 0
        outputs = all(peer.node.count_publishers(t) > 0 for t in topics)
        return (connected and outputs) or node.proc.poll() is not None

    assert peer.wait_for(ready, 60)
    assert node.proc.poll() is None, node.stop() or node.output
    return node, peer, pub_img, pub_info


def _diag(peer: Peer) -> dict[str, str]:
    msgs = peer.received["/diagnostics"]
    return {kv.key: kv.value for kv in msgs[-1].status[0].values} if msgs else {}


def test_every_frame_yields_one_depth_image_with_its_stamp_and_all_outputs(weights):
    node, peer, pub_img, pub_info = _start(weights, queue_size=100, queue_policy="drop_newest")
    try:
        frames = textured_frames(20, H, W)
        for i, rgb in enumerate(frames):  # like a camera driver: the image, then its camera_info
            pub_img.publish(_image(rgb, i))
            time.sleep(0.01)
            pub_info.publish(conv.make_camera_info(K, H, W, _header(i)))
            time.sleep(0.06)
        depth_topic = "/test/depth/image"
        ok = peer.wait_for(lambda: len(peer.received[depth_topic]) >= 20, 60)
        assert ok, f"{ {k: len(v) for k, v in peer.received.items()} } {_diag(peer)}"
        time.sleep(1.5)  # anything extra would arrive now
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    depth_msgs = peer.received[depth_topic]
    sent = [conv.stamp_to_ns(_header(i).stamp) for i in range(20)]
    assert sorted(conv.stamp_to_ns(m.header.stamp) for m in depth_msgs) == sent  # one each, none extra
    for m in depth_msgs:
        assert (m.encoding, m.height, m.width, m.header.frame_id) == ("32FC1", H, W, "endoscope_optical")
        d = np.frombuffer(bytes(m.data), np.float32).reshape(H, W)
        assert np.all(np.isnan(d) | (d > 0)) and np.isfinite(d).mean() > 0.99
    colored = peer.received["/test/depth/colored"]
    assert len(colored) == 20 and all(m.encoding == "rgb8" and (m.height, m.width) == (H, W) for m in colored)
    confidence = {conv.stamp_to_ns(m.header.stamp): m for m in peer.received["/test/depth/confidence"]}
    assert len(confidence) == 20
    for m in depth_msgs:
        c = confidence[conv.stamp_to_ns(m.header.stamp)]
        assert (c.encoding, c.height, c.width) == ("32FC1", H, W)
        cv = np.frombuffer(bytes(c.data), np.float32).reshape(H, W)
        d = np.frombuffer(bytes(m.data), np.float32).reshape(H, W)
        assert np.all((cv >= 0) & (cv <= 1)) and np.all(cv[~np.isfinite(d)] == 0)
    # the first frame has nothing to agree with (0.5 at most), later frames mostly agree with the last
    ordered = [confidence[t] for t in sorted(confidence)]
    first = np.frombuffer(bytes(ordered[0].data), np.float32)
    last = np.frombuffer(bytes(ordered[-1].data), np.float32)
    assert first.max() <= 0.5 + 1e-6 and np.median(last) > 0.5
    infos = peer.received["/test/depth/camera_info"]
    assert len(infos) == 20 and np.allclose(np.reshape(infos[0].k, (3, 3)), K)
    clouds = peer.received["/test/points"]
    assert len(clouds) == 20
    xyz = conv.pointcloud2_to_xyz(clouds[0])
    assert xyz.shape == (H // 2, W // 2, 3)  # points_stride 2
    first_depth = next(m for m in depth_msgs if m.header.stamp == clouds[0].header.stamp)
    d0 = np.frombuffer(bytes(first_depth.data), np.float32).reshape(H, W)
    assert np.allclose(xyz[..., 2], d0[::2, ::2], equal_nan=True)
    alignment = peer.received["/test/depth/alignment"]
    assert alignment and alignment[0].reanchored and alignment[0].scale_source == "relative"
    assert not any(a.is_metric for a in alignment)
    assert [a.snippet_index for a in alignment] == sorted({a.snippet_index for a in alignment})
    poses = peer.received["/test/pose"]
    assert len(poses) == 20 and all(p.header.frame_id == "odom" for p in poses)
    assert len(peer.received["/test/odom"]) == 20
    assert peer.received["/test/odom"][0].child_frame_id == "endoscope_optical"
    q = poses[-1].pose.orientation
    assert math.isclose(q.x**2 + q.y**2 + q.z**2 + q.w**2, 1.0, rel_tol=1e-6)
    # TF: odom -> camera for every frame, at the frame's stamp, the same motion as the pose topic
    tfs = [t for m in peer.received["/tf"] for t in m.transforms]
    assert len(tfs) == 20
    assert all((t.header.frame_id, t.child_frame_id) == ("odom", "endoscope_optical") for t in tfs)
    assert sorted(conv.stamp_to_ns(t.header.stamp) for t in tfs) == sent
    last = max(tfs, key=lambda t: conv.stamp_to_ns(t.header.stamp))
    assert math.isclose(last.transform.translation.x, poses[-1].pose.position.x, abs_tol=1e-9)
    diag = _diag(peer)
    assert diag["frames_received"] == "20" and diag["frames_published"] == "20"
    assert diag["frames_rejected"] == "0" and diag["frames_dropped"] == "0"
    assert float(diag["rss_mb"]) > 50 and int(diag["threads"]) > 1 and int(diag["open_files"]) > 2
    assert diag["tf"] == "published"


def _bad_images(rgb: np.ndarray, i: int) -> list[tuple[str, Image]]:
    bad = []
    m = _image(rgb, i)
    m.encoding = "yuv422_yuy2"
    bad.append(("bad_image", m))
    m = _image(rgb, i)
    m.step = W * 3 - 1
    bad.append(("bad_image", m))
    m = Image(header=_header(i), height=0, width=0, encoding="rgb8", step=0)
    bad.append(("bad_image", m))
    m = _image(rgb, i)
    m.data = bytes(m.data)[:-7]
    bad.append(("bad_image", m))
    bad.append(("size_changed", _image(np.zeros((H + 2, W, 3), np.uint8), i)))
    return bad


def test_bad_input_is_rejected_counted_and_good_frames_keep_flowing(weights):
    node, peer, pub_img, pub_info = _start(
        weights, queue_size=100, queue_policy="drop_newest", camera_info_timeout=0.2
    )
    try:
        frames = textured_frames(12, H, W)
        pub_img.publish(_image(frames[0], 0))  # no camera_info within camera_info_timeout, no intrinsics
        assert peer.wait_for(lambda: _diag(peer).get("rejected.no_camera_info") == "1", 10), _diag(peer)
        good = []
        for i, rgb in enumerate(frames[1:], start=1):
            pub_info.publish(conv.make_camera_info(K, H, W, _header(i)))
            time.sleep(0.01)
            pub_img.publish(_image(rgb, i))
            good.append(i)
            time.sleep(0.03)
            if i == 4:
                for _, msg in _bad_images(rgb, i + 0):  # same stamp as a good frame: all rejected before
                    pub_img.publish(msg)
                    time.sleep(0.03)
            if i == 6:
                pub_img.publish(_image(rgb, 2))  # stamp going backwards
                time.sleep(0.03)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= len(good), 60), node.output
        assert peer.wait_for(lambda: _diag(peer).get("frames_received") == str(len(good) + 7), 10)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    stamps = sorted(conv.stamp_to_ns(m.header.stamp) for m in peer.received["/test/depth/image"])
    diag = _diag(peer)
    assert stamps == [conv.stamp_to_ns(_header(i).stamp) for i in good], diag
    assert diag["rejected.no_camera_info"] == "1"
    assert diag["rejected.bad_image"] == "4"
    assert diag["rejected.size_changed"] == "1"
    assert diag["rejected.stamp_not_increasing"] == "1"
    assert diag["frames_rejected"] == "7"
    assert diag["errors"] == "0"
    assert "rejected frame (bad_image): unsupported image encoding 'yuv422_yuy2'" in node.output


def test_overload_drops_oldest_counts_it_and_recovers(weights):
    node, peer, pub_img, pub_info = _start(
        weights, queue_size=2, queue_policy="drop_oldest", intrinsics=[50, 50, 31.5, 23.5]
    )
    try:
        frames = textured_frames(60, H, W)
        for i in range(40):  # a burst far above what the worker sustains
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.01)
        # (DDS may lose the very first sample of a fresh match; the node accounts for what it received)
        assert peer.wait_for(lambda: int(_diag(peer).get("frames_received", 0)) >= 38, 20), _diag(peer)
        assert peer.wait_for(lambda: int(_diag(peer).get("frames_dropped", 0)) > 0, 20)

        def settled() -> bool:  # the worker drained the queue and flushed the held-back frames
            d = _diag(peer)
            return bool(d) and int(d["frames_published"]) + int(d["frames_dropped"]) == int(
                d["frames_received"]
            )

        assert peer.wait_for(settled, 30), _diag(peer)
        burst = _diag(peer)
        assert peer.wait_for(
            lambda: len(peer.received["/test/depth/image"]) >= int(burst["frames_published"]), 10
        )
        n_before = len(peer.received["/test/depth/image"])
        for i in range(40, 52):  # then a rate it sustains: every frame comes out
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.25)
        target = {conv.stamp_to_ns(_header(i).stamp) for i in range(40, 52)}
        assert peer.wait_for(
            lambda: target <= {conv.stamp_to_ns(m.header.stamp) for m in peer.received["/test/depth/image"]},
            30,
        )
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    dropped = int(burst["frames_dropped"])
    published_in_burst = n_before
    assert dropped > 0 and published_in_burst > 0
    # every burst frame the node received is either published or counted as dropped
    assert published_in_burst + dropped == int(burst["frames_received"])
    assert int(burst["frames_published"]) == published_in_burst
    assert "inference behind: queue full (drop_oldest)" in node.output


def test_reset_service_reanchors(weights):
    node, peer, pub_img, _ = _start(weights, intrinsics=[50, 50, 31.5, 23.5], queue_size=100)
    client = peer.node.create_client(Trigger, "/test/endo_depth/reset")
    try:
        frames = textured_frames(24, H, W)
        for i in range(12):
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.05)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 12, 60)
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        assert peer.wait_for(future.done, 10)
        assert future.result().success
        n_align = len(peer.received["/test/depth/alignment"])
        for i in range(12, 24):
            pub_img.publish(_image(frames[i], i))
            time.sleep(0.05)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 24, 60)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    after = peer.received["/test/depth/alignment"][n_align:]
    assert after and after[0].reanchored
    # odometry restarted at the identity after the reset
    pose_after = [
        p
        for p in peer.received["/test/pose"]
        if conv.stamp_to_ns(p.header.stamp) == conv.stamp_to_ns(_header(12).stamp)
    ]
    assert pose_after and pose_after[0].pose.position.x == 0.0 and pose_after[0].pose.orientation.w == 1.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model.weights": "/nonexistent/w.safetensors"},
            "weights file not found: /nonexistent/w.safetensors",
        ),
        ({"stride": 7}, "stride 7 must be in 1..4"),
        (
            {"model.config": "vits"},
            "checkpoint is 'vitt' (embed 192, 6 blocks, features 32) but the model is 'vits'",
        ),
        ({"scale_mode": "metres"}, "scale_mode 'metres' is not one of"),
        ({"queue_policy": "block"}, "queue_policy must be one of"),
    ],
)
def test_refuses_to_start_with_a_clear_message(weights, params, message):
    node = NodeProcess({**SMALL, "model.weights": weights["weights"], **params})
    out, _ = node.proc.communicate(timeout=60)
    assert node.proc.returncode == 2
    assert message in out
    assert "Traceback" not in out


def test_kinematic_scale_from_the_robot_pose_becomes_metric(weights):
    """With the robot's measured camera pose, depth and odometry get a metric scale after enough motion."""
    node, peer, pub_img, _ = _start(
        weights, intrinsics=[50, 50, 31.5, 23.5], queue_size=100, queue_policy="drop_newest",
        scale_mode="kinematic", kinematic_min_pairs=12, kinematic_window=20, kinematic_source="pose",
    )  # fmt: skip
    pub_robot = peer.publisher(PoseStamped, "/test/robot_pose")
    assert peer.wait_for(lambda: pub_robot.get_subscription_count() > 0, 30)
    try:
        frames = textured_frames(20, H, W)
        for i, rgb in enumerate(frames):
            T = np.eye(4)
            T[2, 3] = 0.002 * i  # the robot advances the scope 2 mm per frame
            robot = PoseStamped(header=_header(i), pose=conv.matrix_to_pose(T))
            robot.header.frame_id = "ecm_base"
            pub_robot.publish(robot)
            time.sleep(0.01)
            pub_img.publish(_image(rgb, i))
            time.sleep(0.08)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 20, 60)
        assert peer.wait_for(lambda: _diag(peer).get("is_metric") == "True", 10), _diag(peer)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    alignment = peer.received["/test/depth/alignment"]
    assert {a.scale_source for a in alignment} == {"kinematic"}
    assert alignment[0].is_metric is False  # not before enough informative pairs
    metric = [a for a in alignment if a.is_metric]
    assert metric and all(a.metric_scale > 0 and a.metric_scale != 1.0 for a in metric)
    diag = _diag(peer)
    # the last frame's depth goes out before its measured motion is paired (the pose step runs beside the
    # depth step), so /diagnostics may hold one pair more of the 20-pair window than the last message
    assert float(diag["metric_scale"]) == pytest.approx(metric[-1].metric_scale, rel=0.05)


def test_sigterm_mid_stream_shuts_down_cleanly(weights):
    import signal

    node, peer, pub_img, _ = _start(weights, intrinsics=[50, 50, 31.5, 23.5], queue_size=100)
    try:
        for i, rgb in enumerate(textured_frames(12, H, W)):
            pub_img.publish(_image(rgb, i))
            time.sleep(0.03)
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) > 0, 60)
        # every frame taken by the node (DDS delivery can lag on a loaded machine), depth still pending
        assert peer.wait_for(lambda: _diag(peer).get("frames_received") == "12", 30), _diag(peer)
        n_diag = len(peer.received["/diagnostics"])
        node.proc.send_signal(signal.SIGTERM)  # while frames are still queued and held back
        out, _ = node.proc.communicate(timeout=30)
        # the orderly shutdown still had a live context: it published its final diagnostics
        final_diag_seen = peer.wait_for(lambda: len(peer.received["/diagnostics"]) > n_diag, 10)
    finally:
        node.stop()
        peer.close()
    assert node.proc.returncode == 0, out
    assert "Traceback" not in out and "terminate called" not in out and "Fatal Python error" not in out
    assert final_diag_seen, out


def test_compressed_transport_decodes_jpeg_and_png_and_counts_bad_bytes(weights):
    import cv2
    from sensor_msgs.msg import CompressedImage

    node = NodeProcess(
        {
            **SMALL,
            "model.weights": weights["weights"],
            "model.pose_weights": weights["pose_weights"],
            "qos": "reliable",
            "transport": "compressed",
            "queue_size": 100,
            "queue_policy": "drop_newest",
            "intrinsics": [50.0, 50.0, (W - 1) / 2, (H - 1) / 2],
        }
    )
    peer = Peer()
    peer.subscribe(Image, "/test/depth/image")
    peer.subscribe(DiagnosticArray, "/diagnostics")
    pub = peer.publisher(CompressedImage, "/test/image/compressed")
    try:
        assert peer.wait_for(lambda: pub.get_subscription_count() > 0 or node.proc.poll() is not None, 60)
        frames = textured_frames(8, H, W)
        for i, rgb in enumerate(frames):
            fmt = "jpeg" if i % 2 else "png"
            ok, buf = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", rgb[..., ::-1])
            assert ok
            pub.publish(
                CompressedImage(header=_header(i), format=f"rgb8; {fmt} compressed bgr8", data=buf.tobytes())
            )
            time.sleep(0.05)
            if i == 3:  # truncated bytes and a depth codec: rejected with their own reason
                pub.publish(CompressedImage(header=_header(100 + i), format="jpeg", data=buf.tobytes()[:40]))
                pub.publish(
                    CompressedImage(header=_header(200 + i), format="16UC1; compressedDepth", data=b"x")
                )
        assert peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 8, 60)
        assert peer.wait_for(lambda: _diag(peer).get("rejected.bad_compressed") == "2", 10), _diag(peer)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    stamps = sorted(conv.stamp_to_ns(m.header.stamp) for m in peer.received["/test/depth/image"])
    assert stamps == [conv.stamp_to_ns(_header(i).stamp) for i in range(8)]
    assert _diag(peer)["frames_received"] == "10" and _diag(peer)["errors"] == "0"


@pytest.mark.parametrize(
    ("model", "D", "expect"),
    [("plumb_bob", [-0.2, 0.05, 0.0, 0.0, 0.0], "plumb_bob"), ("weird_lens", [0.1, 0.2], "unsupported")],
)
def test_distortion_is_rectified_or_refused_never_ignored(weights, model, D, expect):
    node, peer, pub_img, pub_info = _start(weights, queue_size=100, queue_policy="drop_newest")
    try:
        frames = textured_frames(6, H, W)
        for i, rgb in enumerate(frames):
            info = conv.make_camera_info(K, H, W, _header(i))
            info.distortion_model, info.d = model, [float(v) for v in D]
            pub_info.publish(info)
            time.sleep(0.02)
            pub_img.publish(_image(rgb, i))
            time.sleep(0.08)
        if expect == "unsupported":
            ok = peer.wait_for(lambda: _diag(peer).get("rejected.unsupported_distortion") == "6", 30)
        else:
            ok = peer.wait_for(lambda: len(peer.received["/test/depth/image"]) >= 6, 60)
        assert ok, _diag(peer)
        assert peer.wait_for(lambda: _diag(peer).get("rectification", "").startswith(expect), 10), _diag(peer)
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    if expect == "unsupported":
        assert not peer.received["/test/depth/image"]
        assert "weird_lens" in _diag(peer)["rectification"]
    else:  # outputs describe the rectified pinhole camera: same K, zero distortion
        infos = peer.received["/test/depth/camera_info"]
        assert len(infos) == 6 and all(
            not any(m.d) and np.allclose(np.reshape(m.k, (3, 3)), K) for m in infos
        )


def test_the_shipped_params_file_is_in_effect(weights):
    """``--params-file config/depth.yaml`` as docs/node.md runs it: every value in the file is the node's
    parameter, also where an earlier ``-p`` said otherwise (later assignments win); a ``-p`` after the
    file still overrides it."""
    import yaml
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    from .node_harness import ROOT

    def flatten(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    shipped = flatten(yaml.safe_load((ROOT / "config" / "depth.yaml").read_text())["/**"]["ros__parameters"])
    before = {"odom_frame": "odom_from_cli", "points_stride": 5, "scale_mode": "fixed", "queue_size": 9}
    assert all(shipped[k] != v for k, v in before.items())
    after = {
        **SMALL,
        "model.weights": str(weights["weights"]),
        "model.pose_weights": str(weights["pose_weights"]),
    }
    node = NodeProcess(
        before,
        extra_args=[
            "--params-file",
            "config/depth.yaml",
            *(a for k, v in after.items() for a in ("-p", f"{k}:={v}")),
        ],
    )
    peer = Peer()
    client = peer.node.create_client(GetParameters, "/test/endo_depth/get_parameters")
    try:
        assert peer.wait_for(lambda: client.service_is_ready() or node.proc.poll() is not None, 60)
        assert node.proc.poll() is None, f"the node exited ({node.stop()}): {node.output}"
        names = sorted(shipped)
        future = client.call_async(GetParameters.Request(names=names))
        assert peer.wait_for(future.done, 10)
        values = dict(zip(names, (parameter_value_to_python(v) for v in future.result().values), strict=True))
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    assert values == {**shipped, **after}


@pytest.mark.parametrize("ratio", [1.15, 0.0])
def test_a_scope_held_still_gives_a_still_pose_over_dds(ratio):
    """The shipped networks, a scope held still (one rendered view with sensor noise and something
    moving in front of it): with the zero-motion test (static_ratio 1.15, the default, after the
    photometric refinement) every published pose stays at the identity and the steps are counted;
    without it (0) the refined steps drift."""
    from endo_depth_model.training.pretrain import render_sequence

    seq = render_sequence("target", 32, 1, 112, 140)
    base = seq["rgb"][0]
    K_still = seq["K"]
    fx_fy_cx_cy = [K_still[0, 0], K_still[1, 1], K_still[0, 2], K_still[1, 2]]
    params = {
        "queue_size": 100,
        "queue_policy": "drop_newest",
        "static_ratio": ratio,
        "intrinsics": fx_fy_cx_cy,
    }
    node = NodeProcess({**SMALL, "input_height": 112, "input_width": 140, "qos": "reliable", **params})
    peer = Peer()
    for topic in ("/test/depth/image", "/test/pose", "/diagnostics"):
        peer.subscribe({"/diagnostics": DiagnosticArray, "/test/pose": PoseStamped}.get(topic, Image), topic)
    pub_img = peer.publisher(Image, "/test/image")
    rng = np.random.default_rng(0)
    try:
        assert peer.wait_for(lambda: pub_img.get_subscription_count() > 0 or node.proc.poll() is not None, 60)
        for i in range(12):
            img = base.astype(np.int16) + rng.integers(-3, 4, base.shape)
            img[40:60, 20 + 4 * i : 40 + 4 * i] = 200  # an instrument moving in front of the still scope
            pub_img.publish(_image(np.clip(img, 0, 255).astype(np.uint8), i))
            time.sleep(0.1)
        assert peer.wait_for(lambda: len(peer.received["/test/pose"]) >= 12, 60), node.output
        assert peer.wait_for(lambda: int(_diag(peer).get("static_frames", -1)) >= 0, 10)
        time.sleep(1.2)  # the next diagnostics message has every frame's count
    finally:
        rc = node.stop()
        peer.close()
    assert rc == 0, node.output
    travel = max(np.linalg.norm(conv.pose_to_matrix(p.pose)[:3, 3]) for p in peer.received["/test/pose"])
    static = int(_diag(peer)["static_frames"])
    assert int(_diag(peer)["refined_steps"]) == 11  # pose_refine (default on) refines every step
    if ratio > 0:
        assert travel == 0.0 and static == 11  # every step after the first frame
    else:
        assert travel > 0 and static == 0
