"""MP4 (and other container) video read/write with PyAV.

Writing uses H.264 (libx264, yuv420p, constant quality ``crf``) and falls back to MPEG-4 part 2 when
libx264 is missing. The codec is lossy: a decoded frame differs from the written one by a few grey
levels (bounded in the tests). Reading yields RGB frames with stamps from the stream's presentation
times; videos carry no intrinsics, so ``K`` is given or assumed from a horizontal field of view.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from .sequence import CorruptFileError, DataError, Frame, MissingFileError, Sequence, intrinsics_from_fov

__all__ = ["VideoWriter", "write_video", "open_video", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")


class VideoWriter:
    """Incremental H.264 writer: ``add(rgb)`` with (H, W, 3) uint8 RGB (even H and W), then ``close()``."""

    def __init__(self, path: str | Path, fps: float, crf: int = 18):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rate = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.container = av.open(str(self.path), mode="w")
        self.stream = None
        self.n = 0

    def _open_stream(self, h: int, w: int) -> None:
        import av

        if h % 2 or w % 2:
            self.container.close()
            raise DataError(f"video size must be even for yuv420p, got {w}x{h} for {self.path}")
        try:
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.options = {"crf": str(self.crf), "preset": "medium"}
        except (av.error.FFmpegError, ValueError):
            self.stream = self.container.add_stream("mpeg4", rate=self.rate)
            self.stream.bit_rate = int(8 * w * h * float(self.rate))
        self.stream.width, self.stream.height, self.stream.pix_fmt = w, h, "yuv420p"

    def add(self, rgb: np.ndarray) -> None:
        import av

        rgb = np.ascontiguousarray(rgb)
        if self.stream is None:
            self._open_stream(*rgb.shape[:2])
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.container.mux(packet)
        self.n += 1

    def close(self) -> int:
        """Flush the encoder and close the file; returns the number of frames."""
        if self.stream is None:
            self.container.close()
            raise DataError(f"no frames to write to {self.path}")
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        return self.n

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.container.close()


def write_video(images: Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 18) -> int:
    """Encode (H, W, 3) uint8 RGB images (even H and W) to ``path``; returns the frame count."""
    writer = VideoWriter(path, fps, crf)
    for rgb in images:
        writer.add(rgb)
    return writer.close()


def _probe(path: Path) -> tuple[int, int, int, float]:
    """(frames, height, width, fps) by decoding once; the container's frame count is often missing."""
    import av

    n = 0
    h = w = 0
    fps = 30.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.average_rate:
                fps = float(stream.average_rate)
            for frame in container.decode(stream):
                h, w = frame.height, frame.width
                n += 1
    except (av.error.FFmpegError, IndexError) as exc:
        raise CorruptFileError(f"cannot decode video {path}: {exc}") from exc
    if n == 0:
        raise CorruptFileError(f"video has no decodable frames: {path}")
    return n, h, w, fps


def open_video(path: str | Path, K: np.ndarray | None = None, fov_deg: float = 90.0) -> Sequence:
    """Open a video file as a :class:`Sequence` of RGB frames (no ground truth).

    Iteration decodes sequentially; random access decodes the whole video once and keeps it in memory.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"video not found: {path}")
    n, h, w, fps = _probe(path)
    meta = {"source": "video", "path": str(path), "fps": fps}
    if K is None:
        K = intrinsics_from_fov(w, h, fov_deg)
        meta["intrinsics"] = f"assumed: horizontal fov {fov_deg} deg"
    else:
        meta["intrinsics"] = "given"
    K = np.asarray(K, dtype=np.float64)
    name = path.stem

    def stream() -> Iterator[Frame]:
        with av.open(str(path)) as container:
            vs = container.streams.video[0]
            for i, frame in enumerate(container.decode(vs)):
                if frame.pts is not None and frame.time_base is not None:
                    stamp = int(round(float(frame.pts * frame.time_base) * 1e9))
                else:
                    stamp = int(round(i * 1e9 / fps))
                yield Frame(
                    rgb=frame.to_ndarray(format="rgb24"), K=K.copy(), stamp_ns=stamp, index=i, sequence=name
                )

    cache: list[Frame] = []

    def load(i: int) -> Frame:
        if not cache:
            cache.extend(stream())
        return cache[i]

    return Sequence(name=name, length=n, load=load, meta=meta, stream=stream)
