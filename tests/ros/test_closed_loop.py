"""The closed loop in simulation: the controller's law, the simulated endoscope's motion and guard, the
launch file, and the loop itself (three node processes over real DDS with the shipped model)."""

from __future__ import annotations

import ast
import math
import re

import numpy as np
import pytest

from endo_depth_ros.sim.standoff_controller import (
    ControllerConfig,
    GuardState,
    check_plausibility,
    decide,
    window_depth,
)

from .node_harness import ROOT

pytestmark = pytest.mark.ros

CFG = ControllerConfig(standoff_m=0.015, tolerance_m=0.002, gain=0.8, max_speed=0.004, explore_speed=0.003)
AXIS = np.array([0.0, 0.0, 1.0])  # optical axis of the unit tests' robot: world z
RATE_HZ = 15.0


# ---- the control law (pure) ------------------------------------------------------------------------


def test_stale_or_missing_depth_stops_the_robot():
    for depth, age in ((0.03, CFG.stale_after_s + 0.01), (math.nan, 0.1), (0.03, math.nan)):
        d = decide(depth, True, age, 0.0, 1, CFG)
        assert d.mode == "stopped" and d.linear == (0.0, 0.0, 0.0)


def test_before_the_scale_is_metric_it_only_moves_sideways_within_the_amplitude():
    d = decide(0.001, False, 0.1, 0.0, 1, CFG)  # relative depth says "very close": ignored, not trusted
    assert d.mode == "exploring" and d.linear[2] == 0.0 and d.linear[0] == pytest.approx(CFG.explore_speed)
    flipped = decide(0.05, False, 0.1, CFG.explore_amplitude_m, 1, CFG)
    assert flipped.linear[0] == pytest.approx(-CFG.explore_speed) and flipped.explore_direction == -1
    back = decide(0.05, False, 0.1, -CFG.explore_amplitude_m, -1, CFG)
    assert back.linear[0] > 0 and back.explore_direction == 1


@pytest.mark.parametrize(
    ("depth_m", "mode", "vz"),
    [
        (0.016, "holding", 0.0),  # within the tolerance
        (0.014, "holding", 0.0),
        (0.019, "advancing", 0.8 * 0.004),  # proportional
        (0.050, "advancing", 0.004),  # clamped to max_speed
        (0.012, "retracting", -0.8 * 0.003),
        (0.002, "retracting", -0.004),
    ],
)
def test_metric_depth_advances_holds_or_retracts_around_the_standoff(depth_m, mode, vz):
    d = decide(depth_m, True, 0.2, 0.0, 1, CFG, position=np.zeros(3), axis=AXIS)
    assert d.mode == mode
    assert d.linear[2] == pytest.approx(vz, abs=1e-12)
    assert abs(d.linear[0]) <= CFG.explore_speed and d.linear[1] == 0.0


def test_without_excitation_the_sideways_offset_is_brought_back():
    cfg = ControllerConfig(excite_while_metric=False)
    d = decide(0.015, True, 0.2, 0.001, 1, cfg)
    assert d.mode == "holding" and d.linear[0] < 0


# ---- the plausibility guard (pure) -----------------------------------------------------------------


def drive(depth_of_z, n_frames: int, cfg: ControllerConfig = CFG, scale_of_k=lambda k: 1.0):
    """Close the loop on the pure law: a robot on the optical axis (world z) that moves as commanded for
    one frame, and a depth sensor ``depth_of_z`` (m). Returns per frame (z, decision)."""
    z, guard, out = 0.0, None, []
    for k in range(n_frames):
        d = decide(
            depth_of_z(z),
            True,
            0.1,
            0.0,
            1,
            cfg,
            guard=guard,
            position=np.array([0.0, 0.0, z]),
            axis=AXIS,
            metric_scale=scale_of_k(k),
        )
        out.append((z, d))
        guard, z = d.guard, z + d.linear[2] / RATE_HZ
    return out


def test_guard_lets_the_robot_advance_while_the_depth_follows_the_motion():
    # the depth falls by half the travel (oblique walls: the GT window median falls 0.25-1.2 x the travel)
    run = drive(lambda z: 0.040 - 0.5 * z, 250)
    modes = [d.mode for _, d in run]
    assert "implausible" not in modes and modes.count("advancing") > 100
    assert run[-1][1].guard.checks_passed >= 5 and run[-1][1].guard.checks_failed == 0
    assert run[-1][1].mode == "holding" and abs(0.040 - 0.5 * run[-1][0] - CFG.standoff_m) <= CFG.tolerance_m


def test_guard_stops_the_advance_when_the_depth_stays_flat_and_never_advances_while_implausible():
    run = drive(lambda z: 0.030, 150)  # the depth says 30 mm whatever the robot does
    first = next(i for i, (_, d) in enumerate(run) if d.mode == "implausible")
    z_detect = run[first][0]
    step = CFG.max_speed / RATE_HZ
    lag = (CFG.smooth_frames // 2 + 1) * step  # the medians of the last samples trail the robot
    assert CFG.check_travel_m <= z_detect <= CFG.check_travel_m + lag
    assert all(d.mode == "advancing" and d.linear[2] > 0 for _, d in run[1:first])
    after = run[first:]
    assert all(d.mode == "implausible" and d.linear[2] <= 0 for _, d in after)  # never advances again
    assert max(z for z, _ in after) == pytest.approx(z_detect)
    # it retracted implausible_retract_m (then holds: zero forward speed)
    assert z_detect - after[-1][0] >= CFG.implausible_retract_m and after[-1][1].linear[2] == 0.0
    assert "response" in after[0][1].reason and after[-1][1].guard.checks_failed == 1


def test_guard_clears_when_the_depth_follows_the_retraction_or_the_scale_is_re_estimated():
    cfg = ControllerConfig(smooth_frames=1)
    g = GuardState()
    for z in np.arange(0.0, 0.0065, 0.0005):  # flat depth over 6.5 mm of travel: implausible
        g = check_plausibility(g, 0.030, np.array([0.0, 0.0, z]), AXIS, 1.0, cfg)
    assert g.implausible and g.checks_failed == 1
    back = np.array([0.0, 0.0, g.detect_position[2] - cfg.implausible_retract_m])
    weak = cfg.min_depth_response * cfg.implausible_retract_m / 2
    assert check_plausibility(g, 0.030 + weak, back, AXIS, 1.0, cfg).implausible  # too little rise
    partway = back + np.array([0.0, 0.0, cfg.implausible_retract_m / 2])
    assert check_plausibility(g, 0.031, partway, AXIS, 1.0, cfg).implausible  # not retracted far enough
    cleared = check_plausibility(g, 0.030 + 0.5 * cfg.implausible_retract_m, back, AXIS, 1.0, cfg)
    assert not cleared.implausible and cleared.ref_position == tuple(back)
    rescaled = 1.0 + cfg.rearm_scale_change + 0.01
    assert not check_plausibility(g, 0.030, back, AXIS, rescaled, cfg).implausible
    # back to relative depth (the node re-anchored): exploring, and the guard starts over
    d = decide(0.03, False, 0.1, 0.0, 1, cfg, guard=g, position=back, axis=AXIS)
    assert d.mode == "exploring" and not d.guard.implausible and d.guard.checks_failed == 1


def test_guard_caps_the_forward_motion_without_a_passed_check():
    cfg = ControllerConfig(smooth_frames=1, check_travel_m=0.006, max_unverified_advance_m=0.010)
    g = GuardState()
    # forward 5 mm, back 4.5 mm, forward 5.1 mm: never 6 mm ahead of the start, 10.1 mm of advance in all
    path = [0.0, 0.001, 0.003, 0.005, 0.0035, 0.002, 0.0005, 0.002, 0.004, 0.0056]
    for z in path:
        assert not g.implausible
        g = check_plausibility(g, 0.030, np.array([0.0, 0.0, z]), AXIS, 1.0, cfg)
    assert g.implausible and "without a passed check" in g.reason


def test_without_a_measured_pose_the_controller_does_not_advance():
    d = decide(0.050, True, 0.1, 0.0, 1, CFG)
    assert d.mode == "implausible" and d.linear[2] == 0.0 and d.reason == "no measured pose"
    assert decide(0.005, True, 0.1, 0.0, 1, CFG).linear[2] < 0  # retracting needs no check
    off = ControllerConfig(plausibility_check=False)
    assert decide(0.050, True, 0.1, 0.0, 1, off).mode == "advancing"
    with pytest.raises(ValueError, match="max_unverified_advance_m"):
        ControllerConfig(check_travel_m=0.01, max_unverified_advance_m=0.005).validate()


def test_window_depth_is_the_median_of_the_central_window_and_nan_when_mostly_invalid():
    depth = np.full((30, 30), 0.5, np.float32)
    depth[10:20, 10:20] = np.linspace(0.01, 0.03, 100).reshape(10, 10)
    assert window_depth(depth, CFG) == pytest.approx(0.02, abs=2e-4)
    depth[10:20, 10:20] = np.nan
    assert math.isnan(window_depth(depth, CFG))


def test_window_depth_ignores_pixels_of_low_confidence():
    depth = np.full((30, 30), 0.02, np.float32)
    depth[10:15, 10:20] = 0.001  # a specular blob read as very near
    confidence = np.ones_like(depth)
    confidence[10:15, 10:20] = 0.05
    assert window_depth(depth, CFG) < 0.02  # the median is pulled by the blob
    assert window_depth(depth, CFG, confidence) == pytest.approx(0.02)
    no = ControllerConfig(**{**CFG.__dict__, "min_confidence": 0.0})
    assert window_depth(depth, no, confidence) == window_depth(depth, no)  # 0: confidence not used
    assert math.isnan(window_depth(depth, CFG, np.zeros_like(depth)))  # nothing trusted: no depth
    with pytest.raises(ValueError, match="differ in size"):
        window_depth(depth, CFG, confidence[:10])


def test_integration_guide_lists_every_controller_parameter_and_mode():
    from dataclasses import fields

    from endo_depth_ros.sim.standoff_controller import MODES, PARAM_DOCS

    text = (ROOT / "docs" / "integration.md").read_text()
    listed = text[text.index("`standoff_controller` —") :].split("(descriptions")[0]
    documented = set(re.findall(r"`(\w+)`", listed)) - {"standoff_controller"}
    assert documented == set(PARAM_DOCS) == {f.name for f in fields(ControllerConfig)}
    state_row = next(line for line in text.splitlines() if line.startswith("| standoff_controller | `state`"))
    assert all(mode in state_row for mode in MODES)


# ---- the simulated endoscope ----------------------------------------------------------------------


def test_twist_integration_moves_in_the_camera_frame():
    from endo_depth_ros.sim.sim_endoscope import integrate_twist, step_towards

    T = np.eye(4)
    T[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]  # camera z = world x
    moved = integrate_twist(T, [0, 0, 0.01], [0, 0, 0], 0.5)
    np.testing.assert_allclose(moved[:3, 3], [0.005, 0, 0], atol=1e-12)
    turned = integrate_twist(T, [0, 0, 0], [0, 0, math.pi / 2], 1.0)
    np.testing.assert_allclose(turned[:3, :3] @ turned[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(turned[:3, 0], T[:3, 1], atol=1e-12)  # roll by 90 deg: x -> old y
    target = T.copy()
    target[:3, 3] = [0.01, 0, 0]
    step = step_towards(T, target, 0.002, 0.1)
    assert np.linalg.norm(step[:3, 3]) == pytest.approx(0.002)


@pytest.fixture
def sim_node():
    """The simulated endoscope node in this process (its own context; stepped by hand, no spinning)."""
    import rclpy
    from rclpy.context import Context

    from endo_depth_ros.sim.sim_endoscope import SimEndoscope

    context = Context()
    rclpy.init(context=context)
    node = SimEndoscope(context=context)
    node.frame_index = 1
    yield node
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_sim_guard_refuses_steps_into_tissue_and_counts_them(sim_node):
    node, p = sim_node, sim_node.params
    node._twist = (np.array([0.0, 0.0, p.max_speed]), np.zeros(3), math.inf)  # never expires
    for _ in range(200):  # 200 steps of max speed straight ahead: far more than the distance to tissue
        node._move(1.0 / p.rate_hz)
        assert node.sim.wall_distance(node.T_world_cam[:3, 3]) >= p.guard_clearance_m
    assert node.guard_stops > 0
    axis, window_min = node.window_distances()
    assert axis < 0.01 and window_min < 0.01  # it did get close: only the guard stopped it


def test_sim_follows_a_target_pose_at_bounded_speed_and_rejects_bad_commands(sim_node):
    from geometry_msgs.msg import PoseStamped, TwistStamped

    from endo_depth_ros.conversions import matrix_to_pose

    node, p = sim_node, sim_node.params
    start = node.T_world_cam.copy()
    target = start.copy()
    target[:3, 3] += 0.004 * start[:3, 2] + 0.001 * start[:3, 0]  # 4 mm ahead, 1 mm right
    msg = PoseStamped(pose=matrix_to_pose(target))
    msg.header.frame_id = p.world_frame
    node._on_target(msg)
    dt = 1.0 / p.rate_hz
    previous = start
    for _ in range(60):
        node._move(dt)
        assert np.linalg.norm(node.T_world_cam[:3, 3] - previous[:3, 3]) <= p.max_speed * dt + 1e-12
        previous = node.T_world_cam.copy()
    np.testing.assert_allclose(node.T_world_cam, target, atol=1e-9)
    bad = TwistStamped()
    bad.header.frame_id = "some_other_frame"
    bad.twist.linear.z = 0.01
    node._on_twist(bad)
    nan = TwistStamped()
    nan.twist.linear.x = math.nan
    node._on_twist(nan)
    assert node.rejected_commands == 2
    node._move(dt)
    np.testing.assert_allclose(node.T_world_cam, target, atol=1e-9)  # the target still holds


# ---- launch file -----------------------------------------------------------------------------------


def test_closed_loop_launch_starts_the_three_installed_nodes_and_uses_its_arguments():
    source = (ROOT / "launch" / "closed_loop.launch.py").read_text()
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    name = lambda c: getattr(c.func, "id", getattr(c.func, "attr", None))  # noqa: E731
    declared = {ast.literal_eval(c.args[0]) for c in calls if name(c) == "DeclareLaunchArgument"}
    used = {ast.literal_eval(c.args[0]) for c in calls if name(c) == "LaunchConfiguration"}
    assert {"standoff_m", "rate_hz", "seed"} <= declared and used == declared
    executables = {
        line.split()[0]
        for line in (ROOT / "executables.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    nodes = [c for c in calls if name(c) == "Node"]
    started = {ast.literal_eval(next(k.value for k in c.keywords if k.arg == "executable")) for c in nodes}
    assert started == {"sim_endoscope", "depth_node", "standoff_controller"} and started <= executables


# ---- the loop over real DDS ------------------------------------------------------------------------

# Measured with this test's settings (`endo-depth loop --duration 5 --height 72 --width 96 --margin-mm 5`:
# seed 1, shipped model (pretrained_v20 since session 16) at 56x70, photometric kinematic scale over 30
# pairs), seeds 0-5 on 2 shared cores: kinematic scale / truth at the end (median over the last 2 s) with the
# default temporal_filter 1.19, 1.10, 1.14, 0.99, 1.03, 1.08 (benchmarks/results/closed_loop_v20s16.json; the
# margin kept on every seed). pretrained_v17: 1.10, 1.19, 1.08, 0.91, 1.01, 1.07 (closed_loop_v17s14.json).
# pretrained_v11: 1.45, 1.07, 1.11, 0.94, 1.07, 1.03 (closed_loop_v11s13.json).
# pretrained_v10: 1.35, 1.24, 1.18, 0.96, 1.04, 1.12 (closed_loop_v10f.json; after
# the session-12 engine changes 1.35, 1.10, 1.09, 0.96, 1.08, 1.09, closed_loop_v10s12.json; without the
# filter 1.29, 1.18, 1.17, 0.94, 1.06, 1.11, closed_loop_v10.json; pretrained_v9b: 1.84, 1.03, 1.20, 1.06,
# 1.14, 0.93, where seed 0's causal window depth jumped 2.5x at 14 mm from the dome; pretrained_v7: 1.10,
# 1.13, 1.24, 0.91, 1.09, 1.29). The truth is median(GT / relative depth) in the central window.
FINAL_SCALE_RATIO_BOUNDS = (0.75, 1.33)
SCALE_RATIO_ENVELOPE = (0.6, 1.6)
MARGIN_M = 0.005


def run_short_loop(out, *extra):
    """`endo-depth loop` with the tests' settings (5 simulated s at 96x72, 5 mm margin) -> summary."""
    from endo_depth_model.cli import build_parser
    from endo_depth_ros.cli import ROS_COMMANDS
    from endo_depth_ros.tools.closed_loop import run_loop

    argv = ["loop", "--duration", "5", "--height", "72", "--width", "96", "--margin-mm", "5", *extra]
    return run_loop(build_parser(ROS_COMMANDS).parse_args([*argv, "--out", str(out), "--timeout", "240"]))


def assert_never_advanced_while_implausible(series: list[dict]) -> None:
    implausible = [r for r in series if r["mode"] == "implausible"]
    assert all(r["cmd_vz_m_s"] <= 0.0 for r in implausible), [r["cmd_vz_m_s"] for r in implausible]


def test_closed_loop_keeps_the_margin_converges_the_scale_and_loses_nothing(tmp_path):
    import json

    out = tmp_path / "loop"
    s = run_short_loop(out)

    # nothing lost: every image the simulator published reached the node and gave one depth image (same
    # stamps), and every depth image reached the controller (one state per depth stamp)
    assert s["frames_published"] == s["images_seen"] == s["depth_images"] == s["controller_states"] == 75
    assert s["depth_missing"] == s["depth_unmatched"] == s["controller_missing"] == 0
    assert s["depth_rejected"] == s["depth_dropped"] == s["depth_errors"] == 0
    assert s["lossless"] and s["lockstep_timeouts"] == 0
    # safety: the ground-truth distance in the window never fell below the margin, without the simulator's
    # collision guard
    assert s["min_gt_window_distance_m"] >= MARGIN_M and s["margin_kept"]
    assert s["guard_stops"] == 0
    # the loop did something: the scale became metric and the controller advanced towards the tissue (at
    # least 4 mm; where it ends depends on the plausibility guard, which on this seed stops the advance once
    # the metric depth rises while the scale estimate settles: see docs/integration.md)
    assert s["metric_after_s"] < 2.0
    assert s["modes"].get("advancing", 0) > 0
    report = json.loads((out / "report.json").read_text())
    assert max(r["z_start_m"] for r in report["series"]) > 0.004
    assert min(r["gt_window_median_m"] for r in report["series"]) < s["start_distance_m"] - 0.002
    lo, hi = FINAL_SCALE_RATIO_BOUNDS
    assert lo <= s["final_scale_ratio"] <= hi, s["final_scale_ratio"]
    ratios = [
        r["applied_scale"] / r["scale_truth"]
        for r in report["series"]
        if r["is_metric"] and r["t_s"] >= 3.0 and math.isfinite(r["scale_truth"])
    ]
    assert len(ratios) > 20
    assert SCALE_RATIO_ENVELOPE[0] <= min(ratios) and max(ratios) <= SCALE_RATIO_ENVELOPE[1], (
        min(ratios),
        max(ratios),
    )
    # the report: plots, series with one row per frame
    assert len(report["series"]) == 75 and (out / "report.png").stat().st_size > 10_000
    assert (out / "series.csv").read_text().count("\n") == 76
    # the plausibility guard ran on measured_cp (its counters reached the state) and, where it stopped
    # trusting the depth, never commanded an advance
    assert s["checks_passed"] >= 0 and s["checks_failed"] >= 0
    # the controller used the node's confidence map of the same stamp for most depth images
    assert s["depth_with_confidence"] >= 60, s["depth_with_confidence"]
    assert (s["implausible_episodes"] > 0) == ("implausible" in s["modes"])
    assert_never_advanced_while_implausible(report["series"])


# A hung frame grabber (the simulator's fault injection `freeze_image_after_s`): from 2 s on the simulator
# resends its last image while the camera keeps moving. The depth node finds each image byte-identical to
# the one before, counts it (`frozen_frames`) and publishes its depth with confidence 0, so the controller
# has no valid window depth and stops. Measured on seed 1 with these settings for 6 simulated s
# (`--duration 6`): advancing until 2.0 s, the first frozen image's depth stops it at frame 31 (2.07 s),
# 4.3 mm travelled in all, closest 14.5 mm.
# (Before the node checked for frozen input, the plausibility guard caught this only after 6.4-12.5 mm of
# advance, and on seed 0 with the freeze at 1.2 s the camera came within 2.6 mm: docs/integration.md.)
def test_closed_loop_stops_when_the_image_freezes(tmp_path):
    import json

    out = tmp_path / "loop"
    s = run_short_loop(out, "--freeze-image-after-s", "2.0")
    assert s["lossless"] and s["lockstep_timeouts"] == 0
    assert s["min_gt_window_distance_m"] >= MARGIN_M and s["margin_kept"] and s["guard_stops"] == 0
    series = json.loads((out / "report.json").read_text())["series"]
    assert_never_advanced_while_implausible(series)
    before = [r for r in series if r["t_s"] < 2.0]
    after = [r for r in series if r["t_s"] >= 2.0 + 0.1]  # the first frozen image and everything after it
    # it was advancing before the freeze, and from the first frozen image on it never commands forward
    assert any(r["mode"] == "advancing" and r["cmd_vz_m_s"] > 0 for r in before)
    assert after and all(r["mode"] == "stopped" and r["cmd_vz_m_s"] <= 0.0 for r in after)
    # the camera comes to rest (the commands in flight at the freeze end within a few frames)
    z = [r["z_start_m"] for r in after]
    assert max(z) - z[len(z) // 2] < 1e-4 and max(z) - min(z) < 0.002
