"""Common records for every data source: :class:`Frame` and :class:`Sequence`.

Units everywhere inside the project:

* ``rgb``: (H, W, 3) uint8, RGB order.
* ``depth``: (H, W) float32 in **metres**, z along the optical axis; invalid pixels are **NaN**
  (readers convert a source's zeros and millimetres on read).
* ``T_world_cam``: (4, 4) float64 camera-to-world pose of the REP 103 optical frame (x right,
  y down, z forward), translation in metres. ``None`` when the source has no poses.
* ``K``: (3, 3) float64 pinhole intrinsics in pixels of ``rgb`` (pixel centres at integer
  coordinates, the convention of :mod:`endo_depth_model.geometry`).
* ``stamp_ns``: int nanoseconds (source time when known, else ``index / fps``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "MissingFileError",
    "CorruptFileError",
    "UnknownLayoutError",
    "Frame",
    "Sequence",
    "depth_from_millimetres",
]


class DataError(RuntimeError):
    """Base class for bad input data; the message names the offending path or value."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder that the layout requires does not exist."""


class CorruptFileError(DataError):
    """A file exists but cannot be decoded (truncated tiff, unreadable PNG, bad JSON, ...)."""


class UnknownLayoutError(DataError):
    """A path does not match any known dataset layout."""


@dataclass
class Frame:
    """One image with its intrinsics and, where the source has it, ground truth (units: module doc)."""

    rgb: np.ndarray
    K: np.ndarray
    depth: np.ndarray | None = None
    T_world_cam: np.ndarray | None = None
    stamp_ns: int = 0
    index: int = 0
    sequence: str = ""

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclass
class Sequence:
    """An ordered, random-access collection of frames from one continuous recording.

    ``load(i)`` returns frame ``i``; ``stream()`` (optional) iterates all frames faster than repeated
    ``load`` for sources that decode sequentially (video, rosbag). ``meta`` holds source facts:
    ``fps``, ``source`` (layout name), ``path``, ``depth_unit_on_disk``, ``pose_convention``, ...
    """

    name: str
    length: int
    load: Callable[[int], Frame]
    meta: dict = field(default_factory=dict)
    stream: Callable[[], Iterator[Frame]] | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Frame:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"frame {index} out of range for sequence {self.name!r} of {self.length}")
        return self.load(index)

    def __iter__(self) -> Iterator[Frame]:
        if self.stream is not None:
            yield from self.stream()
        else:
            for i in range(self.length):
                yield self.load(i)

    @property
    def fps(self) -> float | None:
        return self.meta.get("fps")


def depth_from_millimetres(depth_mm: np.ndarray) -> np.ndarray:
    """Depth in millimetres (any dtype; 0, negative, non-finite = invalid) -> float32 metres, NaN invalid."""
    depth = np.asarray(depth_mm, dtype=np.float64) / 1000.0
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth.astype(np.float32)


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it exists, else raise :class:`MissingFileError` naming it and ``what`` it is."""
    if not Path(path).exists():
        raise MissingFileError(f"{what} not found: {path}")
    return Path(path)


def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """(3, 3) K of a centred pinhole with horizontal field of view ``fov_deg`` and square pixels.

    The principal point is the image centre ``((W - 1) / 2, (H - 1) / 2)`` in the integer-pixel-centre
    convention of :mod:`endo_depth_model.geometry`.
    """
    fx = (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def natural_key(path: Path) -> tuple:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    import re

    parts = re.split(r"(\d+)", Path(path).name)
    return tuple(int(p) if p.isdigit() else p for p in parts)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_rgb(path: Path) -> np.ndarray:
    """Read a colour or grey image file -> (H, W, 3) uint8 RGB; clear errors for missing/corrupt files."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CorruptFileError(f"cannot decode image: {path}")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype != np.uint8:
        raise CorruptFileError(f"unsupported image dtype {img.dtype} in {path}")
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write (H, W, 3) uint8 RGB as PNG/JPEG by suffix."""
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise DataError(f"could not write image: {path}")
