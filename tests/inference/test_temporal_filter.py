"""The still-pixel temporal filter: noise damped where the image holds still, changes passed through
where it moves, NaN kept, a reset starting over; in the pipeline, a re-anchor starts it over."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.temporal_filter import StillPixelFilter

H, W = 60, 80


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 220, (H, W, 3), dtype=np.uint8)


def test_still_pixels_are_averaged_and_moving_ones_pass_through():
    rng = np.random.default_rng(1)
    rgb = _scene()
    truth = np.linspace(0.05, 0.15, W, dtype=np.float32)[None].repeat(H, 0)
    f = StillPixelFilter(still=6.0, min_gain=0.25)
    raw, out = [], []
    moved = np.zeros((H, W), bool)
    moved[:, 40:] = True
    for k in range(30):
        noisy = truth * (1 + 0.03 * rng.standard_normal((H, W))).astype(np.float32)
        frame = rgb.copy()
        if k == 29:  # the right half of the image changes (an instrument enters) and its depth halves
            frame[moved] = frame[moved] - 35  # darker by 35 grey levels (40..220 in: no wrap)
            noisy[moved] = truth[moved] / 2
        raw.append(noisy)
        out.append(f(noisy, frame))
    jitter = lambda seq: np.median(np.abs(np.diff(np.stack(seq[5:29]), axis=0)) / truth)  # noqa: E731
    assert jitter(out) < 0.45 * jitter(raw)  # the still image's depth trembles much less
    assert np.median(np.abs(out[28] / truth - 1)) < 0.02  # and stays on the truth (no bias)
    inner = moved.copy()
    inner[:, 40:43] = False  # the thumbnail's blur reaches a few pixels over the edge
    np.testing.assert_allclose(out[29][inner], raw[29][inner], rtol=1e-5)  # the change: no lag
    still = ~moved
    still[:, 37:] = False
    assert np.median(np.abs(out[29][still] / truth[still] - 1)) < 0.02


def test_nan_stays_nan_new_depth_fills_holes_and_reset_starts_over():
    rgb = _scene()
    f = StillPixelFilter()
    first = np.full((H, W), 0.1, np.float32)
    first[:5] = np.nan
    assert np.array_equal(f(first, rgb), first, equal_nan=True)  # the first frame as it is
    second = np.full((H, W), 0.2, np.float32)
    second[-5:] = np.nan
    out = f(second, rgb)
    assert np.isnan(out[-5:]).all()  # no depth now: none published
    np.testing.assert_allclose(out[:5], 0.2)  # no depth before: the new depth as it is
    assert 0.1 < out[20, 20] < 0.2  # still image: between the two
    f.reset()
    np.testing.assert_allclose(f(second, rgb)[20, 20], 0.2)
    with pytest.raises(ValueError, match="differ in size"):
        f(second, rgb[:10])
    with pytest.raises(ValueError, match="min_gain"):
        StillPixelFilter(min_gain=0.0)


def test_the_pipeline_filters_a_still_scope_and_restarts_at_a_re_anchor():
    """temporal_filter on: a still image's depth changes less from frame to frame than without it; a
    reset (re-anchor) starts the filter over, so the first depth after it is the network's own."""
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig
    from endo_depth_model.training.pretrain import render_sequence

    rgb = render_sequence("target", 31, 1, 56, 70)["rgb"][0]
    rng = np.random.default_rng(0)
    frames = [
        np.clip(rgb.astype(int) + rng.integers(-1, 2, rgb.shape), 0, 255).astype(np.uint8) for _ in range(8)
    ]
    depths = {}
    for on in (False, True):
        pipe = DepthPipeline(
            PipelineConfig(input_height=56, input_width=70, torch_threads=1, temporal_filter=on)
        )
        depths[on] = [pipe.push(f, i)[0][0].depth for i, f in enumerate(frames)]
        if on:
            pipe.reset()
            again = pipe.push(frames[0], 100)[0][0].depth
            np.testing.assert_allclose(again, depths[False][0], rtol=1e-4, equal_nan=True)
    change = {
        k: np.nanmedian(np.abs(np.diff(np.stack(v), axis=0)) / np.stack(v)[1:]) for k, v in depths.items()
    }
    assert change[True] < 0.7 * change[False], change
