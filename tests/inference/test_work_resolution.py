"""Large frames are processed at a working size and their depth comes back at their own size
(``PipelineConfig.work_resolution``, endo_depth_model.preprocess.work_size / shrink_rgb / upsample_depth)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from endo_depth_model.pipeline import DepthPipeline, PipelineConfig, PipelineError
from endo_depth_model.preprocess import shrink_rgb, upsample_depth, work_size
from endo_depth_model.streaming import StreamError


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ((720, 1280), (224, 398)),  # HD endoscope: covers 224x280, aspect kept
        ((1080, 1920), (224, 398)),
        ((512, 640), (224, 280)),  # EndoNeRF
        ((256, 320), (256, 320)),  # SCARED-sized: not worth a step, stays
        ((300, 2000), (300, 2000)),  # one side not twice the input: stays
    ],
)
def test_the_work_size_covers_the_network_input_with_the_frames_aspect(image, expected):
    got = work_size(image, (224, 280))
    assert got == expected
    assert got[0] >= 224 and got[1] >= 280


def test_shrinking_averages_pixel_areas_instead_of_aliasing():
    """A one-pixel checkerboard is grey at a third of its size (interpolation would pick pixels of one
    colour and show a coarse pattern); a plain colour stays exactly that colour."""
    yy, xx = np.mgrid[:720, :1280]
    board = np.repeat((((yy + xx) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    small = shrink_rgb(board, (224, 398))
    assert small.shape == (224, 398, 3) and small.dtype == np.uint8
    assert abs(small.mean() - 127.5) < 2 and small.std() < 3
    plain = np.empty((720, 1280, 3), np.uint8)
    plain[:] = (200, 90, 40)
    assert (shrink_rgb(plain, (224, 398)) == (200, 90, 40)).all()


@pytest.mark.parametrize("size", [(720, 1280), (721, 1281)])
def test_shrinking_keeps_the_pixel_centres_the_intrinsics_assume(size):
    """A bright blob lands, after shrinking, where scale_intrinsics moves its centre (a Gaussian pyramid
    would put it a fraction of a working pixel off, and the depth with it)."""
    from endo_depth_model.geometry import scale_intrinsics

    H, W = size
    cx, cy = W * 0.37, H * 0.61
    yy, xx = np.mgrid[:H, :W]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (H / 20) ** 2))
    rgb = np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    h, w = work_size(size, (224, 280))
    small = shrink_rgb(rgb, (h, w))[..., 0].astype(float)
    K = scale_intrinsics(np.array([[1.0, 0, cx], [0, 1.0, cy], [0, 0, 1]]), w / W, h / H)
    ys, xs = np.mgrid[:h, :w]
    assert abs((small * xs).sum() / small.sum() - K[0, 2]) < 0.02
    assert abs((small * ys).sum() / small.sum() - K[1, 2]) < 0.02


def test_upsampled_depth_keeps_its_nan_border_in_place_and_the_values_inside():
    """A constant depth behind a circular stop: inside the stop every upsampled pixel keeps the value (no
    NaN leaks in, no zeros are mixed in from the border), the NaN share outside stays the same."""
    H, W, h, w = 720, 1280, 224, 398

    def disc(rows, cols, r):
        yy, xx = np.mgrid[:rows, :cols]
        return ((yy + 0.5) / rows - 0.5) ** 2 + (((xx + 0.5) / cols - 0.5) * cols / rows) ** 2 <= r**2

    depth = np.where(disc(h, w, 0.45), np.float32(2.0), np.float32(np.nan)).astype(np.float32)
    up = upsample_depth(depth, (H, W))
    assert up.shape == (H, W) and up.dtype == np.float32
    inner, outer = disc(H, W, 0.44), ~disc(H, W, 0.46)
    assert np.isfinite(up[inner]).all() and np.allclose(up[inner], 2.0)
    assert np.isnan(up[outer]).all()
    assert abs(np.isnan(up).mean() - np.isnan(depth).mean()) < 0.005
    ramp = np.tile(np.linspace(1, 2, w, dtype=np.float32), (h, 1))
    assert np.allclose(upsample_depth(ramp, (H, W))[:, [0, -1]].mean(axis=0), [1.0, 2.0], atol=0.01)


def _scene(frames: int, hw: tuple[int, int]):
    from endo_depth_model.training.pretrain import render_sequence

    return render_sequence("lap", 9001, frames, *hw)


def _run(cfg: PipelineConfig, data) -> list:
    pipe = DepthPipeline(cfg)
    out = []
    for i, rgb in enumerate(data["rgb"]):
        out += pipe.push(rgb, i, K=data["K"])[0]
    return pipe, out + pipe.flush()


def test_large_frames_are_processed_small_and_published_at_their_own_size():
    """Frames four times the network input: depth, NaN border and intrinsics come back at the frames'
    size, close to processing every step at full size, and the confidence map takes the full image."""
    from endo_depth_model.confidence import confidence_map

    data = _scene(5, (224, 280))
    cfg = PipelineConfig(input_height=56, input_width=70)
    pipe, small = _run(cfg, data)
    _, full = _run(PipelineConfig(input_height=56, input_width=70, work_resolution="full"), data)
    assert [fd.stamp for fd in small] == list(range(5))
    for a, b, gt in zip(small, full, data["depth"], strict=True):
        assert a.depth.shape == (224, 280) and a.disparity.shape == (56, 70)
        np.testing.assert_allclose(a.K, data["K"], rtol=1e-9)
        inside = np.isfinite(gt)
        assert np.isfinite(a.depth[inside]).mean() > 0.93 and np.isnan(a.depth[~inside]).mean() > 0.97
        # the stop's border where full-size processing puts it, give or take a working pixel and a half
        # (4 frame pixels each here): depth lost only next to the full-size border, none gained far outside
        full_ok = np.isfinite(b.depth).astype(np.uint8)
        to_border = cv2.distanceTransform(full_ok, cv2.DIST_L2, 5)
        to_inside = cv2.distanceTransform(1 - full_ok, cv2.DIST_L2, 5)
        assert to_border[np.isnan(a.depth) & (full_ok > 0)].max(initial=0) <= 6
        assert to_inside[np.isfinite(a.depth) & (full_ok == 0)].max(initial=0) <= 6
        both = np.isfinite(a.depth) & np.isfinite(b.depth)
        ratio = a.depth[both] / b.depth[both]  # relative depth: the same up to a scale
        assert np.median(np.abs(ratio / np.median(ratio) - 1)) < 0.05
    fd, rgb = small[-1], data["rgb"][-1]
    conf = pipe.confidence(fd, rgb)
    assert conf.shape == (224, 280) and np.nanmin(conf) >= 0 and np.nanmax(conf) <= 1
    # the previous frame's depth (at the working size) is used: the temporal term is not "no evidence"
    assert fd.prev_depth is not None and fd.prev_depth.shape == (56, 70)
    assert not np.allclose(conf, confidence_map(fd.relative_depth, rgb))


def test_aligned_mode_and_a_scene_cut_also_come_back_at_the_frames_size():
    """The aligned engine holds frames back and returns them from later pushes and from flush(); a scene
    cut finalises what it holds before restarting. Every path returns the frames' size, in order."""
    a, b = _scene(4, (224, 280)), _scene(4, (224, 280))
    b = {"rgb": np.ascontiguousarray(b["rgb"][:, ::-1, ::-1]), "K": a["K"]}  # another view: a cut
    cfg = PipelineConfig(input_height=56, input_width=70, latency_mode="aligned")
    cfg.window, cfg.overlap, cfg.stride, cfg.blend = 6, 2, 2, 2
    pipe = DepthPipeline(cfg)
    out = []
    for i, rgb in enumerate([*a["rgb"], *b["rgb"]]):
        out += pipe.push(rgb, i, K=a["K"])[0]
    out += pipe.flush()
    assert [fd.stamp for fd in out] == list(range(8))
    assert all(fd.depth.shape == (224, 280) and fd.disparity.shape == (56, 70) for fd in out)
    assert pipe.stats.scene_cuts >= 1


def test_a_frame_of_another_size_is_refused_until_reset():
    data = _scene(2, (224, 280))
    pipe = DepthPipeline(PipelineConfig(input_height=56, input_width=70))
    pipe.push(data["rgb"][0], 0)
    other = np.pad(data["rgb"][1], ((0, 1), (0, 0), (0, 0)), mode="edge")  # 225x280: also 56x70
    assert work_size(other.shape[:2], (56, 70)) == (56, 70)  # so only the pipeline's own check can see it
    with pytest.raises(StreamError, match="call reset"):
        pipe.push(other, 1)
    pipe.reset()
    out, _ = pipe.push(other, 2)
    assert out[0].depth.shape == (225, 280)


def test_an_unknown_work_resolution_is_refused():
    with pytest.raises(PipelineError, match="work_resolution"):
        DepthPipeline(PipelineConfig(work_resolution="half"))


def test_a_blend_of_one_frame_is_refused_with_the_configuration():
    """The aligned engine needs a blend of 0 or at least 2 frames; the configuration says so up front."""
    cfg = PipelineConfig(latency_mode="aligned")
    cfg.window, cfg.overlap, cfg.stride, cfg.blend = 6, 2, 2, 1
    with pytest.raises(PipelineError, match="blend = 0 or 2 <= blend"):
        DepthPipeline(cfg)
