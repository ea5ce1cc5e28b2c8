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
- ``implausible``: the depth does not follow the robot's motion (the plausibility guard,
  :func:`check_plausibility`). While the depth is metric the controller compares the forward travel
  the robot measured (``measured_cp``, along the optical axis) with the fall of the window depth: after
  ``check_travel_m`` of travel the depth must have fallen by ``min_depth_response`` × travel, and the
  robot may not advance more than ``max_unverified_advance_m`` without a passed check; without a
  measured pose it cannot check and does not advance. In this mode the controller never advances: it
  retracts ``implausible_retract_m``, then holds, until the depth rises with the retraction (by
  ``min_depth_response`` × the retraction) or the scale is re-estimated (``metric_scale`` changed by
  ``rearm_scale_change``, or the depth stopped being metric).

Each command (``cmd_twist``, ``geometry_msgs/TwistStamped`` in the camera frame) is stamped with the
depth image it answers, and ``state`` (``diagnostic_msgs/DiagnosticArray``, same stamp) says why. Topics
and parameters: docs/integration.md.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from dataclasses import dataclass, field, fields, replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from endo_depth_model.image_encoding import image_to_numpy
from endo_depth_ros import conversions as conv
from endo_depth_ros.msg import DepthAlignment
from endo_depth_ros.node_runner import declare_dataclass_parameters, run_node
from endo_depth_ros.sim.sim_endoscope import central_window

NODE_NAME = "standoff_controller"
MODES = ("stopped", "exploring", "advancing", "holding", "retracting", "implausible")


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
    plausibility_check: bool = True  # the guard: advance only while the depth follows the motion
    check_travel_m: float = 0.006  # forward travel (measured_cp) after which the depth must have fallen
    min_depth_response: float = 0.1  # required fall of the window depth per metre of forward travel
    max_unverified_advance_m: float = 0.01  # forward motion (retractions not deducted) without a pass
    implausible_retract_m: float = 0.003  # retraction after a failed check, then hold
    rearm_scale_change: float = 0.25  # relative change of metric_scale that counts as re-estimated
    smooth_frames: int = 5  # the guard compares medians of this many recent (position, depth) samples
    pose_tolerance_s: float = 0.05  # measured_cp must be this close to the depth image's stamp
    min_confidence: float = 0.2  # window pixels below this depth/confidence are ignored (0: use every pixel)

    def validate(self) -> None:
        unsigned = ("tolerance_m", "excite_while_metric", "plausibility_check", "min_confidence")
        problems = [
            f"{f.name} must be > 0, got {getattr(self, f.name)}"
            for f in fields(self)
            if f.name not in unsigned and not getattr(self, f.name) > 0
        ]
        if self.tolerance_m < 0:
            problems.append(f"tolerance_m must be >= 0, got {self.tolerance_m}")
        if not 0 <= self.min_confidence <= 1:
            problems.append(f"min_confidence must be in 0..1, got {self.min_confidence}")
        if not self.window_fraction <= 1 or not self.min_valid_fraction <= 1:
            problems.append("window_fraction and min_valid_fraction must be <= 1")
        if not self.max_unverified_advance_m >= self.check_travel_m:
            problems.append(
                f"max_unverified_advance_m ({self.max_unverified_advance_m}) must be >= check_travel_m "
                f"({self.check_travel_m})"
            )
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
    "plausibility_check": "advance only while the window depth follows the robot's measured motion",
    "check_travel_m": "forward travel (m, from measured_cp) after which the depth must have fallen",
    "min_depth_response": "required fall of the window depth per metre of forward travel (GT: 0.5-1)",
    "max_unverified_advance_m": "forward motion (m) allowed without a passed check, retractions not deducted",
    "implausible_retract_m": "retraction (m) after a failed check, then hold",
    "rearm_scale_change": "relative change of metric_scale after a failed check that re-arms the advance",
    "smooth_frames": "the guard compares medians of this many recent samples of position and window depth",
    "pose_tolerance_s": "largest stamp difference (s) between a depth image and the measured_cp used with it",
    "min_confidence": "ignore window pixels of depth/confidence (same stamp) below this; 0: all pixels",
}


@dataclass(frozen=True)
class GuardState:
    """What the plausibility guard carries from one depth image to the next. Positions are the camera
    centre in the robot's world frame (m, from ``measured_cp``); ``axis`` is the optical axis (unit) the
    travel is measured along."""

    ref_position: tuple[float, float, float] | None = None  # where the running check started
    ref_depth_m: float = math.nan  # window depth there
    axis: tuple[float, float, float] | None = None
    last_position: tuple[float, float, float] | None = None
    unverified_advance_m: float = 0.0  # forward motion since the last passed check (m)
    implausible: bool = False
    detect_position: tuple[float, float, float] | None = None  # where the depth failed the check
    detect_depth_m: float = math.nan
    detect_scale: float = math.nan  # metric_scale then
    response: float = math.nan  # last measured fall of the depth per metre of travel
    reason: str = ""  # why the guard is (or was last) implausible
    checks_passed: int = 0
    checks_failed: int = 0
    recent: tuple[tuple[float, float, float, float], ...] = ()  # last samples (x, y, z, depth)


def _rebased(g: GuardState, position: np.ndarray, axis: np.ndarray, depth_m: float, **changes) -> GuardState:
    """The guard with its check (re)started here."""
    pos, ax = tuple(float(v) for v in position), tuple(float(v) for v in axis)
    return replace(g, ref_position=pos, ref_depth_m=depth_m, axis=ax, last_position=pos, **changes)


def check_plausibility(
    g: GuardState,
    depth_m: float,
    position: np.ndarray | None,
    axis: np.ndarray | None,
    metric_scale: float,
    cfg: ControllerConfig,
) -> GuardState:
    """One step of the plausibility guard. ``depth_m``: metric window depth of this image; ``position``
    (3,) and ``axis`` (3,): the robot's measured camera centre (m) and optical axis at this image's stamp
    (None: no pose). Pure; returns the new state (``implausible`` says whether advancing is refused).
    Position and depth are the medians of the last ``smooth_frames`` samples (one-frame outliers of the
    window median, e.g. a fold entering the window, do not decide a check).

    Normal: the check starts at a reference (position, depth); the reference moves back with the robot
    when it retracts behind it. Once the forward travel from the reference along the axis reaches
    ``check_travel_m``, the depth must have fallen by ``min_depth_response`` × travel: pass (the check
    restarts here) or implausible. The forward motion since the last pass (retractions not deducted) may
    not exceed ``max_unverified_advance_m``. Implausible: cleared once the robot has retracted
    ``implausible_retract_m`` from where the check failed and the depth rose by ``min_depth_response`` ×
    the retraction, or when ``metric_scale`` changed by ``rearm_scale_change`` since the failure."""
    if position is None or axis is None or not math.isfinite(depth_m):
        return g
    ax = np.asarray(axis, float)
    recent = (*g.recent, (*(float(v) for v in position), float(depth_m)))[-cfg.smooth_frames :]
    g = replace(g, recent=recent)
    smoothed = np.median(np.asarray(recent), axis=0)  # robust to one-frame outliers of either input
    pos, depth_m = smoothed[:3], float(smoothed[3])
    if g.implausible:
        rescaled = g.detect_scale > 0 and abs(metric_scale / g.detect_scale - 1.0) >= cfg.rearm_scale_change
        retreat = float((np.asarray(g.detect_position) - pos) @ np.asarray(g.axis))
        if rescaled:
            return _rebased(g, pos, ax, depth_m, implausible=False, unverified_advance_m=0.0)
        if retreat >= cfg.implausible_retract_m:
            response = (depth_m - g.detect_depth_m) / retreat
            if response >= cfg.min_depth_response:
                return _rebased(
                    g, pos, ax, depth_m, implausible=False, unverified_advance_m=0.0, response=response
                )
            return replace(g, last_position=tuple(float(v) for v in pos), response=response)
        return replace(g, last_position=tuple(float(v) for v in pos))
    if g.ref_position is None:
        return _rebased(g, pos, ax, depth_m)
    ref_axis = np.asarray(g.axis)
    step = float((pos - np.asarray(g.last_position)) @ ref_axis)
    advance = g.unverified_advance_m + max(step, 0.0)
    travel = float((pos - np.asarray(g.ref_position)) @ ref_axis)
    if travel < 0:  # behind the reference: the check starts again from here
        return _rebased(g, pos, ax, depth_m, unverified_advance_m=advance)
    failed = ""
    g = replace(g, last_position=tuple(float(v) for v in pos), unverified_advance_m=advance)
    if travel >= cfg.check_travel_m:
        response = (g.ref_depth_m - depth_m) / travel
        if response >= cfg.min_depth_response:
            return _rebased(
                g,
                pos,
                ax,
                depth_m,
                unverified_advance_m=0.0,
                response=response,
                checks_passed=g.checks_passed + 1,
            )
        g = replace(g, response=response)
        failed = (
            f"window depth {g.ref_depth_m * 1e3:.1f} -> {depth_m * 1e3:.1f} mm over {travel * 1e3:.1f} mm "
            f"of forward travel (response {response:.2f} < {cfg.min_depth_response:g})"
        )
    elif advance >= cfg.max_unverified_advance_m:
        failed = f"advanced {advance * 1e3:.1f} mm without a passed check"
    if not failed:
        return g
    return replace(
        g,
        implausible=True,
        detect_position=tuple(float(v) for v in pos),
        detect_depth_m=depth_m,
        detect_scale=metric_scale,
        reason=failed,
        checks_failed=g.checks_failed + 1,
    )


@dataclass
class Decision:
    mode: str
    linear: tuple[float, float, float]  # m/s in the camera frame (x right, y down, z forward)
    explore_direction: int  # +1 / -1: the sideways direction of the next exploring step
    guard: GuardState = field(default_factory=GuardState)  # the plausibility guard after this image
    reason: str = ""  # why the mode is implausible


def _float_image(msg, what: str) -> np.ndarray:
    """A 32FC1 ``sensor_msgs/Image`` (depth or confidence) -> (H, W) float32; ValueError otherwise."""
    if msg.encoding != "32FC1":
        raise ValueError(f"{what} encoding {msg.encoding!r} is not 32FC1")
    return image_to_numpy(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


def window_depth(depth: np.ndarray, cfg: ControllerConfig, confidence: np.ndarray | None = None) -> float:
    """Median depth (m or relative) in the central window; NaN when too few pixels are valid. With a
    ``confidence`` map of the same size, pixels below ``min_confidence`` are not valid."""
    window = central_window(depth.shape, cfg.window_fraction)
    win = depth[window]
    valid = np.isfinite(win) & (win > 0)
    if confidence is not None and cfg.min_confidence > 0:
        if confidence.shape != depth.shape:
            raise ValueError(f"confidence {confidence.shape} and depth {depth.shape} differ in size")
        valid &= np.nan_to_num(confidence[window], nan=0.0) >= cfg.min_confidence
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
    *,
    guard: GuardState | None = None,
    position: np.ndarray | None = None,
    axis: np.ndarray | None = None,
    metric_scale: float = 1.0,
) -> Decision:
    """The control law: depth in the window (metres when ``is_metric``), its age, the sideways offset so
    far and, for the plausibility guard, its state and the robot's measured camera centre and optical
    axis at the depth's stamp (world, m; None when unknown) -> mode, twist and the guard's new state.
    Pure; see the module docstring for the modes."""
    guard = guard if guard is not None else GuardState()
    if not (age_s <= cfg.stale_after_s) or not math.isfinite(depth_m):
        return Decision("stopped", (0.0, 0.0, 0.0), explore_direction, guard)
    if explore_offset_m >= cfg.explore_amplitude_m:
        explore_direction = -1
    elif explore_offset_m <= -cfg.explore_amplitude_m:
        explore_direction = 1
    vx = explore_direction * cfg.explore_speed if cfg.excite_while_metric or not is_metric else 0.0
    if not is_metric:  # relative depth: nothing to check against the motion yet; the guard starts over
        fresh = GuardState(checks_passed=guard.checks_passed, checks_failed=guard.checks_failed)
        return Decision("exploring", (vx, 0.0, 0.0), explore_direction, fresh)
    if not cfg.excite_while_metric:  # bring the sideways offset back to zero
        vx = float(np.clip(-cfg.gain * explore_offset_m, -cfg.explore_speed, cfg.explore_speed))
    error = depth_m - cfg.standoff_m
    vz = (
        0.0
        if abs(error) <= cfg.tolerance_m
        else float(np.clip(cfg.gain * error, -cfg.max_speed, cfg.max_speed))
    )
    mode = "holding" if vz == 0.0 else "advancing" if vz > 0 else "retracting"
    if not cfg.plausibility_check:
        return Decision(mode, (vx, 0.0, vz), explore_direction, guard)
    if position is None or axis is None:  # nothing to check the depth against: never advance
        if vz > 0:
            return Decision("implausible", (vx, 0.0, 0.0), explore_direction, guard, "no measured pose")
        return Decision(mode, (vx, 0.0, vz), explore_direction, guard)
    guard = check_plausibility(guard, depth_m, position, axis, metric_scale, cfg)
    if not guard.implausible:
        return Decision(mode, (vx, 0.0, vz), explore_direction, guard)
    retreat = float(
        (np.asarray(guard.detect_position) - np.asarray(position, float)) @ np.asarray(guard.axis)
    )
    vz_guard = -cfg.max_speed if retreat < cfg.implausible_retract_m else 0.0
    return Decision("implausible", (vx, 0.0, min(vz, vz_guard)), explore_direction, guard, guard.reason)


class StandoffController(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.cfg = declare_dataclass_parameters(self, ControllerConfig, PARAM_DOCS)
        self.cfg.validate()
        self.is_metric = False
        self.metric_scale = 1.0
        self.explore_offset_m = 0.0
        self.explore_direction = 1
        self.last_decision = Decision("stopped", (0.0, 0.0, 0.0), 1)
        self.guard = GuardState()
        self.poses: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=300)  # stamp, centre, axis
        self.poses_received = 0
        self.bad_poses = 0
        self.implausible_episodes = 0
        self.last_stamp_ns: int | None = None
        self.last_frame_id = ""
        self.depth_received = 0
        self.bad_depth = 0
        self.depth_with_confidence = 0
        self._confidence: deque[tuple[int, np.ndarray]] = deque(maxlen=10)  # stamp, map
        self.watchdog_stops = 0
        self._stale = False
        qos = QoSProfile(depth=50)
        self.pub_cmd = self.create_publisher(TwistStamped, "cmd_twist", qos)
        self.pub_state = self.create_publisher(DiagnosticArray, "state", qos)
        if self.cfg.min_confidence > 0:
            # created before depth/image: when both are waiting, the executor takes the confidence first
            self.create_subscription(Image, "depth/confidence", self._on_confidence, qos)
        self.create_subscription(Image, "depth/image", self._on_depth, qos)
        self.create_subscription(DepthAlignment, "depth/alignment", self._on_alignment, qos)
        self.create_subscription(PoseStamped, "measured_cp", self._on_pose, qos)
        self.create_timer(0.1, self._watchdog)
        c = self.cfg
        self.get_logger().info(
            f"ready: stand-off {c.standoff_m * 1e3:.1f} mm +- {c.tolerance_m * 1e3:.1f} mm, "
            f"max {c.max_speed * 1e3:.1f} mm/s, watchdog {c.stale_after_s:g} s, plausibility check "
            + (
                f"every {c.check_travel_m * 1e3:.1f} mm (response >= {c.min_depth_response:g})"
                if c.plausibility_check
                else "off"
            )
        )

    def _on_confidence(self, msg: Image) -> None:
        """depth/confidence, kept by stamp for the depth image of the same stamp (the node sends it first)."""
        try:
            c = _float_image(msg, "confidence")
        except Exception as exc:  # noqa: BLE001 - bad input is counted, never fatal
            self.bad_depth += 1
            self.get_logger().warning(f"bad confidence image: {exc}", throttle_duration_sec=2.0)
            return
        self._confidence.append((conv.stamp_to_ns(msg.header.stamp), c))

    def _confidence_at(self, stamp_ns: int) -> np.ndarray | None:
        return next((c for s, c in reversed(self._confidence) if s == stamp_ns), None)

    def _on_alignment(self, msg: DepthAlignment) -> None:
        self.is_metric = bool(msg.is_metric)
        self.metric_scale = float(msg.metric_scale)

    def _on_pose(self, msg: PoseStamped) -> None:
        """The robot's measured camera pose (world frame, m): kept by stamp for the plausibility guard."""
        self.poses_received += 1
        T = conv.pose_to_matrix(msg.pose)
        if not np.all(np.isfinite(T)):
            self.bad_poses += 1
            self.get_logger().warning("bad measured_cp (non-finite), ignored", throttle_duration_sec=2.0)
            return
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        if self.poses and stamp_ns <= self.poses[-1][0]:
            self.poses.clear()  # time went back (a restarted simulation or replay): start over
        self.poses.append((stamp_ns, T[:3, 3].copy(), T[:3, 2].copy()))

    def _pose_at(self, stamp_ns: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Camera centre and optical axis measured closest to ``stamp_ns`` (within pose_tolerance_s)."""
        best = min(self.poses, key=lambda p: abs(p[0] - stamp_ns), default=None)
        if best is None or abs(best[0] - stamp_ns) > self.cfg.pose_tolerance_s * 1e9:
            return None, None
        return best[1], best[2]

    def _age_s(self, stamp_ns: int) -> float:
        return (self.get_clock().now().nanoseconds - stamp_ns) / 1e9

    def _on_depth(self, msg: Image) -> None:
        self.depth_received += 1
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        try:
            depth = _float_image(msg, "depth")
            confidence = self._confidence_at(stamp_ns)
            self.depth_with_confidence += confidence is not None
            depth_m = window_depth(depth, self.cfg, confidence)
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
        position, axis = self._pose_at(stamp_ns)
        decision = decide(
            depth_m,
            self.is_metric,
            age,
            self.explore_offset_m,
            self.explore_direction,
            self.cfg,
            guard=self.guard,
            position=position,
            axis=axis,
            metric_scale=self.metric_scale,
        )
        if decision.mode == "implausible" and self.last_decision.mode != "implausible":
            self.implausible_episodes += 1
            self.get_logger().warning(f"implausible depth, not advancing: {decision.reason}")
        elif self.last_decision.mode == "implausible" and decision.mode != "implausible":
            self.get_logger().info(f"depth plausible again ({decision.mode})")
        self.guard = decision.guard
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
            "depth_with_confidence": str(self.depth_with_confidence),
            "watchdog_stops": str(self.watchdog_stops),
            "reason": decision.reason,
            "depth_response": f"{self.guard.response:.4g}",
            "unverified_advance_m": f"{self.guard.unverified_advance_m:.6g}",
            "checks_passed": str(self.guard.checks_passed),
            "checks_failed": str(self.guard.checks_failed),
            "implausible_episodes": str(self.implausible_episodes),
            "poses_received": str(self.poses_received),
            "bad_poses": str(self.bad_poses),
        }
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: {decision.mode}",
            message=f"{decision.mode}: {decision.reason}" if decision.reason else decision.mode,
        )
        status.level = (
            DiagnosticStatus.OK if decision.mode not in ("stopped", "implausible") else DiagnosticStatus.WARN
        )
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self.pub_state.publish(DiagnosticArray(header=header, status=[status]))

    def shutdown(self) -> None:
        """Called by ``run_node`` at exit: every decision was already published on ``state``."""


def main(argv: list[str] | None = None) -> int:
    return run_node(StandoffController, NODE_NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
