"""Loading models from disk: the one place that reads depth networks, SSB adapters, training checkpoint
folders and pose networks, and what a weights file says about itself.

* depth: :func:`load_depth_model` builds Video Depth Anything, loads base weights (VDA / DA-V2), then an
  SSB adapter file or a training checkpoint folder, and returns a :class:`ModelBundle`;
* pose: :func:`load_pose_model` builds the pose network its weights need and loads them;
* checkpoint folders (written by :mod:`endo_depth_model.training.trainer`): ``ADAPTER_FILE``, ``POSE_FILE``,
  ``META_FILE`` and ``CONFIG_FILE``, read by :func:`load_checkpoint_weights` and
  :func:`checkpoint_base_weights`;
* the shipped default model (:data:`SHIPPED_MODEL_DIR`, :func:`shipped_weights`, :func:`resolve_weights`);
* a weights file's metadata: :func:`weights_metadata`, :func:`weights_are_metric` and
  :func:`weights_depth_range` (the disparity-to-depth range the model was trained with).

A file that is missing, or a network that does not fit the request, raises :class:`LoadError`; a weights
file that cannot be read or does not fit the model raises
:class:`~endo_depth_model.checkpoint.CheckpointError`. The commands and the pipeline turn both into their
own error (``InferError``, ``PipelineError``, ``TrainError``). Importing this module does not import torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ADAPTER_FILE",
    "CONFIG_FILE",
    "META_FILE",
    "POSE_FILE",
    "SHIPPED_MODEL_DIR",
    "LoadError",
    "ModelBundle",
    "checkpoint_base_weights",
    "load_checkpoint_weights",
    "load_depth_model",
    "load_pose_model",
    "resolve_weights",
    "shipped_weights",
    "weights_are_metric",
    "weights_depth_range",
    "weights_metadata",
]

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "weights"

# a training checkpoint folder (endo_depth_model.training.trainer writes it; the trainer's resume state is
# its own)
ADAPTER_FILE = "adapter.safetensors"
POSE_FILE = "pose_net.safetensors"
META_FILE = "meta.json"
CONFIG_FILE = "config.yaml"


class LoadError(ValueError):
    """A model cannot be loaded as asked: a file or folder is missing, the model size is unknown, the
    weights hold no network of the kind asked for."""


@dataclass
class ModelBundle:
    """A ready depth model and what the reports need to know about it.

    ``total_params`` counts every parameter of the depth network (SSB vectors included when present);
    ``trainable_params`` counts the SSB vectors (0 for a base model); ``pose_net`` is set when the
    checkpoint has one.
    """

    model: object
    encoder: str
    total_params: int
    trainable_params: int
    description: str
    pose_net: object | None = None
    sources: dict = field(default_factory=dict)
    precision: str = "fp32"  # PyTorch compute precision of the depth model and pose network
    #: the weights were trained with the scope's border filled (:func:`weights_fill_border`): the engines
    #: fill it the same way
    fill_border: bool = False

    def set_precision(self, precision: str, device) -> None:
        """Run the torch depth model (and the pose network) at ``precision`` (``auto`` resolved here);
        a graph backend stays as it is. :class:`~endo_depth_model.runtime.precision.PrecisionError`
        (a ValueError) when the device cannot run it."""
        import torch

        from endo_depth_model.runtime.precision import resolve_precision
        from endo_depth_model.runtime.torch_backend import TorchBackend

        self.precision = resolve_precision(precision, device)
        if isinstance(self.model, torch.nn.Module) and self.precision != "fp32":
            self.model = TorchBackend(self.model, device, precision=self.precision)
        self.description += f", {self.precision}"


# ---- files -------------------------------------------------------------------------------------------
def shipped_weights(encoder: str, pose: bool = False) -> Path:
    """The shipped default weights of ``encoder`` (with ``pose``: its pose network's); the file exists
    only for the sizes that ship (vitt)."""
    return SHIPPED_MODEL_DIR / f"{encoder}_endodav{'_pose' if pose else ''}.safetensors"


def resolve_weights(path: str | Path | None, default: Path | None = None) -> Path | None:
    """``path`` (``~`` expanded) when given, :class:`LoadError` when it is not a file; else ``default``
    when that file exists; else None. An empty string counts as not given (as in node parameters)."""
    if path:
        given = Path(path).expanduser()
        if not given.is_file():
            raise LoadError(f"weights file not found: {given}")
        return given
    return default if default is not None and default.is_file() else None


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a ``.safetensors`` weights file ({} for other files and missing ones);
    :class:`LoadError` when the file cannot be read."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise LoadError(f"cannot read weights {path}: {exc} (corrupt or truncated?)") from None


def weights_are_metric(path: str | Path) -> bool:
    """Whether a weights file holds a metric-depth VDA (its output is depth in metres, not disparity):
    ``output_kind: metric_depth`` in safetensors metadata, or the official file name
    ``metric_video_depth_anything_<size>.pth``. The state dicts of the two kinds are identical in shape,
    so the name or the metadata is the only sign."""
    if Path(path).name.startswith("metric_"):
        return True
    try:
        return weights_metadata(path).get("output_kind") == "metric_depth"
    except LoadError:  # unreadable files fail later with their own clear error
        return False


def weights_fill_border(path: str | Path | None) -> bool:
    """Whether depth weights were trained with the scope's black border filled before the network
    (``pretrain --fill-border``: metadata ``fill_border: 1``); the engines then fill it the same way
    (:class:`endo_depth_model.fov.BorderFill`). False for other and unreadable files."""
    if path is None:
        return False
    try:
        return weights_metadata(path).get("fill_border") == "1"
    except LoadError:  # unreadable files fail later with their own clear error
        return False


def weights_depth_range(path: str | Path) -> tuple[float | None, float | None]:
    """``(min_depth, max_depth)`` of ``disparity_to_depth`` stored in the weights' metadata (the range
    the model was trained with, e.g. ``0.001, 0.3`` m for the shipped model), None where absent;
    :class:`LoadError` when the file cannot be read."""
    meta = weights_metadata(path)
    return tuple(float(meta[k]) if k in meta else None for k in ("min_depth", "max_depth"))


def checkpoint_base_weights(checkpoint: str | Path) -> Path | None:
    """The base weights a training checkpoint was trained on (``model.weights`` of its ``config.yaml``),
    when that file still exists (relative paths: to the working directory, as in training)."""
    cfg_path = Path(checkpoint) / CONFIG_FILE
    if not cfg_path.is_file():
        return None
    import yaml

    try:
        weights = (yaml.safe_load(cfg_path.read_text()) or {}).get("model", {}).get("weights")
    except yaml.YAMLError:
        return None
    return Path(weights) if weights and Path(weights).is_file() else None


# ---- networks ----------------------------------------------------------------------------------------
def _load_pose_state(net, state: dict, source: str | Path) -> None:
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LoadError(
            f"{source}: not pose network weights (missing {list(missing)[:4]}, unexpected "
            f"{list(unexpected)[:4]})"
        )


def load_pose_model(path: str | Path, device: str = "cpu", predict_intrinsics: bool | None = None):
    """The :class:`~endo_depth_model.models.pose_net.PoseNet` of the weights at ``path`` (safetensors or
    torch file; the shipped int8 weights are restored to float32), in eval mode on ``device``.

    ``predict_intrinsics``: build the network with its intrinsics head (None: when the weights have one).
    """
    import torch

    from endo_depth_model.checkpoint import read_state_dict
    from endo_depth_model.models.pose_net import PoseNet

    state = read_state_dict(path)
    if predict_intrinsics is None:
        predict_intrinsics = any(k.startswith("intrinsics") for k in state)
    net = PoseNet(predict_intrinsics=predict_intrinsics)
    _load_pose_state(net, state, path)
    return net.to(torch.device(device)).eval()


def load_checkpoint_weights(depth_model, pose_net, folder: str | Path) -> dict:
    """Load a training checkpoint's SSB adapter (and pose net) into already-built models.

    ``depth_model`` must carry SSB adapters (:func:`endo_depth_model.ssb.apply_ssb`). Returns the
    checkpoint's ``meta.json`` as a dict. Raises :class:`LoadError` naming the missing file.
    """
    from endo_depth_model import ssb
    from endo_depth_model.checkpoint import read_state_dict

    folder = Path(folder)
    for name in (ADAPTER_FILE, META_FILE) + ((POSE_FILE,) if pose_net is not None else ()):
        if not (folder / name).is_file():
            raise LoadError(f"checkpoint {folder}: missing {name}")
    ssb.load_adapter(depth_model, folder / ADAPTER_FILE)
    if pose_net is not None:
        _load_pose_state(pose_net, read_state_dict(folder / POSE_FILE), folder / POSE_FILE)
    return json.loads((folder / META_FILE).read_text())


def load_depth_model(
    encoder: str = "vitt",
    weights: str | Path | None = None,
    adapter: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    merge: bool = True,
    seed: int = 0,
) -> ModelBundle:
    """Build ``VideoDepthAnything(encoder)``, load base ``weights`` (VDA / DA-V2 file), then an SSB
    ``adapter`` file or a training ``checkpoint`` folder (adapter + pose net). Without weights the
    network is randomly initialised from ``seed`` (useful for smoke tests only; said in the description).
    Adapters are merged into the weights for speed unless ``merge`` is False."""
    import torch

    from endo_depth_model import checkpoint as ckpt
    from endo_depth_model import ssb
    from endo_depth_model.models import build_vda

    if checkpoint is not None and adapter is not None:
        raise LoadError("give either --adapter or --checkpoint, not both")
    torch.manual_seed(seed)
    metric = weights_are_metric(weights) if weights is not None else False
    try:
        model = build_vda(encoder, metric=metric) if metric else build_vda(encoder)
    except ValueError as exc:
        raise LoadError(str(exc)) from None
    parts = [f"VDA-{encoder}" + (" metric depth (metres)" if metric else "")]
    sources: dict = {"encoder": encoder}
    if weights is not None:
        report = ckpt.load_vda_weights(model, weights)
        parts.append(f"weights {Path(weights).name} ({report.source})")
        sources["weights"] = str(weights)
    else:
        parts.append("random init (no --weights)")
    pose_net = None
    if checkpoint is not None:
        from endo_depth_model.models.pose_net import PoseNet

        folder = Path(checkpoint)
        if not folder.is_dir():
            raise LoadError(f"checkpoint folder not found: {folder}")
        if (folder / POSE_FILE).is_file():
            pose_net = PoseNet()
        load_checkpoint_weights(model, pose_net, folder)
        parts.append(f"checkpoint {folder.name}")
        sources["checkpoint"] = str(folder)
    elif adapter is not None:
        if not Path(adapter).is_file():
            raise LoadError(f"adapter file not found: {adapter}")
        ssb.load_adapter(model, adapter)
        parts.append(f"SSB adapter {Path(adapter).name}")
        sources["adapter"] = str(adapter)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(_ssb_counts(model))
    if merge and (adapter is not None or checkpoint is not None):
        ssb.merge_ssb(model)
    model = model.to(device).eval()
    if pose_net is not None:
        pose_net = pose_net.to(device).eval()
    # stage 2 (the SSB trainer) does not fill: an adapted model sees the border as its adapter did
    fill = weights_fill_border(weights) and adapter is None and checkpoint is None
    if fill:
        parts.append("border filled")
    return ModelBundle(
        model, encoder, total, trainable, ", ".join(parts), pose_net, sources, fill_border=fill
    )


def _ssb_counts(model) -> list[int]:
    from endo_depth_model import ssb

    return [
        sum(p.numel() for attr in ssb.SSBLinear.adapter_layer_names for p in getattr(layer, attr).values())
        for _, _, layer in ssb.ssb_layers(model)
    ]
