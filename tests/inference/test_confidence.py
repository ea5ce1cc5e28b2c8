"""Depth confidence: each term on constructed cases, and the pipeline's maps on a rendered sequence."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.confidence import NO_EVIDENCE, confidence_map, image_term, temporal_term

K = np.array([[60.0, 0, 39.5], [0, 60.0, 31.5], [0, 0, 1]])


def _plane(h=64, w=80, z=0.05):
    return np.full((h, w), z, np.float32)


def _grey(h=64, w=80, level=128):
    return np.full((h, w, 3), level, np.uint8)


def test_image_term_drops_highlights_and_black_pixels():
    rgb = _grey()
    rgb[0, 0] = 255  # saturated
    rgb[0, 1] = (255, 120, 120)  # one saturated channel is enough
    rgb[0, 2] = 3  # black
    t = image_term(rgb)
    assert t[0, 0] == 0 and t[0, 1] == 0 and t[0, 2] == 0 and t[5, 5] == 1
    assert 0 < image_term(np.full((1, 1, 3), 240, np.uint8))[0, 0] < 1  # a ramp, not a cliff
    with pytest.raises(ValueError, match="uint8"):
        image_term(rgb.astype(np.float32))


def test_temporal_term_sees_what_changed_shape_not_a_common_scale():
    depth, prev = _plane(), _plane()
    t = temporal_term(depth * 1.3, prev, K, np.eye(4))  # a common scale change is no disagreement
    assert np.allclose(t, 1.0, atol=1e-4)
    bumped = depth.copy()
    bumped[20:40, 30:50] *= 0.7  # something came 30 % nearer
    t = temporal_term(bumped, prev, K, np.eye(4))
    assert t[30, 40] < 0.05 and t[5, 5] > 0.99
    # moved by the true motion, a shifted view agrees; unmoved, its disocclusions have no evidence
    T = np.eye(4)
    T[0, 3] = 0.005  # current camera 5 mm to the side of the previous one
    t = temporal_term(depth, prev, K, T)
    assert np.median(t[np.isfinite(t)]) > 0.99
    assert np.isclose(t, NO_EVIDENCE).any()  # a strip of the new view was not seen before


def test_confidence_map_combines_the_terms():
    depth, rgb = _plane(), _grey()
    depth[:, :10] = np.nan  # outside the field of view
    rgb[30:34, 30:34] = 255  # a highlight
    c = confidence_map(depth, rgb)  # no earlier frame: no temporal evidence
    assert c.dtype == np.float32 and c.shape == depth.shape
    assert np.all(c[:, :10] == 0) and np.all(c[30:34, 30:34] == 0)
    assert np.isclose(c[50, 60], NO_EVIDENCE)
    c = confidence_map(depth, rgb, _plane(), K, np.eye(4), fit_residual=0.4)
    assert np.isclose(c[50, 60], 0.6, atol=1e-3) and np.all(c[:, :10] == 0)
    assert np.all((c >= 0) & (c <= 1))
    with pytest.raises(ValueError, match="differ in size"):
        confidence_map(depth, _grey(32, 40))


def test_pipeline_confidence_on_a_rendered_sequence():
    from endo_depth_model.data.laparoscopy import fov_border_mask
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig
    from endo_depth_model.training.pretrain import render_sequence

    seq = render_sequence("target", 31, 4, 112, 140)
    stop = fov_border_mask(112, 140, "circle", 0.85)
    pipe = DepthPipeline(PipelineConfig(input_height=112, input_width=140, torch_threads=1))
    maps = []
    for i, rgb in enumerate(seq["rgb"]):
        rgb = np.where(stop[..., None], rgb, 0).astype(np.uint8)
        out, _ = pipe.push(rgb, i, K=seq["K"])
        maps += [(pipe.confidence(fd, rgb), fd) for fd in out]
    assert len(maps) == 4
    first, fd0 = maps[0]
    assert fd0.prev_depth is None and fd0.T_prev_cur is None  # nothing to compare the first frame with
    assert first.max() <= NO_EVIDENCE + 1e-6
    for c, fd in maps[1:]:
        assert fd.T_prev_cur is not None and fd.prev_depth is not None
        assert np.all((c >= 0) & (c <= 1)) and np.all(c[~np.isfinite(fd.depth)] == 0)
        inside = np.isfinite(fd.depth)
        assert np.median(c[inside]) > NO_EVIDENCE  # consecutive frames mostly agree
    assert pipe.stats.confidence_nan_frames == 0
    # a non-finite predicted motion (a broken pose network upstream) is no temporal evidence, not NaN
    _, fd_last = maps[-1]
    rgb_last = np.where(stop[..., None], seq["rgb"][-1], 0).astype(np.uint8)
    fd_last.T_prev_cur = np.full((4, 4), np.nan)
    nan_motion = pipe.confidence(fd_last, rgb_last)
    assert np.isfinite(nan_motion).all() and nan_motion.max() <= NO_EVIDENCE + 1e-6
    assert pipe.stats.confidence_nan_frames == 0


def test_pipeline_confidence_never_publishes_nan_and_counts_the_frame(monkeypatch):
    """Whatever reaches the confidence map as NaN is published as 0 (no confidence) and counted."""
    import endo_depth_model.confidence as confmod
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig
    from endo_depth_model.training.pretrain import render_sequence

    seq = render_sequence("target", 31, 2, 56, 70)
    pipe = DepthPipeline(PipelineConfig(input_height=56, input_width=70, torch_threads=1))
    out = []
    for i, rgb in enumerate(seq["rgb"]):
        out += pipe.push(rgb, i, K=seq["K"])[0]
    real = confmod.confidence_map

    def leaky(*args, **kwargs):
        c = real(*args, **kwargs)
        c[:5] = np.nan
        return c

    monkeypatch.setattr(confmod, "confidence_map", leaky)
    c = pipe.confidence(out[-1], seq["rgb"][-1])
    assert np.isfinite(c).all() and (c[:5] == 0).all() and c[5:].max() > 0
    assert pipe.stats.confidence_nan_frames == 1
