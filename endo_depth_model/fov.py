"""The scope's field of view: detect the black border (circle, octagon, any convex shape) from images.

Laparoscopes and many endoscopes image through a round or octagonal stop: outside it the sensor sees
black. Those pixels carry no depth. This module finds them from the images alone, once, in one place;
training losses, alignment fits, odometry, evaluation and the node's outputs all use its mask.

Method: a pixel is *dark* when its brightest channel, median-filtered (3 x 3), is below ``threshold``. The
border is the dark region connected to the image's edges. Dark objects inside the view (a black
instrument shaft entering from the border, shadows) can connect to it too, so the field of view is the
convex hull of everything that is not border, eroded by ``margin`` pixels against the stop's soft edge.
Several frames give a steadier mask (the per-pixel maximum is used): a shadow in one frame is lit in
another, while the stop never moves.

A mask that covers at least ``full_fraction`` of the image means "no border" (all True). A frame with
almost nothing bright (all black, lens cap, scope withdrawn into the trocar) has no field of view:
:func:`detect_fov` then returns a mask with no True pixel and ``FovResult.ok`` False, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BorderFill", "FovResult", "detect_fov", "FovTracker", "fill_outside"]


@dataclass
class FovResult:
    """``mask`` (H, W) bool, True inside the field of view; ``kind``: ``none`` (no border), ``border``
    (a border was found), ``empty`` (nothing visible); ``fraction``: share of the image inside."""

    mask: np.ndarray
    kind: str
    fraction: float

    @property
    def ok(self) -> bool:
        return self.kind != "empty"


def detect_fov(
    images: np.ndarray,
    threshold: int = 20,
    margin: int = 2,
    full_fraction: float = 0.995,
    min_fraction: float = 0.05,
) -> FovResult:
    """Field-of-view mask of one (H, W, 3) uint8 image or several (N, H, W, 3) of the same scope."""
    import cv2

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] < 4 or arr.shape[2] < 4:
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) images, got shape {arr.shape}")
    h, w = arr.shape[1:3]
    bright = arr.max(axis=(0, 3)).astype(np.uint8)  # brightest channel of the brightest frame
    bright = cv2.medianBlur(bright, 3)  # drops isolated noise in the border without moving edges
    dark = (bright < threshold).astype(np.uint8)
    n_labels, labels = cv2.connectedComponents(dark, connectivity=4)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = np.isin(labels, edge_labels[edge_labels > 0]) & (dark > 0)
    inside = ~border
    if inside.mean() < min_fraction:
        return FovResult(np.zeros((h, w), bool), "empty", 0.0)
    if inside.mean() >= full_fraction:
        return FovResult(np.ones((h, w), bool), "none", 1.0)
    pts = cv2.findNonZero(inside.astype(np.uint8))
    hull = cv2.convexHull(pts)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    hull_mask = mask.astype(bool)
    if margin > 0:
        # stay ``margin`` pixels away from the real border (outside the hull), not from the image's edge
        outside = (border & ~hull_mask).astype(np.uint8)
        near = cv2.dilate(outside, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)).astype(bool)
        mask = (hull_mask & ~near).astype(np.uint8)
    m = mask.astype(bool)
    if m.mean() >= full_fraction:
        return FovResult(np.ones((h, w), bool), "none", 1.0)
    return FovResult(m, "border", float(m.mean()))


class FovTracker:
    """The field of view of a live stream: re-detected every ``every`` frames from the frames since the
    last detection (per-pixel maximum), so a mask is ready from the first frame and follows a scope
    change. ``update(rgb)`` returns the current :class:`FovResult`; a frame whose own image shows nothing
    (``empty``) does not replace a good mask but is reported as empty for that frame."""

    def __init__(self, every: int = 30, threshold: int = 20, margin: int = 2):
        self.every, self.threshold, self.margin = every, threshold, margin
        self._acc: np.ndarray | None = None
        self._count = 0
        self.current: FovResult | None = None

    def reset(self) -> None:
        self._acc, self._count, self.current = None, 0, None

    def update(self, rgb: np.ndarray) -> FovResult:
        rgb = np.asarray(rgb)
        if self._acc is not None and self._acc.shape != rgb.shape:
            self.reset()
        self._acc = rgb.copy() if self._acc is None else np.maximum(self._acc, rgb)
        self._count += 1
        if self.current is None or self._count >= self.every:
            found = detect_fov(self._acc, self.threshold, self.margin)
            if found.ok or self.current is None:
                self.current = found
            self._acc, self._count = None, 0
        own = detect_fov(rgb, self.threshold, self.margin) if rgb.max() < self.threshold else None
        if own is not None and not own.ok:
            return own
        return self.current


def fill_outside(x, inside):
    """``x`` (..., C, H, W) tensor with the pixels outside ``inside`` ((H, W) bool tensor or array) replaced
    by a smooth extension of the pixels inside (push-pull: masked averages over a pyramid of 2 x 2 cells,
    filled in from the coarsest level down). Pixels inside are returned unchanged.

    The network then sees the scope's black border as more of the tissue near it: a patch that straddles
    the stop's edge no longer mixes black into its features, which otherwise pulls the depth of the tissue
    along the edge towards what the network makes of black (far). Linear in ``x``, so it commutes with a
    per-channel normalisation. A mask with nothing inside, or everything, returns ``x`` as it is."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(inside, dtype=torch.bool, device=x.device)
    if m.shape != x.shape[-2:]:
        raise ValueError(f"mask {tuple(m.shape)} does not match the image size {tuple(x.shape[-2:])}")
    if bool(m.all()) or not bool(m.any()):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    w = m.to(flat.dtype)[None, None]
    levels = [(flat * w, w)]
    while min(levels[-1][1].shape[-2:]) > 1:
        num, den = levels[-1]
        levels.append((F.avg_pool2d(num, 2, ceil_mode=True), F.avg_pool2d(den, 2, ceil_mode=True)))
    num, den = levels[-1]
    # the coarsest level can have a cell with no inside pixel (a strip along one side of a wide image):
    # the inside's mean there
    mean = levels[0][0].sum((-2, -1), keepdim=True) / w.sum()
    est = torch.where(den > 0, num / den.clamp_min(1e-12), mean)
    for num, den in reversed(levels[:-1]):
        up = F.interpolate(est, size=num.shape[-2:], mode="bilinear", align_corners=False)
        # a cell's own average where it has (enough) inside pixels, the coarser estimate where it has none
        trust = (den * 4.0).clamp(max=1.0)
        est = trust * (num / den.clamp_min(1e-12)) + (1.0 - trust) * up
    out = torch.where(m, flat, est)
    return out.reshape(*lead, *x.shape[-3:])


class BorderFill:
    """:func:`fill_outside` for the engines: ``fill(x, mask)`` fills the network input ``x`` (..., 3, h, w)
    outside ``mask`` ((H, W) bool at the frame's size, the :class:`FovTracker`'s), resized once per mask
    to the input's size; pixels partly outside (the stop's edge after downsizing) count as outside. ``mask``
    None: ``x`` as it is."""

    def __init__(self) -> None:
        self._mask: np.ndarray | None = None
        self._small = None

    def __call__(self, x, mask: np.ndarray | None):
        if mask is None:
            return x
        hw = tuple(x.shape[-2:])
        if mask is not self._mask or self._small is None or tuple(self._small.shape) != hw:
            import cv2
            import torch

            area = cv2.resize(mask.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
            self._mask, self._small = mask, torch.from_numpy(area > 0.999)
        return fill_outside(x, self._small)
