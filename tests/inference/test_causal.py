"""The causal engine: equal to a full-window head with causal masking, depth from the first frame,
reset behaviour, bad input, and the exported step's cache round trip through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endo_depth_model.causal import CausalDepth, CausalStep, ring_inputs, slot_inputs
from endo_depth_model.infer import load_depth_model
from endo_depth_model.preprocess import Preprocessor
from endo_depth_model.streaming import StreamError

HW = (28, 42)


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : HW[0], 0 : HW[1]]
    out = []
    for i in range(n):
        base = 120 + 80 * np.sin(0.3 * x + 0.4 * i)[..., None] * np.cos(0.2 * y + 0.1 * i)[..., None]
        out.append(np.clip(base + rng.normal(0, 8, (*HW, 3)), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def model(vitt_weights):
    return load_depth_model("vitt", vitt_weights).model


def _engine(model, **kw):
    pre = Preprocessor(input_hw=HW)
    return CausalDepth(model, lambda rgb: pre(rgb)[0], **kw)


def test_slot_inputs():
    pos, bias = slot_inputs(4, 2)
    assert pos.tolist() == [0, 0, 0, 1, 2]
    assert torch.isinf(bias[:2]).all() and (bias[2:] == 0).all()
    pos, bias = slot_inputs(4, 9)
    assert pos.tolist() == [0, 1, 2, 3, 4] and (bias == 0).all()


def test_ring_inputs_give_each_cached_frame_the_position_slot_inputs_gives_it():
    # ring of 4 + 1 slots; frames 0..k written at slot k % 5: the newest at `slot`, the earlier ones behind it
    for k in range(12):
        n_valid, slot = min(k, 4), k % 5
        pos, bias = ring_inputs(4, n_valid, slot)
        ref_pos, ref_bias = slot_inputs(4, n_valid)
        frame_of_slot = {(j % 5): j for j in range(max(0, k - 4), k + 1)}  # slot -> frame it holds
        valid = [s for s in range(5) if bias[s] == 0]
        assert sorted(frame_of_slot) == sorted(valid)
        # positions by frame age match the ordered layout's (oldest valid 0 .. newest n_valid)
        by_age = [int(pos[s]) for s in sorted(valid, key=lambda s: frame_of_slot[s])]
        assert by_age == [int(p) for p, b in zip(ref_pos, ref_bias, strict=True) if b == 0]
        assert int(pos[slot]) == n_valid and torch.isinf(bias[[s for s in range(5) if s not in valid]]).all()


def test_ring_buffer_engine_equals_the_explicit_cache_step_after_the_ring_wraps(model):
    # the engine writes its caches in place in a ring of context + 1 slots; the exported step (ONNX)
    # takes and returns them explicitly, oldest dropped: both must give the same depth frame after frame,
    # also once the ring has wrapped round several times
    context, frames = 3, _frames(11, seed=5)
    engine = _engine(model, context=context, precision="fp32")
    got = [engine.push(f)[0].disparity for f in frames]
    step = CausalStep(model).eval()
    pre = Preprocessor(input_hw=HW)
    caches = [torch.zeros(s) for s in step.cache_shapes(HW, context)]
    for k, f in enumerate(frames):
        pos, bias = slot_inputs(context, k)
        with torch.no_grad():
            out = step(pre(f)[0], pos, bias, *caches)
        caches = list(out[1:])
        np.testing.assert_allclose(got[k], torch.relu(out[0])[0].numpy(), rtol=1e-4, atol=1e-5)


def test_a_failed_frame_or_a_reset_leaves_the_ring_consistent(model):
    # a frame whose post-processing raises is in the ring already: the frames after it must equal those
    # of an engine that never failed (slot and valid count advance together); after a reset the ring
    # restarts exactly like a new engine, also once it wraps again
    context, frames = 3, _frames(9, seed=11)
    calls = {"n": 0}

    def flaky(disparity):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("post-processing failed")
        return disparity

    failing = _engine(model, context=context, precision="fp32", depth_fn=flaky)
    steady = _engine(model, context=context, precision="fp32")
    for k, f in enumerate(frames):
        want = steady.push(f)[0].disparity
        try:
            got = failing.push(f)[0].disparity
        except RuntimeError:
            assert k == 1
            continue
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    steady.reset()
    fresh = _engine(model, context=context, precision="fp32")
    for f in frames[:7]:  # wraps the 4-slot ring again
        np.testing.assert_allclose(
            steady.push(f)[0].disparity, fresh.push(f)[0].disparity, rtol=1e-5, atol=1e-6
        )


def test_causal_engine_equals_causally_masked_window(model):
    frames = _frames(6)
    engine = _engine(model, precision="fp32")
    got = [engine.push(f, i)[0] for i, f in enumerate(frames)]
    assert [r.index for r in got] == list(range(6)) and [r.stamp for r in got] == list(range(6))
    pre = Preprocessor(input_hw=HW)
    clip = torch.cat([pre(f) for f in frames], dim=1)  # (1, T, 3, H, W)
    with torch.no_grad():
        ref = model.decode(model.encode(clip), causal=True)[0].numpy()
        full = model.decode(model.encode(clip))[0].numpy()
    for k in range(6):
        np.testing.assert_allclose(got[k].disparity, ref[k], rtol=1e-4, atol=1e-5)
    # the causal mask matters: frame 0 of the non-causal window sees later frames
    assert np.abs(full[0] - ref[0]).max() > 1e-4
    assert got[0].stats.reanchored and got[0].stats.reason == "first"
    assert not got[1].stats.reanchored


def test_first_frame_has_depth_and_reset_starts_over(model):
    frames = _frames(5, seed=3)
    engine = _engine(model, context=3)
    first = engine.push(frames[0])
    assert len(first) == 1 and np.isfinite(first[0].disparity).all()
    for f in frames[1:]:
        assert len(engine.push(f)) == 1
    assert engine.cached_frames == 3 and engine.frames_pending == 0 and engine.flush() == []
    assert engine.reset() == 0
    again = engine.push(frames[0])[0]
    assert again.index == 5 and again.stats.reanchored
    np.testing.assert_allclose(again.disparity, first[0].disparity, rtol=1e-5, atol=1e-6)


def test_bad_input_is_refused_with_a_reason(model):
    engine = _engine(model)
    engine.push(_frames(1)[0])
    with pytest.raises(StreamError, match="reset"):
        engine.push(np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(StreamError, match="RGB"):
        engine.push(np.zeros((28, 42), np.uint8))
    with pytest.raises(StreamError, match="context"):
        _engine(model, context=40)
    with pytest.raises(StreamError, match="fit"):
        _engine(model, fit="guess")


def test_previous_fit_keeps_scale_continuous(model):
    frames = _frames(8, seed=5)
    raw_engine = _engine(model)
    plain = [raw_engine.push(f)[0].disparity for f in frames]
    engine = _engine(model, fit="previous", fit_momentum=1.0)
    out = [engine.push(f)[0].disparity for f in frames]
    np.testing.assert_allclose(out[0], plain[0], rtol=1e-5)  # the first frame is the anchor
    for k in range(1, 8):  # each frame is least-squares closest to the one before
        a, b = out[k].ravel(), out[k - 1].ravel()
        assert np.mean((a - b) ** 2) <= np.mean((plain[k].ravel() - b) ** 2) * 1.0001 + 1e-12


def test_causal_step_round_trips_its_cache_through_onnx(model, tmp_path):
    import onnxruntime as ort

    step = CausalStep(model).eval()
    context = 3
    shapes = step.cache_shapes(HW, context)
    pre = Preprocessor(input_hw=HW)
    frames = [pre(f)[0] for f in _frames(4, seed=7)]
    caches = [torch.zeros(s) for s in shapes]
    pos, bias = slot_inputs(context, 0)
    names = [f"cache_{i}" for i in range(len(shapes))]
    from endo_depth_model.export import check_graph, export_causal_step

    path = export_causal_step(model, tmp_path / "causal_step.onnx", HW, context)
    meta = check_graph(path)  # metadata, names and fixed shapes of the cache inputs and outputs
    assert meta.kind == "causal" and meta.frames == context and list(meta.inputs[3:]) == names
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t_caches = [c.clone() for c in caches]
    o_caches = [c.numpy() for c in caches]
    for k, x in enumerate(frames):
        pos, bias = slot_inputs(context, k)
        with torch.no_grad():
            t_out = step(x, pos, bias, *t_caches)
        o_out = sess.run(None, {"frame": x.numpy(), "positions": pos.numpy(), "key_bias": bias.numpy(),
                                **dict(zip(names, o_caches, strict=True))})  # fmt: skip
        np.testing.assert_allclose(o_out[0], t_out[0].numpy(), rtol=1e-3, atol=1e-4)
        t_caches, o_caches = list(t_out[1:]), list(o_out[1:])
        for a, b in zip(o_caches, t_caches, strict=True):  # LayerNorm outputs, O(1)
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-3, atol=1e-3)


def test_the_causal_fit_uses_only_pixels_inside_the_field_of_view(model):
    """The continuity fit against the previous output reads pixels inside ``fov_mask`` only: a frame
    whose disparity inside is exactly half the previous output's is scaled back by 2, whatever the
    (black-border) pixels outside hold; without the mask those pixels pull the fit away."""
    rng = np.random.default_rng(0)
    h, w = 24, 32
    v, u = np.mgrid[0:h, 0:w]
    inside = (u - w / 2) ** 2 + (v - h / 2) ** 2 < (0.45 * h) ** 2
    first = rng.uniform(0.5, 2.0, (h, w)).astype(np.float32)
    second = (first / 2).astype(np.float32)
    second[~inside] = rng.uniform(5.0, 9.0, (~inside).sum())  # border garbage, unrelated to anything
    fits = {}
    for masked in (True, False):
        engine = _engine(model, fit="previous", fit_momentum=1.0)
        engine.fov_mask = inside if masked else None
        engine._fit(first, True)
        out, _ = engine._fit(second, False)
        fits[masked] = out
    np.testing.assert_allclose(fits[True][inside], first[inside], rtol=1e-4)
    assert np.abs(fits[False][inside] - first[inside]).mean() > 0.1
