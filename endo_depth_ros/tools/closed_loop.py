"""The closed loop in simulation, headless: simulated endoscope -> depth node -> stand-off controller.

``endo-depth loop`` starts the three nodes as their own processes (the same executables as
``launch/closed_loop.launch.py``), all on the simulator's clock, over real DDS. The simulator runs in
lockstep with the controller's commands, so the loop loses nothing however slow the machine is. An
observer node in this process records every message; when ``--duration`` simulated seconds have passed
and the last depth images are out, the nodes are stopped and the report is written to ``--out``:

- ``report.png``: trajectory, ground-truth distance to tissue over time (with stand-off and margin),
  our depth vs ground truth in the central window, the kinematic scale estimate vs truth;
- ``series.csv`` (one row per frame) and ``report.json`` (summary + series);
- a one-screen summary on stdout.

The scale truth of a frame is the factor that makes its relative depth metric in the central window,
``median(gt_depth / relative_depth)``, where relative depth is the published depth divided by the
``metric_scale`` the node applied (its ``DepthAlignment``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from endo_depth_model.pipeline import KINEMATIC_SOURCES, PipelineConfig

NS_SIM = "/endoscope"
NS_DEPTH = "/endo_depth"
NS_CONTROL = "/standoff"


class LoopError(RuntimeError):
    pass


def node_commands(args) -> dict[str, list[str]]:
    """Command lines of the three nodes (python -m ..., --ros-args) for the loop's settings."""
    from endo_depth_ros import ros_env

    py = [sys.executable, "-m"]

    def params(d: dict) -> list[str]:
        out = []
        for k, v in d.items():
            v = ("true" if v else "false") if isinstance(v, bool) else v
            out += ["-p", f"{k}:={v}"]
        return out

    sim = {
        "preset": args.preset,
        "seed": args.seed,
        "height": args.height,
        "width": args.width,
        "rate_hz": float(args.rate),
        "duration_s": float(args.duration),
        "real_time_factor": float(args.real_time_factor),
        "lockstep_max_lag": args.lockstep_max_lag,
        "min_subscribers": 2,  # the depth node and this observer
        "window_fraction": float(args.window_fraction),
        "freeze_image_after_s": float(args.freeze_image_after_s),
    }
    depth = {
        "use_sim_time": True,
        "input_height": args.input_height,
        "input_width": args.input_width,
        "window": 8,
        "overlap": 4,
        "stride": 2,
        "blend": 2,
        "torch_threads": args.torch_threads,
        "scale_mode": "kinematic",
        "kinematic_window": args.kinematic_window,
        "kinematic_min_pairs": args.kinematic_min_pairs,
        "qos": "reliable",
        "queue_size": 64,
        "queue_policy": "drop_newest",
        "publish_points": False,
        "publish_colored": False,
        "publish_tf": False,
        "flush_after_s": 1.0,
    }
    if args.weights:
        depth["model.weights"] = args.weights
    if args.pose_weights:
        depth["model.pose_weights"] = args.pose_weights
    depth["kinematic_source"] = args.kinematic_source
    control = {
        "use_sim_time": True,
        "standoff_m": args.standoff_mm / 1000.0,
        "tolerance_m": args.tolerance_mm / 1000.0,
        "max_speed": args.max_speed_mm_s / 1000.0,
        "window_fraction": float(args.window_fraction),
        "plausibility_check": not args.no_plausibility_check,
    }
    return {
        "sim_endoscope": [*py, "endo_depth_ros.sim.sim_endoscope", "--ros-args", "-r", f"__ns:={NS_SIM}"]
        + params(sim),
        "depth_node": [
            *py,
            "endo_depth_ros.depth_node",
            "--ros-args",
            "-r",
            f"__ns:={NS_DEPTH}",
            "--params-file",
            str(ros_env.config_path("depth.yaml")),
            "-r",
            f"image:={NS_SIM}/image",
            "-r",
            f"camera_info:={NS_SIM}/camera_info",
            "-r",
            f"robot_pose:={NS_SIM}/measured_cp",
        ]
        + params(depth),
        "standoff_controller": [
            *py,
            "endo_depth_ros.sim.standoff_controller",
            "--ros-args",
            "-r",
            f"__ns:={NS_CONTROL}",
            "-r",
            f"depth/image:={NS_DEPTH}/depth/image",
            "-r",
            f"depth/alignment:={NS_DEPTH}/depth/alignment",
            "-r",
            f"depth/confidence:={NS_DEPTH}/depth/confidence",
            "-r",
            f"measured_cp:={NS_SIM}/measured_cp",
            "-r",
            f"cmd_twist:={NS_SIM}/cmd_twist",
        ]
        + params(control),
    }


class Observer:
    """A node in this process (own rclpy context) that records what the loop's nodes publish."""

    def __init__(self, window_fraction: float):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image, Range

        from endo_depth_ros.msg import DepthAlignment

        self.window_fraction = window_fraction
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("closed_loop_observer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.images: list[int] = []
        self.depth: dict[int, np.ndarray] = {}  # stamp -> central window of the published depth
        self.gt_depth: dict[int, np.ndarray] = {}
        self.gt_pose: dict[int, np.ndarray] = {}
        self.ranges: dict[str, dict[int, float]] = defaultdict(dict)
        self.alignment: list[tuple[int, float, bool]] = []
        self.states: dict[int, dict[str, str]] = {}
        self.commands: list[int] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        qos = QoSProfile(depth=1000)
        sub = self.node.create_subscription
        sub(Image, f"{NS_SIM}/image", lambda m: self.images.append(self._stamp(m)), qos)
        sub(Image, f"{NS_SIM}/ground_truth/depth", lambda m: self._window(m, self.gt_depth), qos)
        sub(Image, f"{NS_DEPTH}/depth/image", lambda m: self._window(m, self.depth), qos)
        sub(PoseStamped, f"{NS_SIM}/ground_truth/pose", self._on_pose, qos)
        for name in ("axis_distance", "window_distance"):
            sub(Range, f"{NS_SIM}/ground_truth/{name}", lambda m, n=name: self._on_range(n, m), qos)
        sub(DepthAlignment, f"{NS_DEPTH}/depth/alignment", self._on_alignment, qos)
        sub(DiagnosticArray, f"{NS_CONTROL}/state", self._on_state, qos)
        sub(TwistStamped, f"{NS_SIM}/cmd_twist", lambda m: self.commands.append(self._stamp(m)), qos)
        sub(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    @staticmethod
    def _stamp(msg) -> int:
        return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _window(self, msg, store: dict) -> None:
        from endo_depth_model.image_encoding import image_to_numpy
        from endo_depth_ros.sim.sim_endoscope import central_window

        depth = image_to_numpy(
            msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data
        )
        store[self._stamp(msg)] = np.array(depth[central_window(depth.shape, self.window_fraction)])

    def _on_pose(self, msg) -> None:
        from endo_depth_ros.conversions import pose_to_matrix

        self.gt_pose[self._stamp(msg)] = pose_to_matrix(msg.pose)

    def _on_range(self, name: str, msg) -> None:
        self.ranges[name][self._stamp(msg)] = float(msg.range)

    def _on_alignment(self, msg) -> None:
        self.alignment.append((self._stamp(msg), float(msg.metric_scale), bool(msg.is_metric)))

    def _on_state(self, msg) -> None:
        self.states[self._stamp(msg)] = {kv.key: kv.value for kv in msg.status[0].values}

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            name = status.name.split(":")[0].rsplit("/", 1)[-1]
            self.diagnostics[name] = {kv.key: kv.value for kv in status.values}

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def analyse(obs: Observer, args) -> tuple[dict, list[dict]]:
    """Per-frame series and the summary (safety, tracking, depth accuracy, scale, completeness)."""
    t0 = min(obs.images) if obs.images else 0
    start = obs.gt_pose.get(t0)
    align = sorted(obs.alignment)
    align_stamps = [a[0] for a in align]
    rows = []
    for stamp in sorted(obs.images):
        gt = obs.gt_depth.get(stamp)
        pred = obs.depth.get(stamp)
        state = obs.states.get(stamp, {})
        row = {
            "t_s": (stamp - t0) / 1e9,
            "stamp_ns": stamp,
            "gt_axis_m": obs.ranges["axis_distance"].get(stamp, math.nan),
            "gt_window_min_m": obs.ranges["window_distance"].get(stamp, math.nan),
            "gt_window_median_m": float(np.nanmedian(gt))
            if gt is not None and np.isfinite(gt).any()
            else math.nan,
            "depth_window_median": math.nan,
            "applied_scale": math.nan,
            "is_metric": False,
            "scale_truth": math.nan,
            "mode": state.get("mode", ""),
            "cmd_vx_m_s": float(state.get("cmd_vx", "nan")),
            "cmd_vz_m_s": float(state.get("cmd_vz", "nan")),
        }
        pose = obs.gt_pose.get(stamp)
        row["x_m"], row["y_m"], row["z_m"] = (
            float(v) for v in (pose[:3, 3] if pose is not None else [math.nan] * 3)
        )
        # the same position in the start camera's frame: sideways (x) and along the first view (z)
        rel = (
            (np.linalg.inv(start) @ pose)[:3, 3] if pose is not None and start is not None else [math.nan] * 3
        )
        row["x_start_m"], row["z_start_m"] = float(rel[0]), float(rel[2])
        if pred is not None:
            ok = np.isfinite(pred) & (pred > 0)
            row["depth_window_median"] = float(np.median(pred[ok])) if ok.any() else math.nan
            i = int(np.searchsorted(align_stamps, stamp, side="right")) - 1
            if i >= 0:
                scale, metric = align[i][1], align[i][2]
                row["applied_scale"], row["is_metric"] = scale, metric
                if gt is not None:
                    both = ok & np.isfinite(gt)
                    if both.sum() >= 0.25 * both.size:
                        row["scale_truth"] = float(np.median(gt[both] / (pred[both] / scale)))
        rows.append(row)

    def col(name, where=None):
        return np.array([r[name] for r in rows if where is None or where(r)], dtype=float)

    standoff, margin = args.standoff_mm / 1000.0, args.margin_mm / 1000.0
    metric_rows = [r for r in rows if r["is_metric"]]
    t_end = rows[-1]["t_s"] if rows else 0.0
    final = [r for r in metric_rows if r["t_s"] >= t_end - args.final_window_s]
    ratio_final = np.array([r["applied_scale"] / r["scale_truth"] for r in final], dtype=float)
    ratio_final = ratio_final[np.isfinite(ratio_final)]
    depth_err = np.array(
        [abs(r["depth_window_median"] / r["gt_window_median_m"] - 1.0) for r in metric_rows], dtype=float
    )
    gt_final = col("gt_window_median_m", lambda r: r["t_s"] >= t_end - args.final_window_s)
    diag_sim = obs.diagnostics.get("sim_endoscope", {})
    diag_depth = obs.diagnostics.get("endo_depth", {})
    depth_stamps, state_stamps, image_stamps = set(obs.depth), set(obs.states), set(obs.images)
    summary = {
        "duration_s": float(args.duration),
        "rate_hz": float(args.rate),
        "standoff_m": standoff,
        "margin_m": margin,
        "frames_published": int(diag_sim.get("frames_published", -1)),
        "images_seen": len(image_stamps),
        "depth_images": len(depth_stamps),
        "depth_missing": len(image_stamps - depth_stamps),
        "depth_unmatched": len(depth_stamps - image_stamps),
        "controller_states": len(state_stamps),
        "controller_missing": len(depth_stamps - state_stamps),
        "commands": len(obs.commands),
        "depth_rejected": int(diag_depth.get("frames_rejected", -1)),
        "depth_dropped": int(diag_depth.get("frames_dropped", -1)),
        "depth_errors": int(diag_depth.get("errors", -1)),
        "guard_stops": int(diag_sim.get("guard_stops", -1)),
        "lockstep_timeouts": int(diag_sim.get("lockstep_timeouts", -1)),
        "render_p50_ms": float(diag_sim.get("render_p50_ms", "nan")),
        "latency_p50_ms": float(diag_depth.get("latency_p50_ms", "nan")),
        "start_distance_m": rows[0]["gt_window_median_m"] if rows else math.nan,
        "min_gt_window_distance_m": float(np.nanmin(col("gt_window_min_m"))) if rows else math.nan,
        "min_gt_axis_distance_m": float(np.nanmin(col("gt_axis_m"))) if rows else math.nan,
        "final_gt_window_median_m": float(np.nanmean(gt_final)) if gt_final.size else math.nan,
        "metric_after_s": metric_rows[0]["t_s"] if metric_rows else math.nan,
        "final_scale_estimate": float(np.median([r["applied_scale"] for r in final])) if final else math.nan,
        "final_scale_truth": float(np.nanmedian([r["scale_truth"] for r in final])) if final else math.nan,
        "final_scale_ratio": float(np.median(ratio_final)) if ratio_final.size else math.nan,
        "metric_depth_abs_rel_median": float(np.nanmedian(depth_err)) if depth_err.size else math.nan,
        "modes": {m: sum(r["mode"] == m for r in rows) for m in sorted({r["mode"] for r in rows})},
    }
    last_state = obs.states[max(obs.states)] if obs.states else {}
    for key in ("implausible_episodes", "checks_passed", "checks_failed", "depth_with_confidence"):
        summary[key] = int(last_state.get(key, -1))
    summary["margin_kept"] = bool(summary["min_gt_window_distance_m"] >= margin)
    summary["lossless"] = bool(
        summary["frames_published"] == summary["images_seen"] == summary["depth_images"]
        and summary["depth_missing"] == summary["controller_missing"] == summary["depth_unmatched"] == 0
        and summary["depth_rejected"] == summary["depth_dropped"] == summary["depth_errors"] == 0
    )
    return summary, rows


def save_plots(rows: list[dict], summary: dict, path: Path) -> Path:
    """One PNG, four panels: trajectory, GT distance vs time, our depth vs GT, scale estimate vs truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["t_s"] for r in rows])
    get = lambda k: np.array([r[k] for r in rows], dtype=float)  # noqa: E731
    metric = np.array([r["is_metric"] for r in rows], dtype=bool)
    fig, ax = plt.subplots(2, 2, figsize=(10, 6.4), dpi=80)
    ax[0, 0].plot(t, get("x_start_m") * 1e3, label="x (sideways)")
    ax[0, 0].plot(t, get("z_start_m") * 1e3, label="z (towards the tissue)")
    ax[0, 0].set(title="camera position in the start view (GT)", xlabel="simulated time (s)", ylabel="mm")
    ax[0, 0].legend(fontsize=8)
    ax[0, 1].plot(t, get("gt_window_median_m") * 1e3, label="GT window median")
    ax[0, 1].plot(t, get("gt_window_min_m") * 1e3, label="GT window minimum")
    ax[0, 1].axhline(summary["standoff_m"] * 1e3, color="g", ls="--", label="stand-off")
    ax[0, 1].axhline(summary["margin_m"] * 1e3, color="r", ls=":", label="safety margin")
    implausible = np.array([r["mode"] == "implausible" for r in rows], dtype=bool)
    if implausible.any():  # the frames the controller refused to trust the depth
        ax[0, 1].fill_between(
            t,
            0,
            1,
            where=implausible,
            transform=ax[0, 1].get_xaxis_transform(),
            color="orange",
            alpha=0.25,
            lw=0,
            label="controller: implausible",
        )
    ax[0, 1].set(title="distance to tissue (ground truth)", xlabel="simulated time (s)", ylabel="mm")
    ax[0, 1].legend(fontsize=8)
    ours = get("depth_window_median") * 1e3
    ax[1, 0].plot(t, get("gt_window_median_m") * 1e3, label="ground truth", color="k")
    ax[1, 0].plot(t[metric], ours[metric], ".", ms=3, label="ours (metric, kinematic scale)")
    ax[1, 0].plot(t[~metric], ours[~metric], ".", ms=3, color="0.6", label="ours (relative, before metric)")
    ax[1, 0].set(title="window median depth", xlabel="simulated time (s)", ylabel="mm")
    ax[1, 0].legend(fontsize=8)
    ax[1, 1].plot(t[metric], get("applied_scale")[metric], label="kinematic estimate")
    ax[1, 1].plot(t, get("scale_truth"), ".", ms=3, color="k", label="truth (GT / relative depth)")
    ax[1, 1].set(title="metric scale", xlabel="simulated time (s)", ylabel="scale")
    ax[1, 1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_loop(args) -> dict:
    from endo_depth_ros import ros_env
    from endo_depth_ros.tools.demo import check_weight_files

    check_weight_files(args.weights, args.pose_weights, LoopError)  # before starting any node
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = ros_env.apply(domain_id=args.domain_id)
    obs = Observer(args.window_fraction)
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        for name, cmd in node_commands(args).items():
            logs[name] = open(out / f"{name}.log", "w")  # noqa: SIM115 - closed below
            procs[name] = subprocess.Popen(cmd, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
        print(f"[loop] started {', '.join(procs)} (logs in {out})")
        t_start = time.monotonic()
        n_expected = int(math.ceil(args.duration * args.rate - 1e-9))
        last_report, last_progress, progress = 0.0, time.monotonic(), (0, 0, 0)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise LoopError(
                        f"{name} exited with code {proc.returncode}:\n"
                        + (out / f"{name}.log").read_text()[-2000:]
                    )
            done = obs.diagnostics.get("sim_endoscope", {}).get("done") == "true"
            if done and len(obs.depth) >= len(obs.images) and len(obs.states) >= len(obs.depth):
                break
            now_progress = (len(obs.images), len(obs.depth), len(obs.states))
            if now_progress != progress:
                progress, last_progress = now_progress, time.monotonic()
            elif done and time.monotonic() - last_progress > args.settle_s:
                print(f"[loop] no output for {args.settle_s:g} s after the last frame: some were lost")
                break
            elapsed = time.monotonic() - t_start
            if elapsed > args.timeout:
                raise LoopError(
                    f"timeout after {args.timeout:.0f} s: {len(obs.images)} images, {len(obs.depth)} depth, "
                    f"{len(obs.states)} controller states"
                )
            if elapsed - last_report >= 5.0:
                last_report = elapsed
                print(
                    f"[loop] {elapsed:5.1f} s: frame {len(obs.images)}/{n_expected}, depth {len(obs.depth)}"
                )
            time.sleep(0.1)
        time.sleep(0.3)  # the last commands and states
    finally:
        for name in ("sim_endoscope", "standoff_controller", "depth_node"):
            proc = procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()
        obs.close()
    summary, rows = analyse(obs, args)
    summary["wall_s"] = time.monotonic() - t_start
    summary["report"] = str(save_plots(rows, summary, out / "report.png"))
    with open(out / "series.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "report.json").write_text(json.dumps({"summary": summary, "series": rows}, indent=1))
    print_summary(summary, out)
    return summary


def print_summary(s: dict, out: Path) -> None:
    mm = lambda v: f"{v * 1e3:.1f} mm"  # noqa: E731
    lines = [
        "",
        "endo_depth closed loop: summary",
        "-" * 64,
        f"simulated            {s['duration_s']:.1f} s at {s['rate_hz']:g} Hz in {s['wall_s']:.1f} s wall "
        f"(render p50 {s['render_p50_ms']:.0f} ms, depth latency p50 {s['latency_p50_ms']:.0f} ms)",
        f"frames               published {s['frames_published']}, depth {s['depth_images']}, controller "
        f"{s['controller_states']}   lost: {s['depth_missing']} depth, {s['controller_missing']} controller",
        f"depth node           rejected {s['depth_rejected']}, dropped {s['depth_dropped']}, errors "
        f"{s['depth_errors']}",
        f"distance to tissue   start {mm(s['start_distance_m'])}, final {mm(s['final_gt_window_median_m'])} "
        f"(stand-off {mm(s['standoff_m'])})",
        f"closest (GT window)  {mm(s['min_gt_window_distance_m'])}   margin {mm(s['margin_m'])}: "
        + ("kept" if s["margin_kept"] else "VIOLATED"),
        f"metric scale         after {s['metric_after_s']:.2f} s; "
        f"final estimate {s['final_scale_estimate']:.3f} "
        f"vs truth {s['final_scale_truth']:.3f} (ratio {s['final_scale_ratio']:.3f})",
        f"metric depth error   median |ours/GT - 1| in the window {s['metric_depth_abs_rel_median']:.3f}",
        "controller modes     " + ", ".join(f"{k or 'none'} {v}" for k, v in s["modes"].items()),
        f"plausibility guard   {s['implausible_episodes']} implausible episodes; checks passed "
        f"{s['checks_passed']}, failed {s['checks_failed']}",
        f"guard stops          {s['guard_stops']}   lockstep timeouts {s['lockstep_timeouts']}",
        f"report               {s['report']}  (+ series.csv, report.json in {out})",
        "-" * 64,
    ]
    print("\n".join(lines))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "loop", help="closed loop in simulation: simulated endoscope -> depth node -> stand-off controller"
    )
    p.add_argument("--duration", type=float, default=12.0, help="simulated seconds")
    p.add_argument("--rate", type=float, default=15.0, help="camera frames per simulated second")
    p.add_argument("--standoff-mm", type=float, default=15.0)
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="hold band around the stand-off")
    p.add_argument("--margin-mm", type=float, default=3.0, help="safety margin the GT distance must keep")
    p.add_argument("--max-speed-mm-s", type=float, default=4.0, help="controller speed limit")
    p.add_argument("--preset", default="target", choices=("source", "target"), help="simulator domain")
    p.add_argument("--seed", type=int, default=1, help="simulator seed (scene)")
    p.add_argument("--height", type=int, default=96, help="camera image height")
    p.add_argument("--width", type=int, default=128, help="camera image width")
    p.add_argument("--input-height", type=int, default=56, help="depth network input height")
    p.add_argument("--input-width", type=int, default=70, help="depth network input width")
    p.add_argument("--weights", default="", help="VDA weights (default: the shipped model)")
    p.add_argument(
        "--kinematic-source",
        choices=KINEMATIC_SOURCES,
        default=PipelineConfig.kinematic_source,
        help="where the node's kinematic scale comes from (node parameter kinematic_source, same default)",
    )
    p.add_argument(
        "--pose-weights",
        default="",
        help="pose network weights (default: the shipped one); sets the metric scale",
    )
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument(
        "--kinematic-window",
        type=int,
        default=PipelineConfig.kinematic_window,
        help="frame pairs of the kinematic scale (default the node's)",
    )
    p.add_argument("--kinematic-min-pairs", type=int, default=10)
    p.add_argument("--window-fraction", type=float, default=0.33, help="central window side / image side")
    p.add_argument(
        "--no-plausibility-check",
        action="store_true",
        help="controller without its guard (advances whether or not the depth follows the motion)",
    )
    p.add_argument(
        "--freeze-image-after-s",
        type=float,
        default=0.0,
        help="fault injection: the simulator's image stops changing from this simulated time on (0 = off)",
    )
    p.add_argument("--lockstep-max-lag", type=int, default=10, help="frames images may lead the commands")
    p.add_argument(
        "--real-time-factor", type=float, default=0.0, help="simulated s per wall s; 0 = as fast as possible"
    )
    p.add_argument("--final-window-s", type=float, default=2.0, help="end of the run the scale is judged on")
    p.add_argument("--out", default="out/loop", help="report folder")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 0) or 0))
    p.add_argument("--timeout", type=float, default=600.0, help="wall seconds before giving up")
    p.add_argument("--settle-s", type=float, default=10.0, help="wall seconds to wait for the last outputs")
    p.set_defaults(func=_cmd_loop)


def _cmd_loop(args) -> int:
    try:
        summary = run_loop(args)
    except LoopError as exc:
        print(f"[loop] failed: {exc}", file=sys.stderr)
        return 1
    if not summary["lossless"]:
        print("[loop] messages were lost between the nodes (see the summary)", file=sys.stderr)
        return 1
    if not summary["margin_kept"]:
        print("[loop] the ground-truth distance fell below the safety margin", file=sys.stderr)
        return 1
    return 0
