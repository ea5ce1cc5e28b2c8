"""The typed training configuration of ``endo-depth train``: a tree of dataclasses loaded from YAML.

See ``recipes/train_*.yaml``. The trainer (:mod:`endo_depth_model.training.trainer`) and the command line
(:mod:`endo_depth_model.cli.train`) both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from endo_depth_model.config import ConfigError, load_yaml

__all__ = [
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "load_train_config",
]


@dataclass
class DataConfig:
    """Where clips come from. ``train`` / ``val`` are lists of sources understood by
    :func:`endo_depth_model.data.open_source` (dataset folders, split files, MP4s, image folders,
    rosbag2 recordings). The validation split is used only to select checkpoints."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    clip_length: int = 16  #: T frames per clip fed to the depth network (EndoDAV trains with 16)
    input_height: int = 224  #: network input, multiple of 14 (EndoDAV: 224 x 280)
    input_width: int = 280
    frame_step: int = 1  #: frame interval between consecutive clip frames
    clip_stride: int = 1  #: distance between the first frames of consecutive training clips
    augment: bool = True  #: horizontal flip + colour jitter on the network inputs (Monodepth2)
    num_workers: int = 2  #: DataLoader worker processes per training process
    val_clips: int = 0  #: number of validation clips (evenly spaced); 0 = all

    def validate(self) -> None:
        if self.clip_length < 1 or self.clip_length > 32:
            raise ConfigError(
                f"data.clip_length must be in [1, 32] (VDA's temporal limit), got {self.clip_length}"
            )
        for name in ("input_height", "input_width"):
            value = getattr(self, name)
            if value < 14 or value % 14:
                raise ConfigError(f"data.{name} must be a positive multiple of 14, got {value}")
        for name in ("frame_step", "clip_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.val_clips < 0:
            raise ConfigError("data.num_workers and data.val_clips must be >= 0")


@dataclass
class ModelConfig:
    """The depth network (VDA + SSB) and the pose network."""

    name: str = "vits"  #: VDA size: vitt (tiny, CPU), vits, vitb, vitl
    weights: Path | None = None  #: pretrained VDA / Depth-Anything-V2 checkpoint (.pth or .safetensors)
    adapter: Path | None = None  #: initial SSB adapter (safetensors), e.g. to continue a fine-tuning
    pose_weights: Path | None = None  #: initial pose network (safetensors)
    min_depth: float = 0.1  #: disparity -> depth range (EndoDAV: 0.1 .. 150, nominal millimetres)
    max_depth: float = 150.0
    #: streaming-mode fine-tuning: the depth network's temporal attention is causal (each clip frame sees
    #: only itself and earlier frames), exactly what the node's causal engine computes for a frame with
    #: that many cached predecessors (up to clip_length - 1 of the engine's 31), so training equals
    #: inference within the clip; false: the full window (aligned)
    causal: bool = False

    def validate(self) -> None:
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(
                f"model: need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}"
            )


@dataclass
class LossConfig:
    """Weights of the self-supervised objective (Monodepth2 / EndoDAV defaults)."""

    ssim: float = 0.85  #: SSIM share of the photometric error, the rest is L1
    smoothness: float = 1e-3  #: edge-aware smoothness weight (divided by 2**scale)
    #: EndoDAV projection loss weight, temporal phases only. The loss is in depth units: 1e-2 is
    #: EndoDAV's value for millimetres (min/max depth 0.1 / 150); use 10 for depth in metres.
    projection: float = 1e-2
    automask: bool = True
    min_reprojection: bool = True
    scales: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  #: disparity scales (1 / 2**s)

    def validate(self) -> None:
        if not 0 <= self.ssim <= 1:
            raise ConfigError(f"loss.ssim must be in [0, 1], got {self.ssim}")
        if self.smoothness < 0 or self.projection < 0:
            raise ConfigError("loss.smoothness and loss.projection must be >= 0")
        if (
            not self.scales
            or any(s < 0 or s > 5 for s in self.scales)
            or len(set(self.scales)) != len(self.scales)
        ):
            raise ConfigError(f"loss.scales must be distinct integers in [0, 5], got {self.scales}")


@dataclass
class OptimConfig:
    """Adam with step decay (StepLR), stepped once per training step."""

    lr: float = 1e-4  #: SSB vectors
    pose_lr: float | None = None  #: pose network; None = lr
    lr_decay_steps: int = 10000  #: multiply the learning rates by lr_decay_gamma every this many steps
    lr_decay_gamma: float = 0.1
    grad_clip: float = 0.0  #: max global gradient norm; 0 = off

    def validate(self) -> None:
        if self.lr <= 0 or (self.pose_lr is not None and self.pose_lr <= 0):
            raise ConfigError("optim.lr and optim.pose_lr must be > 0")
        if self.lr_decay_steps < 1 or not 0 < self.lr_decay_gamma <= 1:
            raise ConfigError("optim.lr_decay_steps must be >= 1 and optim.lr_decay_gamma in (0, 1]")
        if self.grad_clip < 0:
            raise ConfigError("optim.grad_clip must be >= 0")


@dataclass
class ScheduleConfig:
    """Step counts. EndoDAV alternates 400 spatial-SSB steps and 100 temporal-SSB steps."""

    steps: int = 20000
    spatial_steps: int = 400  #: steps with the spatial SSB group trainable
    temporal_steps: int = 100  #: then steps with the temporal group trainable (+ projection loss)
    val_every: int = 500  #: validate (and maybe keep as best) every this many steps, and at the end
    checkpoint_every: int = 500  #: write checkpoints/last every this many steps, and at the end
    log_every: int = 10

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"schedule.steps must be >= 1, got {self.steps}")
        if self.spatial_steps < 0 or self.temporal_steps < 0 or self.spatial_steps + self.temporal_steps == 0:
            raise ConfigError("schedule: spatial_steps and temporal_steps must be >= 0 and not both 0")
        for name in ("val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"schedule.{name} must be >= 1")

    def phase(self, step: int) -> str:
        """``'spatial'`` or ``'temporal'`` for 0-based training ``step``."""
        period = self.spatial_steps + self.temporal_steps
        return "spatial" if step % period < self.spatial_steps else "temporal"


@dataclass
class TrainConfig:
    """Everything one training run needs. ``batch_size`` is per process."""

    output_dir: Path = Path("runs/endodav")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch_size: int = 1
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: checkpoint selection on the validation split: 'abs_rel' needs ground-truth depth there,
    #: 'loss' is the self-supervised loss (works for any source), 'auto' picks abs_rel when available
    select_metric: Literal["auto", "loss", "abs_rel"] = "auto"
    tensorboard: bool = True

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for part in (self.data, self.model, self.loss, self.optim, self.schedule):
            part.validate()


def load_train_config(path: str | Path) -> TrainConfig:
    """Load and validate a :class:`TrainConfig` from YAML (a top-level ``train:`` section is optional)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    section = "train" if isinstance(data, dict) and set(data) == {"train"} else None
    return load_yaml(TrainConfig, path, section=section)
