"""The online depth pipeline: streaming aligned depth + pose network odometry + metric scale.

One pure object used by the ROS node (and usable from any Python program): push RGB frames with their
stamps, get finalised depth frames and per-frame odometry back. No ROS imports here.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from endo_depth_model import loading
from endo_depth_model.loading import SHIPPED_MODEL_DIR  # noqa: F401 - re-exported (scripts and tests)
from endo_depth_model.odometry import SCALE_MODES, PoseIntegrator, ScaleEstimator, ScaleState
from endo_depth_model.runtime import BACKENDS
from endo_depth_model.runtime.precision import (
    PRECISIONS,
    PrecisionError,
    autocast,
    cast_weights,
    resolve_precision,
)

LATENCY_MODES = ("auto", "causal", "aligned")
FOV_MODES = ("auto", "off")
WORK_RESOLUTIONS = ("auto", "full")
KINEMATIC_SOURCES = ("pose", "photometric")
#: the disparity-to-depth range of weights that store none (official VDA checkpoints), metres nominal
DEFAULT_DEPTH_RANGE = (0.001, 0.3)


class PipelineError(ValueError):
    """The pipeline cannot be built from this configuration (bad values, missing or wrong weights)."""


@dataclass
class PipelineConfig:
    """Everything the online pipeline needs; the node's parameters map 1:1 onto these fields.

    Depth is ``disparity_to_depth(aligned disparity, min_depth, max_depth) * scale`` in the unit of
    ``min_depth``/``max_depth`` (metres for ROS), where ``scale`` comes from ``scale_mode``.
    """

    model_config: str = "vitt"
    weights: str = ""  # VDA weights (.safetensors / .pth); "" = the shipped default model
    adapter: str = ""  # optional SSB adapter (.safetensors)
    pose_weights: str = ""  # pose network weights; "" = shipped default if present, else no odometry
    device: str = "cpu"
    input_height: int = 224
    input_width: int = 280
    # 8 context frames + 4 aligned (all blended) + 4 new: the head runs every 4 frames and computes
    # its per-frame tail for the 8 frames it uses; AbsRel and TAE equal the (16, 6, 4, 2) layout's
    # on held-out target sequences at half the CPU time per frame (docs/BENCHMARKS.md)
    window: int = 16
    overlap: int = 12
    stride: int = 4
    blend: int = 4
    # the range of the disparity-to-depth conversion; 0 = the one stored in the weights' metadata (the range
    # the model was trained with: endo_depth_model.loading.weights_depth_range, 0.001 and 0.3 m for the
    # shipped model), DEFAULT_DEPTH_RANGE for weights without one (official VDA checkpoints)
    min_depth: float = 0.0
    max_depth: float = 0.0
    scale_mode: str = "relative"
    fixed_scale: float = 1.0
    kinematic_window: int = 30
    kinematic_min_pairs: int = 5
    kinematic_min_motion_m: float = 1e-4
    # where the kinematic scale comes from: photometric = the scale at which the previous frame, warped
    # through the depth by the measured motion, matches the current one (endo_depth_model.odometry.
    # photometric_scale; needs the intrinsics and motion that shows in the images); pose = the measured
    # translation over the pose network's (needs the two to share the depth's unit, which varies from
    # scene to scene and holds only for a pose network trained with this depth network: measured in
    # docs/BENCHMARKS.md, not the shipped pair's case)
    kinematic_source: str = "photometric"
    # the pose network sees the frames at this fraction of the input size: at 0.75 its 5-frame ATE on
    # held-out target sequences equals full size (0.411 vs 0.412 mm), rotation error 1.30 vs 1.28 deg
    # per pair, for 57 % of the compute (docs/BENCHMARKS.md)
    pose_input_scale: float = 0.75
    # CPU threads per network; 0 = torch default (with concurrent_pose on a CPU: half the usable cores each)
    torch_threads: int = 0
    # run the pose network in a thread of its own, beside the depth network (CPU only), each with
    # torch_threads threads. In-process on an idle 2-core CPU two threads in turn are faster (57 against
    # 65 ms per frame), but in the node, which shares the cores with DDS and other processes, one thread
    # each side by side wins (processing p50 74 against 98.5 ms; at 10 Hz 0 dropped instead of 22;
    # docs/BENCHMARKS.md). The results are the same.
    concurrent_pose: bool = True
    # PyTorch compute precision (the torch depth backend and the pose network): auto = bf16 on a CPU
    # with AMX / AVX512-BF16 (pipeline 1.25x faster, depth 0.14 % from fp32 on average:
    # docs/BENCHMARKS.md), else fp32
    precision: str = "auto"
    backend: str = "torch"  # torch | onnxruntime | tensorrt | auto (endo_depth_model.runtime)
    # the scope's black border (endo_depth_model.fov): auto = detect it from the images (NaN depth and no
    # points outside it, left out of the alignment fits; an all-black frame gets no depth and no
    # odometry step), off = every pixel is scene
    fov_mask: str = "auto"
    # causal: depth for every frame as it arrives (zero hold-back, no warm-up; endo_depth_model.causal);
    # aligned: EndoDAV's overlapping windows with scale/shift alignment (frames held back by up to
    # blend + stride - 1, a window of warm-up); auto: causal on the torch backend, aligned on graph
    # backends (their exported graphs are window graphs)
    latency_mode: str = "auto"
    causal_context: int = 31  # earlier frames the causal temporal attention sees (1 .. 31)
    causal_fit: str = "none"  # none | previous (see endo_depth_model.causal)
    # image-level scene cuts (endo_depth_model.scene_cut): re-anchor depth, start a new odometry segment
    # (the pose holds across the cut) and restart the kinematic scale
    scene_cuts: bool = True
    # photometric refinement of each odometry step (endo_depth_model.odometry.refine_motion, needs the
    # intrinsics): the pose network's step is the start of a Gauss-Newton alignment of the current frame,
    # warped through the previous frame's depth, to the previous frame (so it runs in the pose thread,
    # beside the depth network); the translation then shares the depth's unit. On the held-out moving
    # sequences it lowers the mean snippet ATE from 0.349 to 0.230 mm with the zero-motion test below
    # (pretrained_v20, benchmarks/results/static_scope_v20s16.json); about 6 ms per frame on one CPU thread.
    pose_refine: bool = True
    # zero-motion test (endo_depth_model.odometry.zero_motion_errors, needs the intrinsics): when the
    # previous frame unmoved explains the current one about as well as the previous frame warped by the
    # (refined) step (median photometric error unmoved <= static_ratio x moved), the step is the identity:
    # a scope held still stays still while tissue and instruments move. 0 turns it off. With
    # pose_refine the step is the photometric optimum, so a motion must win by a margin: 1.15 (the still
    # EndoNeRF scope travels 0.6 % of the depth and turns 0.29 deg with pretrained_v20); without
    # pose_refine 0.85 was measured best (docs/BENCHMARKS.md)
    static_ratio: float = 1.15
    # depth that holds still where the image holds still (endo_depth_model.temporal_filter): each pixel's
    # depth is averaged with the frames before while its image does not change, taken as it is where it
    # does; re-anchors, cuts and resets start it over. On by default since session 12 (docs/BENCHMARKS.md)
    temporal_filter: bool = True
    # the size frames are processed at (endo_depth_model.preprocess.work_size): auto = a frame at least
    # twice the network input on both sides (1280x720, 1920x1080, 640x512 for 224x280) is area-averaged once
    # to the smallest size of its aspect that covers the network input (398x224), everything per pixel
    # (field of view, cuts, filter, odometry's images, alignment) runs there, and the depth is upsampled to
    # the frame's size at the end; full = every step at the frame's size. At 1280x720 auto has the held-out
    # accuracy of full (AbsRel 0.156 / 0.126 on lap / tube rendered at 1280x720); its CPU saving (about 5 of
    # 115 ms a frame) is within the machine's spread, and the node's rate is the same (docs/BENCHMARKS.md)
    work_resolution: str = "auto"
    engine_cache: str = ""  # exported ONNX graphs / TensorRT engines; "" = ~/.cache/endo_depth

    def validate(self) -> None:
        from endo_depth_model.causal import CAUSAL_FITS  # imports torch
        from endo_depth_model.models.video_depth_anything import VDA_CONFIGS

        problems = []
        if self.model_config not in VDA_CONFIGS:
            problems.append(f"model config {self.model_config!r} is not one of {', '.join(VDA_CONFIGS)}")
        if self.input_height <= 0 or self.input_height % 14 or self.input_width <= 0 or self.input_width % 14:
            problems.append(
                f"input size {self.input_height}x{self.input_width} must be positive multiples of 14"
            )
        if not 0 <= self.blend <= self.overlap < self.window or self.blend == 1:
            problems.append(
                f"need blend = 0 or 2 <= blend ({self.blend}) <= overlap ({self.overlap}) "
                f"< window ({self.window})"
            )
        elif not 1 <= self.stride <= self.window - self.overlap:
            problems.append(
                f"stride {self.stride} must be in 1..{self.window - self.overlap} (window - overlap)"
            )
        if self.window > 32:
            problems.append(f"window {self.window} exceeds Video Depth Anything's 32 frames")
        if self.min_depth < 0 or self.max_depth < 0:
            problems.append(
                "min_depth and max_depth must be >= 0 (0 = the weights' range), got "
                f"{self.min_depth}, {self.max_depth}"
            )
        elif self.min_depth > 0 and self.max_depth > 0 and not self.min_depth < self.max_depth:
            problems.append(f"need 0 < min_depth ({self.min_depth}) < max_depth ({self.max_depth})")
        if self.kinematic_source not in KINEMATIC_SOURCES:
            problems.append(
                f"kinematic_source {self.kinematic_source!r} must be one of {', '.join(KINEMATIC_SOURCES)}"
            )
        if self.scale_mode not in SCALE_MODES:
            problems.append(f"scale_mode {self.scale_mode!r} is not one of {SCALE_MODES}")
        if not 0.0 <= self.static_ratio <= 2.0:
            problems.append(f"static_ratio must be in 0..2 (0 = off), got {self.static_ratio}")
        if not 0.25 <= self.pose_input_scale <= 1.0:
            problems.append(f"pose_input_scale must be in 0.25..1, got {self.pose_input_scale}")
        if not self.fixed_scale > 0:
            problems.append(f"fixed_scale must be > 0, got {self.fixed_scale}")
        if not 1 <= self.kinematic_min_pairs <= self.kinematic_window:
            problems.append("need 1 <= kinematic_min_pairs <= kinematic_window")
        if self.backend not in ("auto", *BACKENDS):
            problems.append(f"backend {self.backend!r} must be auto, torch, onnxruntime or tensorrt")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} must be one of {PRECISIONS}")
        elif self.backend in ("onnxruntime", "tensorrt") and self.precision in ("bf16", "fp16"):
            problems.append(
                f"precision {self.precision} is for the torch backend; {self.backend} runs its graphs at "
                "their own precision (use auto or fp32)"
            )
        if self.latency_mode not in LATENCY_MODES:
            problems.append(f"latency_mode {self.latency_mode!r} must be auto, causal or aligned")
        elif self.latency_mode == "causal" and self.backend in ("onnxruntime", "tensorrt"):
            problems.append(
                f"latency_mode causal runs on the torch backend; {self.backend} graphs serve the aligned mode"
            )
        if not 1 <= self.causal_context <= 31:
            problems.append(f"causal_context must be in 1..31, got {self.causal_context}")
        if self.causal_fit not in CAUSAL_FITS:
            problems.append(f"causal_fit {self.causal_fit!r} must be none or previous")
        if self.fov_mask not in FOV_MODES:
            problems.append(f"fov_mask {self.fov_mask!r} must be auto or off")
        if self.work_resolution not in WORK_RESOLUTIONS:
            problems.append(f"work_resolution {self.work_resolution!r} must be auto or full")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device {self.device!r} must be 'cpu', 'cuda' or 'cuda:N'")
        if problems:
            raise PipelineError("; ".join(problems))


@dataclass
class FrameDepth:
    """One finalised frame: ``depth`` (H, W) float32 (NaN invalid), its ``stamp`` and alignment.

    ``depth`` and ``K`` are at the pushed frame's size; ``disparity`` and ``prev_depth`` at the size the
    pipeline worked at (``PipelineConfig.work_resolution``; the same for frames less than twice the
    network input)."""

    stamp: Any
    index: int
    depth: np.ndarray
    disparity: np.ndarray
    align: Any  # endo_depth_model.align.AlignStats
    scale: ScaleState
    snippet_index: int
    # what DepthPipeline.confidence needs: the previous frame's depth (relative unit), the intrinsics
    # and the predicted motion from the previous frame (None where unknown)
    prev_depth: np.ndarray | None = None
    K: np.ndarray | None = None
    T_prev_cur: np.ndarray | None = None
    # the frame's image was byte-identical to the one before (a hung frame grabber resending its last
    # buffer; a live sensor's noise never repeats): its depth says nothing new, its confidence is 0
    frozen: bool = False

    @property
    def relative_depth(self) -> np.ndarray:
        """``depth`` without the metric scale: the relative unit of the pose network's translation."""
        return self.depth / max(self.scale.scale, 1e-12)


@dataclass
class FrameMotion:
    """Odometry after one frame: camera pose in the odometry frame and the step from the previous frame."""

    stamp: Any
    T_odom_cam: np.ndarray
    T_prev_cur: np.ndarray
    scale: ScaleState


@dataclass
class PipelineStats:
    frames_in: int = 0
    frames_out: int = 0
    head_passes: int = 0
    reanchors: int = 0
    reanchor_reasons: dict = field(default_factory=dict)  # reason -> count (first, scene_cut, residual, ...)
    scene_cuts: int = 0  # image-level cuts detected: each starts a new odometry segment
    static_frames: int = 0  # odometry steps the zero-motion test set to the identity
    refined_steps: int = 0  # odometry steps refined photometrically (pose_refine)
    zero_motion: list = field(default_factory=list)  # recent (error unmoved, error moved) pairs
    fov_empty: int = 0  # frames in which nothing was visible (all black): no depth, no odometry step
    frozen_frames: int = 0  # frames byte-identical to the one before (a hung grabber): confidence 0
    confidence_nan_frames: int = 0  # confidence maps that came out with NaN (set to 0 there)
    overexposed_frames: int = 0  # frames nearly all saturated (the light against tissue): no cut test
    frozen_run: int = 0  # how many of the latest frames in a row were
    fov_kind: str = ""  # none | border | empty (the latest frame's field of view)
    fov_fraction: float = 1.0
    infer_ms: list[float] = field(default_factory=list)


def load_depth_model(cfg: PipelineConfig):
    """The VDA model of ``cfg.model_config`` with its weights (default: the shipped model) and SSB adapter
    (merged), in eval mode, from :func:`endo_depth_model.loading.load_depth_model`; every loading
    failure is a :class:`PipelineError`."""
    from endo_depth_model.checkpoint import CheckpointError

    shipped = loading.shipped_weights(cfg.model_config)
    try:
        weights = loading.resolve_weights(cfg.weights, shipped)
        if weights is None:
            raise loading.LoadError(
                f"no weights given and no shipped model {shipped}: set the weights path "
                "(parameter model.weights / option --weights)"
            )
        adapter = loading.resolve_weights(cfg.adapter)
        return loading.load_depth_model(cfg.model_config, weights, adapter=adapter, device=cfg.device).model
    except (loading.LoadError, CheckpointError, ValueError) as exc:
        raise PipelineError(str(exc)) from exc


def weights_fill_border(cfg: PipelineConfig) -> bool:
    """Whether the depth weights (``cfg.weights`` or the shipped model) were trained with the scope's border
    filled (:func:`endo_depth_model.loading.weights_fill_border`) and no SSB adapter (stage 2 does not fill)
    is applied."""
    return not cfg.adapter and loading.weights_fill_border(_configured_weights(cfg))


def fill_border_warning(cfg: PipelineConfig) -> str | None:
    """Why depth weights trained with the scope's border filled (``pretrain --fill-border``) run without the
    fill under ``cfg``, or None: the fill needs ``fov_mask`` auto (the detected border is what is filled),
    and an SSB adapter switches it off (stage 2 trains without it). The node logs it at start."""
    if not loading.weights_fill_border(_configured_weights(cfg)):
        return None
    if cfg.adapter:
        return (
            "the depth weights were trained with the scope's border filled, but an SSB adapter is applied "
            "and stage 2 trains without the fill: the border is not filled"
        )
    if cfg.fov_mask == "off":
        return (
            "the depth weights were trained with the scope's border filled, but fov_mask is off, so nothing "
            "is filled and depth next to a black border may be worse: set fov_mask to auto"
        )
    return None


def _configured_weights(cfg: PipelineConfig):
    """The depth weights file ``cfg`` names (``cfg.weights`` or the shipped model), for reading its
    metadata; None when there is none or the path is bad (the model loader reports that itself)."""
    try:
        return loading.resolve_weights(cfg.weights, loading.shipped_weights(cfg.model_config))
    except loading.LoadError:
        return None


def resolve_depth_range(cfg: PipelineConfig) -> tuple[float, float]:
    """``(min_depth, max_depth)`` the pipeline converts disparity with: the values set in ``cfg``; for those
    left at 0, the range stored in the depth weights' metadata (``cfg.weights`` or the shipped model),
    else :data:`DEFAULT_DEPTH_RANGE`. :class:`PipelineError` when the result is not ``0 < min < max``."""
    lo, hi = cfg.min_depth, cfg.max_depth
    if lo <= 0 or hi <= 0:
        stored: tuple = (None, None)
        weights = _configured_weights(cfg)
        try:
            if weights is not None:
                stored = loading.weights_depth_range(weights)
        except loading.LoadError:
            pass  # the model loader reports unreadable weights with its own message
        lo = lo if lo > 0 else (stored[0] or DEFAULT_DEPTH_RANGE[0])
        hi = hi if hi > 0 else (stored[1] or DEFAULT_DEPTH_RANGE[1])
    if not 0 < lo < hi:
        raise PipelineError(
            f"need 0 < min_depth ({lo}) < max_depth ({hi}) (after reading the weights' range)"
        )
    return float(lo), float(hi)


def load_pose_model(cfg: PipelineConfig):
    """The pose network with its weights (default: the shipped one, when there is one), in eval mode on
    ``cfg.device``; None when none is given or shipped. A missing file or weights of another network
    raise :class:`PipelineError`, an unreadable file :class:`~endo_depth_model.checkpoint.CheckpointError`."""
    import torch

    try:
        path = loading.resolve_weights(cfg.pose_weights, loading.shipped_weights(cfg.model_config, pose=True))
        if path is None:
            return None
        net = loading.load_pose_model(path, cfg.device)
    except loading.LoadError as exc:
        raise PipelineError(str(exc)) from exc
    if torch.device(cfg.device).type == "cpu":
        net.to(memory_format=torch.channels_last)  # ResNet convolutions: 28 -> 24 ms fp32, 14.5 ms bf16
    return net


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's CPU set), else the count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class DepthPipeline:
    """Streaming aligned depth with odometry and scale. Not thread-safe: call from one worker thread."""

    def __init__(self, cfg: PipelineConfig, depth_model=None, pose_model=None) -> None:
        import torch

        from endo_depth_model.preprocess import Preprocessor, disparity_to_depth
        from endo_depth_model.streaming import StreamingDepth

        cfg.validate()
        lo, hi = resolve_depth_range(cfg)
        cfg = dataclasses.replace(cfg, min_depth=lo, max_depth=hi)
        self.cfg = cfg  # with the depth range resolved
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise PipelineError(f"device {cfg.device!r} requested but CUDA is not available")
        self.device = torch.device(cfg.device)
        try:
            self.precision = resolve_precision(cfg.precision, cfg.device)
        except PrecisionError as exc:
            raise PipelineError(str(exc)) from exc
        model = depth_model if depth_model is not None else load_depth_model(cfg)
        if isinstance(model, torch.nn.Module):
            from endo_depth_model.runtime import BackendError, load_backend

            try:
                model = load_backend(
                    cfg.backend,
                    model,
                    device=cfg.device,
                    input_hw=(cfg.input_height, cfg.input_width),
                    window=cfg.window,
                    cache_dir=cfg.engine_cache or None,
                    threads=cfg.torch_threads,
                    bf16=self.precision == "bf16" and cfg.backend in ("torch", "auto"),
                    fp16=self.precision == "fp16" and cfg.backend in ("torch", "auto"),
                )
            except BackendError as exc:
                raise PipelineError(f"inference backend {cfg.backend!r}: {exc}") from exc
        self.model = model
        self.pose_model = pose_model if pose_model is not None else load_pose_model(cfg)
        if self.pose_model is not None and self.device.type == "cpu" and self.precision != "fp32":
            # its convolution weights stored in the dtype autocast computes in (cast_weights), on a copy
            self.pose_model = cast_weights(copy.deepcopy(self.pose_model), self.precision)
        self._pose_pool = None
        self._threads = 0  # > 0: set on the first push, in the pushing thread (OpenMP teams are per thread)
        if cfg.concurrent_pose and self.pose_model is not None and self.device.type == "cpu":
            from concurrent.futures import ThreadPoolExecutor

            self._threads = cfg.torch_threads or max(1, usable_cpus() // 2)
            self._pose_pool = ThreadPoolExecutor(
                1, thread_name_prefix="pose", initializer=torch.set_num_threads, initargs=(self._threads,)
            )
            weakref.finalize(self, self._pose_pool.shutdown, wait=False)
        self.preprocessor = Preprocessor((cfg.input_height, cfg.input_width))
        self._disp_to_depth = disparity_to_depth
        self.metric = bool(getattr(getattr(self.model, "config", None), "metric", False))
        self.latency_mode = cfg.latency_mode
        if self.latency_mode == "auto":
            self.latency_mode = "causal" if hasattr(getattr(model, "model", model), "head") else "aligned"
        if self.latency_mode == "causal":
            from endo_depth_model.causal import CausalDepth
            from endo_depth_model.streaming import StreamError

            try:
                self.stream = CausalDepth(
                    self.model,
                    lambda rgb: self.preprocessor(rgb)[0],
                    context=min(cfg.causal_context, self.model.config.num_frames - 1),
                    fit=cfg.causal_fit,
                    device=self.device,
                    precision=self.precision if cfg.backend in ("torch", "auto") else "fp32",
                )
            except StreamError as exc:
                raise PipelineError(f"latency_mode causal: {exc}") from exc
        else:
            self.stream = StreamingDepth(
                self.model,
                lambda rgb: self.preprocessor(rgb)[0],
                window=cfg.window,
                overlap=cfg.overlap,
                stride=cfg.stride,
                blend=cfg.blend,
                device=self.device,
            )
        # weights trained with the scope's border filled get it filled here too (needs fov_mask auto;
        # fill_border_warning says when it cannot be)
        self.stream.fill_border = weights_fill_border(cfg)
        self.fill_border_warning = fill_border_warning(cfg)
        self.scale = ScaleEstimator(
            cfg.scale_mode,
            cfg.fixed_scale,
            cfg.kinematic_window,
            cfg.kinematic_min_pairs,
            cfg.kinematic_min_motion_m,
            metric_output=self.metric,
        )
        self.odometry = PoseIntegrator()
        self.stats = PipelineStats()
        from endo_depth_model.fov import FovTracker

        self.fov = FovTracker() if cfg.fov_mask == "auto" else None
        self._fov_margin = self.fov.margin if self.fov is not None else 0  # pixels at the frames' size
        from endo_depth_model.scene_cut import SceneCutDetector

        self.cuts = SceneCutDetector() if cfg.scene_cuts else None
        from endo_depth_model.temporal_filter import StillPixelFilter

        self.still_filter = StillPixelFilter() if cfg.temporal_filter else None
        self._filter_rgb: dict[int, np.ndarray] = {}  # index -> image, for frames the filter has not seen
        self._cut_pending = False  # the next re-anchor is the scene cut's
        self._masks: dict[int, np.ndarray] = {}  # stream index -> field-of-view mask of held-back frames
        self._prev_rgb: np.ndarray | None = None  # the last pushed image, for the frozen-input check
        self._frozen: set[int] = set()  # stream indices of frozen frames not yet finalised
        self._prev_pose_input = None
        self._pose_pair = (None, None)
        self._last_depth: FrameDepth | None = None
        self._steps: dict[int, np.ndarray] = {}  # stream index -> predicted motion from the frame before
        self._prev_rel: np.ndarray | None = None  # the last finalised frame's depth, relative unit
        self._last_K: np.ndarray | None = None
        self._snippet_index = -1
        self._last_stats = None
        self._frame_hw: tuple[int, int] | None = None  # the pushed frames' size (their depth's size)
        self._work_hw: tuple[int, int] | None = None  # the size they are processed at

    @property
    def has_odometry(self) -> bool:
        return self.pose_model is not None

    def reset(self) -> int:
        """Re-anchor depth and restart odometry at the identity; returns the frames dropped."""
        dropped = self._forget_scene()
        self._frozen.clear()
        self._prev_rgb = None
        self._frame_hw = None  # the next frame may have another size
        self.odometry.reset()
        return dropped

    def _forget_scene(self) -> int:
        """What a reset and a scene cut both restart: the depth stream (frames it holds are dropped; the
        caller finalises them first if it wants them), the per-frame state kept for it, the still-pixel
        filter, odometry pairing and the scale. Returns the frames dropped."""
        dropped = self.stream.reset()
        self._masks.clear()
        self._filter_rgb.clear()
        if self.still_filter is not None:
            self.still_filter.reset()
        self.scale.reset()
        self._prev_pose_input = None
        self._last_depth = None
        self._steps.clear()
        self._prev_rel = None
        return dropped

    POSE_MIN_HEIGHT = 112  # measured: no loss of translation accuracy down to 112x140 (BENCHMARKS.md)

    @property
    def pose_input_hw(self) -> tuple[int, int]:
        """The pose network's input size: ``pose_input_scale`` of the network input, but never scaled
        below ``POSE_MIN_HEIGHT`` rows (small inputs stay at full size: there the pose network loses
        accuracy quickly)."""
        h, w = self.cfg.input_height, self.cfg.input_width
        s = max(self.cfg.pose_input_scale, min(1.0, self.POSE_MIN_HEIGHT / h))
        return round(h * s), round(w * s)

    def _pose_step(self, rgb: np.ndarray) -> np.ndarray | None:
        import torch

        from endo_depth_model.geometry import pose_vec_to_mat

        x = self.preprocessor.resize(
            torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0),
            self.pose_input_hw,
        ).to(self.device)
        prev, self._prev_pose_input = self._prev_pose_input, x
        self._pose_pair = (prev, x)
        if prev is None:
            return None
        with torch.inference_mode(), autocast(self.precision, self.device):
            out = self.pose_model(prev, x)
        axis_angle, translation = out[0].float(), out[1].float()
        # fed (previous, current): the inverted transform maps current-camera points to the previous camera
        return pose_vec_to_mat(axis_angle, translation, invert=True)[0].double().cpu().numpy()

    def push_measured_motion(self, predicted_translation, measured_translation_m, T_measured=None) -> bool:
        """Feed the kinematic scale estimator one frame pair's measured motion (metres); returns True when
        the pair was informative and kept.

        ``kinematic_source`` pose: the pair is (the pose network's translation, the measured translation).
        photometric: the scale is measured from the depth itself (:func:`~endo_depth_model.odometry.
        photometric_scale` on the latest frame pair, through the full measured motion ``T_measured``
        (4, 4), current-camera points into the previous camera); it needs ``T_measured`` and the
        intrinsics of the pushed frames."""
        if self.cfg.kinematic_source == "pose":
            return self.scale.push(predicted_translation, measured_translation_m)
        from endo_depth_model.odometry import photometric_scale

        pair = None if T_measured is None else self._pair_at_pose_size(self._last_K)
        if pair is None:
            return False
        s = photometric_scale(*pair, np.asarray(T_measured, dtype=np.float64))
        if not np.isfinite(s):
            return False
        measured = np.asarray(T_measured, dtype=np.float64)[:3, 3]
        return self.scale.push(measured / s, measured)

    def _is_frozen(self, rgb: np.ndarray) -> bool:
        """Whether ``rgb`` repeats the last pushed image byte for byte (counted in ``stats``)."""
        prev = self._prev_rgb
        frozen = prev is not None and prev.shape == rgb.shape and np.array_equal(prev, rgb)
        self._prev_rgb = np.array(rgb, copy=True)
        self.stats.frozen_frames += int(frozen)
        self.stats.frozen_run = self.stats.frozen_run + 1 if frozen else 0
        return frozen

    def _pair_at_pose_size(self, K):
        """(previous image, current image, relative depth, intrinsics) of the latest frame pair at the pose
        network's input size, or None without a pair, a depth or intrinsics."""
        import cv2

        from endo_depth_model.geometry import scale_intrinsics

        last, pair = self._last_depth, self._pose_pair
        if last is None or pair is None or pair[0] is None or K is None:
            return None
        prev, cur = pair
        h, w = cur.shape[-2:]
        H, W = last.depth.shape
        depth = cv2.resize(last.relative_depth, (w, h), interpolation=cv2.INTER_NEAREST)
        return prev.cpu(), cur.cpu(), depth, scale_intrinsics(K, w / W, h / H)

    def _motion_step(self, rgb: np.ndarray, K, prev_depth) -> np.ndarray | None:
        """The pose network's step for ``rgb``, then :meth:`_check_motion` with the previous frame's depth
        (so the whole step runs beside the depth network, in the pose thread where there is one)."""
        step = self._pose_step(rgb)
        if step is None or K is None or prev_depth is None:
            return step
        if self.cfg.static_ratio <= 0 and not self.cfg.pose_refine:
            return step
        return self._check_motion(step, K, prev_depth)

    def _check_motion(self, step: np.ndarray, K: np.ndarray, prev_depth) -> np.ndarray:
        """``step`` refined photometrically (``pose_refine``), then the identity instead when the
        zero-motion test (``static_ratio``) says the camera stood still. Both warp through
        ``prev_depth`` (the previous finalised frame): the frames' roles swap, so the inverse step is
        refined and tested (the current frame warped into the previous one)."""
        import cv2

        from endo_depth_model.geometry import scale_intrinsics
        from endo_depth_model.odometry import refine_motion, zero_motion_errors

        prev, cur = (x.cpu() for x in self._pose_pair)
        h, w = cur.shape[-2:]
        H, W = prev_depth.depth.shape
        depth = cv2.resize(prev_depth.relative_depth, (w, h), interpolation=cv2.INTER_NEAREST)
        K = scale_intrinsics(K, w / W, h / H)
        back = np.linalg.inv(step)  # previous-camera points into the current camera
        if self.cfg.pose_refine:
            back = refine_motion(cur, prev, depth, K, back)
            step = np.linalg.inv(back)
            self.stats.refined_steps += 1
        if self.cfg.static_ratio <= 0:
            return step
        e_still, e_moved = zero_motion_errors(cur, prev, depth, K, back)
        self.stats.zero_motion.append((e_still, e_moved))
        del self.stats.zero_motion[:-300]
        if np.isfinite(e_still) and e_still <= self.cfg.static_ratio * e_moved:
            self.stats.static_frames += 1
            return np.eye(4)
        return step

    def push(
        self, rgb: np.ndarray, stamp: Any = None, K: np.ndarray | None = None
    ) -> tuple[list[FrameDepth], FrameMotion | None]:
        """One (H, W, 3) uint8 RGB frame in; finalised depth frames and this frame's odometry out.

        ``K`` (3, 3), the frame's intrinsics, enables the zero-motion test (``static_ratio``)."""
        import torch

        t0 = time.perf_counter()
        self.stats.frames_in += 1
        rgb, K = self._to_work_size(rgb, K)
        motion = None
        empty = False
        before_cut: list[FrameDepth] = []
        cut = False
        if self.cuts is not None:
            cut = self.cuts.update(rgb)
            self.stats.overexposed_frames = self.cuts.skipped["overexposed"]
        if cut:
            # a new scene: finalise what the old one holds back, then restart depth, odometry pairing
            # and scale (the pose holds: a new segment starts where the last one ended)
            with torch.inference_mode():
                before_cut = self._finalise(self.stream.flush())
            self._forget_scene()
            if self.fov is not None:
                self.fov.reset()
            self.stats.scene_cuts += 1
            self._cut_pending = True
        if self.fov is not None:
            found = self.fov.update(rgb)
            self.stats.fov_kind, self.stats.fov_fraction = found.kind, found.fraction
            empty = not found.ok
            self.stats.fov_empty += int(empty)
            if found.kind != "none":
                self._masks[self.stream.next_index] = found.mask
            self.stream.fov_mask = found.mask if found.kind == "border" else None
        step = None
        index = self.stream.next_index
        frozen = self._is_frozen(rgb)
        if frozen:
            self._frozen.add(index)
        if self.still_filter is not None:
            self._filter_rgb[index] = rgb
        if self._threads:
            torch.set_num_threads(self._threads)
            self._threads = 0
        pose_job = None
        with torch.inference_mode():
            if self.pose_model is not None:
                # nothing visible: no motion can be seen; hold the pose and restart the pair after it
                if empty:
                    self._prev_pose_input = None
                elif self._pose_pool is not None:
                    pose_job = self._pose_pool.submit(self._motion_step, rgb, K, self._last_depth)
                else:
                    step = self._motion_step(rgb, K, self._last_depth)
            try:
                results = self.stream.push(rgb, stamp)
            except BaseException:
                if pose_job is not None:  # one pose step at a time; the depth's error is the one raised
                    pose_job.exception()
                raise
            if pose_job is not None:
                step = pose_job.result()
        out = before_cut + self._finalise(results)
        if out:
            self._last_depth = out[-1]
        if self.pose_model is not None:
            state = self.scale.state()
            if step is not None:
                T = self.odometry.update(step, state.scale)
                motion = FrameMotion(stamp, T, step, state)
                self._steps[index] = step
            else:
                motion = FrameMotion(stamp, self.odometry.T_odom_cam.copy(), np.eye(4), state)
        self._confidence_inputs(out, K)
        out = self._at_frame_size(out)
        self.stats.infer_ms.append((time.perf_counter() - t0) * 1e3)
        del self.stats.infer_ms[:-1000]
        return out, motion

    def flush(self) -> list[FrameDepth]:
        """End of stream: emit every frame still held back."""
        import torch

        with torch.inference_mode():
            results = self.stream.flush()
        out = self._finalise(results)
        self._confidence_inputs(out, self._last_K)
        return self._at_frame_size(out)

    def _to_work_size(self, rgb, K):
        """A pushed frame (and its intrinsics) at the size the pipeline works at (``work_resolution``).
        A frame of another size than the stream's first raises :class:`StreamError` here, as the engines
        do (two sizes may shrink to the same working size); anything but (H, W, 3) uint8 passes unchanged
        to the engine's own checks."""
        from endo_depth_model.geometry import scale_intrinsics
        from endo_depth_model.preprocess import shrink_rgb, work_size
        from endo_depth_model.streaming import size_change_error

        rgb_like = isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3
        if not (rgb_like and rgb.dtype == np.uint8):
            return rgb, K
        hw = (int(rgb.shape[0]), int(rgb.shape[1]))
        if self._frame_hw is None:
            self._frame_hw = hw
            network_hw = (self.cfg.input_height, self.cfg.input_width)
            self._work_hw = work_size(hw, network_hw) if self.cfg.work_resolution == "auto" else hw
            if self.fov is not None:  # its margin against the stop's soft edge, in working pixels
                self.fov.margin = max(1, round(self._fov_margin * self._work_hw[0] / hw[0]))
        elif hw != self._frame_hw:
            raise size_change_error(self.stream.frames_received, hw, self._frame_hw)
        if self._work_hw == hw:
            return rgb, K
        h, w = self._work_hw
        if K is not None:
            K = scale_intrinsics(np.asarray(K, dtype=np.float64), w / hw[1], h / hw[0])
        return shrink_rgb(rgb, self._work_hw), K

    def _at_frame_size(self, frames: list[FrameDepth]) -> list[FrameDepth]:
        """Finalised frames as the caller gets them: depth and intrinsics at the pushed frames' size (new
        objects; the pipeline keeps its own at the working size for the next frame's odometry)."""
        from endo_depth_model.geometry import scale_intrinsics
        from endo_depth_model.preprocess import upsample_depth

        if self._frame_hw is None or self._work_hw == self._frame_hw:
            return frames
        (H, W), (h, w) = self._frame_hw, self._work_hw
        return [
            dataclasses.replace(
                fd,
                depth=upsample_depth(fd.depth, (H, W)),
                K=None if fd.K is None else scale_intrinsics(fd.K, W / w, H / h),
            )
            for fd in frames
        ]

    def _confidence_inputs(self, frames: list[FrameDepth], K) -> None:
        """Give each finalised frame (in order) the previous finalised frame's depth, K and its motion."""
        if K is not None:
            self._last_K = K
        for fd in frames:
            fd.K, fd.T_prev_cur, fd.prev_depth = K, self._steps.pop(fd.index, None), self._prev_rel
            self._prev_rel = fd.relative_depth
        for i in [i for i in self._steps if i < (frames[-1].index if frames else -1)]:
            del self._steps[i]

    def confidence(self, fd: FrameDepth, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 confidence in [0, 1] of a finalised frame (see endo_depth_model.confidence);
        ``rgb`` is the frame's image (H, W, 3) uint8, as it was pushed."""
        from endo_depth_model.confidence import confidence_map

        if fd.frozen:
            return np.zeros(fd.depth.shape, np.float32)
        residual = float(getattr(fd.align, "residual", float("nan")))
        if getattr(fd.align, "reanchored", False):
            residual = float("nan")  # the first snippet of an anchor was fitted to nothing
        conf = confidence_map(fd.relative_depth, rgb, fd.prev_depth, fd.K, fd.T_prev_cur, residual)
        bad = ~np.isfinite(conf)
        if bad.any():  # a non-finite motion or depth upstream: no confidence there, and the frame counted
            conf[bad] = 0.0
            self.stats.confidence_nan_frames += 1
        return conf

    def _finalise(self, results) -> list[FrameDepth]:
        self.stats.head_passes = self.stream.head_passes
        state = self.scale.state()
        out = []
        for r in results:
            if r.stats is not self._last_stats:  # the first frame finalised by a new head pass
                self._last_stats = r.stats
                self._snippet_index += 1
                if r.stats.reanchored and self.still_filter is not None:
                    self.still_filter.reset()  # a new anchor: the depth before it is in another scale
                if r.stats.reanchored:
                    self.stats.reanchors += 1
                    reason = "scene_cut" if self._cut_pending else (r.stats.reason or "first")
                    self._cut_pending = False
                    self.stats.reanchor_reasons[reason] = self.stats.reanchor_reasons.get(reason, 0) + 1
            raw = np.clip(r.disparity, 0.0, None)
            # a metric model's output is depth in metres already; a relative model's is disparity
            depth = raw if self.metric else self._disp_to_depth(raw, self.cfg.min_depth, self.cfg.max_depth)
            depth = np.asarray(depth, dtype=np.float32)  # a new array: clip and the conversion copy
            depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
            mask = self._masks.pop(r.index, None)
            if mask is not None and mask.shape == depth.shape:
                depth[~mask] = np.nan
            image = self._filter_rgb.pop(r.index, None)
            if self.still_filter is not None and image is not None:
                depth = self.still_filter(depth, image)  # before the scale: a scale change is no tremble
            depth = (depth * state.scale).astype(np.float32)
            frozen = r.index in self._frozen
            self._frozen.discard(r.index)
            out.append(
                FrameDepth(
                    r.stamp, r.index, depth, r.disparity, r.stats, state, self._snippet_index, frozen=frozen
                )
            )
        self.stats.frames_out += len(out)
        return out
