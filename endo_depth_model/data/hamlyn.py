"""Hamlyn rectified sequences (the Endo-Depth-and-Motion release used by EndoDAC and EndoDAV).

Layout::

    root/rectifiedXX/                 (some releases nest it: rectifiedXX/rectifiedXX/)
        image01/0000000001.jpg ...    left rectified images
        depth01/0000000001.png ...    uint16 depth in millimetres, 0 = invalid (same stems as image01)
        intrinsics.txt                3x3 (or 3x4 P) matrix of the rectified left camera, pixels

Conversions on read: depth mm -> metres, 0 -> NaN. Hamlyn has no camera poses (``T_world_cam`` is
None). EndoDAV evaluates on 21 sequences, shipped as the ``hamlyn_val`` split.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from pathlib import Path

import numpy as np

from .scared import read_split
from .sequence import (
    CorruptFileError,
    DataError,
    Frame,
    MissingFileError,
    Sequence,
    depth_from_millimetres,
    natural_key,
    read_rgb,
)

__all__ = ["open_hamlyn_sequence", "open_hamlyn", "read_hamlyn_intrinsics", "read_hamlyn_depth", "is_hamlyn"]


def _resolve(path: Path) -> Path:
    nested = path / path.name
    return nested if not (path / "image01").is_dir() and (nested / "image01").is_dir() else path


def is_hamlyn(path: Path) -> bool:
    return (_resolve(Path(path)) / "image01").is_dir()


def read_hamlyn_intrinsics(path: str | Path) -> np.ndarray:
    """``intrinsics.txt`` (3x3 K or 3x4 P, whitespace separated) -> (3, 3) float64."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Hamlyn intrinsics not found: {path} (pass K= to use known intrinsics)")
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as exc:
        raise CorruptFileError(f"non-numeric intrinsics in {path}: {exc}") from exc
    if values.size not in (9, 12):
        raise CorruptFileError(f"{path} holds {values.size} numbers; expected 9 (3x3) or 12 (3x4)")
    return values.reshape(3, -1)[:, :3].copy()


def read_hamlyn_depth(path: str | Path) -> np.ndarray:
    """Hamlyn uint16 millimetre depth PNG -> (H, W) float32 metres, NaN invalid."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Hamlyn depth not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise CorruptFileError(f"not a single-channel depth PNG: {path}")
    return depth_from_millimetres(raw)


def open_hamlyn_sequence(
    path: str | Path, K: np.ndarray | None = None, name: str | None = None, fps: float = 30.0
) -> Sequence:
    """One ``rectifiedXX`` folder as a :class:`Sequence` (depth where ``depth01`` has the frame)."""
    root = _resolve(Path(path))
    image_dir = root / "image01"
    if not image_dir.is_dir():
        raise MissingFileError(f"Hamlyn sequence has no image01 folder: {image_dir}")
    images = sorted([*image_dir.glob("*.jpg"), *image_dir.glob("*.png")], key=natural_key)
    if not images:
        raise MissingFileError(f"no images in {image_dir}")
    K = read_hamlyn_intrinsics(root / "intrinsics.txt") if K is None else np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise DataError(f"intrinsics for {root} must be 3x3, got {K.shape}")
    depth_dir = root / "depth01"
    label = name or Path(path).name

    def load(i: int) -> Frame:
        rgb = read_rgb(images[i])
        dpath = depth_dir / f"{images[i].stem}.png"
        depth = read_hamlyn_depth(dpath) if dpath.is_file() else None
        if depth is not None and depth.shape != rgb.shape[:2]:
            raise CorruptFileError(f"depth {dpath} is {depth.shape}, image is {rgb.shape[:2]}")
        return Frame(
            rgb=rgb, K=K.copy(), depth=depth, stamp_ns=int(round(i * 1e9 / fps)), index=i, sequence=label
        )

    meta = {"source": "hamlyn", "path": str(root), "fps": fps, "depth_unit_on_disk": "mm (converted to m)"}
    return Sequence(name=label, length=len(images), load=load, meta=meta)


def open_hamlyn(root: str | Path, split: str | Path | Seq[str] = "hamlyn_val", **kwargs) -> list[Sequence]:
    """Sequences of a split (shipped ``hamlyn_val`` = EndoDAV's 21, a split file, or a list of names)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"Hamlyn root not found: {root}")
    if split == "val":
        split = "hamlyn_val"
    names = list(split) if isinstance(split, (list, tuple)) else read_split(split)
    return [open_hamlyn_sequence(root / n, name=n, **kwargs) for n in names]
