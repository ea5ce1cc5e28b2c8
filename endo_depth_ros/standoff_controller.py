"""Example controller: keep the endoscope tip at a stand-off from tissue using endo_depth's depth.

Per depth image the controller takes the median depth in a central window and decides (the pure function
:func:`decide`, tested without ROS):

- ``stopped``: the depth is older than ``stale_after_s`` (watchdog) or the window has no valid depth:
  zero twist.
- ``exploring``: the depth is not metric yet (``DepthAlignment.is_metric`` false): a slow sideways motion
  (camera x, ``explore_speed``, within ``explore_amplitude_m`` of the start), so the depth node's
  kinematic scale sees robot motion; never towards the tissue.
- ``advancing`` / ``holding`` / ``retracting``: proportional speed along the optical axis towards the
  stand-off (``gain`` × error, at most ``max_speed``), zero within ``tolerance_m``; any sideways offset
  left from exploring is brought back to zero.

Each command (``cmd_twist``, ``geometry_msgs/TwistStamped`` in the camera frame) is stamped with the
depth image it answers, and ``state`` (``diagnostic_msgs/DiagnosticArray``, same stamp) says why. Topics
and parameters: docs/integration.md.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from endo_depth_model.image_encoding import image_to_numpy
from endo_depth_ros import conversions as conv
from endo_depth_ros.msg import DepthAlignment
from endo_depth_ros.sim_endoscope import central_window, run_node

NODE_NAME = "standoff_controller"
MODES = ("stopped", "exploring", "advancing", "holding", "retracting")


@dataclass
class ControllerConfig:
    standoff_m: float = 0.015  # wanted distance to tissue in the central window
    tolerance_m: float = 0.002  # no motion while |depth - standoff| is within this
    gain: float = 0.8  # 1/s: speed per metre of error
    max_speed: float = 0.004  # m/s along the optical axis
    explore_speed: float = 0.003  # m/s sideways while the scale is not metric
    explore_amplitude_m: float = 0.002  # sideways excursion limit
    window_fraction: float = 0.33  # side of the central window, fraction of the image side
    min_valid_fraction: float = 0.25  # valid pixels needed in the window
    stale_after_s: float = 1.0  # watchdog: depth older than this stops the robot
    excite_while_metric: bool = True  # keep the sideways motion after the scale is metric

    def validate(self) -> None:
        problems = [
            f"{f.name} must be > 0, got {getattr(self, f.name)}"
            for f in fields(self)
            if f.name not in ("tolerance_m", "excite_while_metric") and not getattr(self, f.name) > 0
        ]
        if self.tolerance_m < 0:
            problems.append(f"tolerance_m must be >= 0, got {self.tolerance_m}")
        if not self.window_fraction <= 1 or not self.min_valid_fraction <= 1:
            problems.append("window_fraction and min_valid_fraction must be <= 1")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))


PARAM_DOCS = {
    "standoff_m": "wanted distance to tissue (m) in the central window",
    "tolerance_m": "hold band (m) around the stand-off",
    "gain": "speed (m/s) per metre of stand-off error",
    "max_speed": "m/s limit along the optical axis",
    "explore_speed": "m/s of the sideways motion while the depth is not metric",
    "explore_amplitude_m": "sideways excursion limit (m) while exploring",
    "window_fraction": "side of the central window, as a fraction of the image side",
    "min_valid_fraction": "fraction of valid depth pixels needed in the window",
    "stale_after_s": "watchdog: depth older than this (node clock) stops the robot",
    "excite_while_metric": "keep the sideways motion when metric (the scale keeps adapting)",
}


@dataclass
class Decision:
    mode: str
    linear: tuple[float, float, float]  # m/s in the camera frame (x right, y down, z forward)
    explore_direction: int  # +1 / -1: the sideways direction of the next exploring step


def window_depth(depth: np.ndarray, cfg: ControllerConfig) -> float:
    """Median depth (m or relative) in the central window; NaN when too few pixels are valid."""
    win = depth[central_window(depth.shape, cfg.window_fraction)]
    valid = np.isfinite(win) & (win > 0)
    if valid.mean() < cfg.min_valid_fraction:
        return math.nan
    return float(np.median(win[valid]))


def decide(
    depth_m: float,
    is_metric: bool,
    age_s: float,
    explore_offset_m: float,
    explore_direction: int,
    cfg: ControllerConfig,
) -> Decision:
    """The control law: depth in the window (metres when ``is_metric``), its age and the sideways offset
    so far -> mode and twist. Pure; see the module docstring for the modes."""
    if not (age_s <= cfg.stale_after_s) or not math.isfinite(depth_m):
        return Decision("stopped", (0.0, 0.0, 0.0), explore_direction)
    if explore_offset_m >= cfg.explore_amplitude_m:
        explore_direction = -1
    elif explore_offset_m <= -cfg.explore_amplitude_m:
        explore_direction = 1
    vx = explore_direction * cfg.explore_speed if cfg.excite_while_metric or not is_metric else 0.0
    if not is_metric:
        return Decision("exploring", (vx, 0.0, 0.0), explore_direction)
    if not cfg.excite_while_metric:  # bring the sideways offset back to zero
        vx = float(np.clip(-cfg.gain * explore_offset_m, -cfg.explore_speed, cfg.explore_speed))
    error = depth_m - cfg.standoff_m
    if abs(error) <= cfg.tolerance_m:
        return Decision("holding", (vx, 0.0, 0.0), explore_direction)
    vz = float(np.clip(cfg.gain * error, -cfg.max_speed, cfg.max_speed))
    return Decision("advancing" if error > 0 else "retracting", (vx, 0.0, vz), explore_direction)


class StandoffController(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        d = ControllerConfig()
        vals = {
            f.name: self.declare_parameter(
                f.name,
                getattr(d, f.name),
                ParameterDescriptor(description=PARAM_DOCS[f.name], read_only=True),
            ).value
            for f in fields(ControllerConfig)
        }
        self.cfg = ControllerConfig(**vals)
        self.cfg.validate()
        self.is_metric = False
        self.metric_scale = 1.0
        self.explore_offset_m = 0.0
        self.explore_direction = 1
        self.last_decision = Decision("stopped", (0.0, 0.0, 0.0), 1)
        self.last_stamp_ns: int | None = None
        self.last_frame_id = ""
        self.depth_received = 0
        self.bad_depth = 0
        self.watchdog_stops = 0
        self._stale = False
        qos = QoSProfile(depth=50)
        self.pub_cmd = self.create_publisher(TwistStamped, "cmd_twist", qos)
        self.pub_state = self.create_publisher(DiagnosticArray, "state", qos)
        self.create_subscription(Image, "depth/image", self._on_depth, qos)
        self.create_subscription(DepthAlignment, "depth/alignment", self._on_alignment, qos)
        self.create_timer(0.1, self._watchdog)
        c = self.cfg
        self.get_logger().info(
            f"ready: stand-off {c.standoff_m * 1e3:.1f} mm +- {c.tolerance_m * 1e3:.1f} mm, "
            f"max {c.max_speed * 1e3:.1f} mm/s, watchdog {c.stale_after_s:g} s"
        )

    def _on_alignment(self, msg: DepthAlignment) -> None:
        self.is_metric = bool(msg.is_metric)
        self.metric_scale = float(msg.metric_scale)

    def _age_s(self, stamp_ns: int) -> float:
        return (self.get_clock().now().nanoseconds - stamp_ns) / 1e9

    def _on_depth(self, msg: Image) -> None:
        self.depth_received += 1
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        try:
            if msg.encoding != "32FC1":
                raise ValueError(f"depth encoding {msg.encoding!r} is not 32FC1")
            depth = image_to_numpy(
                msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data
            )
            depth_m = window_depth(depth, self.cfg)
        except Exception as exc:  # noqa: BLE001 - bad input is counted and stops the robot, never the node
            self.bad_depth += 1
            self.get_logger().warning(f"bad depth image: {exc}", throttle_duration_sec=2.0)
            depth_m = math.nan
        if self.last_stamp_ns is not None and stamp_ns > self.last_stamp_ns:
            # the sideways offset follows the command that was in force since the previous depth image
            self.explore_offset_m += self.last_decision.linear[0] * (stamp_ns - self.last_stamp_ns) / 1e9
        self.last_stamp_ns = max(stamp_ns, self.last_stamp_ns or stamp_ns)
        self.last_frame_id = msg.header.frame_id
        age = self._age_s(stamp_ns)
        decision = decide(
            depth_m, self.is_metric, age, self.explore_offset_m, self.explore_direction, self.cfg
        )
        self.explore_direction = decision.explore_direction
        self.last_decision = decision
        self._stale = decision.mode == "stopped"
        self._publish(msg.header, decision, depth_m, age)

    def _watchdog(self) -> None:
        """Depth stopped coming: command zero once per stale episode (stamped with the last depth)."""
        if self.last_stamp_ns is None or self._stale:
            return
        age = self._age_s(self.last_stamp_ns)
        if age > self.cfg.stale_after_s:
            self._stale = True
            self.watchdog_stops += 1
            self.last_decision = Decision("stopped", (0.0, 0.0, 0.0), self.explore_direction)
            self.get_logger().warning(f"watchdog: depth is {age:.2f} s old, robot stopped")
            cmd = TwistStamped()
            cmd.header.frame_id = self.last_frame_id
            cmd.header.stamp.sec, cmd.header.stamp.nanosec = divmod(self.last_stamp_ns, 1_000_000_000)
            self.pub_cmd.publish(cmd)

    def _publish(self, header, decision: Decision, depth_m: float, age_s: float) -> None:
        cmd = TwistStamped(header=header)
        cmd.twist.linear.x, cmd.twist.linear.y, cmd.twist.linear.z = decision.linear
        self.pub_cmd.publish(cmd)
        values = {
            "mode": decision.mode,
            "window_depth": f"{depth_m:.6g}",
            "is_metric": str(self.is_metric).lower(),
            "metric_scale": f"{self.metric_scale:.6g}",
            "cmd_vx": f"{decision.linear[0]:.6g}",
            "cmd_vz": f"{decision.linear[2]:.6g}",
            "depth_age_s": f"{age_s:.4f}",
            "explore_offset_m": f"{self.explore_offset_m:.6g}",
            "depth_received": str(self.depth_received),
            "bad_depth": str(self.bad_depth),
            "watchdog_stops": str(self.watchdog_stops),
        }
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: {decision.mode}", message=decision.mode
        )
        status.level = DiagnosticStatus.OK if decision.mode != "stopped" else DiagnosticStatus.WARN
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self.pub_state.publish(DiagnosticArray(header=header, status=[status]))

    def publish_diagnostics(self) -> None:
        """Final state at shutdown (run_node calls it): nothing to add beyond ``state``."""


def main(argv: list[str] | None = None) -> int:
    return run_node(StandoffController, NODE_NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
