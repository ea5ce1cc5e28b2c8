"""The endo_depth ROS 2 node: endoscope images in; aligned depth, point cloud, pose and odometry out.

Callbacks only validate and convert messages and hand frames to a bounded queue; a worker thread runs
:class:`endo_depth_model.pipeline.DepthPipeline` (ring buffer of cached encoder features, head every
``stride`` frames, alignment over the overlap) and publishes. Every rejected or dropped frame is counted
with its reason and reported on ``/diagnostics``. Topics and parameters: docs/node.md.

Run: ``ros2 run endo_depth_ros depth_node --ros-args -p model.weights:=...`` or
``python -m endo_depth_ros.depth_node --ros-args ...``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from endo_depth_model.causal import CAUSAL_FITS
from endo_depth_model.colormap import ColorRange, colorize_depth
from endo_depth_model.image_encoding import ImageEncodingError, decode_compressed
from endo_depth_model.models.video_depth_anything import VDA_CONFIGS
from endo_depth_model.odometry import SCALE_MODES
from endo_depth_model.pipeline import (
    FOV_MODES,
    KINEMATIC_SOURCES,
    LATENCY_MODES,
    WORK_RESOLUTIONS,
    DepthPipeline,
    PipelineConfig,
    PipelineError,
)
from endo_depth_model.rectify import DistortionError, make_rectifier
from endo_depth_model.runtime import BACKENDS
from endo_depth_model.runtime.precision import PRECISIONS
from endo_depth_ros import conversions as conv
from endo_depth_ros.frame_queue import POLICIES, FrameQueue
from endo_depth_ros.msg import DepthAlignment

try:  # TF is published when tf2_msgs exists (a full ROS install); pose topics are always published
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the installation
    TFMessage = None

NODE_NAME = "endo_depth"
FLUSH_PERIODS = 3.0  # input is paused after flush_after_s and this many recent frame intervals
FROZEN_WARN_FRAMES = 2  # /diagnostics warns while this many latest images in a row repeat the one before
ROBOT_POSE_STALE_S = 1.0  # kinematic mode: /diagnostics warns when robot_pose is older than this


@dataclass
class NodeParams:
    """Node-only parameters (the pipeline's are those of PipelineConfig, under ``model.*`` and the rest)."""

    qos: str = "sensor_data"  # sensor_data | reliable
    queue_size: int = 4
    queue_policy: str = "drop_oldest"
    transport: str = "raw"  # raw: sensor_msgs/Image on image; compressed: CompressedImage on image/compressed
    odom_frame: str = "odom"
    camera_frame: str = ""  # "" = the input image's frame_id
    intrinsics: tuple = ()  # fx, fy, cx, cy in input pixels, used when no camera_info arrives
    publish_points: bool = True
    points_stride: int = 2
    publish_colored: bool = True
    publish_confidence: bool = True
    publish_tf: bool = True
    diagnostics_period: float = 1.0
    robot_pose_tolerance: float = 0.05  # s: max stamp difference to pair a robot pose with a frame
    flush_after_s: float = 0.5  # s without input after which held-back frames are emitted (0: never)
    camera_info_timeout: float = 1.0  # s a frame waits for the first camera_info before it is rejected
    input_queue_depth: int = 100  # DDS history of the image subscription (reliable QoS)


@dataclass(frozen=True)
class Param:
    """One node parameter, declared once. Its declaration (descriptor, range), its start-up check, the docs
    table check (tests/ros/test_docs_node.py) and the shipped params file check (tests/ros/test_launch.py)
    all read it; the default is the owning dataclass field's (``field``: a :class:`PipelineConfig` field,
    empty: the :class:`NodeParams` field of the same name)."""

    name: str
    description: str
    field: str = ""
    range: tuple = ()  #: (from, to, step) of the descriptor's integer or floating-point range
    choices: tuple = ()  #: the string values allowed (checked at start)
    dynamic: bool = False  #: may be changed at run time (``ros2 param set``)

    @property
    def default(self):
        if self.field:
            return getattr(PipelineConfig(), self.field)
        return getattr(NodeParams(), self.name)


_INPUT = (14, 1540, 14)
PARAMETERS: tuple[Param, ...] = (
    # pipeline (PipelineConfig)
    Param(
        "model.config",
        "model size config: vitt (shipped, CPU), vits, vitb, vitl",
        "model_config",
        choices=tuple(VDA_CONFIGS),
    ),
    Param(
        "model.weights", "VDA weights (.safetensors or .pth); empty = the shipped default model", "weights"
    ),
    Param(
        "model.adapter", "optional SSB adapter (.safetensors), merged into the weights at start", "adapter"
    ),
    Param(
        "model.pose_weights",
        "pose network weights; empty = shipped default if present, else no odometry",
        "pose_weights",
    ),
    Param("device", "cpu, cuda or cuda:N", "device"),
    Param("input_height", "network input height (multiple of 14)", "input_height", _INPUT),
    Param("input_width", "network input width (multiple of 14)", "input_width", _INPUT),
    Param("window", "frames per head pass T (<= 32)", "window", (2, 32, 1)),
    Param("overlap", "window frames shared with earlier passes (context + blended)", "overlap", (1, 31, 1)),
    Param("stride", "new frames per head pass (1 .. window - overlap)", "stride", (1, 31, 1)),
    Param("blend", "frames cross-faded between passes", "blend", (0, 31, 1)),
    Param(
        "min_depth",
        "depth of disparity 1 (scale of relative depth), metres nominal; 0 = the weights' range",
        "min_depth",
    ),
    Param("max_depth", "depth of disparity 0, metres nominal; 0 = the weights' range", "max_depth"),
    Param("scale_mode", "relative | fixed | kinematic (see docs/node.md)", "scale_mode", choices=SCALE_MODES),
    Param("fixed_scale", "factor from relative to metric depth when scale_mode is fixed", "fixed_scale"),
    Param("kinematic_window", "frame pairs in the kinematic scale window", "kinematic_window", (1, 10000, 1)),
    Param(
        "kinematic_min_pairs",
        "informative pairs needed before kinematic depth is metric",
        "kinematic_min_pairs",
        (1, 10000, 1),
    ),
    Param(
        "kinematic_source",
        "kinematic scale from: pose (measured over the pose network's translation) or photometric (the "
        "scale at which the measured motion warps the previous frame onto the current one through the depth)",
        "kinematic_source",
        choices=KINEMATIC_SOURCES,
    ),
    Param(
        "kinematic_min_motion_m",
        "robot motion below this (m) carries no scale information",
        "kinematic_min_motion_m",
    ),
    Param(
        "pose_input_scale",
        "pose network input size as a fraction of the network input, never below 112 rows",
        "pose_input_scale",
        (0.25, 1.0, 0.0),
    ),
    Param(
        "torch_threads",
        "CPU threads per network; 0 = torch default, or half the cores each with concurrent_pose",
        "torch_threads",
        (0, 256, 1),
    ),
    Param(
        "concurrent_pose",
        "run the pose network in its own thread beside the depth network (CPU)",
        "concurrent_pose",
    ),
    Param(
        "precision",
        "PyTorch compute precision: auto (bf16 on CPUs with AMX/AVX512-BF16, else fp32), fp32, "
        "bf16 or fp16 (CUDA)",
        "precision",
        choices=PRECISIONS,
    ),
    Param(
        "backend",
        "inference backend: torch, onnxruntime, tensorrt or auto (docs/deployment.md)",
        "backend",
        choices=(*BACKENDS, "auto"),
    ),
    Param(
        "engine_cache",
        "folder of exported ONNX graphs and TensorRT engines; empty = ~/.cache/endo_depth",
        "engine_cache",
    ),
    Param(
        "fov_mask",
        "auto: detect the scope's black border (NaN depth, no points there, not fitted) or off",
        "fov_mask",
        choices=FOV_MODES,
    ),
    Param(
        "work_resolution",
        "auto: process a frame at least twice the network input at the smallest size of its aspect that "
        "covers the input, depth upsampled to the frame's size at the end; full: every step at full size",
        "work_resolution",
        choices=WORK_RESOLUTIONS,
    ),
    Param(
        "latency_mode",
        "auto (causal on the torch backend, else aligned), causal: depth for every frame as "
        "it arrives (zero hold-back), or aligned: EndoDAV's overlapping windows (held back by blend + "
        "stride - 1)",
        "latency_mode",
        choices=LATENCY_MODES,
    ),
    Param(
        "causal_context",
        "earlier frames the causal temporal attention sees (1..31)",
        "causal_context",
        (1, 31, 1),
    ),
    Param(
        "causal_fit",
        "causal scale continuity: none (the head's own) or previous (fit to the last frame)",
        "causal_fit",
        choices=CAUSAL_FITS,
    ),
    Param(
        "scene_cuts",
        "detect image-level scene cuts: re-anchor depth, new odometry segment, restart the scale",
        "scene_cuts",
    ),
    Param(
        "pose_refine",
        "refine each odometry step by direct photometric alignment through the depth (needs intrinsics)",
        "pose_refine",
    ),
    Param(
        "temporal_filter",
        "hold each pixel's depth still while its image does not change (average over recent frames)",
        "temporal_filter",
    ),
    Param(
        "static_ratio",
        "zero-motion test: odometry step = identity when the unmoved previous frame's photometric "
        "error is at most this times the moved one's (0 = off)",
        "static_ratio",
        (0.0, 2.0, 0.0),
    ),
    # node (NodeParams)
    Param(
        "qos",
        "QoS of the image subscription: sensor_data (best effort) or reliable",
        choices=("sensor_data", "reliable"),
    ),
    Param("queue_size", "frames held between the callbacks and the worker", range=(1, 1000, 1)),
    Param(
        "queue_policy",
        "when the queue is full: drop_oldest (bounded latency) or drop_newest",
        choices=POLICIES,
    ),
    Param(
        "transport",
        "raw (sensor_msgs/Image on image) or compressed (sensor_msgs/CompressedImage, jpeg or "
        "png, on image/compressed)",
        choices=("raw", "compressed"),
    ),
    Param("odom_frame", "frame of pose, odom and TF"),
    Param("camera_frame", "child frame of odom and TF; empty = the input image's frame_id"),
    Param("intrinsics", "[fx, fy, cx, cy] of the input images, used until a camera_info arrives"),
    Param("publish_points", "publish the PointCloud2 on points", dynamic=True),
    Param("points_stride", "keep every N-th row and column in the point cloud", range=(1, 64, 1)),
    Param("publish_colored", "publish colourised depth on depth/colored"),
    Param("publish_confidence", "publish per-pixel confidence (0-1) on depth/confidence"),
    Param(
        "publish_tf",
        "broadcast odom -> camera on /tf (tf2_msgs: a ROS install's, or the one bootstrap builds)",
    ),
    Param("diagnostics_period", "seconds between /diagnostics messages", range=(0.05, 60.0, 0.0)),
    Param(
        "robot_pose_tolerance",
        "max seconds between a frame and the robot pose paired with it",
        range=(0.0, 10.0, 0.0),
    ),
    Param(
        "flush_after_s",
        "seconds without input (and >= 3 frame intervals) after which held-back frames are "
        "finalised (0 = never)",
        range=(0.0, 3600.0, 0.0),
    ),
    Param(
        "camera_info_timeout",
        "seconds a frame waits for the first camera_info before it is rejected",
        range=(0.0, 60.0, 0.0),
    ),
    Param(
        "input_queue_depth",
        "DDS history depth of the image subscription (reliable QoS; keep >= queue_size)",
        range=(1, 10000, 1),
    ),
)
PARAM_DOCS = {p.name: p.description for p in PARAMETERS}
_PIPELINE_PARAM = {p.name: p.field for p in PARAMETERS if p.field}


def parameter_problems(values: dict) -> list[str]:
    """Start-up checks of the node's own parameters that come from :data:`PARAMETERS` (``values``: parameter
    name -> value): string values outside their choices. The pipeline's parameters are checked by
    :meth:`PipelineConfig.validate`, against the same constants."""
    return [
        f"{p.name} must be one of {', '.join(p.choices)}, got {values[p.name]!r}"
        for p in PARAMETERS
        if p.choices and not p.field and p.name in values and values[p.name] not in p.choices
    ]


@dataclass
class _Frame:
    rgb: np.ndarray
    header: Header
    K: np.ndarray
    received: float  # time.monotonic() at the callback
    rectifier: object = None  # endo_depth_model.rectify.Rectifier of the frame's calibration, if distorted
    dequeued: float = 0.0  # time.monotonic() when the worker took it from the queue


class DepthNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.pipeline_cfg, self.params = self._declare_parameters()
        self.rejected: Counter[str] = Counter()
        self._last_reject_log: dict[str, float] = {}
        self.errors: Counter[str] = Counter()
        self.frames_received = 0
        self.frames_published = 0
        self._latency_ms: deque[float] = deque(maxlen=2000)
        self._processing_ms: deque[float] = deque(maxlen=2000)  # worker: queue exit to publish
        self._out_times: deque[float] = deque(maxlen=300)
        self._in_times: deque[float] = deque(maxlen=300)
        self._K: np.ndarray | None = None
        self._K_hw: tuple[int, int] | None = None
        self._calibration_key = None  # (model, D, K, size) of the last camera_info
        self._rectifier = None  # undistorts images when camera_info has distortion
        self._distortion_problem = ""  # unsupported distortion: frames are rejected with this message
        if len(self.params.intrinsics) == 4:
            fx, fy, cx, cy = (float(v) for v in self.params.intrinsics)
            self._K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        self._image_hw: tuple[int, int] | None = None
        self._last_stamp_ns: int | None = None
        self._pending: dict[int, _Frame] = {}  # frame index -> frame waiting for its depth
        self._awaiting_info: deque[_Frame] = deque()  # frames that arrived before the first camera_info
        self._robot_poses: deque[tuple[int, np.ndarray]] = deque(maxlen=400)
        self._prev_robot: np.ndarray | None = None
        self._robot_pose_time: float | None = None  # time.monotonic() of the last robot_pose received
        self.frames_without_robot_pose = 0  # kinematic mode: frames with no robot_pose to pair with
        self._lock = threading.Lock()
        self._color_range = ColorRange()  # colours frozen over the first frames: no colour flicker

        self.pipeline = DepthPipeline(self.pipeline_cfg)  # raises PipelineError with a clear message
        self.queue = FrameQueue(self.params.queue_size, self.params.queue_policy)

        image_qos = (
            qos_profile_sensor_data
            if self.params.qos == "sensor_data"
            else QoSProfile(depth=self.params.input_queue_depth)
        )
        out_qos = QoSProfile(depth=10)
        self.pub_depth = self.create_publisher(Image, "depth/image", out_qos)
        self.pub_depth_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos)
        self.pub_colored = self.create_publisher(Image, "depth/colored", out_qos)
        self.pub_points = self.create_publisher(PointCloud2, "points", out_qos)
        self.pub_confidence = self.create_publisher(Image, "depth/confidence", out_qos)
        self.pub_alignment = self.create_publisher(DepthAlignment, "depth/alignment", out_qos)
        self.pub_pose = self.create_publisher(PoseStamped, "pose", out_qos)
        self.pub_odom = self.create_publisher(Odometry, "odom", out_qos)
        self.pub_tf = self.create_publisher(TFMessage, "/tf", out_qos) if TFMessage is not None else None
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", out_qos)
        if self.params.transport == "compressed":
            self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, image_qos)
        else:
            self.create_subscription(Image, "image", self._on_image, image_qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, image_qos)
        self.create_subscription(PoseStamped, "robot_pose", self._on_robot_pose, QoSProfile(depth=50))
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._worker = threading.Thread(target=self._work, name="endo_depth_worker", daemon=True)
        self._worker.start()
        if self.pipeline.fill_border_warning:
            self.get_logger().warning(self.pipeline.fill_border_warning)
        if self.params.publish_tf and TFMessage is None:
            self.get_logger().warning(
                "publish_tf is true but tf2_msgs is not importable here: no /tf (pose and odom are still "
                "published); run scripts/bootstrap.sh or source a ROS 2 install"
            )
        odo = "with odometry" if self.pipeline.has_odometry else "without odometry (no pose weights)"
        c = self.pipeline_cfg
        lo, hi = self.pipeline.cfg.min_depth, self.pipeline.cfg.max_depth  # resolved from the weights
        self.get_logger().info(
            f"ready: {c.model_config} on {c.device}, input {c.input_height}x{c.input_width}, "
            + (
                f"causal (zero hold-back, {c.causal_context} cached frames)"
                if self.pipeline.latency_mode == "causal"
                else f"aligned (window {c.window}, stride {c.stride})"
            )
            + f", scale {c.scale_mode}, depth range {lo:g}-{hi:g} m"
            + f", {self._backend_name()}, {odo}"
        )

    # ---- parameters --------------------------------------------------------------------------------
    def _declare_parameters(self) -> tuple[PipelineConfig, NodeParams]:
        from rclpy.parameter import Parameter

        values = {}
        for p in PARAMETERS:
            desc = ParameterDescriptor(description=p.description, read_only=not p.dynamic)
            if p.range and isinstance(p.default, int):
                desc.integer_range = [
                    IntegerRange(from_value=p.range[0], to_value=p.range[1], step=p.range[2])
                ]
            elif p.range:
                desc.floating_point_range = [
                    FloatingPointRange(from_value=p.range[0], to_value=p.range[1], step=p.range[2])
                ]
            if p.name == "intrinsics":  # no default value: the type is declared instead
                values[p.name] = self.declare_parameter(p.name, Parameter.Type.DOUBLE_ARRAY, desc).value or ()
            else:
                values[p.name] = self.declare_parameter(p.name, p.default, desc).value
        cfg = PipelineConfig(**{p.field: values[p.name] for p in PARAMETERS if p.field})
        params = NodeParams(**{p.name: values[p.name] for p in PARAMETERS if not p.field})
        problems = parameter_problems(values)
        try:
            cfg.validate()
        except PipelineError as exc:
            problems.append(str(exc))
        if len(params.intrinsics) not in (0, 4) or (params.intrinsics and min(params.intrinsics[:2]) <= 0):
            problems.append(
                f"intrinsics must be [fx, fy, cx, cy] with fx, fy > 0, got {list(params.intrinsics)}"
            )
        if not params.odom_frame:
            problems.append("odom_frame must not be empty")
        if problems:
            raise PipelineError("invalid parameters: " + "; ".join(problems))
        return cfg, params

    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "publish_points":
                self.params.publish_points = bool(p.value)
        return SetParametersResult(successful=True)

    # ---- callbacks (never block) -------------------------------------------------------------------
    def _reject(self, reason: str, detail: str) -> None:
        """Count a rejected frame; log its reason (at most every 2 s per reason)."""
        self.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_reject_log.get(reason, -1e9) >= 2.0:
            self._last_reject_log[reason] = now
            self.get_logger().warning(f"rejected frame ({reason}): {detail}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            K, hw = conv.camera_info_to_K(msg)
        except ValueError as exc:
            self.rejected["bad_camera_info"] += 1
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        model, D = conv.camera_info_distortion(msg)
        key = (model, D.tobytes(), K.tobytes(), hw)
        if key != self._calibration_key:  # maps are computed once per calibration
            try:
                rectifier, problem = make_rectifier(K, D, model, hw), ""
            except DistortionError as exc:
                rectifier, problem = None, str(exc)
            with self._lock:
                self._calibration_key, self._rectifier, self._distortion_problem = key, rectifier, problem
            if problem:
                self.get_logger().error(
                    f"camera_info: {problem}; frames are rejected (unsupported_distortion)"
                )
            elif rectifier is not None:
                self.get_logger().info(
                    f"camera_info: {model} distortion; images are rectified before inference"
                )
        with self._lock:
            self._expire_awaiting(time.monotonic())
            self._K, self._K_hw = K, hw
            waiting, self._awaiting_info = list(self._awaiting_info), deque()
        for frame in waiting:  # frames that arrived just before the first camera_info, in order
            self._enqueue(frame.rgb, frame.header, frame.received)

    def _expire_awaiting(self, now: float) -> None:
        """Frames held for a camera_info that did not come in time are rejected (caller holds the lock)."""
        while self._awaiting_info and (
            now - self._awaiting_info[0].received > self.params.camera_info_timeout
            or len(self._awaiting_info) > self.params.queue_size
        ):
            self._awaiting_info.popleft()
            self._reject(
                "no_camera_info",
                f"no camera_info within {self.params.camera_info_timeout:.2f} s and no intrinsics parameter",
            )

    def _on_robot_pose(self, msg: PoseStamped) -> None:
        T = conv.pose_to_matrix(msg.pose)
        if not np.all(np.isfinite(T)):
            self.rejected["bad_robot_pose"] += 1
            return
        with self._lock:
            self._robot_poses.append((conv.stamp_to_ns(msg.header.stamp), T))
            self._robot_pose_time = time.monotonic()

    def _on_image(self, msg: Image) -> None:
        now = time.monotonic()
        self.frames_received += 1
        self._in_times.append(now)
        try:
            rgb = conv.image_msg_to_rgb(msg)
        except conv.ImageEncodingError as exc:
            self._reject("bad_image", str(exc))
            return
        self._accept(rgb, msg, now)

    def _on_compressed(self, msg: CompressedImage) -> None:
        now = time.monotonic()
        self.frames_received += 1
        self._in_times.append(now)
        try:
            rgb = decode_compressed(msg.data, msg.format)
        except ImageEncodingError as exc:
            self._reject("bad_compressed", str(exc))
            return
        self._accept(rgb, msg, now)

    def _accept(self, rgb: np.ndarray, msg, now: float) -> None:
        """A decoded frame: checked against the stream (size, stamp order), then queued."""
        hw = rgb.shape[:2]
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        with self._lock:
            if self._image_hw is None:
                self._image_hw = hw
            elif hw != self._image_hw:
                self._reject(
                    "size_changed",
                    f"image is {hw[1]}x{hw[0]}, stream is {self._image_hw[1]}x"
                    f"{self._image_hw[0]} (call ~/reset to accept a new size)",
                )
                return
            if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
                self._reject("stamp_not_increasing", f"stamp {stamp_ns} ns after {self._last_stamp_ns} ns")
                return
            self._last_stamp_ns = stamp_ns
            self._expire_awaiting(now)
            if self._K is None:  # hold the frame until the first camera_info (or reject it on timeout)
                self._awaiting_info.append(_Frame(rgb, msg.header, None, now))
                return
        self._enqueue(rgb, msg.header, now)

    def _enqueue(self, rgb: np.ndarray, header: Header, received: float) -> None:
        hw = rgb.shape[:2]
        with self._lock:
            K, K_hw = self._K, self._K_hw
            rectifier, problem = self._rectifier, self._distortion_problem
        if problem:
            self._reject("unsupported_distortion", problem)
            return
        if K_hw is not None and K_hw != hw:
            self._reject(
                "camera_info_size", f"camera_info is for {K_hw[1]}x{K_hw[0]}, image is {hw[1]}x{hw[0]}"
            )
            return
        if self.queue.put(_Frame(rgb, header, K, received, rectifier)) is not None:
            self.get_logger().warning(
                f"inference behind: queue full ({self.params.queue_policy}), frame dropped",
                throttle_duration_sec=2.0,
            )

    def _on_reset(self, request, response):
        with self._lock:
            self._image_hw = None
            self._last_stamp_ns = None
            self._prev_robot = None
        self.queue.clear()
        self._reset_requested = True
        response.success = True
        response.message = "depth re-anchored; odometry restarts at identity"
        self.get_logger().info("reset requested")
        return response

    # ---- worker ------------------------------------------------------------------------------------
    _reset_requested = False

    def _work(self) -> None:
        index = 0
        last_input = time.monotonic()
        while self._running:
            frame = self.queue.get(timeout=0.05)
            if self._reset_requested:
                self._reset_requested = False
                self.pipeline.reset()
                self._pending.clear()
                self._color_range = ColorRange()
            if frame is None:
                idle = time.monotonic() - last_input
                if self._pending and self._input_paused(idle):
                    self._flush()
                continue
            last_input = frame.dequeued = time.monotonic()
            try:
                if frame.rectifier is not None:  # the outputs describe the rectified (pinhole) camera
                    frame.rgb = frame.rectifier.rectify(frame.rgb)
                self._pending[index] = frame
                depths, motion = self.pipeline.push(frame.rgb, index, K=frame.K)
                index += 1
                if motion is not None:
                    self._publish_motion(frame, motion)
                for d in depths:
                    self._publish_depth(d)
            except Exception as exc:  # noqa: BLE001 - the node must keep serving
                self.errors[type(exc).__name__] += 1
                self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=2.0)

    def _input_paused(self, idle_s: float) -> bool:
        """No frame for ``flush_after_s`` and for FLUSH_PERIODS of the stream's recent frame intervals.

        The second condition keeps a slow camera (frame interval longer than ``flush_after_s``) from
        being flushed, and so re-anchored, between every two frames.
        """
        if self.params.flush_after_s <= 0:
            return False
        recent = np.diff(list(self._in_times)[-11:])
        period = float(np.median(recent)) if recent.size else 0.0
        return idle_s > max(self.params.flush_after_s, FLUSH_PERIODS * period)

    def _flush(self) -> None:
        """Input paused: finalise every held-back frame (the next frame starts a new anchor)."""
        try:
            for d in self.pipeline.flush():
                self._publish_depth(d)
        except Exception as exc:  # noqa: BLE001 - the node must keep serving
            self.errors[type(exc).__name__] += 1
            self.get_logger().error(f"flush failed: {exc}", throttle_duration_sec=2.0)
        if self._pending:  # frames the flush could not finalise are counted, never silently lost
            self.errors["not_finalised"] += len(self._pending)
            self._pending.clear()

    def _camera_frame(self, header: Header) -> str:
        return self.params.camera_frame or header.frame_id

    def _publish_motion(self, frame: _Frame, motion) -> None:
        robot = self._robot_pose_at(conv.stamp_to_ns(frame.header.stamp))
        if robot is not None:
            if self._prev_robot is not None:
                T_measured = np.linalg.inv(self._prev_robot) @ robot
                self.pipeline.push_measured_motion(motion.T_prev_cur[:3, 3], T_measured[:3, 3], T_measured)
            self._prev_robot = robot
        elif self.pipeline_cfg.scale_mode == "kinematic":
            # no measured pose for this frame: the pair chain breaks, so motion measured across the gap
            # is never compared with one predicted frame step; the scale keeps its last value
            self._prev_robot = None
            self.frames_without_robot_pose += 1
            self.get_logger().warning(
                "no robot_pose within robot_pose_tolerance of the frame: kinematic scale held at its "
                "last value",
                throttle_duration_sec=5.0,
            )
        ps, odom, tf = conv.pose_msgs(
            motion.T_odom_cam, frame.header.stamp, self.params.odom_frame, self._camera_frame(frame.header)
        )
        self.pub_pose.publish(ps)
        self.pub_odom.publish(odom)
        if self.pub_tf is not None and self.params.publish_tf:
            self.pub_tf.publish(TFMessage(transforms=[tf]))

    def _robot_pose_at(self, stamp_ns: int) -> np.ndarray | None:
        with self._lock:
            if not self._robot_poses:
                return None
            best = min(self._robot_poses, key=lambda p: abs(p[0] - stamp_ns))
        return best[1] if abs(best[0] - stamp_ns) <= self.params.robot_pose_tolerance * 1e9 else None

    def _publish_depth(self, d) -> None:
        frame = self._pending.pop(d.stamp, None)
        if frame is None:
            return
        header = frame.header
        depth = d.depth
        if depth.shape != frame.rgb.shape[:2]:
            raise RuntimeError(f"depth {depth.shape} does not match the image {frame.rgb.shape[:2]}")
        # confidence first: a consumer that acts on each depth image (the standoff controller) then has the
        # confidence of the same stamp when the depth arrives
        if self.params.publish_confidence and self.pub_confidence.get_subscription_count() > 0:
            conf = self.pipeline.confidence(d, frame.rgb)
            self.pub_confidence.publish(conv.array_to_image_msg(conf, "32FC1", header))
        self.pub_depth.publish(conv.array_to_image_msg(depth, "32FC1", header))
        self.pub_depth_info.publish(conv.make_camera_info(frame.K, depth.shape[0], depth.shape[1], header))
        # the colourised depth and the point cloud are computed only while someone subscribes (as
        # image_transport's lazy publishers do): at 1280x720 they cost more than the depth message itself
        if self.params.publish_colored and self.pub_colored.get_subscription_count() > 0:
            lo, hi = self._color_range.update(depth)
            self.pub_colored.publish(conv.array_to_image_msg(colorize_depth(depth, lo, hi), "rgb8", header))
        if self.params.publish_points and self.pub_points.get_subscription_count() > 0:
            self.pub_points.publish(
                conv.depth_to_pointcloud2(depth, frame.K, header, frame.rgb, self.params.points_stride)
            )
        if d.snippet_index != getattr(self, "_last_snippet", None):
            self._last_snippet = d.snippet_index
            a = d.align
            msg = DepthAlignment(header=header, snippet_index=d.snippet_index)
            msg.scale, msg.shift = float(a.scale), float(a.shift)
            msg.fit_residual = float(a.residual)
            msg.n_overlap_frames = int(a.n_overlap)
            msg.reanchored = bool(a.reanchored)
            msg.scale_source = d.scale.mode
            msg.metric_scale = float(d.scale.scale)
            msg.is_metric = bool(d.scale.is_metric)
            self.pub_alignment.publish(msg)
        now = time.monotonic()
        self._latency_ms.append((now - frame.received) * 1e3)
        if frame.dequeued:
            self._processing_ms.append((now - frame.dequeued) * 1e3)
        self._out_times.append(now)
        self.frames_published += 1

    # ---- diagnostics -------------------------------------------------------------------------------
    @staticmethod
    def _rate(times: deque) -> float:
        if len(times) < 2 or times[-1] == times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def diagnostics_values(self) -> dict[str, str]:
        lat = np.asarray(self._latency_ms) if self._latency_ms else np.zeros(1)
        proc = np.asarray(self._processing_ms) if self._processing_ms else np.zeros(1)
        q = self.queue.counters
        scale = self.pipeline.scale.state()
        values = {
            "frames_received": self.frames_received,
            "frames_published": self.frames_published,
            "frames_rejected": sum(self.rejected.values()),
            "frames_dropped": q.dropped,
            "queue_length": len(self.queue),
            "queue_policy": self.params.queue_policy,
            "input_rate_hz": f"{self._rate(self._in_times):.2f}",
            "output_rate_hz": f"{self._rate(self._out_times):.2f}",
            "latency_p50_ms": f"{np.percentile(lat, 50):.1f}",
            "latency_p95_ms": f"{np.percentile(lat, 95):.1f}",
            "processing_p50_ms": f"{np.percentile(proc, 50):.1f}",
            "processing_p95_ms": f"{np.percentile(proc, 95):.1f}",
            "backend": self._backend_name(),
            "head_passes": self.pipeline.stats.head_passes,
            "reanchors": self.pipeline.stats.reanchors,
            "latency_mode": self.pipeline.latency_mode,
            "scene_cuts": self.pipeline.stats.scene_cuts,
            "static_frames": self.pipeline.stats.static_frames,
            "refined_steps": self.pipeline.stats.refined_steps,
            "hold_back_frames": self.pipeline.stream.frames_pending,
            "field_of_view": self.pipeline.stats.fov_kind or "off",
            "field_of_view_fraction": f"{self.pipeline.stats.fov_fraction:.3f}",
            "frames_nothing_visible": self.pipeline.stats.fov_empty,
            "frozen_frames": self.pipeline.stats.frozen_frames,
            "overexposed_frames": self.pipeline.stats.overexposed_frames,
            "confidence_nan_frames": self.pipeline.stats.confidence_nan_frames,
            "rectification": (
                f"unsupported: {self._distortion_problem}"
                if self._distortion_problem
                else (self._rectifier.model if self._rectifier is not None else "none")
            ),
            "scale_source": scale.mode,
            "metric_scale": f"{scale.scale:.6g}",
            "is_metric": scale.is_metric,
            "robot_pose_age_s": self._robot_pose_age(),
            "frames_without_robot_pose": self.frames_without_robot_pose,
            "tf": (
                "off"
                if not self.params.publish_tf
                else "published"
                if TFMessage is not None
                else "unavailable (no tf2_msgs)"
            ),
            "errors": sum(self.errors.values()),
        }
        values.update(self._process_values())
        values.update({f"reanchors.{k}": v for k, v in sorted(self.pipeline.stats.reanchor_reasons.items())})
        values.update({f"rejected.{k}": v for k, v in sorted(self.rejected.items())})
        values.update({f"error.{k}": v for k, v in sorted(self.errors.items())})
        return {k: str(v) for k, v in values.items()}

    def _backend_name(self) -> str:
        """e.g. ``torch-cpu-bf16`` or ``onnxruntime-cpu-fp32``: what really runs the depth model."""
        backend = self.pipeline.model
        name = getattr(backend, "name", "torch")
        precision = getattr(backend, "precision", "fp32")
        return f"{name}-{self.pipeline_cfg.device}-{precision}"

    def _robot_pose_age(self) -> str:
        """Seconds since the last robot_pose message, or ``never``."""
        with self._lock:
            t = self._robot_pose_time
        return "never" if t is None else f"{time.monotonic() - t:.1f}"

    @staticmethod
    def _process_values() -> dict[str, str]:
        """Resident memory, threads and open files of this process (leaks show up here in a soak run)."""
        try:
            import psutil

            proc = psutil.Process()
            return {
                "rss_mb": f"{proc.memory_info().rss / 2**20:.1f}",
                "threads": str(proc.num_threads()),
                "open_files": str(proc.num_fds()),
            }
        except Exception:  # noqa: BLE001 - psutil missing or the platform lacks a counter
            return {}

    def _publish_diagnostics(self) -> None:
        with self._lock:
            self._expire_awaiting(time.monotonic())
        values = self.diagnostics_values()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: depth", hardware_id="endoscope")
        problems = int(values["frames_rejected"]) + int(values["frames_dropped"]) + int(values["errors"])
        status.level = DiagnosticStatus.OK if problems == 0 else DiagnosticStatus.WARN
        status.message = "ok" if problems == 0 else "frames rejected, dropped or failed (see values)"
        age = values["robot_pose_age_s"]
        stale = age == "never" or float(age) > ROBOT_POSE_STALE_S
        if self.pipeline_cfg.scale_mode == "kinematic" and stale:
            status.level = DiagnosticStatus.WARN
            since = "received yet" if age == "never" else f"for {age} s"
            status.message = f"no robot_pose {since}: kinematic scale held at its last value"
        run = self.pipeline.stats.frozen_run
        if run >= FROZEN_WARN_FRAMES:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"input frozen: the last {run} images repeat the one before byte for byte (a hung frame "
                "grabber?); their depth confidence is 0"
            )
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def shutdown(self) -> None:
        """Stop the worker after the frame in progress; publish the final diagnostics."""
        self._running = False
        self.queue.close()
        self._worker.join(timeout=10.0)
        try:
            self._publish_diagnostics()
        except Exception as exc:  # noqa: BLE001 - shutting down: say so, but do not mask the exit
            print(f"[{NODE_NAME}] final diagnostics not published: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; :meth:`DepthNode.shutdown` then stops the worker first."""
    from endo_depth_ros.node_runner import run_node

    return run_node(DepthNode, NODE_NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
