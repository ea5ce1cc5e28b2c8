"""Image folders: the simulator's output layout (read and write) and plain folders of frames (read).

Layout written by :func:`write_folder`::

    out/
      rgb/000000.png ...        (H, W, 3) 8-bit RGB
      depth/000000.png ...      16-bit PNG, unit 0.1 mm (depth_m = value / 10000), 0 = invalid;
                                range 0.1 mm .. 6.5535 m.  With depth_format="npy": depth/000000.npy,
                                float32 metres, NaN = invalid (lossless).
      poses.txt                 one line per frame: "index stamp_ns r11 r12 r13 tx r21 r22 r23 ty r31
                                r32 r33 tz": T_world_cam (camera-to-world, REP 103 optical), metres
      K.json                    {"K": 3x3 pixels, "width", "height"}
      meta.json                 {"fps", "n_frames", "depth_format", "depth_unit", "pose_convention", ...}

A plain folder of images (``*.png``/``*.jpg``..., natural sort order) is read as a sequence without
ground truth; its intrinsics come from ``K.json`` when present, else from ``K=`` or an assumed
horizontal field of view (recorded in ``meta['intrinsics']``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .sequence import (
    IMAGE_SUFFIXES,
    CorruptFileError,
    DataError,
    Frame,
    MissingFileError,
    Sequence,
    intrinsics_from_fov,
    natural_key,
    read_rgb,
    write_rgb,
)

__all__ = ["FolderWriter", "write_folder", "open_folder", "read_depth_png", "DEPTH_PNG_SCALE"]

DEPTH_PNG_SCALE = 10000.0  # 16-bit PNG counts per metre (0.1 mm units)
DEFAULT_FOV_DEG = 90.0


class FolderWriter:
    """Incremental writer of the layout in the module docstring: ``add(frame)`` per frame, then ``close()``.

    ``depth_format``: ``png16`` (0.1 mm units) or ``npy`` (float32 metres). Usable as a context manager.
    """

    def __init__(
        self, out_dir: str | Path, fps: float, depth_format: str = "png16", extra_meta: dict | None = None
    ):
        if depth_format not in ("png16", "npy"):
            raise DataError(f"depth_format must be 'png16' or 'npy', got {depth_format!r}")
        self.out = Path(out_dir)
        (self.out / "rgb").mkdir(parents=True, exist_ok=True)
        self.fps, self.depth_format, self.extra_meta = float(fps), depth_format, dict(extra_meta or {})
        self.lines: list[str] = []
        self.K = None
        self.size = None
        self.has_depth = False
        self.n = 0

    def add(self, frame: Frame) -> None:
        import cv2

        name = f"{self.n:06d}"
        write_rgb(self.out / "rgb" / f"{name}.png", frame.rgb)
        if frame.depth is not None:
            self.has_depth = True
            (self.out / "depth").mkdir(exist_ok=True)
            if self.depth_format == "npy":
                np.save(self.out / "depth" / f"{name}.npy", frame.depth.astype(np.float32))
            else:
                d = np.nan_to_num(frame.depth.astype(np.float64), nan=0.0) * DEPTH_PNG_SCALE
                d = np.clip(np.round(d), 0, 65535).astype(np.uint16)
                if not cv2.imwrite(str(self.out / "depth" / f"{name}.png"), d):
                    raise DataError(f"could not write depth image in {self.out / 'depth'}")
        if frame.T_world_cam is not None:
            T = np.asarray(frame.T_world_cam, dtype=np.float64)
            vals = " ".join(f"{v:.9g}" for v in T[:3].ravel())
            self.lines.append(f"{self.n} {int(frame.stamp_ns)} {vals}")
        self.K = frame.K
        self.size = frame.rgb.shape[:2]
        self.n += 1

    def close(self) -> int:
        """Write poses.txt, K.json and meta.json; returns the number of frames."""
        out = self.out
        if self.n == 0:
            raise DataError(f"no frames to write to {out}")
        if self.lines:
            header = "# index stamp_ns T_world_cam[:3, :4] row-major (camera-to-world, REP 103 optical, m)\n"
            (out / "poses.txt").write_text(header + "\n".join(self.lines) + "\n")
        h, w = self.size
        (out / "K.json").write_text(
            json.dumps({"K": np.asarray(self.K).tolist(), "width": int(w), "height": int(h)}, indent=1)
        )
        units = {"png16": "0.1 mm in uint16 PNG, 0 invalid", "npy": "m float32, NaN invalid"}
        meta = {
            "fps": self.fps,
            "n_frames": self.n,
            "depth_format": self.depth_format if self.has_depth else None,
            "depth_unit": units[self.depth_format] if self.has_depth else None,
            "pose_convention": "T_world_cam camera-to-world, REP 103 optical, metres" if self.lines else None,
        }
        meta.update(self.extra_meta)
        (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        return self.n

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()


def write_folder(
    frames: Iterable[Frame],
    out_dir: str | Path,
    fps: float,
    depth_format: str = "png16",
    extra_meta: dict | None = None,
) -> int:
    """Write frames in the layout of the module docstring; returns the number of frames written."""
    writer = FolderWriter(out_dir, fps, depth_format, extra_meta)
    for frame in frames:
        writer.add(frame)
    return writer.close()


def read_depth_png(path: Path) -> np.ndarray:
    """16-bit depth PNG in 0.1 mm units -> (H, W) float32 metres, NaN where 0."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"depth image not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
        raise CorruptFileError(f"not a single-channel 16-bit depth PNG: {path}")
    depth = raw.astype(np.float32) / np.float32(DEPTH_PNG_SCALE)
    depth[raw == 0] = np.nan
    return depth


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"cannot read JSON {path}: {exc}") from exc


def _read_poses(path: Path) -> dict[int, tuple[int, np.ndarray]]:
    poses = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 14:
            raise CorruptFileError(
                f"{path}:{lineno}: expected 14 numbers (index stamp 3x4), got {len(parts)}"
            )
        try:
            T = np.eye(4)
            T[:3] = np.array([float(v) for v in parts[2:]]).reshape(3, 4)
            poses[int(parts[0])] = (int(parts[1]), T)
        except ValueError as exc:
            raise CorruptFileError(f"{path}:{lineno}: {exc}") from exc
    return poses


def is_folder_sequence(path: Path) -> bool:
    """True for a folder written by :func:`write_folder` or a folder directly holding images."""
    path = Path(path)
    if (path / "rgb").is_dir() and (path / "meta.json").is_file():
        return True
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def open_folder(
    path: str | Path, K: np.ndarray | None = None, fps: float | None = None, fov_deg: float = DEFAULT_FOV_DEG
) -> Sequence:
    """Open a simulator-layout folder or a plain image folder as a :class:`Sequence`; every frame must have
    the size of the first (:class:`DataError` naming the file otherwise)."""
    root = Path(path)
    if not root.is_dir():
        raise MissingFileError(f"image folder not found: {root}")
    image_dir = root / "rgb" if (root / "rgb").is_dir() else root
    images = sorted((p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not images:
        raise MissingFileError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder: {image_dir}")
    meta = {"source": "folder", "path": str(root)}
    if (root / "meta.json").is_file():
        meta.update(_read_json(root / "meta.json"))
    if fps is not None:
        meta["fps"] = float(fps)
    fps_value = meta.get("fps") or 30.0
    if K is None and (root / "K.json").is_file():
        K = np.asarray(_read_json(root / "K.json")["K"], dtype=np.float64)
        meta["intrinsics"] = "K.json"
    first = read_rgb(images[0])
    if K is None:
        K = intrinsics_from_fov(first.shape[1], first.shape[0], fov_deg)
        meta["intrinsics"] = f"assumed: horizontal fov {fov_deg} deg"
    elif "intrinsics" not in meta:
        meta["intrinsics"] = "given"
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise DataError(f"intrinsics for {root} must be 3x3, got shape {K.shape}")
    depth_dir = root / "depth"
    poses = _read_poses(root / "poses.txt") if (root / "poses.txt").is_file() else {}

    def load(i: int) -> Frame:
        img_path = images[i]
        rgb = read_rgb(img_path)
        if rgb.shape[:2] != first.shape[:2]:
            raise DataError(
                f"{img_path} is {rgb.shape[0]}x{rgb.shape[1]} but the folder's first frame {images[0].name} "
                f"is {first.shape[0]}x{first.shape[1]}: the frames of a sequence must have one size (one "
                "camera and one intrinsics); resize the frames to one size or split the folder by size"
            )
        depth = None
        if depth_dir.is_dir():
            png, npy = depth_dir / f"{img_path.stem}.png", depth_dir / f"{img_path.stem}.npy"
            if npy.is_file():
                try:
                    depth = np.load(npy, allow_pickle=False).astype(np.float32)
                except (OSError, ValueError) as exc:
                    raise CorruptFileError(f"cannot read depth {npy}: {exc}") from exc
            elif png.is_file():
                depth = read_depth_png(png)
            if depth is not None and depth.shape != rgb.shape[:2]:
                raise CorruptFileError(f"depth {depth.shape} and image {rgb.shape[:2]} differ for {img_path}")
        stamp, T = poses.get(i, (int(round(i * 1e9 / fps_value)), None))
        return Frame(
            rgb=rgb, K=K.copy(), depth=depth, T_world_cam=T, stamp_ns=stamp, index=i, sequence=root.name
        )

    return Sequence(name=root.name, length=len(images), load=load, meta=meta)
