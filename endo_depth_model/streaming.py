"""Streaming video depth: a ring buffer of per-frame encoder features, the temporal head every ``stride``
frames, and :class:`~endo_depth_model.align.SnippetAligner` to chain the windows.

Video Depth Anything's encoder sees each frame alone; only the head is temporal. So each frame is
encoded once when it arrives, its features are cached, and a head pass over a window of cached features
gives exactly what a full re-encoding of the window would give.

Window layout (``T = window``, ``s = stride``, ``n_ctx = overlap - blend`` context frames)::

    [ n_ctx context frames | R = T - n_ctx - s already-aligned frames | s new frames ]

* The first pass waits for ``T`` frames and takes frames ``0 .. T-1`` as they are (the anchor).
* Context frames sit at fixed lags behind the newest frame. EndoDAV refills each window with positions
  ``context_positions`` (6, 12) and the last ``blend`` frames of the previous window, then 22 new frames;
  in absolute terms its context frames are always ``(T - 1) + (T - overlap) - p`` frames (47 and 41)
  behind the newest one, whatever the window. Those lags are kept for every stride; until that much
  history exists the frames just before the aligned block are used instead.
* The ``R`` aligned frames are the overlap that the aligner fits (least squares in disparity); the last
  ``blend`` of them are cross-faded, so a frame is final ``blend`` frames after it entered a window.

With EndoDAV's constants (``window=32, overlap=10, blend=8, stride=22``) the output is EndoDAV's offline
result: :meth:`StreamingDepth.flush` pads the end of the stream with copies of the last frame exactly
like its offline loop. Smaller strides (down to 1) run the head more often on the same window length.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from endo_depth_model.align import AlignStats, SnippetAligner
from endo_depth_model.fov import BorderFill

__all__ = [
    "DepthModel",
    "DepthResult",
    "StreamError",
    "StreamingDepth",
    "context_lags",
    "infer_video",
]


class StreamError(ValueError):
    """Invalid engine configuration or an input frame that does not fit the stream."""


class DepthModel(Protocol):
    """What the engine needs from a model (``VideoDepthAnything`` satisfies it).

    ``encode(frames (B, T, 3, h, w))`` returns per-frame features that can be sliced and concatenated
    along T: either an object with ``frames(index)`` and a static ``cat(list)`` (``FrameFeatures``) or a
    tensor whose dimension 1 is T. ``decode(features, image_hw)`` returns (B, T, H, W) disparity; a
    model whose ``decode`` also takes ``output_frames`` (a slice along T) is asked only for the frames
    the engine uses (every window after the first skips its context frames), which saves the per-frame
    part of the head for them.
    """

    def encode(self, frames: torch.Tensor) -> Any: ...

    def decode(self, features: Any, image_hw: tuple[int, int] | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class DepthResult:
    """One finalised frame.

    ``index``: frame number since the engine was built or last :meth:`~StreamingDepth.reset` (it keeps
    counting across :meth:`~StreamingDepth.flush`); ``stamp``: what was passed to
    :meth:`StreamingDepth.push`; ``disparity``: (H, W) float32 aligned relative disparity (the model's
    output space) at the output size; ``depth``: (H, W) float32 from ``depth_fn(disparity)`` when the
    engine has one, else None; ``stats``: the alignment of the pass that finalised the frame.
    """

    index: int
    stamp: Any
    disparity: np.ndarray
    depth: np.ndarray | None
    stats: AlignStats


def _features_select(features: Any, index: list[int]) -> Any:
    if hasattr(features, "frames"):
        return features.frames(index)
    return features[:, index]


def _features_cat(items: list[Any]) -> Any:
    first = items[0]
    if hasattr(first, "frames") and hasattr(type(first), "cat"):
        return type(first).cat(items)
    return torch.cat(items, dim=1)


def _decode_selects(model: Any) -> bool:
    """Whether ``model.decode`` takes ``output_frames`` (checked per pass: the model may be swapped)."""
    try:
        return "output_frames" in inspect.signature(model.decode).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def context_lags(window: int, overlap: int, context_positions: Iterable[int]) -> tuple[int, ...]:
    """Lags (frames behind the newest frame of a window) of EndoDAV's context keyframes.

    EndoDAV fills a window's first positions with ``context_positions`` of the previous window; with
    ``window - overlap`` new frames per window those frames are ``(window - 1) + (window - overlap) - p``
    frames older than the newest one.
    """
    return tuple((window - 1) + (window - overlap) - int(p) for p in context_positions)


def check_stream_frame(engine, rgb: np.ndarray) -> None:
    """The checks every streaming engine (aligned or causal) makes on a pushed frame: (H, W, 3) uint8 RGB,
    and the size of the stream's first frame (which also fixes ``output_hw`` when it was not given).
    ``engine`` has ``_input_hw``, ``output_hw`` and ``_n_received``; :class:`StreamError` says what is
    wrong."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise StreamError(f"frames must be (H, W, 3) uint8 RGB arrays, got {desc}")
    hw = (int(rgb.shape[0]), int(rgb.shape[1]))
    if engine._input_hw is None:
        engine._input_hw = hw
        if engine.output_hw is None:
            engine.output_hw = hw
    elif hw != engine._input_hw:
        raise size_change_error(engine._n_received, hw, engine._input_hw)


def size_change_error(index: int, hw: tuple[int, int], first_hw: tuple[int, int]) -> StreamError:
    """The :class:`StreamError` for frame ``index`` of size ``hw`` in a stream that started at ``first_hw``
    (the engines' check and the pipeline's, before it shrinks frames to its working size)."""
    return StreamError(
        f"frame {index} is {hw[0]}x{hw[1]} but the stream started at "
        f"{first_hw[0]}x{first_hw[1]}; call reset() before changing resolution"
    )


class StreamingDepth:
    """Aligned video depth, one frame in, finalised frames out.

    Args:
        model: a :class:`DepthModel` (e.g. ``VideoDepthAnything``); put in eval mode and on ``device``.
        preprocessor: ``rgb (H, W, 3) uint8 -> (3, h, w) float tensor`` ready for ``model.encode``
            (resized to multiples of 14 and normalised for VDA); leading singleton dimensions are
            accepted, so :class:`endo_depth_model.preprocess.Preprocessor` works as it is.
        window: frames per head pass ``T`` (<= the model's ``num_frames``); EndoDAV 32.
        overlap: window positions holding earlier frames at the largest stride: ``overlap - blend``
            context keyframes plus ``blend`` blended frames; EndoDAV 10.
        stride: new frames per head pass, 1 .. ``window - overlap`` (default, EndoDAV: 22).
        blend: frames cross-faded between consecutive windows (0 or >= 2); EndoDAV 8.
        context_positions: EndoDAV's keyframe positions in the previous window (default: evenly spread
            like EndoDAV's (6, 12) for two context frames).
        output_hw: (H, W) of the emitted maps; default the size of the first frame.
        depth_fn: optional ``disparity (H, W) -> depth (H, W)`` applied to every emitted frame.
        align: False disables scale/shift fitting and blending (ablation: raw windows concatenated).
        aligner_kwargs: extra :class:`SnippetAligner` options (``max_residual``, ``scale_range``, ...).
        device: where frames are sent; the model is moved there.
    """

    def __init__(
        self,
        model: DepthModel,
        preprocessor: Callable[[np.ndarray], torch.Tensor],
        window: int = 32,
        overlap: int = 10,
        stride: int | None = None,
        blend: int = 8,
        context_positions: Iterable[int] | None = None,
        output_hw: tuple[int, int] | None = None,
        depth_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        align: bool = True,
        aligner_kwargs: dict | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        stride = window - overlap if stride is None else int(stride)
        if not 0 <= blend <= overlap < window or blend == 1:
            raise StreamError(
                f"need blend = 0 or 2 <= blend ({blend}) <= overlap ({overlap}) < window ({window})"
            )
        if not 1 <= stride <= window - overlap:
            raise StreamError(f"stride must be in 1..{window - overlap} (window - overlap), got {stride}")
        max_frames = getattr(getattr(model, "config", None), "num_frames", None)
        if max_frames is not None and window > max_frames:
            raise StreamError(f"window {window} exceeds the model's num_frames={max_frames}")
        n_ctx = overlap - blend
        if context_positions is None:
            span = window - overlap + n_ctx
            context_positions = [(i + 1) * span // (n_ctx + 2) for i in range(n_ctx)]
        context_positions = tuple(int(p) for p in context_positions)
        if len(context_positions) != n_ctx:
            raise StreamError(f"{n_ctx} context positions needed (overlap - blend), got {context_positions}")
        if any(not 0 <= p < window - blend for p in context_positions) or list(context_positions) != sorted(
            set(context_positions)
        ):
            raise StreamError(
                f"context positions {context_positions} must be increasing and lie in 0..{window - blend - 1}"
            )
        self.window, self.overlap, self.stride, self.blend = int(window), int(overlap), stride, int(blend)
        self.n_context = n_ctx
        self.n_shared = window - n_ctx - stride  # R: aligned frames in every window after the first
        self.context_lags = context_lags(window, overlap, context_positions)
        self.device = torch.device(device)
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model
        self.preprocessor = preprocessor
        self.output_hw = tuple(output_hw) if output_hw is not None else None
        self._fixed_output_hw = output_hw is not None
        self.depth_fn = depth_fn
        self.align = bool(align)
        self._aligner_kwargs = dict(aligner_kwargs or {})
        self.aligner = self._make_aligner()
        self._fov_mask: np.ndarray | None = None
        #: fill the input outside ``fov_mask`` (weights trained so: metadata ``fill_border``)
        self.fill_border = False
        self._border_fill = BorderFill()
        # history needed: the oldest context lag, or a full window
        self.cache_size = max([window, *(lag + 1 for lag in self.context_lags)])
        self.encoder_calls = 0
        self.encoded_frames = 0
        self.head_passes = 0
        self.last_window: list[int] = []
        self.on_pass: Callable[[AlignStats, list[int]], None] | None = None
        self._index_base = 0  # frames of streams already flushed since construction / reset()
        self._reset_state()

    # ---- state -------------------------------------------------------------------------------------
    @property
    def fov_mask(self) -> np.ndarray | None:
        """(H, W) bool at the output size: the scope's field of view (:mod:`endo_depth_model.fov`). The
        alignment fits use only these pixels; None (default) uses every pixel."""
        return self._fov_mask

    @fov_mask.setter
    def fov_mask(self, mask: np.ndarray | None) -> None:
        self._fov_mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.aligner.fit_mask = self._fov_mask

    def _make_aligner(self) -> SnippetAligner:
        kwargs = dict(self._aligner_kwargs)
        if not self.align:
            kwargs.update(fit=False)
        aligner = SnippetAligner(overlap=self.n_shared, blend=self.blend, **kwargs)
        aligner.fit_mask = getattr(self, "_fov_mask", None)
        return aligner

    def _reset_state(self) -> None:
        self._features: deque[tuple[int, Any]] = deque(maxlen=self.cache_size)
        self._stamps: dict[int, Any] = {}
        self._n_received = 0  # frames pushed (real ones)
        self._n_in_windows = 0  # frames, real or padding, that have been the newest of a pass
        self._next_emit = 0
        self._input_hw: tuple[int, int] | None = None
        if not self._fixed_output_hw:
            self.output_hw = None

    def reset(self) -> int:
        """Start a new stream (e.g. after a scene change); returns how many received frames were dropped
        without output (call :meth:`flush` first to keep them)."""
        dropped = self._n_received - self._next_emit
        self.aligner.reset()
        self._reset_state()
        self._index_base = 0
        return dropped

    @property
    def frames_received(self) -> int:
        return self._n_received

    @property
    def next_index(self) -> int:
        """The ``DepthResult.index`` that the next pushed frame will have."""
        return self._index_base + self._n_received

    @property
    def frames_pending(self) -> int:
        """Received frames not yet emitted (waiting for a pass or for the next blend)."""
        return self._n_received - self._next_emit

    # ---- input -------------------------------------------------------------------------------------
    def _check_frame(self, rgb: np.ndarray) -> None:
        check_stream_frame(self, rgb)

    def _prepare(self, frame: np.ndarray) -> torch.Tensor:
        x = self.preprocessor(frame)
        if x.dim() < 3 or any(d != 1 for d in x.shape[:-3]):
            raise StreamError(f"the preprocessor must return one (3, h, w) frame, got {tuple(x.shape)}")
        x = x.reshape(x.shape[-3:])
        return self._border_fill(x, self._fov_mask) if self.fill_border else x

    @torch.inference_mode()
    def _encode(self, frames: list[np.ndarray]) -> Any:
        batch = torch.stack([self._prepare(f) for f in frames]).to(self.device)
        self.encoder_calls += 1
        self.encoded_frames += len(frames)
        return self.model.encode(batch[None])

    def push(self, frame_rgb: np.ndarray, stamp: Any = None) -> list[DepthResult]:
        """Add one (H, W, 3) uint8 RGB frame; returns the frames finalised by it (often none)."""
        return self.push_many([frame_rgb], [stamp])

    def push_many(self, frames: list[np.ndarray], stamps: list[Any] | None = None) -> list[DepthResult]:
        """Add several frames, encoded in one batch (each still encoded exactly once)."""
        if not frames:
            return []
        stamps = [None] * len(frames) if stamps is None else list(stamps)
        if len(stamps) != len(frames):
            raise StreamError(f"{len(frames)} frames but {len(stamps)} stamps")
        for f in frames:
            self._check_frame(f)
        feats = self._encode(frames)
        results: list[DepthResult] = []
        for i, stamp in enumerate(stamps):
            index = self._n_received
            self._features.append((index, _features_select(feats, [i])))
            self._stamps[index] = stamp
            self._n_received += 1
            results += self._maybe_run(limit=self._n_received)
        return results

    def flush(self) -> list[DepthResult]:
        """End of stream: emit every remaining frame, then start a new stream.

        Pads with copies of the last frame's features (no re-encoding) as EndoDAV's offline loop pads
        the video, running passes until every real frame has been finalised. Frames pushed afterwards
        begin a new stream (a new anchor after ``window`` frames); result indices keep counting.
        """
        results: list[DepthResult] = []
        if self._n_received == 0:
            return results
        last = self._features[-1][1]
        n_real = self._n_received
        while self._next_emit < n_real:
            needed = self.window if self._n_in_windows == 0 else self._n_in_windows + self.stride
            while self._available() < needed:
                self._features.append((self._available(), last))
            results += self._maybe_run(limit=n_real)
        self.aligner.reset()
        self._index_base += n_real
        self._reset_state()
        return results

    # ---- passes ------------------------------------------------------------------------------------
    def _available(self) -> int:
        """Frames (real and padding) in the stream so far: one past the newest cached index."""
        return self._features[-1][0] + 1 if self._features else 0

    def _maybe_run(self, limit: int) -> list[DepthResult]:
        """Run every pass whose frames have all arrived; emit finalised frames with index < ``limit``."""
        results: list[DepthResult] = []
        while True:
            if self._n_in_windows == 0:
                if self._available() < self.window:
                    return results
                newest = self.window - 1
                indices = list(range(self.window))
            else:
                newest = self._n_in_windows - 1 + self.stride
                if self._available() <= newest:
                    return results
                indices = self._window_indices(newest)
            results += self._run_pass(indices, limit)
            self._n_in_windows = newest + 1

    def _window_indices(self, newest: int) -> list[int]:
        """Frame indices of the window whose newest frame is ``newest`` (not the first window)."""
        first_shared = newest - self.stride - self.n_shared + 1
        context = []
        for i, lag in enumerate(self.context_lags):
            idx = newest - lag
            context.append(idx if idx >= 0 else first_shared - self.n_context + i)
        return context + list(range(first_shared, newest + 1))

    @torch.inference_mode()
    def _run_pass(self, indices: list[int], limit: int) -> list[DepthResult]:
        cached = {idx: feat for idx, feat in self._features}
        try:
            feats = _features_cat([cached[i] for i in indices])
        except KeyError as exc:  # a bookkeeping error, never bad input
            raise RuntimeError(f"frame {exc} left the feature cache of {self.cache_size} frames") from None
        first = self._n_in_windows == 0
        if not first and self.n_context and _decode_selects(self.model):
            # the context frames only inform the temporal attention: their output is never used
            used = slice(self.n_context, None)
            disparity = self.model.decode(feats, image_hw=self.output_hw, output_frames=used)
            raw = disparity[0].float().cpu().numpy()
        else:
            raw = self.model.decode(feats, image_hw=self.output_hw)[0].float().cpu().numpy()
            raw = raw if first else raw[self.n_context :]
        self.head_passes += 1
        self.last_window = list(indices)
        out = self.aligner.push(raw)
        if self.on_pass is not None:
            self.on_pass(out.stats, list(indices))
        results = []
        for frame in out.disparity:
            index = self._next_emit
            self._next_emit += 1
            if index >= limit:
                continue  # padding at the end of a stream
            depth = self.depth_fn(frame) if self.depth_fn is not None else None
            stamp = self._stamps.pop(index, None)
            results.append(DepthResult(self._index_base + index, stamp, frame, depth, out.stats))
        return results


def infer_video(
    model: DepthModel,
    frames: Iterable[np.ndarray],
    preprocessor: Callable[[np.ndarray], torch.Tensor],
    window: int = 32,
    overlap: int = 10,
    stride: int | None = None,
    blend: int = 8,
    batch: int | None = None,
    progress: bool = False,
    total: int | None = None,
    **engine_kwargs,
) -> tuple[np.ndarray, list[AlignStats]]:
    """Offline inference over a whole video with the streaming engine (so offline == online).

    ``frames``: iterable of (H, W, 3) uint8 RGB. Frames are encoded in batches of ``batch`` (default the
    stride). Returns (N, H, W) float32 aligned disparity and the alignment statistics of every head pass.
    """
    engine = StreamingDepth(
        model, preprocessor, window=window, overlap=overlap, stride=stride, blend=blend, **engine_kwargs
    )
    batch = batch or engine.stride
    out: list[np.ndarray] = []
    stats: list[AlignStats] = []

    engine.on_pass = lambda st, _indices: stats.append(st)

    def collect(results: list[DepthResult]) -> None:
        out.extend(r.disparity for r in results)

    iterator: Iterator[np.ndarray] = iter(frames)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc="depth")
    chunk: list[np.ndarray] = []
    for frame in iterator:
        chunk.append(frame)
        if len(chunk) == batch:
            collect(engine.push_many(chunk))
            if bar is not None:
                bar.update(len(chunk))
            chunk = []
    if chunk:
        collect(engine.push_many(chunk))
        if bar is not None:
            bar.update(len(chunk))
    collect(engine.flush())
    if bar is not None:
        bar.close()
    if not out:
        raise StreamError("the video has no frames")
    return np.stack(out), stats
