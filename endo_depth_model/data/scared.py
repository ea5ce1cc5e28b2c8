"""SCARED (MICCAI 2019 EndoVis) readers: the raw keyframe layout and the AF-SfMLearner layout.

Raw layout (EndoDAC, EndoDAV)::

    root/{train|test}/datasetN/keyframeM/data/
        left/000000.png ...                    rectified left images (1280 x 1024)
        scene_points/scene_points000000.tiff   float32 (2H, W, 3): XYZ in millimetres of the left
                                               image's pixels in rows [0, H), the right image's below;
                                               depth = Z (channel 2), 0 = no measurement
        frame_data/frame_data000000.json       {"camera-pose": 4x4, "camera-calibration": {"KL": 3x3, ...}}

AF-SfMLearner layout::

    root/datasetN/keyframeM/image_02/data/0000000001.png
    root/datasetN/keyframeM/image_02/data/groundtruth/scene_points000000.tiff   (frame index - 1)
    split lines "datasetN/keyframeM<TAB>index<TAB>l"; optional gt_depths.npz key "data" (N, H, W) mm

Conversions on read (project units): depth millimetres -> metres with invalid (0) -> NaN; pose
translation millimetres -> metres. ``camera-pose`` is read as the camera-to-world pose T_world_cam
(the reading of the SCARED kinematics used by SLAM evaluations, which write it to TUM trajectories
directly); EndoDAV's loader comments it as world-to-camera, so ``pose_convention="world_to_camera"``
inverts it. Intrinsics: ``"normalised"`` (default, as EndoDAV/AF-SfMLearner: K = [[0.82 W, 0, 0.5 W],
[0, 1.02 H, 0.5 H]]) or ``"calibration"`` (KL from frame_data, pixels of the stored images).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence as Seq
from importlib import resources
from pathlib import Path

import numpy as np

from ..geometry import intrinsics_from_normalised
from .sequence import (
    CorruptFileError,
    DataError,
    Frame,
    MissingFileError,
    Sequence,
    UnknownLayoutError,
    depth_from_millimetres,
    natural_key,
    read_rgb,
)

__all__ = [
    "SCARED_NORMALISED_K",
    "read_split",
    "read_scene_points_depth",
    "read_frame_data",
    "open_scared_keyframe",
    "open_scared",
    "open_scared_af",
    "is_scared_keyframe",
    "is_scared_af_keyframe",
]

SCARED_NORMALISED_K = (0.82, 1.02, 0.5, 0.5)  # fx / W, fy / H, cx / W, cy / H
SPLITS = {
    "train": "scared_video_train.txt",
    "val": "scared_video_val.txt",
    "test": "scared_video_test.txt",
    "hamlyn_val": "hamlyn_video_val.txt",
}


def read_split(name_or_path: str | Path) -> list[str]:
    """Lines of a shipped split (``train``/``val``/``test``/``hamlyn_val``) or of a split file path."""
    if isinstance(name_or_path, str) and name_or_path in SPLITS:
        text = resources.files("endo_depth_model.data").joinpath("splits", SPLITS[name_or_path]).read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise MissingFileError(f"split file not found: {path} (shipped splits: {sorted(SPLITS)})")
        text = path.read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def read_scene_points_depth(path: str | Path, image_height: int | None = None) -> np.ndarray:
    """Depth (H, W) float32 metres (NaN invalid) from a SCARED ``scene_points`` tiff.

    The tiff stacks the left image's XYZ rows on top of the right image's; ``image_height`` (the left
    image's height) selects rows [0, H); without it the top half is used.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"scene_points tiff not found: {path}")
    try:
        xyz = tifffile.imread(str(path))
    except Exception as exc:  # tifffile raises many types for truncated or foreign files
        raise CorruptFileError(f"cannot read scene_points tiff {path}: {exc}") from exc
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise CorruptFileError(f"scene_points tiff {path} has shape {xyz.shape}, expected (2H, W, 3) XYZ")
    rows = xyz.shape[0]
    h = image_height if image_height is not None else rows // 2
    if rows not in (h, 2 * h):
        raise CorruptFileError(f"scene_points tiff {path} has {rows} rows; the left image has {h}")
    return depth_from_millimetres(xyz[:h, :, 2])


def read_frame_data(
    path: str | Path, pose_convention: str = "camera_to_world"
) -> tuple[np.ndarray, np.ndarray | None]:
    """``frame_data`` json -> (T_world_cam (4, 4) metres, KL (3, 3) or None)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"frame_data json not found: {path}")
    try:
        data = json.loads(path.read_text())
        pose = np.asarray(data["camera-pose"], dtype=np.float64)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"cannot read 'camera-pose' from {path}: {exc}") from exc
    if pose.shape == (3, 4):
        pose = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
    if pose.shape != (4, 4):
        raise CorruptFileError(f"'camera-pose' in {path} has shape {pose.shape}, expected 4x4")
    pose = pose.copy()
    pose[:3, 3] /= 1000.0  # millimetres -> metres
    if pose_convention == "world_to_camera":
        rot_t = pose[:3, :3].T
        inv = np.eye(4)
        inv[:3, :3], inv[:3, 3] = rot_t, -rot_t @ pose[:3, 3]
        pose = inv
    elif pose_convention != "camera_to_world":
        raise DataError(
            f"pose_convention must be camera_to_world or world_to_camera, got {pose_convention!r}"
        )
    kl = None
    calib = data.get("camera-calibration") if isinstance(data, dict) else None
    if isinstance(calib, dict) and "KL" in calib:
        kl = np.asarray(calib["KL"], dtype=np.float64).reshape(3, 3)
    return pose, kl


def _index(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    if not digits:
        raise UnknownLayoutError(f"no frame number in file name: {path}")
    return int(digits[-1])


def is_scared_keyframe(path: Path) -> bool:
    return (Path(path) / "data" / "left").is_dir()


def is_scared_af_keyframe(path: Path) -> bool:
    return (Path(path) / "image_02" / "data").is_dir()


def _intrinsics(mode: str, width: int, height: int, kl: np.ndarray | None, where: Path) -> np.ndarray:
    if mode == "normalised":
        return intrinsics_from_normalised(*SCARED_NORMALISED_K[:2], *SCARED_NORMALISED_K[2:], width, height)
    if mode == "calibration":
        if kl is None:
            raise DataError(f"no camera-calibration KL in {where}; use intrinsics='normalised'")
        return kl
    raise DataError(f"intrinsics must be 'normalised' or 'calibration', got {mode!r}")


def open_scared_keyframe(
    path: str | Path,
    intrinsics: str = "normalised",
    pose_convention: str = "camera_to_world",
    name: str | None = None,
    fps: float = 25.0,
) -> Sequence:
    """One raw-layout keyframe folder (``.../datasetN/keyframeM``) as a :class:`Sequence`.

    Frames without a matching scene_points tiff or frame_data json get ``depth``/``T_world_cam`` None.
    """
    root = Path(path)
    left = root / "data" / "left"
    if not left.is_dir():
        raise MissingFileError(f"SCARED keyframe has no data/left folder: {left}")
    images = sorted(left.glob("*.png"), key=natural_key) + sorted(left.glob("*.jpg"), key=natural_key)
    if not images:
        raise MissingFileError(f"no left images in {left}")
    tiffs = {_index(p): p for p in (root / "data" / "scene_points").glob("*.tiff")}
    jsons = {_index(p): p for p in (root / "data" / "frame_data").glob("*.json")}
    label = name or "/".join(root.parts[-2:])

    def load(i: int) -> Frame:
        img_path = images[i]
        rgb = read_rgb(img_path)
        idx = _index(img_path)
        depth = read_scene_points_depth(tiffs[idx], rgb.shape[0]) if idx in tiffs else None
        pose, kl = read_frame_data(jsons[idx], pose_convention) if idx in jsons else (None, None)
        K = _intrinsics(intrinsics, rgb.shape[1], rgb.shape[0], kl, jsons.get(idx, root))
        return Frame(
            rgb=rgb,
            K=K,
            depth=depth,
            T_world_cam=pose,
            stamp_ns=int(round(i * 1e9 / fps)),
            index=i,
            sequence=label,
        )

    meta = {
        "source": "scared",
        "path": str(root),
        "fps": fps,
        "depth_unit_on_disk": "mm (converted to m)",
        "pose_convention": f"camera-pose read as {pose_convention}",
        "intrinsics": intrinsics,
    }
    return Sequence(name=label, length=len(images), load=load, meta=meta)


def open_scared(root: str | Path, split: str | Path | Seq[str] = "train", **kwargs) -> list[Sequence]:
    """Raw-layout sequences of a split (shipped name, split file, or list of ``train/datasetN/keyframeM``)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"SCARED root not found: {root}")
    names = list(split) if isinstance(split, (list, tuple)) else read_split(split)
    return [open_scared_keyframe(root / n, name=n, **kwargs) for n in names]


def open_scared_af(
    root: str | Path,
    split: str | Path | None = None,
    keyframe: str | None = None,
    gt_depths: str | Path | None = None,
    img_ext: str = ".png",
    fps: float = 25.0,
) -> list[Sequence]:
    """AF-SfMLearner layout as sequences of consecutive frames.

    With ``split`` (a file of "datasetN/keyframeM index side" lines) frames are those of the split,
    grouped into runs of consecutive indices per keyframe (a run never spans a gap); depth comes from
    ``gt_depths`` (npz key ``data``, mm, in split order) if given, else from the groundtruth tiffs
    when present. Without ``split``, ``keyframe`` names one folder whose images are all used.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"SCARED (AF-SfMLearner layout) root not found: {root}")
    entries: list[tuple[str, int]] = []
    if split is not None:
        for lineno, line in enumerate(read_split(split), 1):
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise CorruptFileError(
                    f"{split}:{lineno}: expected 'datasetN/keyframeM index side', got {line!r}"
                )
            entries.append((parts[0], int(parts[1])))
    elif keyframe is not None:
        data_dir = root / keyframe / "image_02" / "data"
        if not data_dir.is_dir():
            raise MissingFileError(f"AF-SfMLearner keyframe folder not found: {data_dir}")
        entries = [(keyframe, int(p.stem)) for p in sorted(data_dir.glob(f"*{img_ext}"), key=natural_key)]
    else:
        raise DataError("open_scared_af needs a split file or a keyframe folder name")
    if not entries:
        raise DataError(f"no frames found under {root}")
    gt = None
    if gt_depths is not None:
        gt_path = Path(gt_depths)
        if not gt_path.is_file():
            raise MissingFileError(f"gt_depths file not found: {gt_path}")
        try:
            with np.load(gt_path, allow_pickle=False) as z:
                gt = z["data"]
        except (OSError, KeyError, ValueError) as exc:
            raise CorruptFileError(f"cannot read key 'data' of {gt_path}: {exc}") from exc
        if len(gt) != len(entries):
            raise CorruptFileError(f"{gt_path} has {len(gt)} depth maps for {len(entries)} split lines")
    runs: list[list[int]] = []  # indices into entries
    for i, (folder, idx) in enumerate(entries):
        if runs and entries[runs[-1][-1]][0] == folder and entries[runs[-1][-1]][1] == idx - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    sequences = []
    for run in runs:
        folder, start = entries[run[0]]
        label = f"{folder}@{start}"

        def load(j: int, run=run, label=label) -> Frame:
            folder, idx = entries[run[j]]
            data_dir = root / folder / "image_02" / "data"
            rgb = read_rgb(data_dir / f"{idx:010d}{img_ext}")
            if gt is not None:
                depth = depth_from_millimetres(gt[run[j]])
            else:
                tiff = data_dir / "groundtruth" / f"scene_points{idx - 1:06d}.tiff"
                depth = read_scene_points_depth(tiff, rgb.shape[0]) if tiff.is_file() else None
            K = intrinsics_from_normalised(
                *SCARED_NORMALISED_K[:2], *SCARED_NORMALISED_K[2:], rgb.shape[1], rgb.shape[0]
            )
            return Frame(
                rgb=rgb, K=K, depth=depth, stamp_ns=int(round(idx * 1e9 / fps)), index=j, sequence=label
            )

        sequences.append(
            Sequence(
                name=label,
                length=len(run),
                load=load,
                meta={
                    "source": "scared_af",
                    "path": str(root / folder),
                    "fps": fps,
                    "depth_unit_on_disk": "mm (converted to m)",
                    "intrinsics": "normalised",
                },
            )
        )
    return sequences
