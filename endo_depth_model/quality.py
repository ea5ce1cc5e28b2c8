"""Does the model see? Honest baselines and the scene-level quality measures the model card reports.

Baselines (computed like a model's prediction, then scored by the same protocols):

* :func:`light_heuristic_depth`: the tip light's inverse-square fall-off, ``depth ∝ 1 / sqrt(blurred
  grey)``. A model that does not clearly beat it has learned shading, not shape.
* :func:`constant_depth`: one value everywhere (the per-frame protocol's median scaling makes it the
  best flat guess).

Measures, each on one frame (``pred``, ``gt`` depth in any positive scale, ``mask`` valid pixels):

* :func:`depth_range_ratio`: predicted over true depth range, ``(p95 / p5)_pred / (p95 / p5)_gt``; 1 is
  right, below 1 a compressed (blurred) range.
* :func:`instrument_nearer`: whether the instrument's pixels are predicted nearer than the tissue in a
  ring around them (median against median), as they truly are when the instrument is in front.
* :func:`edge_ordinal_accuracy`: at true depth discontinuities (neighbours ``step`` pixels apart whose
  true depths differ by more than ``ratio``), the share of pairs that the prediction orders the same way
  by a clear margin. It rewards sharp, correctly placed edges and is blind to smooth shape.
* :func:`flicker`: for a video, the median relative depth change between consecutive frames on pixels
  whose image does not change (no ground truth needed).

For real footage without instrument masks, :func:`grey_tool_mask` finds the da Vinci instruments of the
EndoNeRF clip by colour (blue-grey shafts, grey metal on orange-red tissue), so :func:`instrument_nearer`
can be measured there too. It is a rule for that kind of footage, looked at on the clip, not a general
instrument segmenter: pale or grey tissue (fascia, gallbladder, smoke) defeats it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "light_heuristic_depth",
    "constant_depth",
    "depth_range_ratio",
    "instrument_nearer",
    "edge_ordinal_accuracy",
    "flicker",
    "grey_tool_mask",
]


def light_heuristic_depth(
    rgb: np.ndarray, fov_mask: np.ndarray | None = None, blur_frac: float = 0.03
) -> np.ndarray:
    """(H, W) depth ∝ 1 / sqrt(blurred grey) of an (H, W, 3) uint8 image; NaN outside ``fov_mask``."""
    import cv2

    grey = np.asarray(rgb, dtype=np.float32).mean(axis=2) / 255.0
    sigma = max(1.0, blur_frac * max(grey.shape))
    blurred = cv2.GaussianBlur(grey, (0, 0), sigma)
    depth = 1.0 / np.sqrt(np.maximum(blurred, 1.0 / 255.0))
    if fov_mask is not None:
        depth = np.where(fov_mask, depth, np.nan)
    return depth.astype(np.float32)


def constant_depth(rgb: np.ndarray, fov_mask: np.ndarray | None = None) -> np.ndarray:
    """(H, W) ones; NaN outside ``fov_mask``."""
    depth = np.ones(np.asarray(rgb).shape[:2], np.float32)
    if fov_mask is not None:
        depth = np.where(fov_mask, depth, np.nan).astype(np.float32)
    return depth


def _valid(pred, gt, mask):
    m = np.isfinite(pred) & np.isfinite(gt) & (gt > 0) & (pred > 0)
    return m if mask is None else m & mask


def depth_range_ratio(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``(p95 / p5)`` of the prediction over that of the ground truth; NaN with < 100 valid pixels."""
    m = _valid(pred, gt, mask)
    if m.sum() < 100:
        return float("nan")
    p5, p95 = np.percentile(pred[m], [5, 95])
    g5, g95 = np.percentile(gt[m], [5, 95])
    return float((p95 / p5) / (g95 / g5))


def instrument_nearer(
    pred: np.ndarray,
    instruments: np.ndarray,
    valid: np.ndarray | None = None,
    ring_px: int = 7,
    min_pixels: int = 30,
) -> bool | None:
    """True when the median predicted depth on instrument pixels is below that of the tissue ring
    (``ring_px`` wide, outside the instrument, inside ``valid``); None when either has < ``min_pixels``."""
    import cv2

    inst = np.asarray(instruments, bool)
    ok = np.isfinite(pred) if valid is None else (valid & np.isfinite(pred))
    on = inst & ok
    kernel = np.ones((2 * ring_px + 1, 2 * ring_px + 1), np.uint8)
    ring = cv2.dilate(inst.astype(np.uint8), kernel).astype(bool) & ~inst & ok
    if on.sum() < min_pixels or ring.sum() < min_pixels:
        return None
    return bool(np.median(pred[on]) < np.median(pred[ring]))


def edge_ordinal_accuracy(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    ratio: float = 1.1,
    margin: float = 1.02,
    step: int = 2,
) -> float:
    """Share of true depth discontinuities (neighbour pairs ``step`` px apart, true ratio > ``ratio``)
    that the prediction orders the same way with a ratio above ``margin``; NaN when there are none."""
    m = _valid(pred, gt, mask)
    hits, total = 0, 0
    for dy, dx in ((0, step), (step, 0)):
        a = (slice(None, gt.shape[0] - dy), slice(None, gt.shape[1] - dx))
        b = (slice(dy, None), slice(dx, None))
        both = m[a] & m[b]
        g_r = np.where(both, gt[b] / np.where(both, gt[a], 1.0), 1.0)
        p_r = np.where(both, pred[b] / np.where(both, pred[a], 1.0), 1.0)
        far = both & (g_r > ratio)
        near = both & (g_r < 1.0 / ratio)
        hits += int((far & (p_r > margin)).sum() + (near & (p_r < 1.0 / margin)).sum())
        total += int(far.sum() + near.sum())
    return float(hits / total) if total else float("nan")


def flicker(
    depths: np.ndarray, rgbs: np.ndarray, mask: np.ndarray | None = None, still: float = 2.0
) -> float:
    """Median over consecutive pairs of the median |d_{k+1} - d_k| / d_k on pixels whose grey level
    changes by less than ``still`` (of 255) and that are valid in both; NaN for fewer than two frames."""
    depths = np.asarray(depths, np.float64)
    grey = np.asarray(rgbs, np.float32).mean(axis=-1)
    values = []
    for k in range(len(depths) - 1):
        a, b = depths[k], depths[k + 1]
        m = np.isfinite(a) & np.isfinite(b) & (a > 0) & (np.abs(grey[k + 1] - grey[k]) < still)
        if mask is not None:
            m &= mask
        if m.sum() >= 100:
            values.append(float(np.median(np.abs(b[m] - a[m]) / a[m])))
    return float(np.median(values)) if values else float("nan")


def grey_tool_mask(rgb: np.ndarray, min_area_frac: float = 0.004) -> np.ndarray:
    """(H, W) bool: instrument pixels of an (H, W, 3) uint8 RGB frame by colour. Blue hue (OpenCV hue
    90-140 of 180: the instruments' blue-grey sleeves) or nearly no saturation (< 25 of 255: metal) and not
    dark (value > 40: the scope's border), opened with a kernel of 1/128 of the width, and only the
    connected parts larger than ``min_area_frac`` of the frame (specular highlights on wet tissue are
    also unsaturated, but small)."""
    import cv2

    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"grey_tool_mask: expected an (H, W, 3) uint8 image, got shape {img.shape}")
    hsv = cv2.cvtColor(cv2.GaussianBlur(img, (5, 5), 0), cv2.COLOR_RGB2HSV)
    hue, sat, val = (hsv[..., i].astype(np.int16) for i in range(3))
    raw = (((hue >= 90) & (hue <= 140)) | (sat < 25)) & (val > 40)
    k = max(3, int(round(img.shape[1] / 128)) | 1)
    opened = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened)
    big = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] > min_area_frac * img.shape[0] * img.shape[1]) + 1
    return np.isin(labels, big) if n > 1 else np.zeros(img.shape[:2], bool)
