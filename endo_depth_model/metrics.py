"""Depth and pose metrics of the endoscopy literature (pure numpy, geometry from :mod:`geometry`).

* :func:`depth_errors`: AbsRel, SqRel, RMSE, RMSE log, δ<1.25, δ<1.25², δ<1.25³ on valid pixels
  (Monodepth2 / AF-SfMLearner ``compute_errors``).
* :func:`median_scale`: per-frame median scaling (AF-SfMLearner/EndoDAC protocol).
* :func:`mad_align`: per-sequence alignment of EndoDAV, ``(pred - med_p) * MAD_g / MAD_p + med_g`` with
  ``MAD = mean |x - median(x)|`` over all valid pixels of the sequence.
* :func:`disparity_lsq_align`: one least-squares scale/shift per video in disparity against ``1 / gt``
  (Video Depth Anything's protocol).
* :func:`tae`: temporal alignment error between consecutive frames under ground-truth poses, in percent.
* :func:`compute_ate`, :func:`snippet_ate`: SfMLearner's 5-frame snippet absolute trajectory error.
"""

from __future__ import annotations

import numpy as np
import torch

from endo_depth_model import geometry

__all__ = [
    "METRIC_NAMES",
    "MetricError",
    "depth_errors",
    "median_scale",
    "valid_mask",
    "mad_align",
    "disparity_lsq_align",
    "warp_depth",
    "tae",
    "tae_pairs",
    "compute_ate",
    "snippet_ate",
]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


class MetricError(ValueError):
    """Inputs to a metric are inconsistent (shapes, empty masks, non-positive depth)."""


def valid_mask(gt: np.ndarray, min_depth: float = 1e-3, max_depth: float = 150.0) -> np.ndarray:
    """Pixels with ``min_depth < gt < max_depth`` (NaN is invalid). Same shape as ``gt``, bool."""
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        return (gt > min_depth) & (gt < max_depth)


def depth_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Standard depth errors between positive ``gt`` and ``pred`` of the same shape (already masked).

    Returns ``abs_rel = mean|g-p|/g``, ``sq_rel = mean (g-p)^2/g``, ``rmse = sqrt(mean (g-p)^2)``,
    ``rmse_log = sqrt(mean (ln g - ln p)^2)`` and ``a1..a3`` = fraction with ``max(g/p, p/g) < 1.25^k``.
    """
    g = np.asarray(gt, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if g.shape != p.shape:
        raise MetricError(f"gt and pred sizes differ: {g.size} vs {p.size}")
    if g.size == 0:
        raise MetricError("no valid pixels to evaluate")
    if (g <= 0).any() or (p <= 0).any():
        raise MetricError("depth_errors needs strictly positive gt and pred (mask and clip first)")
    thresh = np.maximum(g / p, p / g)
    diff = g - p
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def median_scale(gt: np.ndarray, pred: np.ndarray) -> float:
    """Median-scaling ratio ``median(gt) / median(pred)`` over the given (valid) values."""
    g, p = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if g.size == 0 or p.size == 0:
        raise MetricError("median scaling needs at least one valid pixel")
    med_p = float(np.median(p))
    if med_p <= 0:
        raise MetricError(f"median of the prediction is {med_p}; depth must be positive")
    return float(np.median(g)) / med_p


def median_scaled_abs_rel(pred: np.ndarray, gt: np.ndarray, min_pixels: int = 10) -> float:
    """AbsRel of ``pred`` after one median-scaling ratio to ``gt``, over the pixels where both are finite and
    positive (any shape: one frame, or a whole sequence for one scale); NaN with fewer than ``min_pixels``
    such pixels. The validation figure of ``pretrain`` and ``train``."""
    g, p = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if g.shape != p.shape:
        raise MetricError(f"gt and pred shapes differ: {g.shape} vs {p.shape}")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(g) & (g > 0) & np.isfinite(p) & (p > 0)
    if ok.sum() < min_pixels:
        return float("nan")
    return depth_errors(g[ok], p[ok] * median_scale(g[ok], p[ok]))["abs_rel"]


def mad_align(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """EndoDAV's per-sequence alignment: one median/MAD normalisation for the whole sequence.

    ``gt``, ``pred`` (N, H, W) depth, ``mask`` (N, H, W) bool valid pixels. Returns the aligned prediction
    (N, H, W) float64, ``(pred - t_p) * s_g / s_p + t_g``, and the parameters ``t_gt, s_gt, t_pred, s_pred``
    (medians and mean absolute deviations from the median over the masked pixels).
    """
    gt, pred, mask = np.asarray(gt), np.asarray(pred), np.asarray(mask, dtype=bool)
    if not (gt.shape == pred.shape == mask.shape):
        raise MetricError(f"shapes differ: gt {gt.shape}, pred {pred.shape}, mask {mask.shape}")
    g = gt[mask].astype(np.float64)
    p = pred[mask].astype(np.float64)
    if g.size == 0:
        raise MetricError("MAD alignment needs at least one valid pixel")
    t_g, t_p = float(np.median(g)), float(np.median(p))
    s_g, s_p = float(np.mean(np.abs(g - t_g))), float(np.mean(np.abs(p - t_p)))
    if s_p <= 0:
        # a constant prediction (e.g. the constant-depth baseline): its best MAD alignment is the flat
        # ground-truth median
        aligned = np.full(pred.shape, t_g, dtype=np.float64)
        return aligned, {"t_gt": t_g, "s_gt": s_g, "t_pred": t_p, "s_pred": s_p}
    aligned = (pred.astype(np.float64) - t_p) * (s_g / s_p) + t_g
    return aligned, {"t_gt": t_g, "s_gt": s_g, "t_pred": t_p, "s_pred": s_p}


def disparity_lsq_align(
    gt: np.ndarray, pred_disparity: np.ndarray, mask: np.ndarray, eps: float = 1e-6
) -> tuple[np.ndarray, float, float]:
    """Video Depth Anything's alignment: one least-squares fit ``scale * disp + shift ≈ 1 / gt`` per video.

    ``gt`` (N, H, W) depth, ``pred_disparity`` (N, H, W), ``mask`` (N, H, W) bool. Returns the aligned
    depth ``1 / max(scale * disp + shift, eps)`` (N, H, W) float64 and ``(scale, shift)``.
    """
    from endo_depth_model.align import fit_scale_shift

    mask = np.asarray(mask, dtype=bool)
    if not (np.shape(gt) == np.shape(pred_disparity) == mask.shape):
        raise MetricError(
            f"shapes differ: gt {np.shape(gt)}, pred {np.shape(pred_disparity)}, mask {mask.shape}"
        )
    target = 1.0 / np.clip(np.asarray(gt, dtype=np.float64)[mask], eps, None)
    scale, shift, ok = fit_scale_shift(np.asarray(pred_disparity)[mask], target)
    if not ok:
        raise MetricError("disparity alignment is degenerate (constant prediction or < 2 valid pixels)")
    disp = np.asarray(pred_disparity, dtype=np.float64) * scale + shift
    return 1.0 / np.clip(disp, eps, None), scale, shift


def warp_depth(
    depth_src: np.ndarray, mask_src: np.ndarray, T_dst_src: np.ndarray, K: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """Forward-warp a depth map into another camera.

    ``depth_src`` (H, W), ``mask_src`` (H, W) bool pixels to move, ``T_dst_src`` (4, 4) rigid transform from
    the source to the destination camera, ``K`` (3, 3) pixels (pixel centres at integer coordinates,
    see :mod:`geometry`). Points are back-projected, moved, projected and rounded to the nearest pixel;
    when several land on one pixel the nearest wins (z-buffer). Returns (H, W) float64 depth in the
    destination camera, 0 where nothing landed.
    """
    h, w = depth_src.shape
    depth_t = torch.from_numpy(np.ascontiguousarray(depth_src, dtype=np.float64))[None]
    K_t = torch.from_numpy(np.array(K, dtype=np.float64))
    T_t = torch.from_numpy(np.array(T_dst_src, dtype=np.float64))[None]
    points = geometry.backproject(depth_t, K_t)  # (1, 3, H*W)
    pix, z = geometry.project(points, K_t, T_t, eps=eps)
    pix, z = pix[0].numpy(), z[0].numpy()
    finite = np.isfinite(pix).all(axis=1) & np.isfinite(z)  # a non-finite pose or depth moves nothing
    pix = np.where(finite[:, None], pix, -1.0)
    u = np.round(pix[:, 0]).astype(np.int64)
    v = np.round(pix[:, 1]).astype(np.int64)
    keep = (
        np.asarray(mask_src, dtype=bool).ravel()
        & finite
        & (z > eps)
        & (u >= 0)
        & (u < w)
        & (v >= 0)
        & (v < h)
    )
    u, v, z = u[keep], v[keep], z[keep]
    order = np.argsort(-z, kind="stable")  # farthest first, so the nearest is written last
    out = np.zeros((h, w), dtype=np.float64)
    out[v[order], u[order]] = z[order]
    return out


def _pair_abs_rel(depth_ref: np.ndarray, mask_ref: np.ndarray, warped: np.ndarray, eps: float) -> float:
    m = (warped > eps) & mask_ref
    if not m.any():
        return float("nan")
    ref = depth_ref[m].astype(np.float64)
    return float(np.mean(np.abs(ref - warped[m]) / ref))


def tae(
    depths: np.ndarray,
    T_world_cam: np.ndarray,
    K: np.ndarray,
    masks: np.ndarray | None = None,
    eps: float = 1e-6,
) -> float:
    """Temporal alignment error in percent.

    ``depths`` (N, H, W) aligned predicted depth, ``T_world_cam`` (N, 4, 4) ground-truth camera-to-world
    poses, ``K`` (3, 3) or (N, 3, 3) intrinsics in pixels, ``masks`` (N, H, W) bool valid pixels (default
    all). For each consecutive pair, depth i is warped into camera i+1 with the ground-truth relative pose
    and compared with depth i+1 by AbsRel (relative to depth i+1), and the same backwards;
    ``TAE = 100 * sum_i (fwd_i + bwd_i) / (2 (N - 1))`` over the pairs where both directions overlap.
    """
    pairs = tae_pairs(depths, T_world_cam, K, masks, eps)
    if not np.isfinite(pairs).any():
        raise MetricError("no consecutive pair of frames overlaps under the given poses")
    return float(np.nanmean(pairs))


def tae_pairs(
    depths: np.ndarray,
    T_world_cam: np.ndarray,
    K: np.ndarray,
    masks: np.ndarray | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Per-pair TAE terms ``100 * (fwd_i + bwd_i) / 2`` (N - 1,) in percent, NaN where a pair has no
    overlap (arguments as :func:`tae`). Averaging pairs over several sequences gives a dataset's TAE."""
    depths = np.asarray(depths)
    n = depths.shape[0]
    if depths.ndim != 3 or n < 2:
        raise MetricError(f"TAE needs depths of shape (N>=2, H, W), got {depths.shape}")
    poses = np.asarray(T_world_cam, dtype=np.float64)
    if poses.shape != (n, 4, 4):
        raise MetricError(f"TAE needs {n} poses of shape (4, 4), got {poses.shape}")
    Ks = np.asarray(K, dtype=np.float64)
    Ks = np.broadcast_to(Ks, (n, 3, 3)) if Ks.shape == (3, 3) else Ks
    if Ks.shape != (n, 3, 3):
        raise MetricError(f"TAE needs K of shape (3, 3) or ({n}, 3, 3), got {np.shape(K)}")
    masks = np.ones(depths.shape, dtype=bool) if masks is None else np.asarray(masks, dtype=bool)
    if masks.shape != depths.shape:
        raise MetricError(f"masks {masks.shape} and depths {depths.shape} differ")
    errors = np.full(n - 1, np.nan)
    for i in range(n - 1):
        a, b = depths[i], depths[i + 1]
        T_b_a = np.linalg.inv(poses[i + 1]) @ poses[i]
        if not np.allclose(Ks[i], Ks[i + 1]):
            raise MetricError(f"frames {i} and {i + 1} have different intrinsics; TAE assumes one camera")
        fwd = _pair_abs_rel(b, masks[i + 1], warp_depth(a, masks[i], T_b_a, Ks[i], eps), eps)
        bwd = _pair_abs_rel(a, masks[i], warp_depth(b, masks[i + 1], np.linalg.inv(T_b_a), Ks[i], eps), eps)
        if np.isfinite(fwd) and np.isfinite(bwd):
            errors[i] = 100.0 * 0.5 * (fwd + bwd)
    return errors


def compute_ate(gt_xyz: np.ndarray, pred_xyz: np.ndarray) -> float:
    """SfMLearner's ATE of one snippet: (M, 3) positions, first positions made equal, best scale on the
    prediction, then ``sqrt(sum ||s * p - g||^2) / M``."""
    g = np.asarray(gt_xyz, dtype=np.float64)
    p = np.asarray(pred_xyz, dtype=np.float64)
    if g.shape != p.shape or g.ndim != 2 or g.shape[1] != 3:
        raise MetricError(f"ATE needs two (M, 3) position arrays, got {g.shape} and {p.shape}")
    p = p + (g[0] - p[0])[None]
    denom = float(np.sum(p**2))
    scale = float(np.sum(g * p)) / denom if denom > 0 else 1.0
    return float(np.sqrt(np.sum((p * scale - g) ** 2)) / g.shape[0])


def snippet_ate(
    T_world_cam_gt: np.ndarray, T_world_cam_pred: np.ndarray, track_length: int = 5
) -> tuple[float, float]:
    """Mean and standard deviation of :func:`compute_ate` over all ``track_length``-frame snippets.

    Both inputs (N, 4, 4) camera-to-world poses (the prediction in any scale, e.g. integrated relative
    poses of a pose network). Each snippet's positions are expressed in its first camera's frame.
    """
    gt = np.asarray(T_world_cam_gt, dtype=np.float64)
    pr = np.asarray(T_world_cam_pred, dtype=np.float64)
    if gt.shape != pr.shape or gt.ndim != 3 or gt.shape[1:] != (4, 4):
        raise MetricError(f"ATE needs two (N, 4, 4) pose arrays, got {gt.shape} and {pr.shape}")
    if gt.shape[0] < track_length:
        raise MetricError(f"ATE needs at least {track_length} poses, got {gt.shape[0]}")
    ates = []
    for i in range(gt.shape[0] - track_length + 1):
        g_local = np.linalg.inv(gt[i]) @ gt[i : i + track_length]
        p_local = np.linalg.inv(pr[i]) @ pr[i : i + track_length]
        ates.append(compute_ate(g_local[:, :3, 3], p_local[:, :3, 3]))
    return float(np.mean(ates)), float(np.std(ates))
