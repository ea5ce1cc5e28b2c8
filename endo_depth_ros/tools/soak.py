"""Soak and overload runs of the live depth node: ``endo-depth soak``.

1. makes a rosbag2 of textured rgb8 frames with camera_info at the requested size (a cheap generator:
   a smooth random texture drifting back and forth, so the bag loops without a scene cut), or takes one;
2. starts the real node (``python -m endo_depth_ros.depth_node``) in its own process, namespace /soak;
3. replays the bag in a loop with :class:`endo_depth_ros.tools.bag.BagPlayer` at a fixed rate, giving every
   image a new, increasing header stamp (the node rejects repeated stamps), for ``--duration`` seconds;
   with ``--overload F`` the first half runs at F x rate and the second half at the rate;
4. receives every depth image (raw bytes; only the stamp is read) for per-frame latency, and samples the
   node's own ``/diagnostics`` (counters, latency, rss_mb, threads, open_files) over time;
5. writes frames.csv, diagnostics.csv, bins.csv, summary.json and soak.png to ``--out`` and prints a
   one-screen summary: frames in/out/dropped/rejected/lost, latency percentiles, resident-memory growth
   after the warm-up, thread and open-file growth, and for overload the drops, latency during overload
   and the output rate after it.

``--find-rate`` instead replays paced by the node's output (as fast as it consumes) and reports its
throughput and a sustainable rate (80 % of it) to confirm with a soak run. Figures: docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NS = "/soak"
BAG_IMAGE = "/soak_input/image"
BAG_INFO = "/soak_input/camera_info"
BAG_RATE_HZ = 30.0  # stamps in generated bags; replay speed is rate / BAG_RATE_HZ


class SoakError(RuntimeError):
    """The soak run could not be set up or the node died; the message says why."""


# ---- input bag -----------------------------------------------------------------------------------


def textured_bag(path: Path, n_frames: int, height: int, width: int, seed: int = 0) -> Path:
    """A rosbag2 (mcap) of ``n_frames`` (H, W) rgb8 frames at 30 Hz stamps plus camera_info.

    The view drifts diagonally by 2 px per frame for half the frames and back for the other half, so a
    looped replay is continuous. Returns ``path``.
    """
    from PIL import Image as PILImage

    from endo_depth_model.data.rosbag import RosbagWriter
    from endo_depth_model.data.sequence import Frame

    rng = np.random.default_rng(seed)
    step, cell = 2, 16
    half = max(1, n_frames // 2)
    big_h, big_w = height + step * half, width + step * half
    small = rng.integers(30, 230, size=(big_h // cell + 2, big_w // cell + 2, 3), dtype=np.uint8)
    size = (small.shape[1] * cell, small.shape[0] * cell)
    base = np.asarray(PILImage.fromarray(small).resize(size, PILImage.BICUBIC))
    yy, xx = np.mgrid[0:height, 0:width]
    r2 = ((yy - height / 2) / height) ** 2 + ((xx - width / 2) / width) ** 2
    vignette = np.clip(1.2 - 1.6 * r2, 0.2, 1.0)[..., None]  # endoscope light falls off to the edges
    K = np.array([[0.9 * width, 0, (width - 1) / 2], [0, 0.9 * width, (height - 1) / 2], [0, 0, 1]])
    with RosbagWriter(path, "mcap", image_topic=BAG_IMAGE, info_topic=BAG_INFO) as writer:
        for i in range(n_frames):
            p = step * (i if i <= half else 2 * half - i)
            crop = base[p : p + height, p : p + width].astype(np.float32) * vignette
            rgb = np.ascontiguousarray(crop.astype(np.uint8))
            writer.add(Frame(rgb=rgb, K=K, stamp_ns=1_000_000_000 + int(i * 1e9 / BAG_RATE_HZ), index=i))
    return path


def _stamp_format(raw: bytes) -> str:
    """struct format of (sec int32, nanosec uint32) after the 4-byte CDR encapsulation header."""
    return "<iI" if raw[1] == 1 else ">iI"


def read_stamp_ns(raw: bytes) -> int:
    """Header stamp (ns) of a serialised message whose first field is a std_msgs/Header."""
    sec, nsec = struct.unpack_from(_stamp_format(raw), raw, 4)
    return sec * 1_000_000_000 + nsec


@dataclass
class Phase:
    name: str
    duration_s: float
    rate_hz: float  # 0: paced by the node's output
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass
class FrameRecord:
    stamp_ns: int
    phase: str
    t_pub: float  # s since the run started (monotonic)
    t_out: float | None = None


class _Stamps:
    """BagPlayer transform: each image gets a new increasing stamp (now), its camera_info the same one."""

    def __init__(self, image_topic: str, t0: float):
        self.image_topic = image_topic
        self.t0 = t0
        self.phase = ""
        self.last_ns = 0
        self.frames: dict[int, FrameRecord] = {}
        self.lock = threading.Lock()

    def __call__(self, topic: str, raw: bytes) -> bytes:
        buf = bytearray(raw)
        if topic == self.image_topic:
            with self.lock:
                self.last_ns = max(time.time_ns(), self.last_ns + 1)
                self.frames[self.last_ns] = FrameRecord(self.last_ns, self.phase, time.monotonic() - self.t0)
        ns = self.last_ns
        struct.pack_into(_stamp_format(buf), buf, 4, ns // 1_000_000_000, ns % 1_000_000_000)
        return bytes(buf)

    def output(self, raw: bytes) -> None:
        t = time.monotonic() - self.t0
        with self.lock:
            rec = self.frames.get(read_stamp_ns(raw))
            if rec is not None and rec.t_out is None:
                rec.t_out = t


# ---- the run -------------------------------------------------------------------------------------


def _stop_at(deadline: float, stop: threading.Event, interrupted: threading.Event) -> None:
    """Set ``stop`` at ``deadline`` (monotonic) or as soon as ``interrupted`` is set."""
    while time.monotonic() < deadline and not interrupted.wait(0.05):
        pass
    stop.set()


def _node_command(params: dict[str, str]) -> list[str]:
    cmd = [sys.executable, "-m", "endo_depth_ros.depth_node", "--ros-args", "-r", f"__ns:={NS}"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


def run_soak(args) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from endo_depth_ros import ros_env
    from endo_depth_ros.node_runner import ToolSession, stop_process
    from endo_depth_ros.tools.bag import BagPlayer, bag_info

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = ros_env.apply(domain_id=args.domain_id)
    height, width = args.size
    if args.bag:
        bag = Path(args.bag)
        info = bag_info(bag)
        image_topic = next((t for t, (ty, _) in info.topics.items() if ty == "sensor_msgs/msg/Image"), None)
        info_topic = next(
            (t for t, (ty, _) in info.topics.items() if ty == "sensor_msgs/msg/CameraInfo"), None
        )
        if image_topic is None:
            raise SoakError(f"{bag} has no sensor_msgs/Image topic")
        bag_rate = max(info.topics[image_topic][1] - 1, 1) / max(info.duration_s, 1e-3)
    else:
        bag = out / f"input_{args.frames}x{height}x{width}"
        if not (bag / "metadata.yaml").is_file():
            import shutil

            shutil.rmtree(bag, ignore_errors=True)
            print(f"[soak] writing {args.frames} textured {width}x{height} rgb8 frames to {bag}")
            textured_bag(bag, args.frames, height, width)
        image_topic, info_topic, bag_rate = BAG_IMAGE, BAG_INFO, BAG_RATE_HZ

    params = {"qos": "reliable", "diagnostics_period": "1.0"}
    for item in args.param:
        if ":=" not in item:
            raise SoakError(f"node parameter must be NAME:=VALUE, got {item!r}")
        k, v = item.split(":=", 1)
        params[k] = v
    if args.find_rate:
        window = int(params.get("window", 16))
        max_in_flight = window + 8
        params.setdefault("queue_size", str(max_in_flight + 8))
        phases = [Phase("paced", args.duration, 0.0)]
    elif args.overload:
        phases = [
            Phase("overload", args.duration / 2, args.overload * args.rate),
            Phase("recovery", args.duration / 2, args.rate),
        ]
    else:
        phases = [Phase("steady", args.duration, args.rate)]
    warmup = args.warmup if args.warmup is not None else max(5.0, min(60.0, 0.2 * args.duration))

    log_path = out / "node.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    node_proc = subprocess.Popen(_node_command(params), env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"[soak] node started (pid {node_proc.pid}, log {log_path}); parameters {params}")

    session = ToolSession("endo_depth_soak")
    node = session.node
    interrupted = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: interrupted.set())
    t0 = time.monotonic()
    stamps = _Stamps(image_topic, t0)
    samples: list[tuple[float, str, dict[str, str]]] = []
    current_phase = ["startup"]

    def on_diag(msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NS}/endo_depth"):
                values = {kv.key: kv.value for kv in status.values}
                level = status.level
                values["_level"] = str(level[0] if isinstance(level, bytes) else int(level))
                values["_message"] = status.message
                samples.append((time.monotonic() - t0, current_phase[0], values))

    node_rc = None
    try:
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=100))
        node.create_subscription(Image, f"{NS}/depth/image", stamps.output, QoSProfile(depth=1000), raw=True)
        remap = {image_topic: f"{NS}/image"}
        topics = [image_topic]
        if info_topic:
            remap[info_topic] = f"{NS}/camera_info"
            topics.append(info_topic)
        player = BagPlayer(
            node,
            bag,
            topics,
            rate=1.0,
            remap=remap,
            pace_topic=f"{NS}/depth/image" if args.find_rate else None,
            pace_source=image_topic,
            max_in_flight=max_in_flight if args.find_rate else 48,
        )
        session.start_spinning()
        deadline = time.monotonic() + args.startup_timeout
        while time.monotonic() < deadline and node_proc.poll() is None and not interrupted.is_set():
            if player.wait_for_subscribers(0.2) and node.count_publishers(f"{NS}/depth/image") and samples:
                break
        if node_proc.poll() is not None or not samples:
            raise SoakError(
                f"the node did not come up (exit code {node_proc.poll()}); {log_path}:\n"
                + log_path.read_text()[-2000:]
            )
        samples.clear()
        t0 = time.monotonic()
        stamps.t0 = t0
        for phase in phases:
            if interrupted.is_set():
                break
            stop = threading.Event()
            player.rate = phase.rate_hz / bag_rate if phase.rate_hz > 0 else 0.0
            current_phase[0] = stamps.phase = phase.name
            phase.start_s = time.monotonic() - t0
            what = "the pace of the node's output" if phase.rate_hz == 0 else f"{phase.rate_hz:g} Hz"
            print(f"[soak] {phase.name}: {phase.duration_s:.0f} s at {what}")
            watcher = threading.Thread(
                target=_stop_at, args=(time.monotonic() + phase.duration_s, stop, interrupted), daemon=True
            )
            watcher.start()
            while not stop.is_set():
                if node_proc.poll() is not None:
                    raise SoakError(f"the node exited with code {node_proc.returncode}; see {log_path}")
                player.play(stop, transform=stamps)
                if phase.rate_hz > 0:  # keep the cadence across the loop point
                    stop.wait(1.0 / phase.rate_hz)
            watcher.join()
            phase.end_s = time.monotonic() - t0
        current_phase[0] = "drain"
        sent = len(stamps.frames)

        def settled() -> bool:
            if not samples:
                return False
            d = samples[-1][2]
            n = int(d["frames_received"])
            done = int(d["frames_published"]) + int(d["frames_dropped"]) + int(d["frames_rejected"])
            return (
                n >= sent
                and done >= n
                and sum(r.t_out is not None for r in stamps.frames.values()) >= int(d["frames_published"])
            )

        drain_end = time.monotonic() + args.drain_timeout
        while not settled() and time.monotonic() < drain_end and node_proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.5)  # one more diagnostics message with the final counters
    finally:
        session.close()
        node_rc = stop_process(node_proc, 30)
        log.close()

    frames = sorted(stamps.frames.values(), key=lambda r: r.stamp_ns)
    node_log = log_path.read_text(errors="replace")
    summary = analyse(frames, samples, phases, warmup, args.bin)
    summary.update(
        {
            "command": " ".join(["endo-depth", "soak", *args.argv]),
            "mode": "find-rate" if args.find_rate else ("overload" if args.overload else "steady"),
            "rate_hz": args.rate,
            "overload": args.overload,
            "size": [height, width],
            "duration_s": args.duration,
            "warmup_s": warmup,
            "bag": str(bag),
            "node_params": params,
            "node_exit_code": node_rc,
            "node_traceback": "Traceback" in node_log,
            "interrupted": interrupted.is_set(),
            "machine": machine(),
        }
    )
    if args.find_rate:
        tput = summary["throughput_after_warmup_hz"]
        summary["sustainable_rate_hz"] = float(np.floor(0.8 * tput * 10) / 10)
    write_outputs(out, frames, samples, summary)
    print_summary(summary)
    return summary


def machine() -> dict:
    import torch

    from endo_depth_model.bench import cpu_name

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


# ---- analysis ------------------------------------------------------------------------------------


def _pct(values, qs=(50, 95, 99)) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {f"p{q}": float("nan") for q in qs} | {"max": float("nan")}
    return {f"p{q}": float(np.percentile(v, q)) for q in qs} | {"max": float(v.max())}


def _num(d: dict, key: str, default: float = float("nan")) -> float:
    try:
        return float(d[key])
    except (KeyError, ValueError):
        return default


def analyse(
    frames: list[FrameRecord], samples: list, phases: list[Phase], warmup: float, bin_s: float
) -> dict:
    """Counts, latency percentiles, resource growth after ``warmup`` and per-phase figures."""
    final = samples[-1][2] if samples else {}
    sent = len(frames)
    out = [r for r in frames if r.t_out is not None]
    received = int(_num(final, "frames_received", 0))
    published = int(_num(final, "frames_published", 0))
    dropped = int(_num(final, "frames_dropped", 0))
    rejected = int(_num(final, "frames_rejected", 0))
    errors = int(_num(final, "errors", 0))
    lat = [(r.t_out - r.t_pub) * 1e3 for r in out if r.t_pub >= warmup]
    end = max([p.end_s for p in phases] + [0.0])
    summary: dict = {
        "frames_sent": sent,
        "frames_received_by_node": received,
        "frames_published_by_node": published,
        "frames_out": len(out),
        "frames_dropped": dropped,
        "frames_rejected": rejected,
        "errors": errors,
        "lost_in_transport_in": sent - received,
        "lost_in_transport_out": published - len(out),
        "frames_lost": sent - len(out) - dropped - rejected,
        "latency_ms_after_warmup": _pct(lat),
        "node_latency_p95_ms_final": _num(final, "latency_p95_ms"),
        "throughput_after_warmup_hz": _rate([r.t_out for r in out if r.t_out >= warmup]),
        "head_passes": int(_num(final, "head_passes", 0)),
        "reanchors": int(_num(final, "reanchors", 0)),
        "input_rate_hz": _rate([r.t_pub for r in frames]),
    }
    post = [(t, d) for t, _, d in samples if warmup <= t <= end + 5]
    for key in ("rss_mb", "threads", "open_files"):
        series = [(t, _num(d, key)) for t, d in post if np.isfinite(_num(d, key))]
        if len(series) < 2:
            summary[key] = {}
            continue
        ts, vals = np.array([t for t, _ in series]), np.array([v for _, v in series])
        n = max(1, min(5, len(vals) // 4))  # medians of the first and last few samples after warm-up
        first, last = float(np.median(vals[:n])), float(np.median(vals[-n:]))
        summary[key] = {
            "at_warmup": first,
            "final": last,
            "max": float(vals.max()),
            "growth": last - first,
            "growth_pct": 100.0 * (last - first) / first if first else float("nan"),
            "max_growth": float(vals.max() - vals[0]),
            "slope_per_min": float(np.polyfit(ts / 60.0, vals, 1)[0]) if ts[-1] > ts[0] else 0.0,
        }
    summary["phases"] = {p.name: _phase_summary(p, frames, samples) for p in phases}
    summary["bins"] = _bins(frames, samples, end, bin_s)
    return summary


def _rate(times) -> float:
    t = sorted(times)
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else 0.0


def _counter_at(samples, t: float, key: str) -> float:
    """The node's counter ``key`` in the last diagnostics sample at or before ``t`` (0 before any)."""
    v = 0.0
    for ts, _, d in samples:
        if ts > t:
            break
        v = _num(d, key, v)
    return v


def _phase_summary(p: Phase, frames: list[FrameRecord], samples) -> dict:
    mine = [r for r in frames if r.phase == p.name]
    out = [r for r in mine if r.t_out is not None]
    half = p.start_s + (p.end_s - p.start_s) / 2
    second = [r for r in mine if r.t_pub >= half]
    thirds = np.linspace(p.start_s, p.end_s, 4)
    lat_first = [(r.t_out - r.t_pub) * 1e3 for r in out if r.t_pub < thirds[1]]
    lat_last = [(r.t_out - r.t_pub) * 1e3 for r in out if r.t_pub >= thirds[2]]
    return {
        "start_s": p.start_s,
        "end_s": p.end_s,
        "rate_hz": p.rate_hz,
        "frames_in": len(mine),
        "frames_out": len(out),
        "input_rate_hz": _rate([r.t_pub for r in mine]),
        "output_rate_hz": _rate([r.t_out for r in out]),
        "dropped": _counter_at(samples, p.end_s + 0.5, "frames_dropped")
        - _counter_at(samples, p.start_s, "frames_dropped"),
        "latency_ms": _pct([(r.t_out - r.t_pub) * 1e3 for r in out]),
        "latency_p95_ms_first_third": _pct(lat_first)["p95"],
        "latency_p95_ms_last_third": _pct(lat_last)["p95"],
        "second_half": {
            "frames_in": len(second),
            "frames_out": sum(r.t_out is not None for r in second),
            "input_rate_hz": _rate([r.t_pub for r in second]),
            "output_rate_hz": _rate([r.t_out for r in second if r.t_out is not None]),
            "dropped": _counter_at(samples, p.end_s + 0.5, "frames_dropped")
            - _counter_at(samples, half, "frames_dropped"),
        },
    }


def _bins(frames: list[FrameRecord], samples, end: float, bin_s: float) -> list[dict]:
    rows = []
    for b in range(max(1, int(np.floor(end / bin_s + 0.05)))):  # whole bins of the replay, not the drain
        lo, hi = b * bin_s, (b + 1) * bin_s
        outs = [r for r in frames if r.t_out is not None and lo <= r.t_out < hi]
        row = {
            "t_s": hi,
            "in_hz": sum(lo <= r.t_pub < hi for r in frames) / bin_s,
            "out_hz": len(outs) / bin_s,
            "dropped_total": _counter_at(samples, hi, "frames_dropped"),
        }
        row.update({f"latency_{k}_ms": v for k, v in _pct([(r.t_out - r.t_pub) * 1e3 for r in outs]).items()})
        last = [d for t, _, d in samples if lo <= t < hi]
        for key in ("rss_mb", "threads", "open_files"):
            row[key] = _num(last[-1], key) if last else float("nan")
        rows.append(row)
    return rows


# ---- outputs -------------------------------------------------------------------------------------


def write_outputs(out: Path, frames: list[FrameRecord], samples, summary: dict) -> None:
    import csv

    with open(out / "frames.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stamp_ns", "phase", "t_pub_s", "t_out_s", "latency_ms"])
        for r in frames:
            lat = "" if r.t_out is None else f"{(r.t_out - r.t_pub) * 1e3:.2f}"
            w.writerow(
                [r.stamp_ns, r.phase, f"{r.t_pub:.4f}", "" if r.t_out is None else f"{r.t_out:.4f}", lat]
            )
    keys = sorted({k for _, _, d in samples for k in d if not k.startswith("_")})
    with open(out / "diagnostics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "phase", "level", *keys])
        for t, phase, d in samples:
            w.writerow([f"{t:.3f}", phase, d.get("_level", ""), *(d.get(k, "") for k in keys)])
    bins = summary["bins"]
    if bins:
        with open(out / "bins.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(bins[0]))
            w.writeheader()
            w.writerows(bins)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    summary["plot"] = str(plot(out / "soak.png", bins, summary))


def plot(path: Path, bins: list[dict], summary: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [b["t_s"] for b in bins]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        ax[0].plot(t, [b[f"latency_{q}_ms"] for b in bins], style, label=q)
    ax[0].set_ylabel("latency (ms)")
    ax[0].legend(loc="upper left")
    ax[1].plot(t, [b["in_hz"] for b in bins], label="in")
    ax[1].plot(t, [b["out_hz"] for b in bins], label="depth out")
    ax1b = ax[1].twinx()
    ax1b.plot(t, [b["dropped_total"] for b in bins], "r:", label="dropped (total)")
    ax1b.set_ylabel("dropped")
    ax1b.set_ylim(bottom=0, top=max(1.0, 1.1 * max((b["dropped_total"] for b in bins), default=0)))
    ax[1].set_ylabel("frames/s")
    ax[1].legend(loc="upper left")
    ax[2].plot(t, [b["rss_mb"] for b in bins])
    ax[2].set_ylabel("node RSS (MiB)")
    ax[3].plot(t, [b["threads"] for b in bins], label="threads")
    ax[3].plot(t, [b["open_files"] for b in bins], label="open files")
    ax[3].set_ylabel("count")
    ax[3].legend(loc="upper left")
    ax[3].set_xlabel("time (s)")
    for a in ax:
        a.axvline(summary["warmup_s"], color="grey", lw=0.8)
        for name, p in summary["phases"].items():
            if name == "overload":
                a.axvspan(p["start_s"], p["end_s"], color="orange", alpha=0.1)
    h, w = summary["size"]
    fig.suptitle(f"endo-depth soak: {summary['mode']}, {w}x{h}, {summary['rate_hz']:g} Hz")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def print_summary(s: dict) -> None:
    lat = s["latency_ms_after_warmup"]

    def growth(key: str, unit: str) -> str:
        g = s.get(key) or {}
        if not g:
            return "n/a"
        pct = f" ({g['growth_pct']:+.1f} %)" if key == "rss_mb" else ""
        return (
            f"{g['at_warmup']:.0f} -> {g['final']:.0f} {unit}{pct}, max {g['max']:.0f}, "
            f"trend {g['slope_per_min']:+.1f}/min"
        )

    h, w = s["size"]
    lines = [
        "",
        f"endo_depth soak: {s['mode']}, {w}x{h} rgb8, {s['duration_s']:.0f} s "
        f"(warm-up {s['warmup_s']:.0f} s)",
        "-" * 72,
        f"frames in / out       {s['frames_sent']} / {s['frames_out']}   (node received "
        f"{s['frames_received_by_node']}, published {s['frames_published_by_node']})",
        f"dropped / rejected    {s['frames_dropped']} / {s['frames_rejected']}   (counted in diagnostics)",
        f"lost (unaccounted)    {s['frames_lost']}   (errors {s['errors']})",
        f"head passes           {s['head_passes']}, re-anchors {s['reanchors']}",
        f"rates in / out        {s['input_rate_hz']:.2f} / {s['throughput_after_warmup_hz']:.2f} frames/s",
        f"latency p50/p95/p99   {lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} ms (max "
        f"{lat['max']:.0f}; publish to depth received, after warm-up)",
        f"node RSS              {growth('rss_mb', 'MiB')}",
        f"threads               {growth('threads', '')}",
        f"open files            {growth('open_files', '')}",
    ]
    for name, p in s["phases"].items():
        lp = p["latency_ms"]
        lines.append(
            f"phase {name:9s}       {p['frames_in']} in at {p['input_rate_hz']:.2f} Hz, "
            f"{p['frames_out']} out, {p['dropped']:.0f} dropped, latency p50/p95/p99 "
            f"{lp['p50']:.0f}/{lp['p95']:.0f}/{lp['p99']:.0f} ms"
        )
        sh = p["second_half"]
        lines.append(
            f"  second half         in {sh['input_rate_hz']:.2f} Hz, out {sh['output_rate_hz']:.2f} Hz, "
            f"{sh['dropped']:.0f} dropped; p95 first/last third {p['latency_p95_ms_first_third']:.0f}/"
            f"{p['latency_p95_ms_last_third']:.0f} ms"
        )
    if "sustainable_rate_hz" in s:
        lines.append(
            f"sustainable rate      {s['sustainable_rate_hz']:.1f} Hz (80 % of the paced throughput "
            f"{s['throughput_after_warmup_hz']:.2f} frames/s); confirm with a soak run at it"
        )
    m = s["machine"]
    lines += [
        f"node exit code        {s['node_exit_code']}"
        + ("  (traceback in node.log!)" if s["node_traceback"] else ""),
        f"machine               {m['cpu_count']} CPU ({m['cpu_model']}), CUDA {m['cuda']}, "
        f"load {m['load_avg_end']}",
        f"outputs               {s.get('plot', '')} (+ summary.json, frames.csv, diagnostics.csv, bins.csv)",
        "-" * 72,
    ]
    print("\n".join(lines))


# ---- CLI -----------------------------------------------------------------------------------------


def register(subparsers) -> None:
    p = subparsers.add_parser("soak", help="soak / overload run of the live node with measured figures")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of replay (all phases)")
    p.add_argument("--rate", type=float, default=30.0, help="input frame rate (Hz)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[512, 640],
        metavar=("H", "W"),
        help="frame size of the generated bag",
    )
    p.add_argument("--overload", type=float, default=0.0, help="first half at this x rate, then the rate")
    p.add_argument("--find-rate", action="store_true", help="replay paced by the node: measure throughput")
    p.add_argument("--bag", default="", help="replay this bag (default: a generated textured bag)")
    p.add_argument("--frames", type=int, default=90, help="frames in the generated bag (looped)")
    p.add_argument("--warmup", type=float, default=None, help="s excluded from growth and latency figures")
    p.add_argument("--bin", type=float, default=5.0, help="seconds per point in the time series")
    p.add_argument("--out", default="out/soak", help="output folder")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE", help="node parameter")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 0) or 0))
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=60.0, help="s to wait for the last outputs")
    p.set_defaults(func=_cmd_soak)


def _cmd_soak(args) -> int:
    from endo_depth_ros.tools.bag import BagError

    args.argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "soak" else []
    if args.duration <= 0 or (args.rate <= 0 and not args.find_rate) or args.overload < 0:
        print("[soak] error: need --duration > 0, --rate > 0 and --overload >= 0", file=sys.stderr)
        return 2
    try:
        s = run_soak(args)
    except (SoakError, BagError) as exc:
        print(f"[soak] failed: {exc}", file=sys.stderr)
        return 1
    ok = s["frames_lost"] == 0 and s["node_exit_code"] == 0 and not s["node_traceback"] and s["errors"] == 0
    return 0 if ok else 1
