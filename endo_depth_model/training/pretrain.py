"""Supervised pretraining of a small VDA on simulator ground truth (the shipped base model's first stage).

EndoDAV starts from Video Depth Anything, pretrained on large natural-video data. Our shipped CPU model
(``vitt``) has no such checkpoint, so its base is trained here on the simulator's *source* domain with
ground-truth depth, then SSB-fine-tuned self-supervised on the *target* domain (``endo-depth train``),
as EndoDAV does with VDA and SCARED.

Loss, per frame, on disparity: the scale-and-shift-invariant L1 of MiDaS/Depth Anything (prediction and
target each normalised by median and mean absolute deviation) plus a weak log-median term that anchors
the absolute level to ``depth_to_disparity(gt, min_depth, max_depth)``, so that the output is usable by
the Monodepth2-style depth conversion of the self-supervised stage.

    endo-depth pretrain --out runs/pretrain --sequences 16 --frames 32 --steps 600
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class PretrainConfig:
    out: str = "runs/pretrain"  #: output folder: weights, log, rendered data cache, resumable state
    model: str = "vitt"  #: VDA config to train (vitt, vits, ...)
    preset: str = "source"  #: simulator preset when mix is empty
    sequences: int = 16  #: sequences of preset when mix is empty
    frames: int = 32  #: frames rendered per sequence
    first_seed: int = 1000  #: seed of the first training sequence (held-out seeds never overlap)
    #: scene mixture, e.g. ``lap:40,colon:20,source:8`` (kind:sequences); empty: ``sequences`` of ``preset``.
    #: Kinds: source, target (fixed tube presets), colon (randomised lumen), lap (randomised laparoscopy),
    #: dome (a tube closed by a dome), lap_near (laparoscopy with large organs close to the scope)
    mix: str = ""
    input_height: int = 224  #: network input height (pixels)
    input_width: int = 280  #: network input width (pixels)
    clip: int = 4  #: frames per training clip (one sequence, random stride)
    steps: int = 600  #: optimiser steps in all (a resumed run goes on to this)
    lr: float = 2e-4  #: peak learning rate (AdamW)
    weight_decay: float = 1e-4  #: AdamW weight decay
    min_depth: float = 0.001  #: metres: the disparity-to-depth conversion's near limit
    max_depth: float = 0.3  #: metres: its far limit
    #: weight of the log-median (level) difference of disparity, beside the SSI loss
    level_weight: float = 0.1
    grad_weight: float = 0.0  #: multi-scale gradient matching (MiDaS), 4 scales
    temporal_weight: float = 0.0  #: temporal gradient matching (VDA) over consecutive clip frames
    #: scale-only term: L1 of disparity over its median, prediction against target. The SSI loss leaves the
    #: shift free, so far regions can drift to zero disparity, which the fixed disparity-to-depth
    #: conversion turns into the maximum depth; this anchors the shift.
    shift_weight: float = 0.0
    #: scale-invariant L1 on log disparity (each over its per-frame median): the per-frame evaluation's
    #: median scaling in log space. Near-zero disparity where the truth is not far costs without bound,
    #: which the linear terms let pass.
    log_weight: float = 0.0
    #: scale-invariant L1 on log *depth* after the fixed disparity-to-depth conversion (each frame's
    #: log-depth residual minus its median): the per-frame evaluation itself (median scaling of depth),
    #: in log space. Unlike the disparity terms it sees the conversion's shift (``1/max_depth``), so a
    #: disparity that is right up to a shift but wrong at its zero still costs.
    depth_log_weight: float = 0.0
    #: the same log-depth term with *one* median for the whole clip: zero only when the converted
    #: prediction equals the true depth up to one scale factor for every frame of the clip, which is what
    #: per-sequence median-scaled AbsRel measures. The per-frame terms leave each frame's scale free, so
    #: nothing else but the (static-pixel) temporal term teaches the scale to hold from frame to frame.
    clip_log_weight: float = 0.0
    #: the log-depth term once more on the instrument pixels alone (the rendered masks; the residual's
    #: median still taken over the whole frame): the laparoscopic error is mostly the instruments' (v20:
    #: AbsRel 0.40 on them against 0.13 on the tissue, ``benchmarks/error_breakdown.py``), whose near end
    #: comes out too far, and they are a sixth of the pixels, so the whole-frame terms weigh them little.
    instrument_weight: float = 0.0
    #: the per-frame evaluation's AbsRel of the converted depth as a loss (median-scaled, not in log space):
    #: like ``depth_log_weight`` but asymmetric, a pixel too far costs more than one as much too near, and
    #: the v20 laparoscopic error is mostly near pixels (instrument ends) predicted too far
    abs_rel_weight: float = 0.0
    #: strength of the illumination augmentation (0: off): a smooth random gain field (an off-centre spot
    #: with random width and fall-off, low-frequency shading), gamma, exposure and white balance, the same
    #: for every frame of a clip (a light fixed to the scope). Teaches that dark is not necessarily far.
    photometric_aug: float = 0.0
    #: strength of the surface-colour augmentation (0: off): soft blotches of random colour and darkness
    #: (stains, blood, pale or dark patches) over the image, fixed for the clip, and a random hue rotation
    #: and saturation change of the whole clip. Teaches that a dark spot is not a hole and pale tissue is
    #: not near: the cues that fail on textures the simulator never draws.
    albedo_aug: float = 0.0
    #: instrument albedo augmentation (0: off): in clips that show an instrument, its pixels' colour is
    #: scaled by one random factor in [exp(-A), exp(A)] for the whole clip (a darker or brighter tool), so
    #: the network cannot read a bright instrument as near and a dark one as far (the shipped model does:
    #: the simulator's light falls off with distance). Uses the rendered instrument masks.
    instrument_albedo: float = 0.0
    #: fill the scope's black border (detected from the images, :func:`endo_depth_model.fov.detect_fov`)
    #: with a smooth extension of the tissue before the network (:func:`endo_depth_model.fov.fill_outside`),
    #: as the engines do for weights trained so (metadata ``fill_border``): patches along the stop's edge
    #: no longer mix black into the tissue's features
    fill_border: bool = False
    #: multi-resolution training, e.g. ``1,0.75,0.5,0.25``: each step draws one factor and trains at that
    #: fraction of the input size (rounded to the patch size, 14 px), so the network holds up at the
    #: smaller ``input_height`` users choose for speed. Empty: the input size only.
    input_scales: str = ""
    #: share of steps whose clip runs with causal temporal attention (each frame sees only itself and
    #: earlier frames: exactly the node's causal engine, ``latency_mode`` causal); the other steps run the
    #: full window as the aligned engine does. 0: never (the draw is skipped, so older runs replay exactly)
    causal_fraction: float = 0.0
    init: str = ""  #: start from these VDA weights (safetensors / .pth) instead of a random model
    schedule: str = "onecycle"  #: onecycle | cosine (warm-up then cosine to 10 %; stretches on resume)
    precision: str = "fp32"  #: fp32 | bf16 | auto (bf16 autocast on CPUs that have it)
    checkpoint_minutes: float = 0.0  #: > 0: resumable state every N minutes (and at the end) in out/state.pt
    resume: bool = False  #: continue from out/state.pt: model, optimiser, step and RNG (data position)
    stop_at: int = 0  #: > 0: pause after this step (state saved; ``resume`` goes on to ``steps``)
    max_minutes: float = 0.0  #: > 0: pause after this much training time (state saved)
    seed: int = 0  #: seed of initialisation, clip order and augmentation
    threads: int = 0  #: torch CPU threads (0: torch's default)
    #: processes rendering the sequences not yet in ``out/data`` (1: in this process). The scenes are
    #: deterministic by seed, so the data do not depend on it; on a many-core GPU machine it turns minutes
    #: of rendering into seconds
    render_workers: int = 1
    pose_steps: int = 0  #: > 0: also pretrain the pose network on ground-truth relative poses
    pose_batch: int = 4  #: frame pairs per pose step
    pose_lr: float = 3e-4  #: pose network peak learning rate
    pose_init: str = ""  #: start the pose network from these weights (e.g. the shipped pose network)
    #: > 0: every N steps, per-frame median-scaled AbsRel on validation sequences (kinds ``val_kinds``,
    #: seeds of their own, never the benchmarks'); the best step's weights go to ``<model>_best.safetensors``
    eval_every: int = 0
    val_kinds: str = "target,lap"  #: scene kinds of the validation sequences (comma-separated)
    #: validation sequences per kind (seeds of their own: the kind's validation seed, then +100 each)
    val_sequences: int = 1
    device: str = "auto"  #: auto (CUDA when available), cpu, cuda[:N]


def check_config(cfg: PretrainConfig) -> None:
    """Every check that needs no data, at once (ValueError or CheckpointError, one line each): the mix,
    input scales, causal fraction, clip length, schedule, validation kinds and the start files."""
    parse_mix(cfg)
    parse_input_scales(cfg)
    if not 0.0 <= cfg.causal_fraction <= 1.0:
        raise ValueError(f"causal_fraction must be in [0, 1], got {cfg.causal_fraction}")
    if cfg.instrument_weight < 0:
        raise ValueError(f"instrument_weight must be >= 0, got {cfg.instrument_weight}")
    if cfg.abs_rel_weight < 0:
        raise ValueError(f"abs_rel_weight must be >= 0, got {cfg.abs_rel_weight}")
    if not 0.0 <= cfg.instrument_albedo <= 3.0:
        raise ValueError(
            f"instrument_albedo must be in [0, 3] (a factor of up to e^3), got {cfg.instrument_albedo}"
        )
    for name in ("photometric_aug", "albedo_aug"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 2.0:
            raise ValueError(f"{name} must be in [0, 2] (0: off, 1: the full ranges), got {value}")
    if not 1 <= cfg.clip <= cfg.frames:
        raise ValueError(f"clip {cfg.clip} must be 1..frames ({cfg.frames}): a clip comes from one sequence")
    if cfg.render_workers < 1:
        raise ValueError(f"render_workers must be >= 1, got {cfg.render_workers}")
    if cfg.schedule not in ("onecycle", "cosine"):
        raise ValueError(f"schedule {cfg.schedule!r} must be onecycle or cosine")
    if cfg.eval_every > 0:
        unknown = [k for k in cfg.val_kinds.split(",") if k.strip() and k.strip() not in _VAL_SEED]
        if unknown:
            raise ValueError(f"val_kinds: unknown kind {unknown[0]!r}; known: {', '.join(_VAL_SEED)}")
        if not 1 <= cfg.val_sequences <= MAX_VAL_SEQUENCES:
            raise ValueError(
                f"val_sequences must be 1..{MAX_VAL_SEQUENCES} (more would reach the benchmark's held-out "
                f"seeds), got {cfg.val_sequences}"
            )
    check_start_files(cfg)


def check_start_files(cfg: PretrainConfig) -> None:
    """Refuse unreadable ``init`` / ``pose_init`` files (:class:`~endo_depth_model.checkpoint.
    CheckpointError`, one line naming the file) and a ``pose_init`` that would go unused."""
    from endo_depth_model.checkpoint import read_state_dict

    if cfg.pose_init and cfg.pose_steps <= 0:
        raise ValueError("pose_init is used only with pose_steps > 0 (pose network pretraining)")
    for path in (cfg.init, cfg.pose_init):
        if path:
            read_state_dict(path)  # raises CheckpointError: missing, truncated, pickled, not weights


def _device(name: str):
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _normalise(x, valid):
    """Per-row median / mean-absolute-deviation normalisation over valid pixels. x, valid (N, P)."""
    import torch

    xs = torch.where(valid, x, torch.nan)
    med = xs.nanmedian(dim=1, keepdim=True).values
    mad = (xs - med).abs().nanmean(dim=1, keepdim=True).clamp_min(1e-6)
    return (x - med) / mad, med


def ssi_loss(pred, target, valid, level_weight: float = 0.1):
    """Scale-and-shift-invariant L1 on disparity + weak log-median level term.

    ``pred``, ``target`` (N, H, W) disparity, ``valid`` (N, H, W) bool. Returns a scalar tensor.
    """
    return ssi_terms(pred, target, valid, level_weight)[0]


def ssi_terms(pred, target, valid, level_weight: float = 0.1, grad_scales: int = 0):
    """(ssi + level, gradient-matching) losses; the second is 0 when ``grad_scales`` is 0.

    Gradient matching (MiDaS): the residual of the normalised prediction and target, ``R = pn - tn``, is
    differentiated along x and y at ``grad_scales`` scales (every 2^k-th pixel); the L1 of those
    gradients over pixel pairs that are both valid, averaged over scales. It penalises blurred or
    displaced edges that the per-pixel L1 alone tolerates.
    """
    import torch

    n, h, w = pred.shape
    p, t, v = pred.reshape(n, -1), target.reshape(n, -1), valid.reshape(n, -1)
    pn, pmed = _normalise(p, v)
    tn, tmed = _normalise(t, v)
    l1 = ((pn - tn).abs() * v).sum() / v.sum().clamp_min(1)
    level = (torch.log(pmed.clamp_min(1e-6)) - torch.log(tmed.clamp_min(1e-6))).abs().mean()
    grad = pred.new_zeros(())
    if grad_scales > 0:
        r = torch.where(v, pn - tn, 0.0).reshape(n, h, w)
        m = valid.float()
        for k in range(grad_scales):
            step = 2**k
            rk, mk = r[:, ::step, ::step], m[:, ::step, ::step]
            mx = mk[:, :, 1:] * mk[:, :, :-1]
            my = mk[:, 1:, :] * mk[:, :-1, :]
            gx = (rk[:, :, 1:] - rk[:, :, :-1]).abs() * mx
            gy = (rk[:, 1:, :] - rk[:, :-1, :]).abs() * my
            grad = grad + (gx.sum() + gy.sum()) / (mx.sum() + my.sum()).clamp_min(1)
        grad = grad / grad_scales
    return l1 + level_weight * level, grad


def scale_only_loss(pred, target, valid):
    """L1 between prediction and target disparity, each divided by its per-frame median over valid
    pixels: invariant to scale only, so the disparity's zero (the far end of the depth conversion) is
    supervised. ``pred``, ``target`` (N, H, W), ``valid`` (N, H, W) bool."""
    import torch

    n = pred.shape[0]
    p, t, v = pred.reshape(n, -1), target.reshape(n, -1), valid.reshape(n, -1)
    pm = torch.where(v, p, torch.nan).nanmedian(dim=1, keepdim=True).values.clamp_min(1e-6)
    tm = torch.where(v, t, torch.nan).nanmedian(dim=1, keepdim=True).values.clamp_min(1e-6)
    return ((p / pm - t / tm).abs() * v).sum() / v.sum().clamp_min(1)


def log_scale_loss(pred, target, valid, eps: float = 0.02):
    """L1 between ``log(pred / median(pred))`` and ``log(target / median(target))`` per frame over valid
    pixels (the per-frame evaluation's median scaling, in log space). ``eps`` (relative to the median)
    keeps the logarithm finite where a disparity is zero. ``pred``, ``target`` (N, H, W), ``valid`` bool."""
    import torch

    n = pred.shape[0]
    p, t, v = pred.reshape(n, -1), target.reshape(n, -1), valid.reshape(n, -1)
    pm = torch.where(v, p, torch.nan).nanmedian(dim=1, keepdim=True).values.clamp_min(1e-6)
    tm = torch.where(v, t, torch.nan).nanmedian(dim=1, keepdim=True).values.clamp_min(1e-6)
    lp = torch.log((p / pm).clamp_min(0) + eps)
    lt = torch.log((t / tm).clamp_min(0) + eps)
    return ((lp - lt).abs() * v).sum() / v.sum().clamp_min(1)


def _median_log_residual(pred, target_depth, valid, min_depth: float, max_depth: float):
    """``(r - median(r), valid)`` flattened to (N, P), with ``r = log(disparity_to_depth(pred)) - log(depth)``
    and the median per frame over the valid pixels: the converted prediction's log error after the
    evaluation's per-frame scaling (in log space)."""
    import torch

    from endo_depth_model.preprocess import disparity_to_depth

    n = pred.shape[0]
    d = disparity_to_depth(pred.clamp_min(0), min_depth, max_depth)
    r = torch.log(d) - torch.log(target_depth.clamp_min(min_depth))
    r, v = r.reshape(n, -1), valid.reshape(n, -1)
    med = torch.where(v, r, torch.nan).nanmedian(dim=1, keepdim=True).values.nan_to_num(0.0)
    return r - med, v


def depth_log_loss(pred, target_depth, valid, min_depth: float, max_depth: float, focus=None):
    """Mean over valid pixels of ``|r - median(r)|`` with ``r = log(disparity_to_depth(pred)) - log(depth)``
    per frame: zero exactly when the converted prediction equals the true depth up to one scale factor,
    which is what per-frame median-scaled AbsRel measures. ``pred`` (N, H, W) disparity,
    ``target_depth`` (N, H, W) depth (finite where ``valid``), ``valid`` (N, H, W) bool. ``focus`` (N, H,
    W) bool: the mean over the valid pixels in it only (the median still over every valid pixel); 0
    without such pixels."""
    res, v = _median_log_residual(pred, target_depth, valid, min_depth, max_depth)
    if focus is not None:
        v = v & focus.reshape(v.shape)
    return _mean_log_error(res, v)


def _mean_log_error(res, v):
    """:func:`depth_log_loss` from the residual of :func:`_median_log_residual` and the pixels to average."""
    return (res.abs() * v).sum() / v.sum().clamp_min(1)


#: the AbsRel term's bound on a pixel's log ratio (predicted / true after scaling): 20x too far at most
ABS_REL_MAX_LOG = 3.0


def depth_abs_rel_loss(pred, target_depth, valid, min_depth: float, max_depth: float):
    """The per-frame evaluation's AbsRel itself, ``mean |s * depth_pred - depth| / depth`` with the scale
    ``s`` the median of the ratio (:func:`depth_log_loss`'s residual ``res``: ``mean |exp(res) - 1|``).
    Unlike the log term it is asymmetric: a pixel predicted twice too far costs 1, twice too near 0.5,
    so it pulls harder on the near tail that comes out too far (the instruments' near ends). ``res`` is
    capped at :data:`ABS_REL_MAX_LOG`. Shapes as :func:`depth_log_loss`."""
    return _mean_abs_rel(*_median_log_residual(pred, target_depth, valid, min_depth, max_depth))


def _mean_abs_rel(res, v):
    """:func:`depth_abs_rel_loss` from the residual of :func:`_median_log_residual` and the valid pixels."""
    err = (res.clamp(max=ABS_REL_MAX_LOG).exp() - 1.0).abs()
    return (err * v).sum() / v.sum().clamp_min(1)


def clip_log_loss(pred, target_depth, valid, min_depth: float, max_depth: float):
    """``depth_log_loss`` with one median over the whole clip instead of one per frame: the per-sequence
    evaluation (one median scale for every frame) in log space. ``pred`` (T, H, W) disparity of one clip,
    ``target_depth`` (T, H, W), ``valid`` (T, H, W) bool."""
    t, h, w = pred.shape
    return depth_log_loss(
        pred.reshape(1, t * h, w),
        target_depth.reshape(1, t * h, w),
        valid.reshape(1, t * h, w),
        min_depth,
        max_depth,
    )


#: the augmentations' image <-> linear light conversion (an sRGB-like gamma; the simulator encodes with it)
GAMMA = 2.2


def illumination_gain(rng: np.random.Generator, height: int, width: int, strength: float) -> dict:
    """Random illumination for one clip (see ``PretrainConfig.photometric_aug``): a gain field (H, W)
    in (0, 1.x], a gamma, an exposure and per-channel gains. ``strength`` scales every range (0: identity)."""
    import cv2

    s = float(strength)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy = height / 2 + rng.uniform(-0.25, 0.25) * height * s
    cx = width / 2 + rng.uniform(-0.25, 0.25) * width * s
    r = np.hypot((yy - cy) / height, (xx - cx) / width)
    width_r = rng.uniform(0.25, 0.9)
    spot = np.exp(-rng.uniform(0.0, 2.5 * s) * (r / width_r) ** 2)
    coarse = rng.normal(0.0, 1.0, (4, 5)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    shading = np.exp(rng.uniform(0.0, 0.5 * s) * smooth)
    gain = (spot * shading).astype(np.float32)
    gain /= max(float(np.percentile(gain, 99)), 1e-6)
    return {
        "gain": gain,
        "gamma": float(np.exp(rng.uniform(-0.35, 0.35) * s)),
        "exposure": float(np.exp(rng.uniform(-0.4, 0.4) * s)),
        "channels": np.exp(rng.uniform(-0.1, 0.1, 3) * s).astype(np.float32),
    }


def albedo_field(rng: np.random.Generator, height: int, width: int, strength: float) -> dict:
    """Random surface colour for one clip (see ``PretrainConfig.albedo_aug``): ``gain`` (3, H, W), a
    multiplicative field in linear light made of soft elliptic blotches, mostly darker (stains, blood),
    some paler; ``hue`` (radians) and ``saturation`` (factor) for the whole clip. ``strength`` scales the
    blotch count and darkness, the hue angle and the saturation range (0: identity)."""
    import cv2

    s = float(strength)
    log_gain = np.zeros((3, height, width), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.poisson(20.0 * s))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = float(np.exp(rng.uniform(np.log(0.01), np.log(0.1)))) * height
        rx = ry * rng.uniform(0.5, 2.0)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        blob = np.clip((1.0 - np.hypot(u, v)) / 0.3, 0.0, 1.0)  # flat core, soft rim
        level = rng.uniform(-3.0, 0.8) * s  # log gain: mostly darker
        tint = rng.uniform(-1.0, 1.0, 3) * s
        log_gain += blob[None] * (level + tint - tint.mean())[:, None, None].astype(np.float32)
    if s > 0:
        log_gain = cv2.GaussianBlur(np.ascontiguousarray(log_gain.transpose(1, 2, 0)), (0, 0), 1.0)
        log_gain = log_gain.transpose(2, 0, 1)
    return {
        "gain": np.exp(log_gain).astype(np.float32),
        "hue": float(rng.uniform(-1.0, 1.0) * np.pi / 3 * s),
        "saturation": float(np.exp(rng.uniform(-0.8, 0.4) * s)),
    }


def apply_albedo(rgb, field: dict):
    """``rgb`` (..., 3, H, W) float in [0, 1] (torch) with the surface colour of :func:`albedo_field`:
    the gain in linear light, then the hue rotated about the grey axis and the saturation scaled around
    each pixel's grey level; black stays black, the result stays in [0, 1]."""
    import torch

    gain = torch.as_tensor(field["gain"], device=rgb.device, dtype=rgb.dtype)
    lin = (rgb.clamp(0, 1) ** GAMMA * gain).clamp(0, 1)
    out = lin ** (1 / GAMMA)
    c, s_ = np.cos(field["hue"]), np.sin(field["hue"])
    k = 1.0 / np.sqrt(3.0)
    # Rodrigues rotation about the unit grey axis (1, 1, 1) / sqrt(3)
    cross = np.array([[0, -k, k], [k, 0, -k], [-k, k, 0]])
    rot = c * np.eye(3) + s_ * cross + (1 - c) * np.full((3, 3), k * k)
    grey = np.full((3, 3), 1.0 / 3.0)
    mat = grey + field["saturation"] * (rot - grey)  # rotation keeps grey; saturation scales the rest
    m = torch.as_tensor(mat, device=rgb.device, dtype=rgb.dtype)
    out = torch.einsum("ij,...jhw->...ihw", m, out)
    return out.clamp(0, 1)


def recolour_instruments(rgb, mask, rng: np.random.Generator, strength: float):
    """``rgb`` (1, T, 3, H, W) float in [0, 1] (torch) with the pixels of ``mask`` (T, H, W) bool scaled by
    one factor ``exp(U(-strength, strength))`` for the whole clip (in linear light, clipped to [0, 1]).
    Draws from ``rng`` only when the clip shows an instrument."""
    import torch

    m = torch.as_tensor(np.asarray(mask), device=rgb.device)
    if not bool(m.any()):
        return rgb
    factor = float(np.exp(rng.uniform(-strength, strength)))
    lin = rgb.clamp(0, 1) ** GAMMA
    scaled = (lin * factor).clamp(0, 1) ** (1 / GAMMA)
    return torch.where(m[None, :, None], scaled, rgb)


def apply_illumination(rgb, light: dict):
    """``rgb`` (..., 3, H, W) float in [0, 1] (torch) under ``light`` from :func:`illumination_gain`, in
    linear light (sRGB-like gamma 2.2); black stays black."""
    import torch

    gain = torch.as_tensor(light["gain"], device=rgb.device)
    ch = torch.as_tensor(light["channels"], device=rgb.device).view(3, 1, 1)
    lin = rgb.clamp(0, 1) ** GAMMA * gain * ch * light["exposure"]
    return (lin.clamp(0, 1) ** (light["gamma"] / GAMMA)).clamp(0, 1)


def temporal_gradient_loss(pred, target, valid, static_threshold: float = 0.05):
    """VDA's temporal gradient matching on one clip. ``pred``, ``target`` (T, H, W) disparity.

    Both are normalised once for the whole clip (median / MAD over every valid pixel of every frame), so
    their frame-to-frame changes are comparable; the loss is the L1 between the predicted and the true
    change, on pixels valid in both frames whose true change is below ``static_threshold`` of the
    target's level (where the change is large, occlusions and disocclusions dominate).
    """
    if pred.shape[0] < 2:
        return pred.new_zeros(())
    v = valid.reshape(1, -1)
    pn, _ = _normalise(pred.reshape(1, -1), v)
    tn, _ = _normalise(target.reshape(1, -1), v)
    pn, tn = pn.reshape(pred.shape), tn.reshape(target.shape)
    dt_true = target[1:] - target[:-1]
    level = target.detach().abs().mean().clamp_min(1e-6)
    mask = valid[1:] & valid[:-1] & (dt_true.abs() < static_threshold * level)
    diff = ((pn[1:] - pn[:-1]) - (tn[1:] - tn[:-1])).abs()
    return (diff * mask).sum() / mask.sum().clamp_min(1)


# ---- data ----------------------------------------------------------------------------------------

#: seed offsets per scene kind, so that sequences of different kinds never share a seed
_KIND_SEED = {"source": 0, "target": 0, "colon": 20_000, "lap": 40_000, "dome": 60_000, "lap_near": 80_000}
#: the scene kinds a training mixture can name
KINDS = ("source", "target", "colon", "lap", "dome", "lap_near")


def parse_mix(cfg: PretrainConfig) -> list[tuple[str, int]]:
    """``[(kind, count)]`` of the mixture; the legacy single preset when ``mix`` is empty."""
    if not cfg.mix.strip():
        return [(cfg.preset, cfg.sequences)]
    out = []
    for part in cfg.mix.split(","):
        kind, _, count = part.strip().partition(":")
        if kind not in KINDS or not count.strip().isdigit():
            raise ValueError(f"bad mix entry {part!r}: expected kind:count with kind in {', '.join(KINDS)}")
        out.append((kind, int(count)))
    return out


def render_sequence(kind: str, seed: int, frames: int, height: int, width: int) -> dict:
    """One sequence of a scene kind (the training kinds, and ``lap_unseen`` for evaluation): rgb
    (N, H, W, 3) uint8, depth (N, H, W) float32 metres (NaN outside the field of view), poses (N, 4, 4),
    K (3, 3), and for laparoscopy the instrument masks."""
    from endo_depth_model.data.laparoscopy import (
        LAPAROSCOPY_PRESETS,
        LaparoscopySimulator,
        laparoscopy_preset,
    )
    from endo_depth_model.data.simulator import EndoscopySimulator, colon_preset, preset

    if kind in LAPAROSCOPY_PRESETS:
        sim = LaparoscopySimulator(
            laparoscopy_preset(kind, seed, n_frames=frames, height=height, width=width)
        )
        parts = [sim._render(k) for k in range(frames)]
        return {
            "rgb": np.stack([p[0] for p in parts]),
            "depth": np.stack([p[1] for p in parts]),
            "instruments": np.stack([p[2] for p in parts]),
            "poses": sim.poses,
            "K": sim.K,
        }
    if kind == "colon":
        cfg = colon_preset(seed, n_frames=frames, height=height, width=width)
    elif kind == "dome":
        cfg = dome_preset(seed, frames, height, width)
    else:
        cfg = preset(kind, seed=seed, n_frames=frames, height=height, width=width)
    sim = EndoscopySimulator(cfg)
    fr = list(sim)
    rgb = np.stack([f.rgb for f in fr])
    depth = np.stack([f.depth for f in fr])
    if kind == "colon":
        rgb, depth = _scope_effects(rgb, depth, seed)
    return {"rgb": rgb, "depth": depth, "poses": np.asarray(sim.poses, dtype=np.float64), "K": sim.K}


def dome_preset(seed: int, frames: int, height: int, width: int):
    """A closed lumen end (caecum, gastric fundus, bladder dome): the tube presets (``source`` on even
    seeds, ``target`` on odd) closed by an ellipsoidal dome 20-60 mm long, one radius past the last
    camera, so the scope looks at a near, closed end with the walls around it (the closed-loop
    simulation's scene kind; its seeds 0-9 are never training's)."""
    from dataclasses import replace

    from endo_depth_model.data.simulator import preset

    cfg = preset(("source", "target")[seed % 2], seed=seed, n_frames=frames, height=height, width=width)
    dome = float(np.random.default_rng([seed, 6161]).uniform(20.0, 60.0))
    return replace(cfg, geometry=replace(cfg.geometry, shape="cavity", cavity_dome_mm=dome))


def _scope_effects(rgb: np.ndarray, depth: np.ndarray, seed: int):
    """Colon scenes: a random scope border (black, NaN depth), blur and JPEG artefacts."""
    import cv2

    from endo_depth_model.data.laparoscopy import fov_border_mask

    rng = np.random.default_rng([seed, 4242])
    n, h, w = depth.shape
    mask = fov_border_mask(
        h, w, str(rng.choice(["none", "circle", "circle", "octagon"])), rng.uniform(0.85, 1.05)
    )
    blur = float(rng.choice([0.0, rng.uniform(0.3, 1.0)]))
    quality = int(rng.choice([0, 0, rng.integers(40, 95)]))
    rgb, depth = rgb.copy(), depth.copy()
    for k in range(n):
        img = rgb[k]
        if blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        img[~mask] = 0
        if quality > 0:
            _, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
            img[~mask] = 0
        rgb[k] = img
        depth[k][~mask] = np.nan
    return rgb, depth


def _die_with_parent() -> None:
    """Initializer of the render worker processes: on Linux, ask the kernel to end this worker when the
    process that started it dies, so a killed ``pretrain`` leaves no orphan renderers running (a worker
    only reads jobs from its parent and writes whole files). Elsewhere a no-op."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the request was in place
        os._exit(1)


def _render_to_cache(job: tuple) -> str:
    """Render one training sequence ``(kind, seed, frames, height, width, path)`` to ``path`` (written
    under a temporary name first, so a file that exists is whole). Top level: worker processes run it."""
    kind, seed, frames, height, width, path = job
    path = Path(path)
    data = render_sequence(kind, seed, frames, height, width)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(path)
    return str(path)


def render_dataset(cfg: PretrainConfig) -> list[dict]:
    """Render (or load from ``out/data``) the training sequences at the network input size."""
    from tqdm import tqdm

    cache = Path(cfg.out) / "data"
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [
        (kind, cfg.first_seed + _KIND_SEED[kind] + i) for kind, count in parse_mix(cfg) for i in range(count)
    ]

    def path_of(kind: str, seed: int) -> Path:
        return cache / f"{kind}_{seed}_{cfg.frames}_{cfg.input_height}x{cfg.input_width}_v2.npz"

    missing = [(kind, seed) for kind, seed in jobs if not path_of(kind, seed).is_file()]
    if missing and cfg.render_workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        args = [(kind, seed, cfg.frames, cfg.input_height, cfg.input_width, str(path_of(kind, seed)))
                for kind, seed in missing]  # fmt: skip
        ctx = multiprocessing.get_context("spawn")  # no forked torch / OpenMP state in the workers
        with ProcessPoolExecutor(cfg.render_workers, mp_context=ctx, initializer=_die_with_parent) as pool:
            done = pool.map(_render_to_cache, args)
            for _ in tqdm(done, total=len(args), desc=f"render ({cfg.render_workers} processes)", unit="seq"):
                pass
    seqs = []
    for kind, seed in tqdm(jobs, desc="render training sequences", unit="seq"):
        path = path_of(kind, seed)
        if not path.is_file():
            _render_to_cache((kind, seed, cfg.frames, cfg.input_height, cfg.input_width, str(path)))
        with np.load(path) as data:
            seqs.append({k: data[k] for k in data.files} | {"kind": kind, "seed": seed})
    return seqs


def pretrain_pose(cfg: PretrainConfig, seqs: list[dict]) -> Path:
    """Supervised pose pretraining on the source sequences' ground-truth relative poses.

    EndoDAV starts its pose network from ImageNet ResNet-18 weights, which are not available here; a pose
    network pretrained on the simulator's exact relative motion plays that role. ``PoseNet(a, b)`` is
    trained to give ``T_b_a`` (frame a's camera to frame b's) for pairs 1 or 2 frames apart, both ways.
    Loss: L1 on translation in millimetres plus L1 on axis-angle in centiradians.
    """
    import torch
    from tqdm import tqdm

    from endo_depth_model.checkpoint import save_safetensors
    from endo_depth_model.geometry import matrix_to_axis_angle, relative_pose
    from endo_depth_model.models.pose_net import PoseNet

    torch.manual_seed(cfg.seed + 1)
    rng = np.random.default_rng(cfg.seed + 1)
    device = _device(cfg.device)
    net = PoseNet()  # drawn even with pose_init, so the seeded random stream after it is the same
    if cfg.pose_init:
        from endo_depth_model.loading import load_pose_model

        net = load_pose_model(cfg.pose_init)
        print(f"pose network initialised from {cfg.pose_init}")
    net = net.to(device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.pose_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.pose_lr, total_steps=cfg.pose_steps, pct_start=0.05
    )
    log = []
    bar = tqdm(range(cfg.pose_steps), desc="pretrain pose", unit="step")
    for _ in bar:
        a_list, b_list, aa_list, t_list = [], [], [], []
        for _ in range(cfg.pose_batch):
            seq = seqs[rng.integers(len(seqs))]
            gap = int(rng.integers(1, 3))
            i = int(rng.integers(0, len(seq["rgb"]) - gap))
            a, b = (i, i + gap) if rng.random() < 0.5 else (i + gap, i)
            T_b_a = relative_pose(
                torch.from_numpy(seq["poses"][a]), torch.from_numpy(seq["poses"][b])
            ).numpy()
            a_list.append(seq["rgb"][a])
            b_list.append(seq["rgb"][b])
            aa_list.append(matrix_to_axis_angle(T_b_a[:3, :3]))
            t_list.append(T_b_a[:3, 3])

        def batch(images):
            return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div(255.0)

        axis_angle, translation = net(batch(a_list), batch(b_list))[:2]
        aa_gt = torch.tensor(np.stack(aa_list), dtype=torch.float32, device=device)
        t_gt = torch.tensor(np.stack(t_list), dtype=torch.float32, device=device)
        loss = (translation - t_gt).abs().mean() * 1000.0 + (axis_angle - aa_gt).abs().mean() * 100.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(log[-20:]):.4f}")
    path = save_safetensors(
        net,
        Path(cfg.out) / f"{cfg.model}_pose_pretrained.safetensors",
        metadata={"stage": "supervised-source-pose", "steps": str(cfg.pose_steps)},
    )
    print(
        f"pose network: loss {np.mean(log[:20]):.4f} -> {np.mean(log[-20:]):.4f} (mm + crad); weights: {path}"
    )
    return path


def _lr_at(cfg: PretrainConfig, step: int) -> float:
    """Cosine schedule: 5 % linear warm-up, then cosine from ``lr`` to 10 % of it at ``steps``. A pure
    function of the step, so a resumed run (even one given more ``steps``) needs no scheduler state."""
    warm = max(1, int(0.05 * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    f = min(1.0, (step - warm) / max(1, cfg.steps - warm))
    return float(cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * f))))


def _save_state(path: Path, model, opt, sched, step: int, rng: np.random.Generator, log: list) -> None:
    import torch

    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else {},
        "step": step,
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        "log": json.dumps(log),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


#: validation seeds of each kind (then +100 per further sequence): not training's (first_seed + offset + i)
#: and not the held-out benchmark's (benchmarks/model_quality.py: tube from 31, lap from 9001, lap_unseen
#: from 9101, dome from 9201, ten each)
_VAL_SEED = {"source": 7001, "target": 7002, "colon": 7003, "lap": 7004, "dome": 7005, "lap_near": 7006}
#: at most this many validation sequences per kind: seeds 7001-7905, below the benchmark's 9001
MAX_VAL_SEQUENCES = 10


def validation_sequences(cfg: PretrainConfig, frames: int = 8) -> list[dict]:
    """``cfg.val_sequences`` short sequences per kind of ``cfg.val_kinds`` at the network size, cached in
    ``out/data``."""
    cache = Path(cfg.out) / "data"
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for kind in (k.strip() for k in cfg.val_kinds.split(",") if k.strip()):
        if kind not in _VAL_SEED:
            raise ValueError(f"val_kinds: unknown kind {kind!r}; known: {', '.join(_VAL_SEED)}")
        for j in range(max(1, cfg.val_sequences)):
            seed = _VAL_SEED[kind] + 100 * j
            path = cache / f"val_{kind}_{seed}_{frames}_{cfg.input_height}x{cfg.input_width}.npz"
            if not path.is_file():
                data = render_sequence(kind, seed, frames, cfg.input_height, cfg.input_width)
                np.savez_compressed(path, rgb=data["rgb"], depth=data["depth"])
            with np.load(path) as f:
                out.append({"kind": kind, "rgb": f["rgb"], "depth": f["depth"]})
    return out


def validate(model, cfg: PretrainConfig, val: list[dict], device) -> dict[str, float]:
    """Median-scaled AbsRel on the validation sequences through the fixed disparity-to-depth conversion
    (as the node outputs depth), over pixels with ground truth, averaged over each kind's sequences:
    ``kind``, per frame (T = 1, one scale per frame); ``kind/seq``, the whole sequence through the causal
    temporal attention (the node's causal engine) with one scale for all its frames, which is where a scale
    that drifts from frame to frame shows."""
    import torch

    from endo_depth_model.metrics import median_scaled_abs_rel
    from endo_depth_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, disparity_to_depth

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
    was_training = model.training
    model.eval()
    rows: dict[str, list[float]] = {}
    with torch.inference_mode():
        for seq in val:
            x = torch.from_numpy(seq["rgb"]).to(device).permute(0, 3, 1, 2).float().div(255.0)[None]
            if cfg.fill_border:
                x = fill_clip_border(x)
            x = (x - mean) / std
            per_frame = []
            for k, gt in enumerate(seq["depth"]):
                disp = model(x[:, k : k + 1])[0, 0].float().clamp_min(0).cpu().numpy()
                per_frame.append(
                    median_scaled_abs_rel(disparity_to_depth(disp, cfg.min_depth, cfg.max_depth), gt)
                )
            disp = model(x, causal=True)[0].float().clamp_min(0).cpu().numpy()
            whole = median_scaled_abs_rel(
                disparity_to_depth(disp, cfg.min_depth, cfg.max_depth), seq["depth"]
            )
            # every key on every call (NaN where nothing was scored): best-step means compare like with like
            scored = np.isfinite(per_frame).any()
            rows.setdefault(seq["kind"], []).append(float(np.nanmean(per_frame)) if scored else float("nan"))
            rows.setdefault(f"{seq['kind']}/seq", []).append(whole)
    model.train(was_training)
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in rows.items()}


def _best_logged(log: list[dict], scores: dict[str, float]) -> float:
    """The lowest mean validation score in ``log`` among entries scored on the same keys as ``scores``
    (a run resumed with other validation settings starts a record of its own); inf when there is none."""
    means = [
        float(np.nanmean(list(r["val_abs_rel"].values())))
        for r in log
        if set(r.get("val_abs_rel", {})) == set(scores)
    ]
    return min(means, default=float("inf"))


PATCH = 14


def parse_input_scales(cfg: PretrainConfig) -> list[tuple[int, int]]:
    """The (height, width) sizes of ``cfg.input_scales`` (multiples of the patch size, at least one
    patch); ``[]`` when it is empty."""
    sizes = []
    for part in (p.strip() for p in cfg.input_scales.split(",") if p.strip()):
        try:
            f = float(part)
        except ValueError:
            f = float("nan")
        if not 0 < f <= 1:
            raise ValueError(f"input_scales: {part!r} must be a fraction in (0, 1]")
        h = max(PATCH, round(cfg.input_height * f / PATCH) * PATCH)
        w = max(PATCH, round(cfg.input_width * f / PATCH) * PATCH)
        sizes.append((h, w))
    return sizes


def resize_clip(rgb, depth, size: tuple[int, int]):
    """``rgb`` (1, T, 3, H, W) by area averaging and ``depth`` (T, H, W) by nearest neighbour (NaN, the
    unknown, stays NaN and never bleeds into its neighbours) to ``size``; unchanged at their own size."""
    import torch.nn.functional as F

    if tuple(rgb.shape[-2:]) == tuple(size):
        return rgb, depth
    t = rgb.shape[1]
    small = F.interpolate(rgb.flatten(0, 1), size=size, mode="area").view(1, t, 3, *size)
    return small, F.interpolate(depth[:, None], size=size, mode="nearest")[:, 0]


def fill_clip_border(rgb):
    """``rgb`` (1, T, 3, H, W) in [0, 1] with the scope's border, detected from the clip's frames as the
    node detects it, filled by :func:`endo_depth_model.fov.fill_outside`; unchanged without a border."""
    from endo_depth_model.fov import detect_fov, fill_outside

    frames = (rgb[0] * 255.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    found = detect_fov(frames)
    return fill_outside(rgb, found.mask) if found.kind == "border" else rgb


def _sample_clip(cfg: PretrainConfig, seqs: list[dict], rng: np.random.Generator):
    """One training clip: indices into a random sequence (stride 1-2, random direction) and a flip."""
    seq = seqs[rng.integers(len(seqs))]
    n = len(seq["rgb"])
    # stride 2 only where the clip still fits (a 16-frame clip in 24 frames takes stride 1)
    max_stride = 2 if cfg.clip < 2 else max(1, min(2, (n - 1) // (cfg.clip - 1)))
    stride = int(rng.integers(1, max_stride + 1))
    start = int(rng.integers(0, n - (cfg.clip - 1) * stride))
    idx = start + stride * np.arange(cfg.clip)
    if rng.random() < 0.5:
        idx = idx[::-1].copy()  # time reversal: the temporal modules see both directions
    return seq, idx, bool(rng.random() < 0.5)


def pretrain(cfg: PretrainConfig) -> Path:
    """Supervised depth pretraining on simulator ground truth; resumable (``resume``) from ``out/state.pt``.

    Each step draws one clip (the RNG is part of the saved state, so a resumed run sees the same clips as
    an uninterrupted one) and minimises the scale-and-shift-invariant loss on disparity plus, where
    weighted, multi-scale gradient matching and temporal gradient matching. Pixels with NaN depth (the
    scope's border, misses) are excluded from every term.
    """
    import torch
    from tqdm import tqdm

    from endo_depth_model.checkpoint import load_vda_weights, save_safetensors
    from endo_depth_model.models import build_vda
    from endo_depth_model.preprocess import IMAGENET_MEAN, IMAGENET_STD, depth_to_disparity
    from endo_depth_model.runtime.precision import autocast, resolve_precision

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    check_config(cfg)  # before the rendering, which can take an hour
    sizes = parse_input_scales(cfg)
    out.mkdir(parents=True, exist_ok=True)
    seqs = render_dataset(cfg)
    kinds = {}
    for q in seqs:
        kinds[q["kind"]] = kinds.get(q["kind"], 0) + 1
    print(
        "training data: "
        + ", ".join(f"{k} {v} sequences" for k, v in kinds.items())
        + f" x {cfg.frames} frames at {cfg.input_height}x{cfg.input_width}"
    )
    if cfg.pose_steps > 0:
        pretrain_pose(cfg, seqs)
    if cfg.steps <= 0:
        return out / f"{cfg.model}_pretrained.safetensors"
    device = _device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    model = build_vda(cfg.model)
    if cfg.init:
        report = load_vda_weights(model, cfg.init)
        print(f"initialised from {cfg.init}: {report}")
    else:
        # A randomly initialised final conv can leave the last ReLU dead everywhere (zero output, no
        # gradient): start it alive, at a typical disparity level.
        last = model.head.scratch.output_conv2[2]
        torch.nn.init.normal_(last.weight, std=1e-3)
        torch.nn.init.constant_(last.bias, 0.02)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = None
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    elif cfg.schedule != "cosine":
        raise ValueError(f"schedule {cfg.schedule!r} must be onecycle or cosine")
    state_path = out / "state.pt"
    log: list[dict] = []
    first_step = 0
    if cfg.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state["scheduler"]:
            sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        log = json.loads(state["log"])
        first_step = int(state["step"])
        print(f"resumed from {state_path} at step {first_step}")
    elif cfg.resume:
        print(f"no {state_path} yet: starting a new run")
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
    t0 = time.time()
    last_save = time.time()
    weights_path = out / f"{cfg.model}_pretrained.safetensors"
    val = validation_sequences(cfg) if cfg.eval_every > 0 else []
    best_val = float("inf")
    bar = tqdm(
        range(first_step, cfg.steps), desc="pretrain", unit="step", initial=first_step, total=cfg.steps
    )
    # what the saved weights carry: the engines read fill_border to fill the border as training did
    meta = {"config": cfg.model, "stage": "supervised-pretraining"}
    if cfg.fill_border:
        meta["fill_border"] = "1"
    for step in bar:
        if sched is None:
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step)
        seq, idx, flip = _sample_clip(cfg, seqs, rng)
        rgb = torch.from_numpy(seq["rgb"][idx]).to(device).permute(0, 3, 1, 2).float().div(255.0)[None]
        depth = torch.from_numpy(seq["depth"][idx]).to(device)
        if cfg.instrument_albedo > 0 and "instruments" in seq:
            rgb = recolour_instruments(rgb, seq["instruments"][idx], rng, cfg.instrument_albedo)
        # the instrument masks ride along as NaN-free "depth" through the flip and the nearest resize
        tools = None
        if cfg.instrument_weight > 0 and "instruments" in seq:
            tools = torch.from_numpy(seq["instruments"][idx].astype(np.float32)).to(device)
        if flip:
            rgb, depth = rgb.flip(-1), depth.flip(-1)
            tools = None if tools is None else tools.flip(-1)
        if sizes:
            size = sizes[int(rng.integers(len(sizes)))]
            if tools is not None:
                tools = resize_clip(rgb, tools, size)[1]
            rgb, depth = resize_clip(rgb, depth, size)
        if cfg.albedo_aug > 0:
            rgb = apply_albedo(rgb, albedo_field(rng, *rgb.shape[-2:], cfg.albedo_aug))
        if cfg.photometric_aug > 0:
            rgb = apply_illumination(rgb, illumination_gain(rng, *rgb.shape[-2:], cfg.photometric_aug))
        if cfg.fill_border:
            rgb = fill_clip_border(rgb)
        causal = cfg.causal_fraction > 0 and bool(rng.random() < cfg.causal_fraction)
        valid = torch.isfinite(depth) & (depth > cfg.min_depth) & (depth < cfg.max_depth)
        target = depth_to_disparity(torch.nan_to_num(depth, nan=cfg.max_depth), cfg.min_depth, cfg.max_depth)
        with autocast(precision, device):
            pred = model((rgb - mean) / std, causal=causal)[0]
        pred = pred.float()
        ssi, grad = ssi_terms(pred, target, valid, cfg.level_weight, 4 if cfg.grad_weight > 0 else 0)
        tgm = temporal_gradient_loss(pred, target, valid) if cfg.temporal_weight > 0 else pred.new_zeros(())
        loss = ssi + cfg.grad_weight * grad + cfg.temporal_weight * tgm
        if cfg.shift_weight > 0:
            loss = loss + cfg.shift_weight * scale_only_loss(pred, target, valid)
        if cfg.log_weight > 0:
            loss = loss + cfg.log_weight * log_scale_loss(pred, target, valid)
        safe = torch.nan_to_num(depth, nan=cfg.max_depth)  # the log-depth terms' target (NaN: invalid)
        focus = None if tools is None else tools > 0.5
        focus = focus if focus is not None and bool(focus.any()) else None
        if cfg.depth_log_weight > 0 or cfg.abs_rel_weight > 0 or focus is not None:
            # the per-frame terms share one conversion, logarithm and median (depth_log_loss,
            # depth_abs_rel_loss and depth_log_loss with focus, computed once)
            res, v = _median_log_residual(pred, safe, valid, cfg.min_depth, cfg.max_depth)
            if cfg.depth_log_weight > 0:
                loss = loss + cfg.depth_log_weight * _mean_log_error(res, v)
            if cfg.abs_rel_weight > 0:
                loss = loss + cfg.abs_rel_weight * _mean_abs_rel(res, v)
            if focus is not None:
                loss = loss + cfg.instrument_weight * _mean_log_error(res, v & focus.reshape(v.shape))
        if cfg.clip_log_weight > 0:
            loss = loss + cfg.clip_log_weight * clip_log_loss(pred, safe, valid, cfg.min_depth, cfg.max_depth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()
        log.append(
            {
                "step": step + 1,
                "loss": loss.item(),
                "ssi": ssi.item(),
                "grad": grad.item(),
                "tgm": tgm.item(),
                "lr": opt.param_groups[0]["lr"],
                "kind": seq["kind"],
                "causal": causal,
            }
        )
        bar.set_postfix(loss=f"{np.mean([r['loss'] for r in log[-20:]]):.4f}")
        done = step + 1 == cfg.steps
        pause = (cfg.stop_at > 0 and step + 1 >= cfg.stop_at) or (
            cfg.max_minutes > 0 and time.time() - t0 > 60 * cfg.max_minutes
        )
        if cfg.eval_every > 0 and ((step + 1) % cfg.eval_every == 0 or done):
            scores = validate(model, cfg, val, device)
            mean_score = float(np.nanmean(list(scores.values())))
            if best_val == float("inf") and (out / f"{cfg.model}_best.safetensors").is_file():
                best_val = _best_logged(log[:-1], scores)  # a resumed run: its earlier best still counts
            log[-1]["val_abs_rel"] = scores
            if mean_score < best_val:  # the run's best so far
                best_val = mean_score
                save_safetensors(
                    model,
                    out / f"{cfg.model}_best.safetensors",
                    metadata=meta | {"step": str(step + 1), "val_abs_rel": json.dumps(scores)},
                )  # fmt: skip
            bar.write(
                f"step {step + 1}: validation AbsRel "
                + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
                + f" (best mean {best_val:.3f})"
            )
        if (step + 1) % 100 == 0 or done:
            save_safetensors(
                model,
                weights_path,
                metadata=meta | {"step": str(step + 1)},
            )
        if pause and not done:
            save_safetensors(
                model,
                weights_path,
                metadata=meta | {"step": str(step + 1)},
            )
        if (cfg.checkpoint_minutes > 0 or pause) and (
            done or pause or time.time() - last_save > 60 * cfg.checkpoint_minutes
        ):
            _save_state(state_path, model, opt, sched, step + 1, rng, log)
            last_save = time.time()
        if pause:
            print(f"\npaused at step {step + 1} of {cfg.steps}: continue with --resume")
            break
    minutes = (time.time() - t0) / 60
    (out / "pretrain_log.json").write_text(
        json.dumps({"config": asdict(cfg), "minutes": minutes, "log": log})
    )
    if log:
        first, last = np.mean([r["loss"] for r in log[:20]]), np.mean([r["loss"] for r in log[-20:]])
        print(
            f"\npretrained {cfg.model}: steps {first_step} -> {log[-1]['step']} of {cfg.steps} in "
            f"{minutes:.1f} min ({precision}, {device}); loss (first / last 20 steps of the run's log) "
            f"{first:.4f} -> {last:.4f}"
        )
    print(
        f"weights: {weights_path}"
        + (f"; resumable state: {state_path}" if cfg.checkpoint_minutes > 0 else "")
    )
    return weights_path
