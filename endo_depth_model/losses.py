"""Self-supervised losses: SSIM+L1 photometric with minimum reprojection and auto-mask, edge-aware
smoothness, and EndoDAV's projection loss.

All camera maths comes from :mod:`endo_depth_model.geometry` (one implementation shared with the
evaluation). Conventions follow that module: ``T_dst_src`` (B, 4, 4) maps points expressed in camera
``src`` into camera ``dst``; ``K`` (B, 3, 3) or (3, 3) in pixels of the images the loss sees.

Every loss returns one value per sample, shape (B,), so that a batch mean over samples is the same
whether the batch lives in one process or is split over DistributedDataParallel ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from endo_depth_model import geometry

__all__ = [
    "LossError",
    "SSIM",
    "BackprojectDepth",
    "Project3D",
    "photometric_error",
    "warp_image",
    "min_reprojection_loss",
    "smoothness_loss",
    "projection_loss",
    "SelfSupervisedLoss",
]

#: sampled neighbour depth at or below this value counts as "outside the neighbour view" (EndoDAV).
PROJECTION_MIN_DEPTH = 1e-3
#: added to the identity (unwarped) error so that exact ties keep the reprojected source (auto-mask).
#: Monodepth2 adds random noise of this size; a constant keeps training deterministic.
AUTOMASK_TIE_BREAK = 1e-5


class LossError(ValueError):
    """Inputs to a loss have inconsistent shapes or invalid values."""


def _check_image(name: str, x: torch.Tensor, channels: int | None = None) -> None:
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise LossError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


def _check_same_hw(**tensors: torch.Tensor) -> None:
    sizes = {name: tuple(t.shape[-2:]) for name, t in tensors.items()}
    if len(set(sizes.values())) != 1:
        raise LossError(f"image sizes differ: {sizes}")


def _as_batched_K(K: torch.Tensor, batch: int) -> torch.Tensor:
    if K.shape[-2:] != (3, 3) and K.shape[-2:] != (4, 4):
        raise LossError(f"intrinsics: expected (3, 3) or (B, 3, 3), got {tuple(K.shape)}")
    K = K[..., :3, :3]
    if K.dim() == 2:
        K = K.expand(batch, 3, 3)
    if K.shape[0] != batch:
        raise LossError(f"intrinsics: batch {K.shape[0]} does not match depth batch {batch}")
    return K


def _check_pose(T: torch.Tensor, batch: int) -> None:
    if T.shape != (batch, 4, 4):
        raise LossError(f"pose: expected ({batch}, 4, 4), got {tuple(T.shape)}")


# ---- photometric error ----------------------------------------------------------------------------


class SSIM(nn.Module):
    """Per-pixel structural dissimilarity ``(1 - SSIM) / 2`` in [0, 1] over 3x3 windows.

    Uses mean (box) windows with reflection padding and the usual constants C1 = 0.01², C2 = 0.03² for
    images in [0, 1] (Monodepth2's choice). ``forward(x, y)``: (B, C, H, W) each -> (B, C, H, W).
    """

    def __init__(self, c1: float = 0.01**2, c2: float = 0.03**2):
        super().__init__()
        self.c1 = c1
        self.c2 = c2
        self.pool = nn.AvgPool2d(3, 1)
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)
        y = self.pad(y)
        mu_x = self.pool(x)
        mu_y = self.pool(y)
        sigma_x = self.pool(x * x) - mu_x * mu_x
        sigma_y = self.pool(y * y) - mu_y * mu_y
        sigma_xy = self.pool(x * y) - mu_x * mu_y
        num = (2 * mu_x * mu_y + self.c1) * (2 * sigma_xy + self.c2)
        den = (mu_x * mu_x + mu_y * mu_y + self.c1) * (sigma_x + sigma_y + self.c2)
        return torch.clamp((1 - num / den) / 2, 0, 1)


def photometric_error(
    pred: torch.Tensor, target: torch.Tensor, ssim: SSIM | None = None, alpha: float = 0.85
) -> torch.Tensor:
    """``alpha * (1 - SSIM) / 2 + (1 - alpha) * |pred - target|``, averaged over channels.

    ``pred``, ``target`` (B, 3, H, W) in [0, 1]. Returns (B, 1, H, W). ``ssim=None`` with ``alpha=0``
    gives plain L1.
    """
    _check_image("pred", pred)
    _check_image("target", target)
    if pred.shape != target.shape:
        raise LossError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    l1 = (target - pred).abs().mean(1, keepdim=True)
    if alpha == 0:
        return l1
    if ssim is None:
        ssim = SSIM().to(pred.device)
    return alpha * ssim(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


# ---- warping (geometry as small modules) ------------------------------------------------------------


class BackprojectDepth(nn.Module):
    """Depth (B, 1, H, W) + intrinsics (B, 3, 3) -> camera points (B, 3, H*W), unit of depth.

    A thin module over :func:`geometry.backproject` that checks the image size it was built for.
    """

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height = height
        self.width = width

    def forward(self, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        if depth.dim() == 3:
            depth = depth[:, None]
        _check_image("depth", depth, 1)
        if tuple(depth.shape[-2:]) != (self.height, self.width):
            raise LossError(f"depth: built for {(self.height, self.width)}, got {tuple(depth.shape[-2:])}")
        return geometry.backproject(depth, _as_batched_K(K, depth.shape[0]))


class Project3D(nn.Module):
    """Camera points (B, 3, H*W) moved by ``T_dst_src`` (B, 4, 4) and projected with ``K``.

    Returns ``(pix, z)``: pixel coordinates (B, H*W, 2) as (u, v) in the destination image and the
    depth along the destination optical axis (B, 1, H, W), both laid out on the source pixel grid.
    """

    def __init__(self, height: int, width: int, eps: float = 1e-7):
        super().__init__()
        self.height = height
        self.width = width
        self.eps = eps

    def forward(self, points: torch.Tensor, K: torch.Tensor, T_dst_src: torch.Tensor):
        b = points.shape[0]
        if points.shape != (b, 3, self.height * self.width):
            raise LossError(
                f"points: expected ({b}, 3, {self.height * self.width}), got {tuple(points.shape)}"
            )
        _check_pose(T_dst_src, b)
        pix, z = geometry.project(points, _as_batched_K(K, b), T_dst_src, eps=self.eps)
        return pix, z.reshape(b, 1, self.height, self.width)


def _sample_zeros(image: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of ``image`` (B, C, H, W) at pixels (B, H*W, 2); zero outside the image."""
    _, _, h, w = image.shape
    grid = geometry.pixels_to_grid(pix, h, w)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_image(
    source: torch.Tensor, depth_target: torch.Tensor, K: torch.Tensor, T_source_target: torch.Tensor
) -> torch.Tensor:
    """Reconstruct the target view by sampling ``source`` where the target pixels land.

    ``source`` (B, C, H, W); ``depth_target`` (B, 1, H, W); ``T_source_target`` (B, 4, 4) maps
    target-camera points into the source camera. Returns (B, C, H, W); pixels that leave the image
    take the border value (Monodepth2), which the minimum reprojection and auto-mask then handle.
    """
    _check_image("source", source)
    _check_image("depth_target", depth_target, 1)
    _check_same_hw(source=source, depth_target=depth_target)
    h, w = depth_target.shape[-2:]
    points = BackprojectDepth(h, w)(depth_target, K)
    pix, _ = Project3D(h, w)(points, K, T_source_target)
    return geometry.sample(source, pix)


# ---- losses ---------------------------------------------------------------------------------------


def min_reprojection_loss(
    target: torch.Tensor,
    sources: list[torch.Tensor],
    warped: list[torch.Tensor],
    ssim: SSIM | None = None,
    alpha: float = 0.85,
    automask: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monodepth2's per-pixel minimum reprojection loss with the identity auto-mask.

    ``target`` (B, 3, H, W); ``sources`` the unwarped neighbour images and ``warped`` the same
    neighbours warped into the target view, lists of (B, 3, H, W). Per pixel the smallest error over
    the warped neighbours is kept; with ``automask`` the unwarped neighbours compete too (plus a
    1e-5 tie-break), and pixels they win (static scene, camera not moving, moving with the camera)
    contribute nothing. Returns ``(loss (B,), mask (B, 1, H, W) float, 1 where the warp won)``.
    """
    if not warped or len(sources) != len(warped):
        raise LossError(f"need one warped image per source, got {len(sources)} sources, {len(warped)} warped")
    if ssim is None:
        ssim = SSIM().to(target.device)
    errors = [photometric_error(w, target, ssim, alpha) for w in warped]
    reproj = torch.cat(errors, 1)
    if automask:
        identity = torch.cat([photometric_error(s, target, ssim, alpha) for s in sources], 1)
        identity = identity + AUTOMASK_TIE_BREAK
        combined = torch.cat([identity, reproj], 1)
        best, idx = combined.min(1, keepdim=True)
        mask = (idx >= identity.shape[1]).to(target.dtype)
    else:
        best, _ = reproj.min(1, keepdim=True)
        mask = torch.ones_like(best)
    return best.mean((1, 2, 3)), mask


def smoothness_loss(disparity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised disparity, one value per sample.

    ``disparity`` (B, 1, H, W) > 0, ``image`` (B, 3, H, W) in [0, 1]. The disparity is divided by its
    per-image mean (so the loss is scale invariant), and its first differences are weighted by
    ``exp(-|image gradient|)``. Returns (B,).
    """
    if disparity.dim() == 3:
        disparity = disparity[:, None]
    _check_image("disparity", disparity, 1)
    _check_image("image", image)
    _check_same_hw(disparity=disparity, image=image)
    disp = disparity / (disparity.mean((2, 3), keepdim=True) + 1e-7)
    grad_disp_x = (disp[..., :, :-1] - disp[..., :, 1:]).abs()
    grad_disp_y = (disp[..., :-1, :] - disp[..., 1:, :]).abs()
    grad_img_x = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    grad_img_y = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    grad_disp_x = grad_disp_x * torch.exp(-grad_img_x)
    grad_disp_y = grad_disp_y * torch.exp(-grad_img_y)
    return grad_disp_x.mean((1, 2, 3)) + grad_disp_y.mean((1, 2, 3))


def projection_loss(
    depth: torch.Tensor,
    depth_neighbour: torch.Tensor,
    K: torch.Tensor,
    T_neighbour_frame: torch.Tensor,
    min_depth: float = PROJECTION_MIN_DEPTH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EndoDAV's projection (depth consistency) loss, one value per sample.

    ``depth`` (B, 1, H, W) of frame t is back-projected, moved by ``T_neighbour_frame`` (B, 4, 4,
    frame t -> neighbour camera) and projected into the neighbour, keeping each point's depth z in the
    neighbour camera. The neighbour's own predicted depth ``depth_neighbour`` (B, 1, H, W) is sampled
    bilinearly at the projected pixels (zero outside the image); the loss is the mean |z - sampled|
    over pixels whose sampled depth exceeds ``min_depth`` (EndoDAV's mask), in the unit of depth. The
    mask also drops points behind the neighbour camera and pixels whose bilinear footprint crosses the
    image border, where zero padding would blend a spurious 0 into the sampled depth. Returns
    ``(loss (B,), mask (B, 1, H, W) float)``; a sample with an empty mask contributes 0.
    """
    if depth.dim() == 3:
        depth = depth[:, None]
    if depth_neighbour.dim() == 3:
        depth_neighbour = depth_neighbour[:, None]
    _check_image("depth", depth, 1)
    _check_image("depth_neighbour", depth_neighbour, 1)
    if depth.shape != depth_neighbour.shape:
        raise LossError(
            f"depth {tuple(depth.shape)} and depth_neighbour {tuple(depth_neighbour.shape)} differ"
        )
    h, w = depth.shape[-2:]
    points = BackprojectDepth(h, w)(depth, K)
    pix, z = Project3D(h, w)(points, K, T_neighbour_frame)
    sampled = _sample_zeros(depth_neighbour, pix)
    u, v = pix[..., 0].reshape(z.shape), pix[..., 1].reshape(z.shape)
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1) & (z > 0)
    mask = ((sampled > min_depth) & inside).to(depth.dtype)
    diff = (z - sampled).abs() * mask
    count = mask.sum((1, 2, 3))
    loss = diff.sum((1, 2, 3)) / count.clamp_min(1.0)
    return loss, mask


# ---- combined loss --------------------------------------------------------------------------------


class SelfSupervisedLoss(nn.Module):
    """The training objective for one set of target frames and their ±1 neighbours.

    Weights (defaults: Monodepth2 / EndoDAV): ``ssim`` share of SSIM in the photometric error (rest
    L1), ``smoothness`` edge-aware smoothness weight, ``projection`` EndoDAV projection-loss weight
    (averaged over the neighbours), ``automask`` Monodepth2's identity auto-mask,
    ``min_reprojection`` per-pixel minimum over neighbours (else their mean), ``projection_min_depth``
    the projection mask's threshold on sampled depth (EndoDAV: 1e-3 with depth in millimetres).

    ``forward(target, neighbours, depth, disparity, K, poses, neighbour_depths=None, projection=False)``:

    * ``target`` (B, 3, H, W) in [0, 1]; ``neighbours`` dict offset (-1 / +1) -> image (B, 3, H, W);
    * ``depth`` (B, 1, H, W) of the target, ``disparity`` (B, 1, h, w) for the smoothness term (at a
      lower resolution for multi-scale training: the target is then resized to it);
    * ``K`` (B, 3, 3) or (3, 3) pixels of these images;
    * ``poses`` dict offset -> ``T_neighbour_target`` (B, 4, 4);
    * ``neighbour_depths`` dict offset -> ((B, 1, H, W) depth, (B,) float weight): the neighbours'
      predicted depths for the projection loss, weight 0 where the neighbour has no prediction;
    * ``projection``: add the projection loss (temporal phases);
    * ``smoothness_scale``: extra factor on the smoothness weight (Monodepth2: 1 / 2**scale).

    Returns a dict of (B,) tensors: ``loss`` (total), ``photometric``, ``smoothness``, ``projection``
    (unweighted terms) and ``automask`` (fraction of pixels where the warp beat the identity).
    """

    def __init__(
        self,
        ssim: float = 0.85,
        smoothness: float = 1e-3,
        projection: float = 1e-2,
        automask: bool = True,
        min_reprojection: bool = True,
        projection_min_depth: float = PROJECTION_MIN_DEPTH,
    ):
        super().__init__()
        if not 0.0 <= ssim <= 1.0:
            raise LossError(f"loss weight ssim must be in [0, 1], got {ssim}")
        for name, value in (("smoothness", smoothness), ("projection", projection)):
            if value < 0:
                raise LossError(f"loss weight {name} must be >= 0, got {value}")
        self.ssim_weight = ssim
        self.smoothness_weight = smoothness
        self.projection_weight = projection
        self.automask = automask
        self.min_reprojection = min_reprojection
        self.projection_min_depth = projection_min_depth
        self.ssim = SSIM()

    def forward(
        self,
        target: torch.Tensor,
        neighbours: dict[int, torch.Tensor],
        depth: torch.Tensor,
        disparity: torch.Tensor,
        K: torch.Tensor,
        poses: dict[int, torch.Tensor],
        neighbour_depths: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        projection: bool = False,
        smoothness_scale: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        if set(neighbours) != set(poses) or not neighbours:
            raise LossError(f"neighbour offsets {sorted(neighbours)} and pose offsets {sorted(poses)} differ")
        offsets = sorted(neighbours)
        warped = [warp_image(neighbours[o], depth, K, poses[o]) for o in offsets]
        sources = [neighbours[o] for o in offsets]
        alpha, automask = self.ssim_weight, self.automask
        if self.min_reprojection:
            photo, mask = min_reprojection_loss(target, sources, warped, self.ssim, alpha, automask)
        else:
            terms = [
                min_reprojection_loss(target, [s], [w], self.ssim, alpha, automask)
                for s, w in zip(sources, warped, strict=True)
            ]
            photo = torch.stack([t[0] for t in terms]).mean(0)
            mask = torch.stack([t[1] for t in terms]).mean(0)
        if disparity.dim() == 3:
            disparity = disparity[:, None]
        image = target
        if disparity.shape[-2:] != target.shape[-2:]:
            image = F.interpolate(target, size=disparity.shape[-2:], mode="bilinear", align_corners=False)
        smooth = smoothness_loss(disparity, image)
        total = photo + self.smoothness_weight * smoothness_scale * smooth
        proj = torch.zeros_like(photo)
        if projection:
            if not neighbour_depths:
                raise LossError("projection=True needs neighbour_depths")
            for o, (nd, weight) in neighbour_depths.items():
                if o not in poses:
                    raise LossError(f"no pose for neighbour offset {o}")
                value, _ = projection_loss(depth, nd, K, poses[o], self.projection_min_depth)
                proj = proj + weight.to(value.dtype) * value
            # EndoDAV sums the two neighbour terms and halves them: a mean over the two offsets.
            proj = proj / len(neighbour_depths)
            total = total + self.projection_weight * proj
        return {
            "loss": total,
            "photometric": photo,
            "smoothness": smooth,
            "projection": proj,
            "automask": mask.mean((1, 2, 3)),
        }
