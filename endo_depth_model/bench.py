"""``endo-depth bench``: latency, throughput and peak memory of every available backend.

For each backend x input size x window T x stride it measures, on randomly initialised weights (speed
does not depend on the weight values):

* ``encoder_ms``: one frame through the encoder (median of ``--repeats``);
* ``head_ms``: one window of T cached features through the temporal head (median);
* ``stream_ms``: the cached-encoder streaming engine (:class:`~endo_depth_model.streaming.StreamingDepth`,
  alignment included) fed frame by frame, wall time per output frame amortised over the whole stream,
  with per-push latency p50 / p95 and throughput;
* ``rerun_ms``: re-running the full window (encode all T frames + head) at every head pass, per output
  frame (= median pass time / stride), and ``speedup`` = ``rerun_ms / stream_ms``;
* ``stream_cpu_ms`` / ``rerun_cpu_ms`` / ``cpu_speedup``: the same in process CPU time (all threads),
  which other processes competing for the cores inflate much less than wall time;
* ``peak_rss_mib``: peak resident memory of the process while the row ran (sampled every 5 ms), and
  ``cuda_peak_mib`` for CUDA torch runs.

Optional rows: ``--pipeline`` runs the online pipeline of the ROS node (:class:`DepthPipeline`, default
node configuration) on each backend; ``--official PATH`` times the forward pass of the official Video
Depth Anything code from a checkout at PATH (never part of this repository) on the same input.
Prints a table and writes JSON and markdown (machine, load average and the exact command included).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["BenchConfig", "BenchError", "import_official", "run_bench", "stream_geometry", "to_markdown"]


class BenchError(RuntimeError):
    """Bad benchmark options (sizes, windows, strides, backends, official checkout path)."""


@dataclass
class BenchConfig:
    """What to measure. ``sizes`` (H, W) multiples of 14; ``strides`` per window (clipped to valid ones);
    ``passes``: head passes after the first in each streaming measurement."""

    encoder: str = "vits"
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(224, 280)])
    windows: list[int] = field(default_factory=lambda: [32])
    strides: list[int] = field(default_factory=lambda: [22])
    backends: list[str] = field(default_factory=lambda: ["auto"])
    device: str = "cpu"
    passes: int = 3
    repeats: int = 3
    warmup: int = 1
    threads: int = 0
    precision: str = "fp16"
    fp16: bool = False
    bf16: bool = False
    cuda_graphs: bool = False
    cache_dir: str = ""
    pipeline: bool = False
    pipeline_frames: int = 60
    official: str = ""
    seed: int = 0


def stream_geometry(window: int, stride: int) -> tuple[int, int]:
    """(overlap, blend) for a window and stride: EndoDAV's 10/8 at T=32, scaled with T, and never more
    than ``window - stride`` overlap; blend 0 or >= 2."""
    overlap = min(max(2, round(10 * window / 32)), window - stride)
    if overlap < 0:
        raise BenchError(f"stride {stride} does not fit a window of {window}")
    blend = min(max(2, round(8 * window / 32)), overlap)
    return overlap, (blend if blend >= 2 else 0)


class PeakRSS:
    """Peak resident set size (MiB) of this process between ``start`` and ``stop``, sampled every 5 ms."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def machine_info(device: str) -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what ``platform`` knows, else ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _median_ms(fn, repeats: int, warmup: int, sync, cpu: list | None = None) -> float:
    """Median wall milliseconds of ``fn()`` over ``repeats`` calls; appends the median process CPU
    milliseconds (all threads) to ``cpu`` when given."""
    for _ in range(warmup):
        fn()
    sync()
    times, cpu_times = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu_times.append((time.process_time() - c0) * 1e3)
    if cpu is not None:
        cpu.append(statistics.median(cpu_times))
    return statistics.median(times)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _synthetic_video(n: int, hw: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``n`` (H, W, 3) uint8 frames: a drifting smooth pattern with noise (content does not change speed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    frames = []
    for k in range(n):
        base = 0.5 + 0.4 * np.sin((xx + 3 * k) / 17.0) * np.cos((yy - 2 * k) / 23.0)
        img = np.stack([base, base * 0.8, base * 0.6], axis=-1) + rng.normal(0, 0.03, (*hw, 3))
        frames.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return frames


def _backend_names(cfg: BenchConfig) -> list[str]:
    from endo_depth_model.runtime import BACKENDS, available_backends

    status = available_backends(cfg.device)
    names = []
    for name in cfg.backends:
        if name in ("auto", "all"):
            names += [n for n in BACKENDS if status.get(n) is None and n not in names]
        elif name not in BACKENDS:
            raise BenchError(f"unknown backend {name!r}; choose from {('all', *BACKENDS)}")
        elif name not in names:
            names.append(name)
    return names


def _bench_row(cfg: BenchConfig, model, backend_name: str, hw, window: int, stride: int, log) -> dict:
    import torch

    from endo_depth_model.preprocess import Preprocessor
    from endo_depth_model.runtime import load_backend
    from endo_depth_model.streaming import StreamingDepth

    overlap, blend = stream_geometry(window, stride)
    row: dict = {
        "backend": backend_name,
        "height": hw[0],
        "width": hw[1],
        "window": window,
        "stride": stride,
        "overlap": overlap,
        "blend": blend,
    }
    cuda = cfg.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        backend = load_backend(
            backend_name,
            model,
            device=cfg.device,
            input_hw=hw,
            window=window,
            cache_dir=cfg.cache_dir or None,
            precision=cfg.precision,
            fp16=cfg.fp16 and backend_name in ("torch", "auto"),  # torch options; graphs run as built
            bf16=cfg.bf16 and backend_name in ("torch", "auto"),
            cuda_graphs=cfg.cuda_graphs,
            threads=cfg.threads,
        )
        row["setup_s"] = round(time.perf_counter() - t0, 2)
        row["description"] = backend.describe()
        row["precision"] = getattr(backend, "precision", "fp32")
        pre = Preprocessor(hw)
        gen = torch.Generator().manual_seed(cfg.seed)
        one = torch.randn(1, 1, 3, *hw, generator=gen).to(cfg.device)
        clip = torch.randn(1, window, 3, *hw, generator=gen).to(cfg.device)
        feats = backend.encode(clip)
        row["encoder_ms"] = _median_ms(lambda: backend.encode(one), cfg.repeats, cfg.warmup, sync)
        row["head_ms"] = _median_ms(lambda: backend.decode(feats), cfg.repeats, cfg.warmup, sync)
        rerun_cpu: list[float] = []
        rerun = _median_ms(lambda: backend(clip), max(1, cfg.repeats // 2), 0, sync, rerun_cpu)
        row["rerun_ms"] = rerun / stride
        row["rerun_cpu_ms"] = rerun_cpu[0] / stride
        # the streaming engine, frame by frame, alignment included
        n_frames = window + cfg.passes * stride
        video = _synthetic_video(n_frames, hw, cfg.seed)
        engine = StreamingDepth(
            backend,
            lambda f: pre(f)[0],
            window=window,
            overlap=overlap,
            stride=stride,
            blend=blend,
            device=cfg.device,
        )
        engine.push(video[0])  # warm the preprocessor and encoder outside the timing
        engine.reset()
        latencies = []
        emitted = 0
        c_start = time.process_time()
        t_start = time.perf_counter()
        for frame in video:
            t1 = time.perf_counter()
            emitted += len(engine.push(frame))
            sync()
            latencies.append((time.perf_counter() - t1) * 1e3)
        emitted += len(engine.flush())
        sync()
        total = time.perf_counter() - t_start
        row["stream_cpu_ms"] = (time.process_time() - c_start) * 1e3 / max(emitted, 1)
        row["cpu_speedup"] = row["rerun_cpu_ms"] / row["stream_cpu_ms"]
        row["stream_ms"] = total * 1e3 / max(emitted, 1)
        row["stream_fps"] = emitted / total
        row["push_p50_ms"] = _percentile(latencies, 50)
        row["push_p95_ms"] = _percentile(latencies, 95)
        row["frames"] = emitted
        row["speedup"] = row["rerun_ms"] / row["stream_ms"]
        if cfg.pipeline:
            row.update(_bench_pipeline(cfg, backend, hw, log))
        backend.close()
    row["peak_rss_mib"] = rss.mib
    if cuda:
        row["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def _bench_pipeline(cfg: BenchConfig, backend, hw, log) -> dict:
    """The ROS node's pipeline (default node configuration, this backend) over synthetic frames."""
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig

    pcfg = PipelineConfig(
        model_config=cfg.encoder,
        device=cfg.device,
        input_height=hw[0],
        input_width=hw[1],
        precision=getattr(backend, "precision", "fp32"),  # the pose network as the depth backend
        torch_threads=cfg.threads,  # per network (with concurrent_pose; 0: half the usable cores each)
    )
    if backend.window is not None and backend.window != pcfg.window:
        return {}
    pipe = DepthPipeline(pcfg, depth_model=backend)
    video = _synthetic_video(cfg.pipeline_frames, hw, cfg.seed + 1)
    pipe.push(video[0])
    pipe.reset()
    lat = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = 0
    for frame in video:
        t1 = time.perf_counter()
        out += len(pipe.push(frame)[0])
        lat.append((time.perf_counter() - t1) * 1e3)
    total = time.perf_counter() - t0
    cpu_ms = (time.process_time() - c0) * 1e3 / len(video)
    return {
        "pipeline_cpu_ms": cpu_ms,
        "pipeline_fps": len(video) / total,
        "pipeline_p50_ms": _percentile(lat, 50),
        "pipeline_p95_ms": _percentile(lat, 95),
        "pipeline_window": pcfg.window,
        "pipeline_stride": pcfg.stride,
        "pipeline_odometry": pipe.has_odometry,
    }


def import_official(path: str, module: str):
    """Import ``module`` (e.g. ``video_depth_anything.video_depth`` or ``..._stream``) from the official
    Video Depth Anything checkout at ``path``, for timing only (nothing of it is part of this package).

    Their modules import ``torchvision.transforms.Compose`` only for video pre-processing; when
    torchvision is absent a minimal stand-in is registered so that the network itself can be timed.
    """
    import importlib
    import types

    root = Path(path).expanduser()
    if not (root / "video_depth_anything" / "video_depth.py").is_file():
        raise BenchError(
            f"{root} is not a Video-Depth-Anything checkout (no video_depth_anything/video_depth.py)"
        )
    try:
        importlib.import_module("torchvision.transforms")
    except ImportError:
        tv = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")

        class Compose:  # the only name their modules import at load time
            def __init__(self, ops):
                self.ops = list(ops)

            def __call__(self, x):
                for op in self.ops:
                    x = op(x)
                return x

        transforms.Compose = Compose  # type: ignore[attr-defined]
        tv.transforms = transforms  # type: ignore[attr-defined]
        sys.modules.setdefault("torchvision", tv)
        sys.modules.setdefault("torchvision.transforms", transforms)
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))


def bench_official(
    path: str, encoder: str, hw, window: int, repeats: int, device: str, precision: str = "fp32"
) -> dict:
    """Forward time of the official Video Depth Anything code at ``path`` (random weights), per frame.

    ``precision`` ``bf16``/``fp16`` runs their forward under the same autocast as our torch backend, so
    that a comparison at reduced precision is like for like.
    """
    import torch

    official = import_official(path, "video_depth_anything.video_depth")
    from endo_depth_model.models import VDA_CONFIGS

    c = VDA_CONFIGS[encoder]
    net = official.VideoDepthAnything(encoder=encoder, features=c.features, out_channels=list(c.out_channels))
    net = net.to(device).eval()
    x = torch.randn(1, window, 3, *hw, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    cpu: list[float] = []
    from endo_depth_model.runtime.precision import autocast

    with torch.no_grad(), autocast(precision, device):
        total = _median_ms(lambda: net(x), repeats, 1, sync, cpu)
    return {
        "backend": "official VDA (torch)" + (f", {precision} autocast" if precision != "fp32" else ""),
        "height": hw[0],
        "width": hw[1],
        "window": window,
        "forward_ms": total,
        "per_frame_ms": total / window,
        "per_frame_cpu_ms": cpu[0] / window,
        "source": str(Path(path).expanduser()),
    }


def run_bench(cfg: BenchConfig, progress: bool = True, log=print, model=None) -> dict:
    """Run every measurement of ``cfg``; returns ``{"machine", "config", "rows", "official"}``."""
    import torch

    from endo_depth_model.models import build_vda

    for h, w in cfg.sizes:
        if h <= 0 or w <= 0 or h % 14 or w % 14:
            raise BenchError(f"size {h}x{w} must be positive multiples of 14")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_vda(cfg.encoder).eval()
    names = _backend_names(cfg)
    jobs = []
    for name in names:
        for hw in cfg.sizes:
            for window in cfg.windows:
                if not 2 <= window <= model.config.num_frames:
                    raise BenchError(f"window {window} outside 2..{model.config.num_frames}")
                for stride in cfg.strides:
                    if 1 <= stride <= window - 2:
                        jobs.append((name, tuple(hw), window, stride))
    if not jobs:
        raise BenchError("nothing to measure: no backend available or no stride fits the windows")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs) + bool(cfg.official), unit="run", desc="bench")
    rows = []
    for name, hw, window, stride in jobs:
        if bar is not None:
            bar.set_postfix_str(f"{name} {hw[0]}x{hw[1]} T={window} s={stride}")
        try:
            rows.append(_bench_row(cfg, model, name, hw, window, stride, log))
        except Exception as exc:  # one failing backend must not lose the other rows
            rows.append(
                {
                    "backend": name,
                    "height": hw[0],
                    "width": hw[1],
                    "window": window,
                    "stride": stride,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
        if bar is not None:
            bar.update(1)
    official = []
    if cfg.official:
        for hw in cfg.sizes:
            official.append(
                bench_official(
                    cfg.official,
                    cfg.encoder,
                    hw,
                    32,
                    max(1, cfg.repeats // 2),
                    cfg.device,
                    "fp16" if cfg.fp16 else "bf16" if cfg.bf16 else "fp32",
                )
            )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"machine": machine_info(cfg.device), "config": asdict(cfg), "rows": rows, "official": official}


# ---- reporting --------------------------------------------------------------------------------------------
_COLUMNS = (
    ("backend", "backend", "{}"),
    ("precision", "precision", "{}"),
    ("size", None, "{}"),
    ("T", "window", "{}"),
    ("stride", "stride", "{}"),
    ("encoder ms/frame", "encoder_ms", "{:.1f}"),
    ("head ms/window", "head_ms", "{:.1f}"),
    ("stream ms/frame", "stream_ms", "{:.1f}"),
    ("stream fps", "stream_fps", "{:.1f}"),
    ("push p95 ms", "push_p95_ms", "{:.1f}"),
    ("re-run ms/frame", "rerun_ms", "{:.1f}"),
    ("speedup", "speedup", "{:.2f}x"),
    ("stream CPU ms/frame", "stream_cpu_ms", "{:.1f}"),
    ("re-run CPU ms/frame", "rerun_cpu_ms", "{:.1f}"),
    ("CPU speedup", "cpu_speedup", "{:.2f}x"),
    ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
)


def _cells(row: dict) -> list[str]:
    cells = []
    for _, key, fmt in _COLUMNS:
        if key is None:
            cells.append(f"{row['height']}x{row['width']}")
        elif key in row:
            cells.append(fmt.format(row[key]))
        else:
            cells.append("-")
    return cells


def to_markdown(result: dict, command: str = "") -> str:
    """The result as markdown tables with the machine and the command."""
    m = result["machine"]
    lines = [
        f"Machine: {m.get('cpu')} ({m.get('cpu_count')} logical CPUs), {m.get('platform')}; "
        f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime', '-')}"
        + (f"; GPU {m['gpu']}" if m.get("gpu") else "")
        + f". Load average at the end: {m.get('load_average')}.",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines.append("| " + " | ".join(c[0] for c in _COLUMNS) + " |")
    lines.append("|" + "---|" * len(_COLUMNS))
    errors = []
    for row in result["rows"]:
        if "error" in row:
            errors.append(
                f"- {row['backend']} {row['height']}x{row['width']} T={row['window']}: {row['error']}"
            )
            continue
        lines.append("| " + " | ".join(_cells(row)) + " |")
    pipe = [r for r in result["rows"] if "pipeline_fps" in r]
    if pipe:
        lines += [
            "",
            "Online pipeline (the ROS node's `DepthPipeline`, default node settings, no ROS transport):",
            "",
            "| backend | size | T | stride | frames/s | push p50 ms | push p95 ms | CPU ms/frame | "
            "odometry |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in pipe:
            lines.append(
                f"| {r['backend']} | {r['height']}x{r['width']} | {r['pipeline_window']} | "
                f"{r['pipeline_stride']} | {r['pipeline_fps']:.1f} | {r['pipeline_p50_ms']:.1f} | "
                f"{r['pipeline_p95_ms']:.1f} | {r['pipeline_cpu_ms']:.1f} | {r['pipeline_odometry']} |"
            )
    if result.get("official"):
        lines += [
            "",
            "| official code | size | T | forward ms | ms/frame | CPU ms/frame |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["official"]:
            lines.append(
                f"| {r['backend']} | {r['height']}x{r['width']} | {r['window']} | "
                f"{r['forward_ms']:.0f} | {r['per_frame_ms']:.1f} | {r['per_frame_cpu_ms']:.1f} |"
            )
    if errors:
        lines += ["", "Failed runs:", *errors]
    return "\n".join(lines) + "\n"
