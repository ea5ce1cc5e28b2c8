"""A simulated endoscope on a robot: the simulator's scene rendered from a camera pose driven by commands.

The scene is :class:`endo_depth_model.data.simulator.EndoscopySimulator` in ``cavity`` shape (the lumen
closes in a dome, so the camera faces tissue); the camera starts on the lumen's centreline looking at the
dome's tip. Every step (``1 / rate_hz`` of simulated time) the node integrates the latest command
(``cmd_twist``: velocity in the camera frame, or ``target_pose``: a pose in ``world_frame`` approached at
``max_speed``), refuses any step that would bring the camera closer than ``guard_clearance_m`` to the wall
(counted, never rendered from inside tissue), renders, and publishes ``image`` + ``camera_info``, the
robot's measured camera pose ``measured_cp`` (metres, like a dVRK ECM) and, for evaluation only, ground
truth on ``ground_truth/*``. It is the clock source: ``/clock`` carries the simulated time.

``lockstep_max_lag`` > 0 couples the simulated time to the loop: frame ``k`` is published only once a
command stamped with frame ``k - lockstep_max_lag`` or later has arrived (the controller stamps each
command with the image it answers), so a slow machine slows the simulation instead of the loop losing
frames or acting on old depth. Topics and parameters: docs/integration.md.

Run: ``ros2 run endo_depth_ros sim_endoscope`` or
``python -m endo_depth_ros.sim.sim_endoscope --ros-args ...``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, Range
from std_msgs.msg import Header

from endo_depth_model import geometry
from endo_depth_model.data.simulator import EndoscopySimulator, preset
from endo_depth_ros import conversions as conv
from endo_depth_ros.node_runner import declare_dataclass_parameters

NODE_NAME = "sim_endoscope"
START_TIME_S = 1.0  # simulated time of frame 0 (a zero stamp reads as "unset" to many tools)


@dataclass
class SimParams:
    preset: str = "target"
    seed: int = 1
    height: int = 96
    width: int = 128
    rate_hz: float = 15.0
    duration_s: float = 0.0  # simulated seconds to run; 0 = until stopped
    real_time_factor: float = 1.0  # simulated / wall time; 0 = as fast as rendering (and lockstep) allow
    lockstep_max_lag: int = 0  # frames the images may run ahead of the commands; 0 = free running
    min_subscribers: int = 1  # frame 0 waits until ``image`` has this many subscribers
    lockstep_timeout_s: float = 5.0  # wall seconds a lockstep wait may last before the frame goes anyway
    cmd_timeout_s: float = 0.5  # simulated seconds after which a velocity command expires (zero motion)
    max_speed: float = 0.02  # m/s, clamp of commanded and target-pose speed
    max_angular_speed: float = 1.0  # rad/s
    guard_clearance_m: float = 0.002  # closest the camera centre may come to the wall
    window_fraction: float = 0.33  # side of the central window, as a fraction of the image side
    # fault injection: from this simulated time on the simulator resends its last image (a hung frame
    # grabber: stamps, measured_cp and ground truth go on); 0 = off. The depth node finds the repeated
    # images byte-identical and gives their depth confidence 0, so the controller stops
    freeze_image_after_s: float = 0.0
    world_frame: str = "world"
    camera_frame: str = "endoscope_optical"


PARAM_DOCS = {
    "preset": "simulator domain preset: source or target",
    "seed": "simulator seed (scene shape and texture)",
    "height": "image height in pixels",
    "width": "image width in pixels",
    "rate_hz": "frames per simulated second",
    "duration_s": "simulated seconds to run, 0 = until stopped",
    "real_time_factor": "simulated seconds per wall second; 0 = as fast as possible",
    "lockstep_max_lag": "frames images may run ahead of the commands (0 = free running)",
    "min_subscribers": "frame 0 waits for this many image subscribers (and a command publisher in lockstep)",
    "lockstep_timeout_s": "wall seconds a lockstep wait lasts before the next frame goes anyway",
    "cmd_timeout_s": "simulated seconds after which a velocity command expires",
    "max_speed": "m/s limit of the camera's translation",
    "max_angular_speed": "rad/s limit of the camera's rotation",
    "guard_clearance_m": "closest distance (m) of the camera centre to the wall; closer steps are refused",
    "window_fraction": "side of the central window of ground_truth/window_distance (fraction of the image)",
    "freeze_image_after_s": "fault injection: the image stops changing from this simulated time on "
    "(stamps, measured_cp and ground truth go on); 0 = off",
    "world_frame": "frame of measured_cp, ground_truth/pose and target_pose",
    "camera_frame": "frame_id of the images (REP 103 optical frame)",
}


def start_pose(sim: EndoscopySimulator) -> np.ndarray:
    """(4, 4) camera-to-world pose (metres): on the centreline at z = 0, looking at the dome's tip."""
    tube = sim.tube
    if tube.dome_start is None:
        raise ValueError("the closed-loop scene needs a simulator with geometry.shape='cavity'")
    z_tip = tube.dome_start + tube.dome_length
    c0 = np.array([*tube.centre(0.0), 0.0])
    tip = np.array([*tube.centre(z_tip), z_tip])
    fwd = (tip - c0) / np.linalg.norm(tip - c0)
    right = np.cross([0.0, 1.0, 0.0], fwd)
    right /= np.linalg.norm(right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, np.cross(fwd, right), fwd], axis=1)
    T[:3, 3] = c0 / 1000.0
    return T


def make_scene(preset_name: str, seed: int, height: int, width: int) -> EndoscopySimulator:
    """The closed-loop scene: a short ``cavity`` simulation (the dome starts one radius ahead of z = 0)."""
    cfg = preset(preset_name, seed=seed, height=height, width=width, n_frames=2)
    cfg = replace(cfg, geometry=replace(cfg.geometry, shape="cavity"))
    return EndoscopySimulator(cfg)


def central_window(shape: tuple[int, int], fraction: float) -> tuple[slice, slice]:
    """Rows and columns of the centred window covering ``fraction`` of each image side."""
    h, w = shape
    wh, ww = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - wh) // 2, (w - ww) // 2
    return slice(top, top + wh), slice(left, left + ww)


def _rotation(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) radians -> rotation matrix, through the quaternion (numpy, no torch here)."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-15:
        return np.eye(3)
    axis = np.asarray(rotvec, float) / angle
    return geometry.quaternion_to_matrix([*(axis * math.sin(angle / 2)), math.cos(angle / 2)])


def integrate_twist(T: np.ndarray, linear: np.ndarray, angular: np.ndarray, dt: float) -> np.ndarray:
    """Camera-to-world pose after moving ``dt`` s at a velocity given in the camera frame (m/s, rad/s)."""
    out = T.copy()
    out[:3, 3] = T[:3, 3] + T[:3, :3] @ (np.asarray(linear, float) * dt)
    out[:3, :3] = T[:3, :3] @ _rotation(np.asarray(angular, float) * dt)
    return out


def step_towards(T: np.ndarray, target: np.ndarray, max_step_m: float, max_step_rad: float) -> np.ndarray:
    """One bounded step from pose ``T`` towards pose ``target`` (translation and rotation clamped)."""
    out = T.copy()
    delta = target[:3, 3] - T[:3, 3]
    dist = float(np.linalg.norm(delta))
    out[:3, 3] = T[:3, 3] + (delta if dist <= max_step_m else delta * (max_step_m / dist))
    rotvec = geometry.matrix_to_axis_angle(T[:3, :3].T @ target[:3, :3])
    angle = float(np.linalg.norm(rotvec))
    if angle > max_step_rad:
        rotvec = rotvec * (max_step_rad / angle)
    out[:3, :3] = T[:3, :3] @ _rotation(rotvec)
    return out


class SimEndoscope(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = self._declare_parameters()
        p = self.params
        self.sim = make_scene(p.preset, p.seed, p.height, p.width)
        self.T_world_cam = start_pose(self.sim)
        self._frozen_rgb: np.ndarray | None = None
        self.K = self.sim.K.copy()
        self.frame_index = 0
        self.frames_published = 0
        self.guard_stops = 0
        self.lockstep_timeouts = 0
        self.rejected_commands = 0
        self.render_ms: list[float] = []
        self.done = False
        self._lock = threading.Lock()
        self._twist: tuple[np.ndarray, np.ndarray, float] | None = None  # linear, angular, sim time
        self._target: np.ndarray | None = None
        self._last_cmd_stamp_ns = -1
        self._next_wall = time.monotonic()
        self._wait_since: float | None = None

        qos = QoSProfile(depth=20)  # reliable: the loop must not lose frames
        self.pub_image = self.create_publisher(Image, "image", qos)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos)
        self.pub_cp = self.create_publisher(PoseStamped, "measured_cp", qos)
        self.pub_gt_depth = self.create_publisher(Image, "ground_truth/depth", qos)
        self.pub_gt_pose = self.create_publisher(PoseStamped, "ground_truth/pose", qos)
        self.pub_gt_axis = self.create_publisher(Range, "ground_truth/axis_distance", qos)
        self.pub_gt_window = self.create_publisher(Range, "ground_truth/window_distance", qos)
        self.pub_clock = self.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.create_subscription(TwistStamped, "cmd_twist", self._on_twist, QoSProfile(depth=50))
        self.create_subscription(PoseStamped, "target_pose", self._on_target, QoSProfile(depth=10))
        self.create_timer(0.005, self._tick)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(
            f"ready: {p.preset} seed {p.seed}, {p.width}x{p.height} at {p.rate_hz:g} Hz, "
            f"lockstep {p.lockstep_max_lag or 'off'}, "
            f"start {self.window_distances()[1] * 1e3:.1f} mm from tissue"
        )

    def _declare_parameters(self) -> SimParams:
        p = declare_dataclass_parameters(self, SimParams, PARAM_DOCS)
        problems = []
        if p.preset not in ("source", "target"):
            problems.append(f"preset must be source or target, got {p.preset!r}")
        if not (8 <= p.height <= 1080 and 8 <= p.width <= 1920):
            problems.append(f"image size {p.width}x{p.height} out of range (8..1920 x 8..1080)")
        if not p.rate_hz > 0:
            problems.append(f"rate_hz must be > 0, got {p.rate_hz}")
        for name in ("duration_s", "real_time_factor", "lockstep_timeout_s", "cmd_timeout_s"):
            if getattr(p, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(p, name)}")
        if p.lockstep_max_lag < 0 or p.min_subscribers < 0:
            problems.append("lockstep_max_lag and min_subscribers must be >= 0")
        if not (p.max_speed > 0 and p.max_angular_speed > 0 and p.guard_clearance_m > 0):
            problems.append("max_speed, max_angular_speed and guard_clearance_m must be > 0")
        if not 0 < p.window_fraction <= 1:
            problems.append(f"window_fraction must be in (0, 1], got {p.window_fraction}")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        return p

    # ---- commands ----------------------------------------------------------------------------------
    def sim_time_s(self, k: int | None = None) -> float:
        return START_TIME_S + (self.frame_index if k is None else k) / self.params.rate_hz

    def _on_twist(self, msg: TwistStamped) -> None:
        lin = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z])
        ang = np.array([msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z])
        frame = msg.header.frame_id
        if not (np.all(np.isfinite(lin)) and np.all(np.isfinite(ang))) or frame not in (
            "",
            self.params.camera_frame,
        ):
            self.rejected_commands += 1
            self.get_logger().warning(
                f"rejected cmd_twist (non-finite or frame {frame!r} is not {self.params.camera_frame!r})",
                throttle_duration_sec=2.0,
            )
            return
        speed = float(np.linalg.norm(lin))
        if speed > self.params.max_speed:
            lin = lin * (self.params.max_speed / speed)
        rate = float(np.linalg.norm(ang))
        if rate > self.params.max_angular_speed:
            ang = ang * (self.params.max_angular_speed / rate)
        with self._lock:
            self._twist = (lin, ang, self.sim_time_s())
            self._target = None  # the latest command wins
            self._last_cmd_stamp_ns = max(self._last_cmd_stamp_ns, conv.stamp_to_ns(msg.header.stamp))

    def _on_target(self, msg: PoseStamped) -> None:
        T = conv.pose_to_matrix(msg.pose)
        if not np.all(np.isfinite(T)) or msg.header.frame_id not in ("", self.params.world_frame):
            self.rejected_commands += 1
            self.get_logger().warning(
                "rejected target_pose (non-finite or wrong frame)", throttle_duration_sec=2.0
            )
            return
        with self._lock:
            self._target, self._twist = T, None

    # ---- stepping ----------------------------------------------------------------------------------
    def _peers_ready(self) -> bool:
        """Frame 0 waits for the consumers (a frame sent before they subscribe would be lost)."""
        p = self.params
        if self.count_subscribers("image") < p.min_subscribers:
            return False
        return p.lockstep_max_lag <= 0 or self.count_publishers("cmd_twist") > 0

    def _lockstep_ready(self) -> bool:
        lag = self.params.lockstep_max_lag
        if lag <= 0 or self.frame_index <= lag:
            return True
        needed = int(round(self.sim_time_s(self.frame_index - lag) * 1e9))
        with self._lock:
            ready = self._last_cmd_stamp_ns >= needed
        if ready:
            self._wait_since = None
            return True
        now = time.monotonic()
        if self._wait_since is None:
            self._wait_since = now
        if now - self._wait_since > self.params.lockstep_timeout_s:
            self.lockstep_timeouts += 1
            self._wait_since = None
            self.get_logger().warning(
                "lockstep: no command in time, the simulation goes on", throttle_duration_sec=2.0
            )
            return True
        return False

    def _tick(self) -> None:
        if self.done:
            return
        p = self.params
        if p.real_time_factor > 0 and time.monotonic() < self._next_wall:
            return
        if self.frame_index == 0 and not self._peers_ready():
            return
        if not self._lockstep_ready():
            return
        if p.duration_s > 0 and self.frame_index / p.rate_hz >= p.duration_s:
            self.done = True
            self.publish_diagnostics()
            self.get_logger().info(f"done: {self.frames_published} frames, {self.guard_stops} guard stops")
            return
        if self.frame_index > 0:
            self._move(1.0 / p.rate_hz)
        self.publish_frame()
        if p.real_time_factor > 0:
            self._next_wall = max(
                self._next_wall + 1.0 / (p.rate_hz * p.real_time_factor), time.monotonic() - 1.0
            )

    def _move(self, dt: float) -> None:
        p = self.params
        now = self.sim_time_s()
        with self._lock:
            twist, target = self._twist, self._target
        if target is not None:
            new = step_towards(self.T_world_cam, target, p.max_speed * dt, p.max_angular_speed * dt)
        elif twist is not None and now - twist[2] <= p.cmd_timeout_s + 1e-9:
            new = integrate_twist(self.T_world_cam, twist[0], twist[1], dt)
        else:
            return
        if self.sim.wall_distance(new[:3, 3], n_dirs=128) < p.guard_clearance_m:
            self.guard_stops += 1
            self.get_logger().warning(
                f"guard: step refused, it would bring the camera within {p.guard_clearance_m * 1e3:.1f} mm "
                "of the wall",
                throttle_duration_sec=2.0,
            )
            return
        self.T_world_cam = new

    def window_distances(self, depth: np.ndarray | None = None) -> tuple[float, float]:
        """(distance along the optical axis, minimum depth in the central window), metres (inf: none)."""
        axis_m = self.sim.axis_distance(self.T_world_cam)
        if depth is None:
            depth = self.sim.render_pose(self.T_world_cam, self.frame_index).depth
        win = depth[central_window(depth.shape, self.params.window_fraction)]
        win_min = float(np.nanmin(win)) if np.isfinite(win).any() else math.inf
        return axis_m, win_min

    def publish_frame(self) -> None:
        p = self.params
        t0 = time.perf_counter()
        frame = self.sim.render_pose(self.T_world_cam, self.frame_index)
        rgb = frame.rgb
        if 0 < p.freeze_image_after_s <= self.sim_time_s() - START_TIME_S:
            if self._frozen_rgb is None:
                self._frozen_rgb = rgb
                self.get_logger().warning(
                    f"fault injection: the image is frozen from {p.freeze_image_after_s} s on"
                )
            rgb = self._frozen_rgb
        self.render_ms.append((time.perf_counter() - t0) * 1e3)
        del self.render_ms[:-500]
        stamp_ns = int(round(self.sim_time_s() * 1e9))
        header = Header(frame_id=p.camera_frame)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        clock = Clock()
        clock.clock = header.stamp
        self.pub_clock.publish(clock)
        world = Header(frame_id=p.world_frame, stamp=header.stamp)
        cp = PoseStamped(header=world, pose=conv.matrix_to_pose(self.T_world_cam))
        self.pub_cp.publish(cp)
        self.pub_gt_pose.publish(cp)
        self.pub_gt_depth.publish(conv.array_to_image_msg(frame.depth, "32FC1", header))
        axis_m, win_min = self.window_distances(frame.depth)
        half = math.atan((p.width / 2.0) / self.K[0, 0])
        for pub, value, fov in (
            (self.pub_gt_axis, axis_m, 0.0),
            (self.pub_gt_window, win_min, 2 * half * p.window_fraction),
        ):
            pub.publish(
                Range(
                    header=header,
                    radiation_type=Range.INFRARED,
                    field_of_view=float(fov),
                    min_range=float(self.sim.config.near_mm / 1000.0),
                    max_range=float(self.sim.config.far_mm / 1000.0),
                    range=float(value),
                )
            )
        self.pub_info.publish(conv.make_camera_info(self.K, p.height, p.width, header))
        self.pub_image.publish(conv.array_to_image_msg(rgb, "rgb8", header))
        self.frames_published += 1
        self.frame_index += 1

    def diagnostics_values(self) -> dict[str, str]:
        r = np.asarray(self.render_ms) if self.render_ms else np.zeros(1)
        return {
            "frames_published": str(self.frames_published),
            "sim_time_s": f"{self.sim_time_s():.4f}",
            "guard_stops": str(self.guard_stops),
            "lockstep_timeouts": str(self.lockstep_timeouts),
            "rejected_commands": str(self.rejected_commands),
            "render_p50_ms": f"{np.percentile(r, 50):.1f}",
            "done": str(self.done).lower(),
        }

    def publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: simulator", hardware_id="simulator"
        )
        bad = int(values["guard_stops"]) + int(values["rejected_commands"])
        status.level = DiagnosticStatus.OK if bad == 0 else DiagnosticStatus.WARN
        status.message = "ok" if bad == 0 else "guard stops or rejected commands (see values)"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = Clock().clock
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
            int(round(self.sim_time_s() * 1e9)), 1_000_000_000
        )
        self.pub_diag.publish(msg)

    def shutdown(self) -> None:
        """Final diagnostics, while the context is still live (called by ``run_node``)."""
        try:
            self.publish_diagnostics()
        except Exception as exc:  # noqa: BLE001 - shutting down: say so, but do not mask the exit
            print(f"[{NODE_NAME}] final diagnostics not published: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from endo_depth_ros.node_runner import run_node

    return run_node(SimEndoscope, NODE_NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
