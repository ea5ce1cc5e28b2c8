"""The demo: a synthetic endoscopic bag through the live node, measured.

``endo-depth demo`` (the README's main command runs it):
1. makes a synthetic endoscopic rosbag2 (simulator *target* domain: images, camera_info, ground-truth
   depth and pose), or converts the user's MP4 / uses the user's bag (``--input``);
2. starts the depth node in its own process with the shipped default model (or ``--weights``);
3. records the node's outputs to a bag while replaying the input as fast as the node consumes it;
4. prints a summary (frames in and out, throughput, latency p50/p95, AbsRel and delta<1.25 against the
   ground truth when the input has it) and saves a preview image: RGB | depth | ground truth | camera path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

IMAGE_TOPIC = "/endoscope/image_raw"
INFO_TOPIC = "/endoscope/camera_info"
NS = "/endo_depth"
OUTPUT_TOPICS = [f"{NS}/depth/image", f"{NS}/depth/alignment", f"{NS}/pose", f"{NS}/odom", "/diagnostics"]


class DemoError(RuntimeError):
    pass


def make_input_bag(args, out: Path) -> Path:
    """The bag to replay: the user's bag, a converted MP4/folder, or a cached synthetic sequence."""
    from endo_depth_ros.tools.bag import bag_info, convert_to_bag

    if args.input:
        src = Path(args.input)
        if src.is_dir() and (src / "metadata.yaml").is_file():
            return src
        bag = out / f"input_{src.stem}"
        if not bag.exists():
            convert_to_bag(str(src), bag)
        return bag
    spec = f"synth:target?seed={args.seed}&n_frames={args.frames}&height={args.height}&width={args.width}"
    bag = out / f"synthetic_target_s{args.seed}_{args.frames}_{args.height}x{args.width}"
    if bag.exists():
        try:
            bag_info(bag)
            return bag
        except Exception:  # noqa: BLE001 - an interrupted earlier run: make it again
            import shutil

            shutil.rmtree(bag)
    print(
        f"[demo] rendering a synthetic endoscopic sequence ({args.frames} frames, {args.width}x{args.height})"
    )
    convert_to_bag(spec, bag)
    return bag


def _read_topic(path: Path, topic: str, convert) -> dict:
    """``convert(message)`` of every message of ``topic``, keyed by header stamp (ns)."""
    from rosbags.rosbag2 import Reader

    from endo_depth_ros.tools.bag import typestore

    ts = typestore()
    out = {}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:  # (an empty connection list would make rosbags read every topic)
            return out
        for conn, _, raw in reader.messages(connections=conns):
            m = ts.deserialize_cdr(raw, conn.msgtype)
            out[int(m.header.stamp.sec) * 10**9 + int(m.header.stamp.nanosec)] = convert(m)
    return out


def _read_bag(path: Path, topic: str) -> dict[int, np.ndarray]:
    """Image messages of ``topic`` as arrays keyed by header stamp (ns)."""
    from endo_depth_model.image_encoding import image_to_numpy

    return _read_topic(
        path,
        topic,
        lambda m: image_to_numpy(m.encoding, m.height, m.width, m.step, bool(m.is_bigendian), bytes(m.data)),
    )


def _read_poses(path: Path, topic: str) -> dict[int, np.ndarray]:
    """PoseStamped messages of ``topic`` as 4x4 matrices keyed by header stamp (ns)."""
    from endo_depth_ros.conversions import pose_to_matrix

    return _read_topic(path, topic, lambda m: pose_to_matrix(m.pose))


def trajectory_panel(ours: dict[int, np.ndarray], truth: dict[int, np.ndarray], size: int) -> np.ndarray:
    """A ``size`` x ``size`` RGB plot of the camera path seen from above (x right, z forward), in the first
    camera's frame: our odometry, scaled by one least-squares factor onto the ground truth when known."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    stamps = sorted(ours)
    p = np.stack([ours[s][:3, 3] - ours[stamps[0]][:3, 3] for s in stamps])
    p = p @ ours[stamps[0]][:3, :3]  # into the first camera's axes
    common = [s for s in stamps if s in truth]
    fig = plt.figure(figsize=(size / 100, size / 100), dpi=100)
    ax = fig.add_axes((0.2, 0.16, 0.76, 0.74))
    if len(common) >= 2:
        T0 = np.linalg.inv(truth[common[0]])
        g = np.stack([(T0 @ truth[s])[:3, 3] for s in common])
        pc = np.stack([p[stamps.index(s)] for s in common])
        scale = float(np.sum(g * pc) / max(np.sum(pc * pc), 1e-12))
        ax.plot(g[:, 0] * 1e3, g[:, 2] * 1e3, "k-", lw=2, label="ground truth")
        ax.plot(pc[:, 0] * scale * 1e3, pc[:, 2] * scale * 1e3, "-", color="tab:orange", lw=2, label="ours")
        ax.set_xlabel("x (mm)", fontsize=8)
        ax.set_ylabel("z, forward (mm)", fontsize=8)
    else:
        ax.plot(p[:, 0], p[:, 2], "-", color="tab:orange", lw=2, label="ours (relative)")
        ax.set_xlabel("x", fontsize=8)
        ax.set_ylabel("z, forward", fontsize=8)
    ax.set_title("camera path (top view)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7, loc="best")
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def evaluate_outputs(input_bag: Path, output_bag: Path, min_gt: float = 1e-4, max_gt: float = 0.3) -> dict:
    """AbsRel / delta<1.25 of the node's depth against the ground truth (per-sequence median scaling)."""
    from endo_depth_model.metrics import depth_errors, valid_mask

    gt = _read_bag(input_bag, "/ground_truth/depth")
    pred = _read_bag(output_bag, f"{NS}/depth/image")
    common = sorted(s for s in set(gt) & set(pred) if pred[s].shape == gt[s].shape)
    foreign = len(pred) - len(common)  # e.g. another depth node in the same DDS domain and namespace
    if not gt or not common:
        return {"frames_evaluated": 0, "depth_messages_ignored": foreign}
    g = np.stack([gt[s] for s in common]).astype(np.float64)
    p = np.stack([pred[s] for s in common]).astype(np.float64)
    mask = valid_mask(g, min_gt, max_gt) & np.isfinite(p) & (p > 0)
    scale = np.median(g[mask]) / np.median(p[mask])  # one scale for the whole sequence
    errors = depth_errors(g[mask], np.clip(p[mask] * scale, min_gt, max_gt))
    return {
        "frames_evaluated": len(common),
        "abs_rel": errors["abs_rel"],
        "a1": errors["a1"],
        "scale": scale,
        "depth_messages_ignored": foreign,
    }


def save_preview(input_bag: Path, output_bag: Path, path: Path) -> Path:
    """RGB | predicted depth | ground-truth depth (when known) of the middle frame | the camera path
    (when the node published odometry), as one PNG."""
    from PIL import Image as PILImage

    from endo_depth_model.colormap import colorize_depth, robust_range
    from endo_depth_model.image_encoding import to_rgb8

    rgbs = _read_bag(input_bag, IMAGE_TOPIC)
    preds = _read_bag(output_bag, f"{NS}/depth/image")
    gts = _read_bag(input_bag, "/ground_truth/depth")
    stamps = sorted(set(rgbs) & set(preds))
    if not stamps:
        raise DemoError("no depth output to preview")
    s = stamps[len(stamps) // 2]
    pred = preds[s]
    panels = [to_rgb8(rgbs[s], "rgb8")]
    if s in gts:
        gt = gts[s]
        ok = np.isfinite(gt) & np.isfinite(pred) & (pred > 0)
        pred = pred * (np.median(gt[ok]) / np.median(pred[ok]))  # show both on the ground truth's scale
        lo, hi = robust_range(gt[np.isfinite(gt)])
        panels += [colorize_depth(pred, lo, hi), colorize_depth(gt, lo, hi)]
    else:
        panels.append(colorize_depth(pred))
    ours = _read_poses(output_bag, f"{NS}/pose")
    if len(ours) >= 2:
        panels.append(
            trajectory_panel(ours, _read_poses(input_bag, "/ground_truth/pose"), panels[0].shape[0])
        )
    sep = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for p in panels for x in (p, sep)][:-1], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(row).save(path)
    return path


def check_weight_files(weights: str, pose_weights: str, error: type[Exception]) -> None:
    """Refuse unreadable ``--weights`` / ``--pose-weights`` up front, as ``error`` with the checkpoint's
    one-line reason (missing, truncated, pickled)."""
    from endo_depth_model.checkpoint import CheckpointError, read_state_dict

    for path in (weights, pose_weights):
        if path:
            try:
                read_state_dict(path)
            except CheckpointError as exc:
                raise error(str(exc)) from None


def run_demo(args) -> dict:
    from endo_depth_ros import ros_env
    from endo_depth_ros.node_runner import ToolSession, stop_process
    from endo_depth_ros.tools.bag import BagPlayer, BagRecorder, bag_info

    check_weight_files(args.weights, args.pose_weights, DemoError)  # before rendering or starting anything
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = ros_env.apply(domain_id=args.domain_id)
    input_bag = make_input_bag(args, out)
    info = bag_info(input_bag)
    image_topic = args.image_topic or next(
        (
            t
            for t, (ty, _) in info.topics.items()
            if ty == "sensor_msgs/msg/Image" and "ground_truth" not in t
        ),
        None,
    )
    if image_topic is None:
        raise DemoError(f"{input_bag} has no image topic")
    n_frames = info.topics[image_topic][1]
    info_topic = next((t for t, (ty, _) in info.topics.items() if ty == "sensor_msgs/msg/CameraInfo"), None)

    node_params = {"qos": "reliable", "queue_size": 64, "queue_policy": "drop_newest", "flush_after_s": 1.0}
    if args.weights:
        node_params["model.weights"] = args.weights
    if args.pose_weights:
        node_params["model.pose_weights"] = args.pose_weights
    if args.intrinsics:  # the user's calibration wins over the bag's camera_info (or an assumed one)
        node_params["intrinsics"] = list(args.intrinsics)
        info_topic = None
        print(f"[demo] intrinsics fx fy cx cy = {' '.join(f'{v:g}' for v in args.intrinsics)} (--intrinsics)")
    elif info_topic is None:
        node_params["intrinsics"] = _default_intrinsics(input_bag, image_topic)
        print(
            "[demo] no camera_info and no --intrinsics: assuming fx = fy = 0.9 x width "
            f"({' '.join(f'{v:g}' for v in node_params['intrinsics'])})"
        )
    cmd = [
        sys.executable,
        "-m",
        "endo_depth_ros.depth_node",
        "--ros-args",
        "-r",
        f"__ns:={NS}",
        "-r",
        "__node:=endo_depth",
        "--params-file",
        str(ros_env.config_path("depth.yaml")),
    ]
    for k, v in node_params.items():
        v = "[" + ",".join(str(float(x)) for x in v) + "]" if isinstance(v, list) else v
        cmd += ["-p", f"{k}:={v}"]
    log_path = out / "node.log"
    print(f"[demo] starting the depth node (log: {log_path})")
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    node_proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    session = ToolSession("endo_depth_demo")
    node = session.node
    output_bag = out / f"outputs_{time.strftime('%Y%m%d_%H%M%S')}"
    diagnostics = []
    result: dict = {}
    try:
        from diagnostic_msgs.msg import DiagnosticArray

        node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        remap = {image_topic: f"{NS}/image"}
        if info_topic:
            remap[info_topic] = f"{NS}/camera_info"
        player = BagPlayer(
            node,
            input_bag,
            [t for t in (image_topic, info_topic) if t],
            rate=args.rate,
            remap=remap,
            pace_topic=f"{NS}/depth/image",
            pace_source=image_topic,
            max_in_flight=48,
        )
        recorder = BagRecorder(node, output_bag, OUTPUT_TOPICS)
        session.start_spinning()
        deadline = time.monotonic() + args.startup_timeout
        while time.monotonic() < deadline and node_proc.poll() is None:
            # start only when every output (the node advertises them all at start-up) is subscribed and
            # matched: a topic found late (the pose, under load) loses what was published before its match
            recorder.discover()
            if (
                player.wait_for_subscribers(0.2)
                and set(OUTPUT_TOPICS) <= set(recorder.stats.messages)
                and recorder.matched()
            ):
                break
        if node_proc.poll() is not None:
            raise DemoError(
                f"the node exited with code {node_proc.returncode}; see {log_path}:\n"
                + log_path.read_text()[-2000:]
            )
        how = f"at {args.rate:g}x the clip's own rate" if args.rate > 0 else "as fast as the node consumes"
        print(f"[demo] replaying {input_bag.name}: {n_frames} frames on {image_topic}, {how}")
        t0 = time.monotonic()
        player.play(session.stop)
        done = lambda: recorder.stats.messages.get(f"{NS}/depth/image", 0) >= n_frames  # noqa: E731
        while not done() and time.monotonic() - t0 < args.timeout and node_proc.poll() is None:
            recorder.discover()
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        time.sleep(1.5)  # last diagnostics
        stats = recorder.close()
        diag = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
        frames_out = stats.messages.get(f"{NS}/depth/image", 0)
        poses_out = stats.messages.get(f"{NS}/pose", 0)
        result = {
            "input_bag": str(input_bag),
            "output_bag": str(output_bag),
            "frames_in": n_frames,
            "frames_out": frames_out,
            "poses_out": poses_out,
            "elapsed_s": elapsed,
            "throughput_fps": frames_out / elapsed if elapsed > 0 else 0.0,
            "latency_p50_ms": float(diag.get("latency_p50_ms", "nan")),
            "latency_p95_ms": float(diag.get("latency_p95_ms", "nan")),
            "processing_p50_ms": float(diag.get("processing_p50_ms", "nan")),
            "processing_p95_ms": float(diag.get("processing_p95_ms", "nan")),
            "replay_rate": args.rate,
            "latency_mode": diag.get("latency_mode", "?"),
            "rejected": int(diag.get("frames_rejected", 0)),
            "dropped": int(diag.get("frames_dropped", 0)),
            "scale_source": diag.get("scale_source", "?"),
        }
    finally:
        session.close()
        stop_process(node_proc, 15)
        log.close()
    result.update(evaluate_outputs(input_bag, output_bag))
    result["preview"] = str(save_preview(input_bag, output_bag, out / "preview.png"))
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    print_summary(result)
    return result


def _default_intrinsics(bag: Path, topic: str) -> list[float]:
    first = next(iter(_read_bag(bag, topic).values()))
    h, w = first.shape[:2]
    return [0.9 * w, 0.9 * w, (w - 1) / 2, (h - 1) / 2]


def print_summary(r: dict) -> None:
    lines = [
        "",
        "endo_depth demo: summary",
        "-" * 60,
        f"input                {r['input_bag']}",
        f"frames in / out      {r['frames_in']} / {r['frames_out']}   (rejected {r['rejected']}, "
        f"dropped {r['dropped']})",
        f"throughput           {r['throughput_fps']:.1f} frames/s over {r['elapsed_s']:.1f} s",
        f"odometry             {r['poses_out']} camera poses on {NS}/pose"
        + ("" if r["poses_out"] else " (no pose network weights)"),
        f"node per frame       {r['processing_p50_ms']:.0f} / {r['processing_p95_ms']:.0f} ms p50 / p95 "
        f"(worker: queue exit to depth published; {r['latency_mode']} mode)",
        f"latency p50 / p95    {r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} ms "
        + (
            "(input to depth: node plus any queue backlog, clip replayed at its own rate)"
            if r["replay_rate"] > 0
            else "(input to depth, including the backlog of a replay paced by the node)"
        ),
    ]
    if r.get("frames_evaluated"):
        lines.append(
            f"AbsRel / d<1.25      {r['abs_rel']:.3f} / {r['a1']:.3f}   "
            f"({r['frames_evaluated']} frames vs ground truth, one median scale per sequence)"
        )
    else:
        lines.append("accuracy             no ground truth in the input")
    if r.get("depth_messages_ignored"):
        lines.append(
            f"warning              {r['depth_messages_ignored']} depth image(s) of another size recorded "
            "and ignored: another node publishes in this DDS domain (use --domain-id)"
        )
    lines += [
        f"depth scale          {r['scale_source']}",
        f"outputs (bag)        {r['output_bag']}",
        f"preview              {r['preview']}   (RGB | depth"
        + (" | ground truth" if r.get("frames_evaluated") else "")
        + (" | camera path)" if r.get("poses_out") else ")"),
        "-" * 60,
    ]
    print("\n".join(lines))


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="synthetic endoscope bag -> live depth node -> measured summary")
    p.add_argument("--input", default="", help="your own MP4, image folder or rosbag2 (default: synthetic)")
    p.add_argument("--image-topic", default="", help="image topic of --input bag (default: the first image)")
    p.add_argument("--intrinsics", type=float, nargs=4, default=None, metavar=("FX", "FY", "CX", "CY"))
    p.add_argument("--weights", default="", help="VDA weights (default: the shipped model)")
    p.add_argument("--pose-weights", default="", help="pose network weights (default: shipped)")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="replay speed: 1 = the clip's own frame rate (default), 0 = as fast as the node consumes",
    )
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--seed", type=int, default=7, help="simulator seed of the synthetic sequence")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 0) or 0))
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from endo_depth_model.data.sequence import DataError
    from endo_depth_ros.tools.bag import BagError

    try:
        result = run_demo(args)
    except (DemoError, BagError, DataError) as exc:  # unreadable input: one clear line, no traceback
        print(f"[demo] failed: {exc}", file=sys.stderr)
        return 1
    if result["frames_out"] != result["frames_in"]:
        print(f"[demo] {result['frames_in'] - result['frames_out']} frame(s) without depth", file=sys.stderr)
        return 1
    return 0
