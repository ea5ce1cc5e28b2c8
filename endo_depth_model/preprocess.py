"""Frames -> network input, network output -> image size, and disparity -> depth.

Network input as upstream Video Depth Anything: RGB scaled to [0, 1], resized (bicubic) so both
sides are multiples of 14, normalised with the ImageNet mean and std, stacked as (1, T, 3, h, w).
EndoDAV feeds SCARED's 256x320 frames at a fixed 224x280; that is this module's default.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PATCH_MULTIPLE",
    "Preprocessor",
    "fit_to_multiple",
    "frames_to_tensor",
    "disparity_to_depth",
    "depth_to_disparity",
    "work_size",
    "shrink_rgb",
    "upsample_depth",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH_MULTIPLE = 14


def fit_to_multiple(
    image_hw: tuple[int, int], short_side: int = 518, multiple: int = PATCH_MULTIPLE
) -> tuple[int, int]:
    """Upstream VDA input size: keep the aspect ratio, scale so both sides reach at least
    ``short_side`` ("lower bound"), round each to the nearest ``multiple`` (up if that falls below
    ``short_side``). 256x320 with ``short_side=224`` gives 224x280."""
    h, w = image_hw
    scale = max(short_side / h, short_side / w)

    def constrain(x: float) -> int:
        y = int(round(x / multiple) * multiple)
        return y if y >= short_side else int(math.ceil(x / multiple) * multiple)

    return constrain(scale * h), constrain(scale * w)


def frames_to_tensor(frames) -> torch.Tensor:
    """RGB frames -> float32 tensor (T, 3, H, W) in [0, 1].

    Accepts a numpy array or tensor of one frame (H, W, 3) or a clip (T, H, W, 3), uint8 (0..255) or
    float in [0, 1]; tensors may also be channels-first (3, H, W) / (T, 3, H, W). A list of frames is
    stacked first.
    """
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("no frames given")
        frames = (
            np.stack([np.asarray(f) for f in frames])
            if isinstance(frames[0], np.ndarray)
            else torch.stack([torch.as_tensor(f) for f in frames])
        )
    channels_last = isinstance(frames, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected frames (T, H, W, 3) or (H, W, 3), got shape {tuple(x.shape)}")
    if not channels_last:
        channels_last = x.shape[1] != 3 and x.shape[-1] == 3
    if channels_last:
        if x.shape[-1] != 3:
            raise ValueError(f"expected RGB frames with 3 channels last, got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"expected RGB frames with 3 channels, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or float frames, got {x.dtype}")
    return x.float()


class Preprocessor:
    """Turns RGB frames into Video Depth Anything input and resizes outputs back.

    ``input_hw``: fixed network input (h, w), both multiples of 14 (EndoDAV: 224x280); ``None`` picks
    the upstream size per clip with :func:`fit_to_multiple` (``short_side``, default 518).
    ``interpolation``: ``"bicubic"`` (upstream inference) or ``"bilinear"`` (EndoDAV training).
    """

    def __init__(
        self,
        input_hw: tuple[int, int] | None = (224, 280),
        short_side: int = 518,
        interpolation: str = "bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ):
        if input_hw is not None:
            input_hw = (int(input_hw[0]), int(input_hw[1]))
            if input_hw[0] % PATCH_MULTIPLE or input_hw[1] % PATCH_MULTIPLE or min(input_hw) <= 0:
                raise ValueError(f"input_hw {input_hw} must be positive multiples of {PATCH_MULTIPLE}")
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', not {interpolation!r}")
        self.input_hw = input_hw
        self.short_side = short_side
        self.interpolation = interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def network_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Network input size for frames of ``image_hw``."""
        return self.input_hw if self.input_hw is not None else fit_to_multiple(image_hw, self.short_side)

    def resize(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(T, 3, H, W) in [0, 1] -> (T, 3, h, w) with the configured interpolation."""
        if tuple(x.shape[-2:]) == tuple(hw):
            return x
        if self.interpolation == "bicubic":
            return F.interpolate(x, size=hw, mode="bicubic", align_corners=False)
        return F.interpolate(x, size=hw, mode="bilinear", align_corners=True)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet normalisation of (..., 3, H, W) in [0, 1]."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, frames, device: torch.device | str | None = None) -> torch.Tensor:
        """RGB frames (see :func:`frames_to_tensor`) -> (1, T, 3, h, w) float32 normalised network input."""
        x = frames_to_tensor(frames)
        if device is not None:
            x = x.to(device)
        x = self.resize(x, self.network_hw(tuple(x.shape[-2:])))
        return self.normalise(x).unsqueeze(0)

    @staticmethod
    def postprocess(output: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Network output (1, T, h, w) or (T, h, w) -> (T, H, W) at the original frame size
        (bilinear, ``align_corners=True``, as upstream)."""
        if output.dim() == 4:
            if output.shape[0] != 1:
                raise ValueError(f"postprocess takes one clip, got batch {output.shape[0]}")
            output = output[0]
        if output.dim() != 3:
            raise ValueError(f"expected (1, T, h, w) or (T, h, w), got {tuple(output.shape)}")
        if tuple(output.shape[-2:]) == tuple(image_hw):
            return output
        return F.interpolate(output.unsqueeze(1), size=tuple(image_hw), mode="bilinear", align_corners=True)[
            :, 0
        ]


def work_size(image_hw: tuple[int, int], network_hw: tuple[int, int], below: float = 0.5) -> tuple[int, int]:
    """The size to process frames of ``image_hw`` at before a network that sees ``network_hw``: the smallest
    size with the frame's aspect that covers the network input on both sides, when that shrinks the frame
    to ``below`` of its size or less on both sides (a 1280x720 endoscope image for 224x280: 398x224);
    else the frame's own size (a 256x320 frame stays as it is)."""
    H, W = int(image_hw[0]), int(image_hw[1])
    s = max(network_hw[0] / H, network_hw[1] / W)
    if s > below:
        return H, W
    return max(int(network_hw[0]), round(H * s)), max(int(network_hw[1]), round(W * s))


def shrink_rgb(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 averaged over pixel areas, for ``hw`` at most half of (H, W).

    Halved by 2x2 averages while that stays at or above ``hw``, then area-resampled the rest of the way:
    what a camera of that resolution would see, without the aliasing of interpolating a large step, on
    uint8 (1280x720 to 398x224 in about 2 ms on one core, where converting to float and a bicubic step take
    2.2 ms for each of the depth and pose inputs: throw-away one-core timings of session 13, not saved).
    Every step keeps the pixel-centre convention of :func:`~endo_depth_model.geometry.scale_intrinsics`
    (``u' = (u + 0.5) s - 0.5``; OpenCV's Gaussian pyramid would not: it keeps the even pixels, half an
    input pixel off per halving)."""
    import cv2

    h, w = int(hw[0]), int(hw[1])
    img = np.ascontiguousarray(rgb)
    # exact halvings only (an odd side would move the centres): an odd frame takes the one-step path
    while img.shape[0] >= 2 * h and img.shape[1] >= 2 * w and img.shape[0] % 2 == 0 and img.shape[1] % 2 == 0:
        H, W = img.shape[:2]
        img = cv2.resize(img, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def upsample_depth(depth: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 depth, NaN where invalid -> (H, W) float32, bilinear (pixel centres as
    :func:`~endo_depth_model.geometry.scale_intrinsics` moves them), NaN where the validity mask,
    interpolated the same way, is below one half: the NaN border (the scope's field of view) keeps its
    place and shape and does not spread into the depth beside it."""
    import cv2

    H, W = int(hw[0]), int(hw[1])
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth)
    if valid.all():
        return cv2.resize(depth, (W, H), interpolation=cv2.INTER_LINEAR)
    # each invalid pixel beside valid ones takes their mean, so the bilinear step never reads a NaN
    # for a pixel that stays valid; invalid pixels farther in are 0 and end up NaN below
    d0 = np.where(valid, depth, np.float32(0.0))
    n = cv2.boxFilter(valid.astype(np.float32), -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    s = cv2.boxFilter(d0, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    filled = np.where(valid, d0, s / np.maximum(n, np.float32(1.0))).astype(np.float32)
    out = cv2.resize(filled, (W, H), interpolation=cv2.INTER_LINEAR)
    inside = cv2.resize(valid.astype(np.uint8) * np.uint8(255), (W, H), interpolation=cv2.INTER_LINEAR)
    np.copyto(out, np.float32(np.nan), where=inside < 128)
    return out


def disparity_to_depth(disp, min_depth: float = 0.1, max_depth: float = 150.0):
    """Monodepth2 conversion ``depth = 1 / (1/max_depth + (1/min_depth - 1/max_depth) * disp)``.

    For a sigmoid disparity in [0, 1] the depth lies in [min_depth, max_depth]. EndoDAV applies the
    same formula, unchanged, to Video Depth Anything's unbounded non-negative (ReLU) relative
    disparity (``disable_conv_head``, no output sigmoid): disparity 0 maps to ``max_depth`` and
    disparities above 1 give depths below ``min_depth``, so ``min_depth`` is then only a scale
    (depth ~ 1 / ((1/min_depth) * disp) for large disp), not a bound. Works on tensors and arrays;
    units are those of ``min_depth``/``max_depth`` (EndoDAV, SCARED: 0.1 and 150 mm).
    """
    if min_depth <= 0 or max_depth <= min_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return 1.0 / (min_disp + (max_disp - min_disp) * disp)


def depth_to_disparity(depth, min_depth: float = 0.1, max_depth: float = 150.0):
    """Inverse of :func:`disparity_to_depth`."""
    if min_depth <= 0 or max_depth <= min_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return (1.0 / depth - min_disp) / (max_disp - min_disp)


def output_to_depth(output, metric: bool, min_depth: float, max_depth: float):
    """The network's output -> depth: metric models predict depth in metres (returned as is); relative
    models predict disparity (the Monodepth2 conversion :func:`disparity_to_depth`)."""
    if metric:
        return output
    return disparity_to_depth(output, min_depth, max_depth)
