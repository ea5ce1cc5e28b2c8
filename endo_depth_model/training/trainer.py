"""The self-supervised EndoDAV trainer (used by ``endo-depth train``; configuration:
:mod:`endo_depth_model.training.config`, clips and augmentation: :mod:`endo_depth_model.training.clips`).

One training step, for a batch of clips of T frames with one extra neighbour frame on each side::

    clip (B, T) --SSB-adapted VDA--> disparity --disparity_to_depth--> depth
    all consecutive pairs (B, T+1) --pose net--> T_{j+1, j}
    each clip frame t: warp frames t-1 and t+1 into t  -> SSIM+L1, min reprojection, auto-mask
                       edge-aware smoothness on mean-normalised disparity
                       temporal phases: projection loss against the predicted depth of t-1 / t+1

Only the SSB vectors and the pose network train. Spatial and temporal SSB groups alternate
(``schedule.spatial_steps`` / ``schedule.temporal_steps``, EndoDAV: 400 / 100); the projection loss is
active only in temporal phases. Adam with StepLR; validation only on the validation split selects the
``best`` checkpoint. Checkpoints (adapter and pose net as safetensors, optimizer / scheduler / step /
RNG state in a ``weights_only``-loadable file) resume exactly.

Distributed: under ``torchrun`` every process trains ``batch_size`` clips of the same global batch
(DistributedDataParallel, gloo on CPU, nccl on GPU). The sample order and the augmentation depend
only on the seed and the global position of a sample, and every loss is a per-clip value, so a run on
N processes follows the same trajectory as one process with an N times larger batch. The pose
network normalises (BatchNorm) over the pairs of one clip at a time for the same reason: SyncBatchNorm
does not exist on CPU, and per-clip statistics do not depend on how a batch is split. The forward pass
runs clip by clip (EndoDAV trains with one clip of 16 frames per step), which makes each clip's
computation bitwise independent of the batch it is in.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from endo_depth_model import geometry
from endo_depth_model.config import to_dict
from endo_depth_model.loading import (
    ADAPTER_FILE,
    CONFIG_FILE,
    META_FILE,
    POSE_FILE,
    LoadError,
    load_checkpoint_weights,
    load_pose_model,
)
from endo_depth_model.losses import SelfSupervisedLoss
from endo_depth_model.training.clips import (
    AugmentedClips,
    ClipOrder,
    TrainError,
    augment_clip,
    collate_clips,
    every_nth,
)
from endo_depth_model.training.config import TrainConfig
from endo_depth_model.training.distributed import DistInfo, all_reduce_sum, setup_distributed

__all__ = [
    "TrainError",
    "TrainSummary",
    "DistInfo",
    "TrainingModule",
    "ClipOrder",
    "augment_clip",
    "Trainer",
    "train",
    "load_checkpoint_weights",
]

# a checkpoint folder holds the files of endo_depth_model.loading (ADAPTER_FILE, ...) and, to resume, this
STATE_FILE = "trainer_state.pt"
TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"
LOG_TERMS = ("loss", "photometric", "smoothness", "projection", "automask")


# ---- the model under training -----------------------------------------------------------------------


class TrainingModule(nn.Module):
    """Depth network + pose network + objective in one module (what DDP wraps).

    ``forward(frames, frames_net, K, projection)``: ``frames`` (B, N, 3, H, W) in [0, 1] for the
    losses, ``frames_net`` the (jittered) copy for the networks, N = T + 2 (clip plus one neighbour each
    side), ``K`` (B, 3, 3) pixels of these frames. Returns a dict of per-clip (B,) terms averaged over
    the T clip frames and the loss scales, plus ``disparity`` (B, T, H, W) and ``depth`` (B, T, H, W).
    """

    def __init__(
        self,
        depth_model: nn.Module,
        pose_net: nn.Module,
        loss: SelfSupervisedLoss,
        scales: list[int],
        min_depth: float,
        max_depth: float,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        causal: bool = False,
    ):
        super().__init__()
        self.depth_model = depth_model
        self.causal = causal
        self.pose_net = pose_net
        self.loss = loss
        self.scales = list(scales)
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)

    def to_depth(self, disparity: torch.Tensor) -> torch.Tensor:
        from endo_depth_model.preprocess import disparity_to_depth

        return disparity_to_depth(disparity, self.min_depth, self.max_depth)

    def relative_poses(self, frames_net: torch.Tensor) -> torch.Tensor:
        """One clip (1, N, 3, H, W) -> (1, N-1, 4, 4): ``T_{j+1, j}`` mapping frame j's camera into j+1's."""
        clip = frames_net[0]
        axis_angle, translation = self.pose_net(clip[:-1], clip[1:])[:2]
        return geometry.pose_vec_to_mat(axis_angle, translation)[None]

    def forward(
        self, frames: torch.Tensor, frames_net: torch.Tensor, K: torch.Tensor, projection: bool
    ) -> dict[str, torch.Tensor]:
        # Clip by clip: every clip's computation (including the pose net's BatchNorm statistics) is
        # then the same whatever the batch size, so N processes x B clips == 1 process x N*B clips.
        outs = [
            self.forward_clip(frames[i : i + 1], frames_net[i : i + 1], K[i : i + 1], projection)
            for i in range(frames.shape[0])
        ]
        return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}

    def forward_clip(
        self, frames: torch.Tensor, frames_net: torch.Tensor, K: torch.Tensor, projection: bool
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward` for a batch of one clip."""
        b, n, _, h, w = frames.shape
        t = n - 2
        if t < 1:
            raise TrainError(f"a clip needs at least 3 frames (clip + 2 neighbours), got {n}")
        disparity = self.depth_model((frames_net[:, 1:-1] - self.mean) / self.std, causal=self.causal)
        poses = self.relative_poses(frames_net)  # (B, T+1, 4, 4)
        T_next = poses[:, 1:].flatten(0, 1)  # clip frame i -> i+1
        T_prev = geometry.invert_pose(poses[:, :-1]).flatten(0, 1)  # clip frame i -> i-1
        target = frames[:, 1:-1].flatten(0, 1)
        neighbours = {-1: frames[:, :-2].flatten(0, 1), 1: frames[:, 2:].flatten(0, 1)}
        K_bt = K[:, None].expand(b, t, 3, 3).flatten(0, 1)
        # EndoDAV averages each direction over the T-1 frames that have a predicted neighbour
        ramp = torch.arange(t, device=frames.device)
        scale = t / (t - 1) if t > 1 else 0.0
        w_next = ((ramp < t - 1).to(frames.dtype) * scale).expand(b, t).flatten()
        w_prev = ((ramp > 0).to(frames.dtype) * scale).expand(b, t).flatten()

        terms: dict[str, torch.Tensor] = {}
        disp_full = disparity.flatten(0, 1)[:, None]  # (BT, 1, H, W)
        depth_full = None
        for s in self.scales:
            if s == 0:
                disp_s, disp_up = disp_full, disp_full
            else:
                disp_s = F.interpolate(disp_full, scale_factor=0.5**s, mode="bilinear", align_corners=True)
                disp_up = F.interpolate(disp_s, size=(h, w), mode="bilinear", align_corners=True)
            depth = self.to_depth(disp_up)
            if s == 0:
                depth_full = depth
            depth_bt = depth.unflatten(0, (b, t))
            nd = None
            if projection:
                nxt = torch.cat([depth_bt[:, 1:], depth_bt[:, -1:]], 1).flatten(0, 1)
                prv = torch.cat([depth_bt[:, :1], depth_bt[:, :-1]], 1).flatten(0, 1)
                nd = {1: (nxt, w_next), -1: (prv, w_prev)}
            out = self.loss(
                target, neighbours, depth, disp_s, K_bt, {-1: T_prev, 1: T_next}, nd, projection, 1.0 / 2**s
            )
            for key in LOG_TERMS:
                terms[key] = terms.get(key, 0) + out[key] / len(self.scales)
        result = {key: value.unflatten(0, (b, t)).mean(1) for key, value in terms.items()}
        if depth_full is None:
            depth_full = self.to_depth(disp_full)
        result["disparity"] = disparity
        result["depth"] = depth_full.unflatten(0, (b, t))[:, :, 0]
        return result


# ---- checkpoints ----------------------------------------------------------------------------------


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "numpy_gauss": [int(np.random.get_state()[3]), float(np.random.get_state()[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(
        ("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], has_gauss, cached)
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- the trainer ------------------------------------------------------------------------------------


@dataclass
class TrainSummary:
    """What a run did; printed as a table at the end."""

    steps: int
    start_step: int
    world_size: int
    seconds: float
    final: dict[str, float]
    best_metric: str | None
    best_value: float | None
    best_step: int | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    trainable: dict[str, float]

    def table(self) -> str:
        def num(x) -> str:
            return f"{x:,.0f}" if isinstance(x, (int, float)) and float(x).is_integer() else f"{x:.4g}"

        rows = [
            ("steps", f"{self.steps} (started at {self.start_step})"),
            ("processes", str(self.world_size)),
            ("wall time", f"{self.seconds:.1f} s"),
            (
                "trainable",
                f"{num(self.trainable.get('depth', 0))} depth ({self.trainable.get('percent', 0):.3f} %) "
                f"+ {num(self.trainable.get('pose', 0))} pose",
            ),
        ]
        rows += [(f"last {k}", f"{v:.5g}") for k, v in self.final.items()]
        if self.best_metric is not None and self.best_value is not None:
            shown = f"{self.best_value:.5g} at step {self.best_step}"
            if self.best_step == 0 and self.steps > 0:
                shown += " = the base model: no fine-tuned step beat it, checkpoints/best holds the base"
            rows.append((f"best val {self.best_metric}", shown))
        rows.append(("last checkpoint", str(self.last_checkpoint)))
        rows.append(("best checkpoint", str(self.best_checkpoint)))
        width = max(len(r[0]) for r in rows)
        line = "-" * (width + 2 + max(len(r[1]) for r in rows))
        return "\n".join(["Training summary", line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])


class Trainer:
    """Build models, data and optimiser from a :class:`TrainConfig`; ``run()`` trains.

    ``train_clips`` / ``val_clips`` (optional) are clip datasets to use instead of the configured
    sources (items: dict with ``frames`` (T+2, 3, H, W) or (T+2, H, W, 3), ``K`` (3, 3), optional
    ``depth``), e.g. for tests or programmatic use.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        train_clips=None,
        val_clips=None,
        dist_info: DistInfo | None = None,
        resume: str | Path | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.info = dist_info or setup_distributed(cfg.device)
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        self._build_models()  # first: a bad weight file fails before the data is opened
        self.train_clips = (
            train_clips if train_clips is not None else self._open_clips(cfg.data.train, "train")
        )
        self.val_clips = (
            val_clips
            if val_clips is not None
            else (self._open_clips(cfg.data.val, "val") if cfg.data.val else None)
        )
        self.step = 0
        self.best: dict = {"metric": None, "value": None, "step": None}
        self._phase: str | None = None
        self._ddp: nn.Module | None = None
        self._writer = None
        resume_dir = self._resolve_resume(resume)
        if resume_dir is not None:
            self._load(resume_dir)
        self.start_step = self.step

    # -- construction -------------------------------------------------------------------------------

    def _open_clips(self, sources: list[str], split: str):
        from endo_depth_model.data import DataError, open_sequences
        from endo_depth_model.data.sampler import ClipDataset

        if not sources:
            raise TrainError(f"data.{split} lists no sources")
        d = self.cfg.data
        sequences = []
        for src in sources:
            try:
                sequences.extend(every_nth(seq, d.frame_step) for seq in open_sequences(src))
            except DataError as exc:
                raise TrainError(f"data.{split}: cannot open {src!r}: {exc}") from exc
        try:
            clips = ClipDataset(
                sequences,
                clip_len=d.clip_length,
                size=(d.input_height, d.input_width),
                stride=d.clip_stride if split == "train" else d.clip_length,
                neighbours=1,
            )
        except DataError as exc:
            raise TrainError(f"data.{split}: {exc}") from exc
        if self.info.is_main:  # what was found, before any time is spent on it
            print(f"data.{split}: {_data_summary(sequences, len(clips), d)}", file=sys.stderr)
        return clips

    def _build_models(self) -> None:
        from endo_depth_model import ssb
        from endo_depth_model.checkpoint import CheckpointError, load_vda_weights
        from endo_depth_model.models import build_vda
        from endo_depth_model.models.pose_net import PoseNet
        from endo_depth_model.preprocess import IMAGENET_MEAN, IMAGENET_STD

        cfg, device = self.cfg, self.info.device
        try:
            depth_model = build_vda(cfg.model.name)
        except ValueError as exc:
            raise TrainError(f"model.name: {exc}") from exc
        try:
            if cfg.model.weights is not None:
                load_vda_weights(depth_model, cfg.model.weights)
            elif self.info.is_main:
                print(
                    "endo-depth train: warning: model.weights is not set; a randomly initialised VDA "
                    "predicts near-constant disparity and SSB fine-tuning cannot fix that",
                    file=sys.stderr,
                )
            depth_model = ssb.apply_ssb(depth_model)
            if cfg.model.adapter is not None:
                ssb.load_adapter(depth_model, cfg.model.adapter)
        except CheckpointError as exc:
            raise TrainError(f"cannot load model weights: {exc}") from exc
        if cfg.model.pose_weights is None:
            pose_net = PoseNet()
        else:
            path = Path(cfg.model.pose_weights)
            if not path.is_file():
                raise TrainError(f"model.pose_weights not found: {path}")
            try:  # the shipped int8 pose weights are restored to float32
                pose_net = load_pose_model(path, predict_intrinsics=False)
            except (LoadError, RuntimeError, OSError) as exc:
                raise TrainError(f"model.pose_weights {path}: not a pose network state ({exc})") from exc
        # base weights frozen; collect the SSB vectors of both groups for the optimiser
        for p in depth_model.parameters():
            p.requires_grad_(False)
        ssb.set_trainable_groups(depth_model, spatial=True, temporal=True)
        self.ssb_params = [p for p in depth_model.parameters() if p.requires_grad]
        if not self.ssb_params:
            raise TrainError("the depth model has no SSB parameters after apply_ssb")
        self.report = ssb.parameter_report(depth_model)
        weights = {k: v for k, v in to_dict(cfg.loss).items() if k != "scales"}
        # EndoDAV's mask threshold 1e-3 mm is 1 % of its min_depth (0.1 mm): keep that ratio in any unit
        loss = SelfSupervisedLoss(**weights, projection_min_depth=0.01 * cfg.model.min_depth)
        self.module = TrainingModule(
            depth_model,
            pose_net,
            loss,
            cfg.loss.scales,
            cfg.model.min_depth,
            cfg.model.max_depth,
            tuple(IMAGENET_MEAN),
            tuple(IMAGENET_STD),
            causal=cfg.model.causal,
        ).to(device)
        pose_params = list(self.module.pose_net.parameters())
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.ssb_params, "lr": cfg.optim.lr},
                {"params": pose_params, "lr": cfg.optim.pose_lr or cfg.optim.lr},
            ]
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.optim.lr_decay_steps, gamma=cfg.optim.lr_decay_gamma
        )

    def _set_phase(self, phase: str) -> None:
        """Make the phase's SSB group trainable (pose net always) and rebuild the DDP wrapper.

        DDP fixes the set of parameters it reduces when it is built, so each phase gets its own.
        """
        from endo_depth_model import ssb

        if phase == self._phase:
            return
        ssb.set_trainable_groups(
            self.module.depth_model, spatial=phase == "spatial", temporal=phase == "temporal"
        )
        for p in self.module.pose_net.parameters():
            p.requires_grad_(True)
        self._phase = phase
        if self.info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            if self._ddp is not None:
                # release the previous phase's reducer, whose gradient hooks would otherwise still fire
                remove = getattr(self._ddp, "_remove_autograd_hooks", None)
                if remove is None:
                    raise TrainError(
                        f"torch {torch.__version__}: DistributedDataParallel has no _remove_autograd_hooks, "
                        "which alternating the SSB groups under torchrun needs (use a newer torch)"
                    )
                remove()
            device_ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            self._ddp = DDP(self.module, device_ids=device_ids)
        else:
            self._ddp = self.module

    # -- checkpoints --------------------------------------------------------------------------------

    def _resolve_resume(self, resume) -> Path | None:
        if resume is None:
            return None
        if str(resume) == "auto":
            last = self.ckpt_dir / "last"
            return last if (last / STATE_FILE).is_file() else None
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise TrainError(f"cannot resume: {path} is not a checkpoint folder (no {STATE_FILE})")
        return path

    def _save(self, name: str, metrics: dict | None = None, resumable: bool = True) -> Path:
        """Write checkpoints/<name> atomically (rank 0 only): adapter, pose net, meta and config, plus
        the optimizer / scheduler / RNG state when ``resumable`` (``last``; ``best`` is weights only)."""
        import yaml
        from safetensors.torch import save_file

        from endo_depth_model import ssb

        final = self.ckpt_dir / name
        if not self.info.is_main:
            return final
        tmp = self.ckpt_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        ssb.save_adapter(self.module.depth_model, tmp / ADAPTER_FILE)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.module.pose_net.state_dict().items()},
            str(tmp / POSE_FILE),
        )
        if resumable:
            self._save_state(tmp / STATE_FILE)
        meta = {
            "step": self.step,
            "model": self.cfg.model.name,
            "input_hw": [self.cfg.data.input_height, self.cfg.data.input_width],
            "clip_length": self.cfg.data.clip_length,
            "min_depth": self.cfg.model.min_depth,
            "max_depth": self.cfg.model.max_depth,
            "metrics": metrics or {},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        old = self.ckpt_dir / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def _save_state(self, path: Path) -> None:
        """Optimizer, scheduler, step, RNG and best-so-far: plain tensors and numbers only, so that
        ``torch.load(weights_only=True)`` reads it back."""
        torch.save(
            {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": _rng_state(),
                "best": dict(self.best),
                "world_size": self.info.world_size,
                "batch_size": self.cfg.batch_size,
            },
            path,
        )

    def _load(self, folder: Path) -> None:
        try:
            load_checkpoint_weights(self.module.depth_model, self.module.pose_net, folder)
        except LoadError as exc:
            raise TrainError(str(exc)) from exc
        try:
            state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report any unreadable state file the same way
            raise TrainError(f"cannot read {folder / STATE_FILE}: {exc}") from exc
        global_batch = self.cfg.batch_size * self.info.world_size
        if state["batch_size"] * state["world_size"] != global_batch:
            raise TrainError(
                f"cannot resume {folder}: it was trained with a global batch of "
                f"{state['batch_size'] * state['world_size']}, this run has {global_batch}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = dict(state["best"])

    # -- logging ------------------------------------------------------------------------------------

    def _csv(self, name: str, row: dict) -> None:
        path = self.out / name
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _truncate_logs(self) -> None:
        """On resume, drop log rows written after the checkpoint's step (they will be redone)."""
        for name in (TRAIN_LOG, VAL_LOG):
            path = self.out / name
            if not path.exists():
                continue
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            if not rows:
                continue
            # a fresh start (step 0) redoes everything, the step-0 validation included
            keep = [r for r in rows if int(r["step"]) <= self.step] if self.step > 0 else []
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(keep)

    def _tb(self):
        if self._writer is None and self.cfg.tensorboard and self.info.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV logs only
                self.cfg.tensorboard = False
                return None
            self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step)
        return self._writer

    # -- validation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Self-supervised loss (all terms, projection included) and, with ground truth, per-frame
        median-scaled AbsRel over the validation split, sharded over processes."""
        if self.val_clips is None or len(self.val_clips) == 0:
            return {}
        n = len(self.val_clips)
        k = self.cfg.data.val_clips
        indices = (
            list(range(n)) if k == 0 or k >= n else [round(i * (n - 1) / max(k - 1, 1)) for i in range(k)]
        )
        mine = indices[self.info.rank :: self.info.world_size]
        data = AugmentedClips(self.val_clips, augment=False)
        if self.info.distributed:  # every shard evaluates the same pose net (rank 0's BatchNorm stats)
            for buffer in self.module.buffers():
                dist.broadcast(buffer, src=0)
        self.module.eval()
        sums = torch.zeros(4, dtype=torch.float64)  # loss, clips, abs_rel sum, frames with gt
        for i in mine:
            batch = collate_clips([data[(i, None)]])
            out = self.module(
                batch["frames"].to(self.info.device),
                batch["frames_net"].to(self.info.device),
                batch["K"].to(self.info.device),
                projection=True,
            )
            sums[0] += float(out["loss"].sum())
            sums[1] += 1
            if "depth" in batch:
                for pred, gt in zip(out["depth"][0].cpu(), batch["depth"][0, 1:-1], strict=True):
                    value = _median_scaled_abs_rel(pred, gt)
                    if value is not None:
                        sums[2] += value
                        sums[3] += 1
        self.module.train()
        sums = all_reduce_sum(sums.to(self.info.device), self.info).cpu()
        metrics = {"loss": float(sums[0] / max(sums[1], 1))}
        if sums[3] > 0:
            metrics["abs_rel"] = float(sums[2] / sums[3])
        return metrics

    def _select_metric(self, metrics: dict) -> str | None:
        choice = self.cfg.select_metric
        if choice == "auto":
            choice = "abs_rel" if "abs_rel" in metrics else "loss"
        if choice not in metrics:
            raise TrainError(
                f"select_metric '{choice}' is not available on the validation split (have {sorted(metrics)})"
            )
        return choice

    # -- training -----------------------------------------------------------------------------------

    def _loader(self, end_step: int):
        order = ClipOrder(
            len(self.train_clips),
            self.cfg.batch_size,
            self.info.world_size,
            self.info.rank,
            self.cfg.seed,
            self.step,
            end_step,
        )
        data = AugmentedClips(self.train_clips, augment=self.cfg.data.augment)
        workers = self.cfg.data.num_workers
        return torch.utils.data.DataLoader(
            data,
            batch_sampler=order,
            collate_fn=collate_clips,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=self.info.device.type == "cuda",
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on this process's part of the global batch; returns the logged terms
        averaged over the global batch."""
        phase = self.cfg.schedule.phase(self.step)
        self._set_phase(phase)
        dev = self.info.device
        out = self._ddp(
            batch["frames"].to(dev, non_blocking=True),
            batch["frames_net"].to(dev, non_blocking=True),
            batch["K"].to(dev, non_blocking=True),
            projection=phase == "temporal",
        )
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].mean().backward()
        if self.cfg.optim.grad_clip > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        values = torch.stack([out[k].detach().double().sum() for k in LOG_TERMS])
        total = all_reduce_sum(values, self.info) / (self.cfg.batch_size * self.info.world_size)
        self.step += 1
        return {"phase": phase, **{k: float(v) for k, v in zip(LOG_TERMS, total, strict=True)}}

    def run(self, stop_after: int | None = None) -> TrainSummary:
        """Train from the current step to ``schedule.steps`` (or ``stop_after`` steps in total, e.g. to
        test resuming), validating and checkpointing on schedule. Returns the summary (also printed)."""
        from tqdm import tqdm

        sched = self.cfg.schedule
        end = sched.steps if stop_after is None else min(stop_after, sched.steps)
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._truncate_logs()
        t0 = time.time()
        last_path, final = None, {}
        bar = tqdm(
            total=sched.steps,
            initial=self.step,
            disable=not self.info.is_main,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        if self.step == 0 and self.val_clips is not None and len(self.val_clips):
            # The base model's validation is the first candidate for ``best``: fine-tuning that never
            # beats it leaves checkpoints/best = the base model (step 0), never a worse one.
            base = self._validate_and_select()
            if self.info.is_main and base:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in base.items())
                print(f"validation at step 0 (before training): {shown}", file=sys.stderr)
        self.module.train()
        for batch in self._loader(end):
            values = self.train_step(batch)
            final = {k: values[k] for k in LOG_TERMS}
            lr = self.optimizer.param_groups[0]["lr"]
            if self.info.is_main and (self.step % sched.log_every == 0 or self.step == end):
                row = {
                    "step": self.step,
                    "phase": values["phase"],
                    "lr": lr,
                    **final,
                    "time_s": round(time.time() - t0, 3),
                }
                self._csv(TRAIN_LOG, row)
                writer = self._tb()
                if writer is not None:
                    for k in LOG_TERMS:
                        writer.add_scalar(f"train/{k}", final[k], self.step)
                    writer.add_scalar("train/lr", lr, self.step)
            bar.update(1)
            bar.set_postfix(phase=values["phase"][0], loss=f"{values['loss']:.4f}")
            if self.step % sched.val_every == 0 or self.step == sched.steps:
                self._validate_and_select()
            if self.step % sched.checkpoint_every == 0 or self.step == end:
                last_path = self._save("last", final)
        bar.close()
        if last_path is None and self.step > 0:
            last_path = self._save("last", final)
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        summary = TrainSummary(
            steps=self.step,
            start_step=self.start_step,
            world_size=self.info.world_size,
            seconds=time.time() - t0,
            final=final,
            best_metric=self.best["metric"],
            best_value=self.best["value"],
            best_step=self.best["step"],
            last_checkpoint=last_path,
            best_checkpoint=(self.ckpt_dir / "best") if self.best["step"] is not None else None,
            trainable={
                "depth": float(self.report.get("trainable", 0)),
                "percent": float(self.report.get("percent", 0.0)),
                "pose": float(sum(p.numel() for p in self.module.pose_net.parameters())),
            },
        )
        if self.info.is_main:
            print(summary.table(), file=sys.stderr)
        return summary

    def _validate_and_select(self) -> dict:
        metrics = self.validate()
        if not metrics:
            return metrics
        name = self._select_metric(metrics)
        value = metrics[name]
        if self.info.is_main:
            self._csv(VAL_LOG, {"step": self.step, **metrics})
            writer = self._tb()
            if writer is not None:
                for k, v in metrics.items():
                    writer.add_scalar(f"val/{k}", v, self.step)
        if self.best["value"] is None or value < self.best["value"]:
            self.best = {"metric": name, "value": value, "step": self.step}
            self._save("best", metrics, resumable=False)
        return metrics


def _data_summary(sequences, n_clips: int, d) -> str:
    """One line: sequences (names), frames, clips, size, and where each sequence's intrinsics came from."""
    names = [s.name for s in sequences]
    shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
    frames = sum(len(s) for s in sequences)
    sources = sorted({str(s.meta.get("intrinsics", "from the data")) for s in sequences})
    return (
        f"{len(sequences)} sequence(s) [{shown}], {frames} frames -> {n_clips} clips of {d.clip_length} "
        f"at {d.input_height}x{d.input_width}; intrinsics: {'; '.join(sources)}"
    )


def _median_scaled_abs_rel(pred: torch.Tensor, gt: torch.Tensor) -> float | None:
    """Per-frame median-scaled AbsRel (pred, gt (H, W); gt NaN / <= 0 invalid, resized to ``pred`` by
    nearest neighbour); None without valid gt."""
    from endo_depth_model.metrics import median_scaled_abs_rel

    if tuple(gt.shape) != tuple(pred.shape):
        gt = F.interpolate(gt[None, None], size=tuple(pred.shape), mode="nearest")[0, 0]
    value = median_scaled_abs_rel(pred.numpy(), gt.numpy())
    return value if np.isfinite(value) else None


def train(
    cfg: TrainConfig,
    resume: str | Path | None = None,
    stop_after: int | None = None,
    train_clips=None,
    val_clips=None,
) -> TrainSummary:
    """Run one training (or one process of a torchrun job) and return its summary."""
    trainer = Trainer(cfg, train_clips=train_clips, val_clips=val_clips, resume=resume)
    try:
        return trainer.run(stop_after=stop_after)
    finally:
        if trainer.info.distributed and dist.is_initialized():
            dist.barrier()
