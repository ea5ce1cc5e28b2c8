"""``endo-depth eval``: the endoscopy depth protocols, TAE, pose ATE and paper-style report tables.

Protocols (depth in millimetres by default; valid ground truth ``min_depth < gt < max_depth``):

* ``per-frame`` (AF-SfMLearner / EndoDAC): each frame's prediction is scaled by
  ``median(gt) / median(pred)``, clipped to ``[min_depth, max_depth]``, then AbsRel, SqRel, RMSE,
  RMSE log and δ<1.25^k are averaged over all frames.
* ``per-sequence`` (EndoDAV): the whole sequence is inferred as one video and aligned once,
  ``(pred - median_p) * MAD_g / MAD_p + median_g``; the same metrics, plus TAE where poses exist
  (mean over all consecutive pairs of all sequences, in percent).

Pose ATE (5-frame snippets, SfMLearner) is reported when the model comes with a pose network and the
data has poses. Predictions come from the streaming engine (EndoDAV's constants) and the Monodepth2
``disparity_to_depth`` conversion, as in EndoDAV's evaluation. The report is a markdown table shaped
like the paper's Table 1 (method, metrics, total / trainable parameters, ms per frame), saved with a
JSON copy; ``--ablation`` adds the rows SSB off, projection loss off (a second checkpoint) and
alignment off.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from endo_depth_model.metrics import (
    METRIC_NAMES,
    MetricError,
    depth_errors,
    mad_align,
    median_scale,
    snippet_ate,
    tae_pairs,
    valid_mask,
)

__all__ = [
    "PROTOCOLS",
    "EvalConfig",
    "SequenceEval",
    "MethodResult",
    "evaluate_sequence",
    "frame_error_map",
    "summarise",
    "format_table",
    "format_params",
    "save_report",
    "evaluate_method",
    "evaluate_baselines",
]

PROTOCOLS = ("per-frame", "per-sequence")
COLUMNS = {
    "abs_rel": "AbsRel ↓",
    "sq_rel": "SqRel ↓",
    "rmse": "RMSE ↓",
    "rmse_log": "RMSE log ↓",
    "a1": "δ<1.25 ↑",
    "a2": "δ<1.25² ↑",
    "a3": "δ<1.25³ ↑",
}


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation constants. ``unit_scale`` converts the data's metres into the report unit (1000: mm,
    as the SCARED/Hamlyn tables); ``min_depth``/``max_depth`` are in the report unit (1e-3, 150 mm)."""

    min_depth: float = 1e-3
    max_depth: float = 150.0
    unit_scale: float = 1000.0
    track_length: int = 5


@dataclass
class SequenceEval:
    """One sequence under one protocol: per-frame metric rows (frames with valid ground truth), TAE pairs
    (percent, per-sequence protocol with poses), ATE snippets' mean and std, and alignment parameters."""

    name: str
    protocol: str
    frame_errors: list[dict]
    tae_pairs: list[float] = field(default_factory=list)
    ate: tuple[float, float] | None = None
    alignment: dict = field(default_factory=dict)


def _frame_metrics(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray, cfg: EvalConfig) -> dict:
    p = np.clip(pred[mask], cfg.min_depth, cfg.max_depth)
    return depth_errors(gt[mask], p)


def frame_error_map(
    gt: np.ndarray, pred: np.ndarray, mask: np.ndarray, cfg: EvalConfig = EvalConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """The per-frame protocol of :func:`evaluate_sequence` on one frame, pixel by pixel, for diagnostics
    that average the error over parts of the frame (the scope's rim, depth bins, instruments).

    ``gt`` (H, W) truth in the evaluation's unit (metres times ``cfg.unit_scale``), ``pred`` (H, W)
    positive depth in any scale, ``mask`` (H, W) the scored pixels (:func:`valid_mask` and any field of
    view). Returns ``(scaled, err)``: ``pred`` times its median scale to ``gt`` over ``mask`` (not
    clipped), and ``|clip(scaled) - gt| / gt``, meaningful inside ``mask`` only. The mean of ``err`` over
    ``mask`` is the frame's AbsRel in :func:`evaluate_sequence`.
    """
    scaled = pred * median_scale(gt[mask], pred[mask])
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(np.clip(scaled, cfg.min_depth, cfg.max_depth) - gt) / gt
    return scaled, err


def evaluate_sequence(
    name: str,
    gt_depth_m: np.ndarray,
    pred_depth: np.ndarray,
    protocol: str,
    cfg: EvalConfig = EvalConfig(),
    T_world_cam: np.ndarray | None = None,
    K: np.ndarray | None = None,
    pred_T_world_cam: np.ndarray | None = None,
) -> SequenceEval:
    """Score one sequence.

    ``gt_depth_m`` (N, H, W) metres with NaN/0 invalid; ``pred_depth`` (N, H, W) positive depth in any
    scale; ``T_world_cam`` (N, 4, 4) ground-truth camera-to-world poses and ``K`` (3, 3) pixels enable
    TAE (per-sequence protocol); ``pred_T_world_cam`` (N, 4, 4) predicted poses enable ATE.
    """
    if protocol not in PROTOCOLS:
        raise MetricError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    gt = np.asarray(gt_depth_m, dtype=np.float64) * cfg.unit_scale
    pred = np.asarray(pred_depth, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise MetricError(
            f"{name}: ground truth {gt.shape} and prediction {pred.shape} must both be (N, H, W)"
        )
    masks = valid_mask(gt, cfg.min_depth, cfg.max_depth)
    result = SequenceEval(name, protocol, [])
    if protocol == "per-frame":
        ratios = []
        for i in range(len(gt)):
            if not masks[i].any():
                continue
            ratio = median_scale(gt[i][masks[i]], pred[i][masks[i]])
            ratios.append(ratio)
            result.frame_errors.append(_frame_metrics(gt[i], pred[i] * ratio, masks[i], cfg))
        if ratios:
            med = float(np.median(ratios))
            result.alignment = {"median_ratio": med, "ratio_std": float(np.std(np.asarray(ratios) / med))}
    else:
        if masks.any():
            aligned, params = mad_align(gt, pred, masks)
            result.alignment = params
            for i in range(len(gt)):
                if masks[i].any():
                    result.frame_errors.append(_frame_metrics(gt[i], aligned[i], masks[i], cfg))
            if T_world_cam is not None and K is not None and len(gt) > 1:
                clipped = np.clip(aligned, cfg.min_depth, cfg.max_depth)
                poses = np.array(T_world_cam, dtype=np.float64, copy=True)
                poses[:, :3, 3] *= cfg.unit_scale  # translations in the depth's unit
                pairs = tae_pairs(clipped, poses, K, masks)
                result.tae_pairs = [float(v) for v in pairs if np.isfinite(v)]
    if pred_T_world_cam is not None and T_world_cam is not None and len(gt) >= cfg.track_length:
        result.ate = snippet_ate(T_world_cam, pred_T_world_cam, cfg.track_length)
    return result


@dataclass
class MethodResult:
    """One row of the report: ``metrics`` are means over all evaluated frames of all sequences (``tae``
    over all frame pairs, ``ate`` over sequences); parameters as counts; ``ms_per_frame`` wall time."""

    method: str
    protocol: str
    metrics: dict
    n_frames: int
    n_sequences: int
    tae: float | None = None
    ate: float | None = None
    total_params: int | None = None
    trainable_params: int | None = None
    ms_per_frame: float | None = None
    sequences: list[dict] = field(default_factory=list)
    note: str = ""
    depth_unit: str = "mm"


def summarise(
    method: str,
    evals: Iterable[SequenceEval],
    total_params: int | None = None,
    trainable_params: int | None = None,
    ms_per_frame: float | None = None,
    note: str = "",
    depth_unit: str = "mm",
) -> MethodResult:
    """Aggregate sequence results of one method and protocol into a report row."""
    evals = list(evals)
    if not evals:
        raise MetricError(f"{method}: nothing was evaluated")
    protocols = {e.protocol for e in evals}
    if len(protocols) != 1:
        raise MetricError(f"{method}: mixed protocols {sorted(protocols)}")
    rows = [row for e in evals for row in e.frame_errors]
    if not rows:
        raise MetricError(f"{method}: no frame has valid ground truth")
    metrics = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES}
    pairs = [v for e in evals for v in e.tae_pairs]
    ates = [e.ate[0] for e in evals if e.ate is not None]
    per_seq = []
    for e in evals:
        entry = {"name": e.name, "n_frames": len(e.frame_errors), "alignment": e.alignment}
        if e.frame_errors:
            entry.update({k: float(np.mean([r[k] for r in e.frame_errors])) for k in METRIC_NAMES})
        if e.tae_pairs:
            entry["tae"] = float(np.mean(e.tae_pairs))
        if e.ate is not None:
            entry["ate"], entry["ate_std"] = e.ate
        per_seq.append(entry)
    return MethodResult(
        method,
        protocols.pop(),
        metrics,
        len(rows),
        len(evals),
        tae=float(np.mean(pairs)) if pairs else None,
        ate=float(np.mean(ates)) if ates else None,
        total_params=total_params,
        trainable_params=trainable_params,
        ms_per_frame=ms_per_frame,
        sequences=per_seq,
        note=note,
        depth_unit=depth_unit,
    )


def format_params(n: int | None) -> str:
    """Parameter count as the papers print it: ``28.4M``, ``0.05M``; ``-`` when unknown."""
    if n is None:
        return "-"
    if n == 0:
        return "0"
    return f"{n / 1e6:.2f}M" if n < 1e7 else f"{n / 1e6:.1f}M"


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def format_table(results: list[MethodResult], title: str | None = None) -> str:
    """Markdown table in the layout of EndoDAV's Table 1 (one row per method)."""
    show_tae = any(r.tae is not None for r in results)
    show_ate = any(r.ate is not None for r in results)
    head = ["Method", *COLUMNS.values()]
    head += ["TAE ↓"] if show_tae else []
    head += ["ATE ↓"] if show_ate else []
    head += ["Total params", "Trainable params", "ms / frame"]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in results:
        cells = [r.method, *(_num(r.metrics.get(k)) for k in COLUMNS)]
        cells += [_num(r.tae, 2)] if show_tae else []
        cells += [_num(r.ate, 4)] if show_ate else []
        cells += [format_params(r.total_params), format_params(r.trainable_params), _num(r.ms_per_frame, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.method}: {r.note}" for r in results if r.note]
    if results:
        p = results[0]
        lines += [
            "",
            f"{p.protocol} protocol, {p.n_sequences} sequence(s), {p.n_frames} frames with ground truth; "
            f"depth errors in {p.depth_unit}"
            + (", TAE in %" if show_tae else "")
            + (", ATE in metres over 5-frame snippets" if show_ate else "")
            + "; trainable params = SSB vectors of the depth network (pose network not counted).",
        ]
    return "\n".join(lines + ([""] + notes if notes else []))


def save_report(
    results_by_protocol: dict[str, list[MethodResult]], out_dir: str | Path, title: str = ""
) -> Path:
    """Write ``results.md`` (one table per protocol) and ``results.json``; returns the markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}" if title else "# Depth evaluation", ""]
    for protocol, results in results_by_protocol.items():
        parts += [format_table(results, title=f"{protocol} protocol"), ""]
    md = out / "results.md"
    md.write_text("\n".join(parts))
    payload = {p: [asdict(r) for r in rs] for p, rs in results_by_protocol.items()}
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    return md


# ---- running models ------------------------------------------------------------------------------------
def _predict_sequence(seq, bundle, args, align: bool = True):
    """Run the engine over one sequence: (pred depth (N, H, W), gt (N, H, W) or None, poses, K, pred poses,
    seconds of inference)."""
    import torch

    from endo_depth_model.infer import make_engine
    from endo_depth_model.preprocess import output_to_depth

    engine = make_engine(bundle, args.input_size, args.window, args.overlap, args.stride, args.blend,
                         align and not getattr(args, "per_frame", False), getattr(args, "causal", False),
                         args.device)  # fmt: skip
    n = len(seq) if args.max_frames is None else min(len(seq), args.max_frames)
    disp, gts, poses, Ks, rgbs = [], [], [], [], []
    elapsed = 0.0
    # the scope's border as infer and the node see it: left out of the aligned fits, and filled for
    # weights trained so
    from endo_depth_model.fov import FovTracker

    fov = FovTracker()
    for i, frame in enumerate(seq):
        if i >= n:
            break
        found = fov.update(frame.rgb)
        engine.fov_mask = found.mask if found.kind == "border" else None
        gts.append(frame.depth)
        poses.append(frame.T_world_cam)
        Ks.append(frame.K)
        if bundle.pose_net is not None:
            rgbs.append(frame.rgb)
        t0 = time.perf_counter()
        disp += [r.disparity for r in engine.push(frame.rgb)]
        elapsed += time.perf_counter() - t0
    t0 = time.perf_counter()
    disp += [r.disparity for r in engine.flush()]
    if str(args.device).startswith("cuda"):
        torch.cuda.synchronize()
    elapsed += time.perf_counter() - t0
    metric = bool(getattr(getattr(bundle.model, "config", None), "metric", False))
    pred = np.asarray(
        output_to_depth(np.stack(disp), metric, args.min_depth, args.max_depth), dtype=np.float64
    )
    has_gt = all(g is not None for g in gts)
    gt = np.stack(gts) if has_gt else None
    has_poses = all(p is not None for p in poses)
    T = np.stack(poses) if has_poses else None
    K = Ks[0] if Ks and Ks[0] is not None else None
    pred_T = (
        _predict_poses(bundle.pose_net, rgbs, tuple(args.input_size), args.device, bundle.precision)
        if rgbs
        else None
    )
    return pred, gt, T, K, pred_T, elapsed


def _predict_poses(pose_net, rgbs, input_hw, device, precision: str = "fp32") -> np.ndarray:
    """Integrate the pose network's ``T_prev_cur`` over consecutive frames: (N, 4, 4) camera-to-world."""
    import torch
    import torch.nn.functional as F

    from endo_depth_model.runtime.precision import autocast

    out = [np.eye(4)]
    with torch.inference_mode(), autocast(precision, device):
        prev = None
        for rgb in rgbs:
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255.0).to(device)
            x = F.interpolate(x, size=input_hw, mode="bilinear", align_corners=False)
            if prev is not None:
                T_prev_cur = pose_net.predict_matrix(prev, x, invert=True)[0].double().cpu().numpy()
                out.append(out[-1] @ T_prev_cur)
            prev = x
    return np.stack(out)


def _unit_name(cfg: EvalConfig) -> str:
    """The report's depth unit for ``cfg.unit_scale`` (metres times it)."""
    return {1.0: "m", 1000.0: "mm", 100.0: "cm"}.get(cfg.unit_scale, f"m x {cfg.unit_scale:g}")


def evaluate_method(label, bundle, sequences, protocols, cfg, args, align=True, note=""):
    """The report's rows of ``bundle`` (method ``label``), one per protocol that scored anything:
    ``args`` holds the engine options, as ``endo-depth eval`` parses them (``input_size``, ``window``,
    ``overlap``, ``stride``, ``blend``, ``device``, ``max_frames``, ``min_depth``, ``max_depth``, and
    optionally ``per_frame`` and ``causal``); ``align=False`` concatenates windows without alignment.
    Sequences without ground truth, or that a protocol cannot score, are named and skipped."""
    evals = {p: [] for p in protocols}
    seconds, frames = 0.0, 0
    from tqdm import tqdm

    for seq in tqdm(sequences, desc=label, unit="seq"):
        pred, gt, T, K, pred_T, elapsed = _predict_sequence(seq, bundle, args, align=align)
        seconds += elapsed
        frames += len(pred)
        if gt is None:
            print(f"  {seq.name}: no ground-truth depth, skipped")
            continue
        for p in protocols:
            try:
                evals[p].append(evaluate_sequence(seq.name, gt, pred, p, cfg, T, K, pred_T))
            except MetricError as exc:  # e.g. a constant prediction: name it, keep evaluating the rest
                print(f"  {seq.name} ({p}): not evaluated: {exc}")
    ms = 1000.0 * seconds / max(frames, 1)
    unit = _unit_name(cfg)
    return {
        p: summarise(label, evals[p], bundle.total_params, bundle.trainable_params, ms, note, unit)
        for p in protocols
        if evals[p]
    }


BASELINES = {
    "light heuristic (1/sqrt grey)": "light_heuristic_depth",
    "constant depth": "constant_depth",
}


def evaluate_baselines(sequences, protocols, cfg, args) -> list[dict]:
    """The report's baseline rows: each baseline predicts every frame from its image alone (outside the
    detected field of view: NaN, so never scored) and is scored by the same protocols as the model."""
    from endo_depth_model import quality
    from endo_depth_model.fov import detect_fov

    rows = {name: {p: [] for p in protocols} for name in BASELINES}
    for seq in sequences:
        n = len(seq) if args.max_frames is None else min(len(seq), args.max_frames)
        frames = [f for i, f in zip(range(n), seq, strict=False)]
        if not frames or any(f.depth is None for f in frames):
            continue
        rgbs = np.stack([f.rgb for f in frames])
        gt = np.stack([f.depth for f in frames])
        has_poses = all(f.T_world_cam is not None for f in frames)
        T = np.stack([f.T_world_cam for f in frames]) if has_poses else None
        K = frames[0].K
        fov = detect_fov(rgbs)
        mask = fov.mask if fov.kind == "border" else None
        for name, fn in BASELINES.items():
            pred = np.stack([getattr(quality, fn)(rgb, mask) for rgb in rgbs]).astype(np.float64)
            pred = np.nan_to_num(pred, nan=1.0)
            for p in protocols:
                try:
                    rows[name][p].append(evaluate_sequence(seq.name, gt, pred, p, cfg, T, K))
                except MetricError as exc:
                    print(f"  {name} on {seq.name} ({p}): not evaluated: {exc}")
    unit = _unit_name(cfg)
    out = []
    for name in BASELINES:
        note = "baseline: a model that does not clearly beat it does not see"
        out.append(
            {p: summarise(name, rows[name][p], 0, 0, None, note, unit) for p in protocols if rows[name][p]}
        )
    return out
