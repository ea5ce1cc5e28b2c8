"""The streaming engine: cached features give exactly the full-window result, each frame is encoded once,
and with EndoDAV's constants the stream equals an independent transcription of EndoDAV's offline loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from endo_depth_model.align import SnippetAligner
from endo_depth_model.streaming import StreamError, StreamingDepth, context_lags, infer_video

H, W = 12, 16


class ToyVideoModel(nn.Module):
    """Test double of the model protocol: a per-frame conv encoder and a decoder that mixes frames in time
    with position-dependent weights (so any mistake in the window's composition changes the output)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.out = nn.Conv2d(4, 1, 1)
        self.calls = 0

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        b, t = frames.shape[:2]
        return torch.tanh(self.enc(frames.flatten(0, 1))).unflatten(0, (b, t))

    def decode(self, features: torch.Tensor, image_hw=None) -> torch.Tensor:
        b, t = features.shape[:2]
        pos = torch.linspace(0.0, 1.0, t, dtype=features.dtype, device=features.device)[
            None, :, None, None, None
        ]
        mixed = features + features.mean(1, keepdim=True) * (0.5 + pos) + features.cumsum(1) / t
        out = F.softplus(self.out(mixed.flatten(0, 1))) + 0.05
        out = F.interpolate(out, size=image_hw, mode="bilinear", align_corners=True)
        return out[:, 0].unflatten(0, (b, t))


def preprocess(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def make_video(n: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth moving pattern plus noise, (H, W, 3) uint8 frames."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(n):
        base = 127 + 60 * np.sin(0.4 * x + 0.15 * i)[..., None] * np.cos(0.3 * y - 0.1 * i)[..., None]
        frames.append(np.clip(base + rng.normal(0, 10, (H, W, 3)), 0, 255).astype(np.uint8))
    return frames


def endodav_offline_reference(
    model, frames, prep=None, T=32, n_ov=10, interp=8, keyframes=(6, 12, *range(24, 32))
):
    """Independent transcription of EndoDAV's ``infer_video_depth``: padded video, full windows encoded
    from scratch with the previous window's keyframes in front, then its alignment loop."""
    prep = prep or preprocess
    out_hw = frames[0].shape[:2]
    step = T - n_ov
    n = len(frames)
    padded = list(frames) + [frames[-1]] * ((step - n % step) % step + (T - step))
    raw, prev = [], None
    with torch.no_grad():
        for start in range(0, n, step):
            inputs = [prep(padded[start + i]) for i in range(T)]
            cur = torch.stack([x.reshape(x.shape[-3:]) for x in inputs])[None]
            if prev is not None:
                cur[:, :n_ov] = prev[:, list(keyframes)]
            raw += list(model.decode(model.encode(cur), image_hw=out_hw)[0].double().numpy())
            prev = cur
    aligned = []
    align_len = n_ov - interp
    for start in range(0, len(raw), T):
        if not aligned:
            aligned += raw[:T]
            continue
        pre = aligned[-interp:]
        post = raw[start + align_len : start + n_ov]
        p, g = np.concatenate(post).ravel(), np.concatenate(pre).ravel()
        a00, a01, a11, b0, b1 = p @ p, p.sum(), p.size, p @ g, g.sum()
        det = a00 * a11 - a01 * a01
        s, t = (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det
        post = [np.maximum(x * s + t, 0) for x in post]
        aligned[-interp:] = [
            pre[i] * (1 - i / (interp - 1)) + post[i] * i / (interp - 1) for i in range(interp)
        ]
        aligned += [np.maximum(raw[start + i] * s + t, 0) for i in range(n_ov, T)]
    return np.stack(aligned[:n])


def stream(engine: StreamingDepth, frames, stamps=None):
    results = []
    for i, f in enumerate(frames):
        results += engine.push(f, stamps[i] if stamps else i)
    results += engine.flush()
    return results


LOOSE = dict(max_residual=None, scale_range=None)


@pytest.mark.parametrize("n_frames", [20, 32, 45, 54, 75, 101])
def test_stream_equals_endodav_offline_reference(n_frames):
    model = ToyVideoModel().eval()
    frames = make_video(n_frames, seed=n_frames)
    engine = StreamingDepth(model, preprocess, aligner_kwargs=LOOSE)
    results = stream(engine, frames)
    assert [r.index for r in results] == list(range(n_frames))
    assert [r.stamp for r in results] == list(range(n_frames))
    ours = np.stack([r.disparity for r in results])
    ref = endodav_offline_reference(model, frames)
    assert ours.shape == ref.shape == (n_frames, H, W)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    # each frame encoded exactly once, one call per pushed frame, padding never re-encoded
    assert engine.encoded_frames == n_frames and engine.encoder_calls == n_frames
    # batched offline helper: same engine, same numbers
    offline, stats = infer_video(model, frames, preprocess, batch=7, aligner_kwargs=LOOSE)
    np.testing.assert_allclose(offline, ours, rtol=1e-5, atol=1e-6)  # batched encoding
    assert len(stats) == engine.head_passes and stats[0].reason == "first"


def test_endodav_window_composition_and_emission_schedule():
    model = ToyVideoModel().eval()
    engine = StreamingDepth(model, preprocess, aligner_kwargs=LOOSE)
    assert engine.stride == 22 and engine.n_shared == 8 and engine.context_lags == (47, 41)
    windows = []
    engine.on_pass = lambda stats, idx: windows.append(idx)
    emitted = []
    for i, f in enumerate(make_video(76)):
        emitted.append(len(engine.push(f, i)))
    assert windows[0] == list(range(32))
    assert windows[1] == [6, 12, *range(24, 54)]
    assert windows[2] == [28, 34, *range(46, 76)]
    # frames 0..23 come out with frame 31, 24..45 with frame 53 (8 blended + 14 new), 46..67 with 75
    assert emitted[31] == 24 and emitted[53] == 22 and emitted[75] == 22
    assert sum(emitted) == 68 and engine.frames_pending == 8


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.encode_frames = 0

    def encode(self, frames):
        self.encode_frames += frames.shape[1]
        return self.inner.encode(frames)

    def decode(self, features, image_hw=None):
        return self.inner.decode(features, image_hw)


def strided_reference(model, frames, T, n_ov, blend, stride):
    """Any stride, written independently of the engine: each window re-encoded in full."""
    lags = context_lags(
        T, n_ov, [(i + 1) * (T - n_ov + n_ov - blend) // (n_ov - blend + 2) for i in range(n_ov - blend)]
    )
    n_ctx, shared = n_ov - blend, T - (n_ov - blend) - stride
    n = len(frames)
    padded = list(frames)
    aligner = SnippetAligner(overlap=shared, blend=blend, **LOOSE)
    out = []

    def run(indices, first):
        while len(padded) <= max(indices):
            padded.append(frames[-1])
        x = torch.stack([preprocess(padded[i]) for i in indices])[None]
        with torch.no_grad():
            raw = model.decode(model.encode(x), image_hw=(H, W))[0].numpy()
        out.extend(aligner.push(raw if first else raw[n_ctx:]).disparity)

    run(list(range(T)), True)
    newest = T - 1
    while len(out) < n:
        newest += stride
        first_shared = newest - stride - shared + 1
        ctx = [newest - lag if newest - lag >= 0 else first_shared - n_ctx + i for i, lag in enumerate(lags)]
        run(ctx + list(range(first_shared, newest + 1)), False)
    return np.stack(out[:n])


@pytest.mark.parametrize("stride", [1, 4, 10])
def test_any_stride_cache_equals_full_window_reencoding(stride):
    model = Counting(ToyVideoModel().eval())
    frames = make_video(70, seed=stride)
    engine = StreamingDepth(
        model, preprocess, window=16, overlap=6, blend=4, stride=stride, aligner_kwargs=LOOSE
    )
    results = stream(engine, frames)
    assert [r.index for r in results] == list(range(70))
    assert model.encode_frames == 70  # encoded once each
    ours = np.stack([r.disparity for r in results])
    ref = strided_reference(model.inner, frames, 16, 6, 4, stride)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    # latency: a frame is final `blend` frames after it entered a window (plus waiting for the pass)
    assert engine.frames_pending == 0


def test_stride_one_emits_one_frame_per_frame_after_warmup():
    engine = StreamingDepth(ToyVideoModel().eval(), preprocess, window=16, overlap=6, blend=4, stride=1)
    counts = [len(engine.push(f)) for f in make_video(40)]
    assert counts[:15] == [0] * 15 and counts[15] == 12 and counts[16:] == [1] * 24
    assert engine.head_passes == 1 + 24


def test_reset_drops_state_and_restarts_indices():
    engine = StreamingDepth(ToyVideoModel().eval(), preprocess, window=8, overlap=4, blend=2)
    frames = make_video(30)
    emitted = []
    for f in frames[:12]:
        emitted += engine.push(f)
    assert len(emitted) == 10 and engine.frames_pending == 2  # passes at frames 7 and 11, 2 held
    dropped = engine.reset()
    assert dropped == 2 and engine.frames_received == 0 and engine.frames_pending == 0
    results = stream(engine, frames[:10])
    assert [r.index for r in results] == list(range(10))
    # a flush ends the stream; the next frames start a new one and indices keep counting
    more = stream(engine, frames[10:19])
    assert [r.index for r in more] == list(range(10, 19))
    # the stream after a reset or a flush equals a fresh engine's
    fresh = StreamingDepth(ToyVideoModel().eval(), preprocess, window=8, overlap=4, blend=2)
    np.testing.assert_array_equal(
        np.stack([r.disparity for r in results]), np.stack([r.disparity for r in stream(fresh, frames[:10])])
    )
    np.testing.assert_array_equal(
        np.stack([r.disparity for r in more]), np.stack([r.disparity for r in stream(fresh, frames[10:19])])
    )
    engine.reset()
    assert [r.index for r in stream(engine, frames[:9])] == list(range(9))


def test_depth_fn_alignment_off_and_bad_input():
    frames = make_video(40)
    engine = StreamingDepth(ToyVideoModel().eval(), preprocess, depth_fn=lambda d: 1.0 / np.maximum(d, 1e-3))
    res = stream(engine, frames)
    np.testing.assert_allclose(res[5].depth, 1.0 / np.maximum(res[5].disparity, 1e-3))
    raw_engine = StreamingDepth(ToyVideoModel().eval(), preprocess, align=False)
    raw = stream(raw_engine, frames)
    assert all(r.stats.scale == 1.0 and r.stats.shift == 0.0 for r in raw)
    assert not np.allclose(
        np.stack([r.disparity for r in raw])[24:32], np.stack([r.disparity for r in res])[24:32]
    )
    with pytest.raises(StreamError, match="uint8"):
        engine.push(np.zeros((H, W, 3), np.float32))
    engine.push(frames[0])
    with pytest.raises(StreamError, match="reset"):
        engine.push(np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(StreamError, match="stride"):
        StreamingDepth(ToyVideoModel(), preprocess, stride=23)
    with pytest.raises(StreamError, match="blend"):
        StreamingDepth(ToyVideoModel(), preprocess, overlap=4, blend=6)
    with pytest.raises(StreamError, match="blend"):
        StreamingDepth(ToyVideoModel(), preprocess, overlap=4, blend=1)
    with pytest.raises(StreamError, match="increasing"):
        StreamingDepth(ToyVideoModel(), preprocess, context_positions=(12, 6))


@pytest.mark.gpu
def test_stream_on_cuda_matches_cpu_reference():
    model = ToyVideoModel().eval()
    frames = make_video(60)
    ref = endodav_offline_reference(model, frames)
    engine = StreamingDepth(ToyVideoModel().eval(), preprocess, aligner_kwargs=LOOSE, device="cuda")
    ours = np.stack([r.disparity for r in stream(engine, frames)])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_real_vitt_model_stream_equals_endodav_offline_reference():
    """The tiny random-init VDA (seed fixed): cached features + chained windows == full re-encoding."""
    from endo_depth_model.models import build_vda
    from endo_depth_model.preprocess import Preprocessor

    torch.manual_seed(0)
    model = build_vda("vitt").eval()
    with torch.no_grad():  # a fresh VDA's temporal modules are identity (zero proj_out): wake them up
        for name, p in model.named_parameters():
            if "proj_out" in name:
                p.normal_(0.0, 0.05)
        model.head.scratch.output_conv2[2].bias.fill_(0.5)
    vda_preprocess = Preprocessor(input_hw=(28, 42))

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (28, 42, 3), dtype=np.uint8) for _ in range(58)]
    engine = StreamingDepth(model, vda_preprocess, aligner_kwargs=LOOSE)
    counted = Counting(model)
    engine.model = counted
    results = []
    for f in frames:
        results += engine.push(f)
    results += engine.flush()
    ours = np.stack([r.disparity for r in results])
    assert counted.encode_frames == 58

    ref = endodav_offline_reference(model, frames, prep=vda_preprocess)
    assert ours.shape == (58, 28, 42)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
