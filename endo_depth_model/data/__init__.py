"""Endoscopy data: simulator, dataset readers and the single entry point :func:`open_source`.

Every reader yields :class:`Frame` records (rgb uint8, K, depth in metres with NaN invalid,
camera-to-world pose in metres, stamp) grouped in :class:`Sequence` objects; see ``sequence.py``.

Sources (``open_sequences(spec)``), either a path whose layout is detected or ``kind:path?key=value``:

=====================================  ==================================================================
spec                                   opens
=====================================  ==================================================================
``synth:target?seed=3&n_frames=16``    simulator preset ``source``/``target``; keys: SimulatorConfig top level
``scared:ROOT?split=train``            SCARED raw layout, shipped split train/val/test or a split file
``scared-af:ROOT?split=FILE``          SCARED AF-SfMLearner layout with its split file (``gt_depths=``)
``hamlyn:ROOT?split=hamlyn_val``       Hamlyn rectified sequences (EndoDAV's 21 by default)
``rosbag:PATH?topic=/ns/image_raw``    rosbag2 directory (mcap or sqlite3) or .mcap/.db3 file
``video:FILE.mp4`` / ``folder:DIR``    video file / image folder; intrinsics ``K=fx,fy,cx,cy`` (pixels of
                                       the frames), else ``fov_deg=`` (horizontal), else 90 deg assumed
a plain path                           detected: video, rosbag, SCARED keyframe, AF keyframe, Hamlyn
                                       sequence, image folder, or a folder of such sequences
=====================================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

from .sequence import (
    CorruptFileError,
    DataError,
    Frame,
    MissingFileError,
    Sequence,
    UnknownLayoutError,
)

__all__ = [
    "Frame",
    "Sequence",
    "DataError",
    "MissingFileError",
    "CorruptFileError",
    "UnknownLayoutError",
    "open_sequences",
    "open_source",
    "detect_layout",
]

KINDS = ("synth", "scared", "scared-af", "hamlyn", "rosbag", "video", "folder")


def _parse(spec: str) -> tuple[str | None, str, dict]:
    kind = None
    head, _, tail = spec.partition("?")
    for k in KINDS:
        if head.startswith(k + ":"):
            kind, head = k, head[len(k) + 1 :]
            break
    options = dict(parse_qsl(tail, keep_blank_values=True)) if tail else {}
    return kind, head, options


def _number(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def detect_layout(path: str | Path, search_depth: int = 3) -> str:
    """Name the layout of ``path`` (one of KINDS or ``scared-keyframe``/``af-keyframe``/``hamlyn-sequence``
    or ``collection``: a folder with such sequences up to ``search_depth`` levels below); raises
    :class:`UnknownLayoutError` naming the path."""
    from .folder import is_folder_sequence
    from .hamlyn import is_hamlyn
    from .rosbag import is_rosbag
    from .scared import is_scared_af_keyframe, is_scared_keyframe
    from .video import VIDEO_SUFFIXES

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"data source not found: {path}")
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        if is_rosbag(path):
            return "rosbag"
        raise UnknownLayoutError(f"unknown file type {path.suffix!r}: {path}")
    if is_rosbag(path):
        return "rosbag"
    if is_scared_keyframe(path):
        return "scared-keyframe"
    if is_scared_af_keyframe(path):
        return "af-keyframe"
    if is_hamlyn(path):
        return "hamlyn-sequence"
    if is_folder_sequence(path):
        return "folder"
    if search_depth > 0 and _children(path, search_depth):
        return "collection"
    raise UnknownLayoutError(
        f"unknown data layout: {path} (expected a video, a rosbag2, a SCARED keyframe with data/left, an "
        "AF-SfMLearner keyframe with image_02/data, a Hamlyn folder with image01, an image folder, or a "
        "folder of those)"
    )


def _children(path: Path, depth: int) -> list[Path]:
    """Sequence folders below ``path`` (up to ``depth`` levels), in natural order."""
    from .sequence import natural_key

    found = []
    for child in sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key
    ):
        try:
            kind = detect_layout(child, depth - 1)
        except UnknownLayoutError:
            continue
        if kind == "collection":
            found.extend(_children(child, depth - 1))
        elif kind is not None:
            found.append(child)
    return found


def _intrinsics_option(text: str):
    """``K=fx,fy,cx,cy`` of a source spec -> (3, 3) K; DataError when it is not four positive numbers."""
    import numpy as np

    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise DataError(f"K={text!r}: give the intrinsics as four numbers fx,fy,cx,cy (pixels)") from None
    if not (fx > 0 and fy > 0 and np.isfinite([fx, fy, cx, cy]).all()):
        raise DataError(f"K={text!r}: fx and fy must be positive and all four finite")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _open_path(path: Path, kind: str, options: dict) -> list[Sequence]:
    from .folder import open_folder
    from .hamlyn import open_hamlyn_sequence
    from .rosbag import open_rosbag
    from .scared import open_scared_af, open_scared_keyframe
    from .video import open_video

    fov = float(options["fov_deg"]) if "fov_deg" in options else 90.0
    K = _intrinsics_option(options["K"]) if "K" in options else None
    if kind == "video":
        return [open_video(path, K=K, fov_deg=fov)]
    if kind == "rosbag":
        return [open_rosbag(path, image_topic=options.get("topic"))]
    if kind == "scared-keyframe":
        return [
            open_scared_keyframe(
                path,
                intrinsics=options.get("intrinsics", "normalised"),
                pose_convention=options.get("pose_convention", "camera_to_world"),
            )
        ]
    if kind == "af-keyframe":
        return open_scared_af(
            path.parents[1], keyframe="/".join(path.parts[-2:]), img_ext=options.get("img_ext", ".png")
        )
    if kind == "hamlyn-sequence":
        return [open_hamlyn_sequence(path)]
    if kind == "folder":
        return [open_folder(path, K=K, fov_deg=fov)]
    if kind == "collection":
        out = []
        for child in _children(path, depth=3):
            out.extend(_open_path(child, detect_layout(child), options))
        return out
    raise UnknownLayoutError(f"unknown layout {kind!r} for {path}")


def open_sequences(spec: str | Path) -> list[Sequence]:
    """Open a data source (see the module docstring) as a list of sequences."""
    kind, target, options = _parse(str(spec))
    if kind == "synth":
        from .simulator import EndoscopySimulator, SimulatorConfigError, preset

        fields = {k: _number(v) for k, v in options.items()}
        try:
            cfg = preset(target or "target", **fields)
        except TypeError as exc:
            raise SimulatorConfigError(f"bad simulator option in {spec!r}: {exc}") from exc
        return [EndoscopySimulator(cfg).sequence()]
    if kind == "scared":
        from .scared import open_scared

        extra = {k: options[k] for k in ("intrinsics", "pose_convention") if k in options}
        return open_scared(target, split=options.get("split", "train"), **extra)
    if kind == "scared-af":
        from .scared import open_scared_af

        return open_scared_af(
            target,
            split=options.get("split"),
            keyframe=options.get("keyframe"),
            gt_depths=options.get("gt_depths"),
            img_ext=options.get("img_ext", ".png"),
        )
    if kind == "hamlyn":
        from .hamlyn import open_hamlyn, open_hamlyn_sequence

        if (Path(target) / "image01").is_dir():
            return [open_hamlyn_sequence(target)]
        return open_hamlyn(target, split=options.get("split", "hamlyn_val"))
    path = Path(target)
    if kind == "rosbag":
        return _open_path(path, "rosbag", options)
    if kind == "video":
        return _open_path(path, "video", options)
    if kind == "folder":
        return _open_path(path, "folder", options)
    return _open_path(path, detect_layout(path), options)


def open_source(path_or_spec: str | Path) -> Iterator[Frame]:
    """All frames of a data source, sequence after sequence (``frame.sequence`` names each)."""
    for seq in open_sequences(path_or_spec):
        yield from seq
