"""Field-of-view detection: circular and octagonal borders, dark instruments at the border, frames with
nothing visible, and the live tracker."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.data.laparoscopy import fov_border_mask
from endo_depth_model.fov import FovTracker, detect_fov


def _scene(h=120, w=160, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 220, (h // 8 + 1, w // 8 + 1, 3))
    img = np.kron(base, np.ones((8, 8, 1)))[:h, :w]
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("kind,radius", [("circle", 0.8), ("circle", 0.92), ("octagon", 0.9)])
def test_borders_are_found(kind, radius):
    truth = fov_border_mask(120, 160, kind, radius)
    img = _scene()
    img[~truth] = 0
    found = detect_fov(img)
    assert found.kind == "border" and found.ok
    import cv2

    core = cv2.erode(truth.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert found.mask[core].mean() > 0.995  # everything 3 px inside the stop is found
    assert (found.mask & ~truth).mean() < 1e-3  # border pixels are not claimed (sub-pixel tangents aside)
    assert _iou(found.mask, truth) > 0.93


def test_black_instrument_touching_the_border_stays_inside():
    truth = fov_border_mask(120, 160, "circle", 0.8)
    img = _scene(seed=1)
    img[~truth] = 0
    img[55:65, 0:80] = 3  # a black shaft entering from the left border
    found = detect_fov(img)
    shaft = np.zeros_like(truth)
    shaft[55:65, 30:80] = True
    shaft &= truth
    assert found.mask[shaft].mean() > 0.95


def test_no_border_and_nothing_visible():
    img = _scene(seed=2)
    assert detect_fov(img).kind == "none" and detect_fov(img).mask.all()
    white = np.full((40, 50, 3), 255, np.uint8)  # all specular
    assert detect_fov(white).kind == "none"
    black = np.zeros((40, 50, 3), np.uint8)
    found = detect_fov(black)
    assert found.kind == "empty" and not found.ok and not found.mask.any()
    with pytest.raises(ValueError, match="images"):
        detect_fov(np.zeros((40, 50), np.uint8))


def test_several_frames_fill_a_shadow():
    truth = fov_border_mask(120, 160, "circle", 0.8)
    frames = np.stack([_scene(seed=s) for s in range(3)])
    frames[:, ~truth] = 0
    frames[0, 50:70, 60:100] = 0  # a shadow in one frame only, touching nothing
    frames[0][~truth] = 0
    found = detect_fov(frames)
    assert found.mask[55:65, 65:95].all()


def test_tracker_keeps_its_mask_through_a_black_frame_and_follows_a_change():
    truth = fov_border_mask(120, 160, "circle", 0.8)
    img = _scene(seed=3)
    img[~truth] = 0
    tracker = FovTracker(every=3)
    first = tracker.update(img)
    assert first.kind == "border"
    black = tracker.update(np.zeros_like(img))
    assert black.kind == "empty"  # this frame shows nothing
    again = tracker.update(img)
    assert _iou(again.mask, first.mask) > 0.99  # the good mask was kept
    plain = _scene(seed=4)
    for _ in range(3):
        latest = tracker.update(plain)
    assert latest.kind == "none"  # a new scope without a border


def test_fill_outside_extends_the_tissue_smoothly_and_keeps_the_inside():
    import torch

    from endo_depth_model.fov import fill_outside

    h, w = 60, 76
    inside = torch.from_numpy(fov_border_mask(h, w, "circle", 0.8))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 1, (2, 3, 3, h, w)).astype(np.float32))  # (B, T, C, H, W)
    y = fill_outside(x, inside)
    assert y.shape == x.shape and torch.equal(y[..., inside], x[..., inside])
    assert not torch.equal(y[..., ~inside], x[..., ~inside])
    # the fill is made of the inside's values: within their range, and linear in the image (so it commutes
    # with the network's per-channel normalisation)
    lo, hi = x[..., inside].amin(-1), x[..., inside].amax(-1)
    assert bool(((y[..., ~inside] >= lo[..., None] - 1e-6) & (y[..., ~inside] <= hi[..., None] + 1e-6)).all())
    torch.testing.assert_close(fill_outside(2.0 * x - 0.5, inside), 2.0 * y - 0.5, rtol=1e-5, atol=1e-5)
    # a uniform inside extends as itself; a left-right split extends each side's colour to its own side
    flat = torch.full((3, h, w), 0.3)
    torch.testing.assert_close(fill_outside(flat * inside, inside), flat)
    split = torch.zeros(1, h, w)
    split[..., w // 2 :] = 1.0
    filled = fill_outside(split * inside, inside)[0]
    assert filled[h // 2, 0] < 0.1 and filled[h // 2, w - 1] > 0.9
    # a small round view in a wide frame (the pyramid's coarsest cells then miss the inside): the inside's
    # colours everywhere, never the zeros of an empty cell
    small = torch.from_numpy(fov_border_mask(224, 280, "circle", 0.3))
    grey = torch.full((3, 224, 280), 0.6) * small
    torch.testing.assert_close(fill_outside(grey, small), torch.full((3, 224, 280), 0.6))
    # nothing to fill, nothing inside, a mask of the wrong size
    full = torch.ones(h, w, dtype=torch.bool)
    assert fill_outside(x, full) is x and fill_outside(x, ~full) is x
    with pytest.raises(ValueError, match="does not match"):
        fill_outside(x, inside[1:])


@pytest.mark.parametrize("engine_kind", ["causal", "aligned", "per_frame"])
def test_engines_fill_the_border_for_weights_trained_so(vitt_weights, tmp_path, engine_kind):
    """Weights marked ``fill_border`` (pretrain --fill-border) get the border filled in every engine: what
    lies outside the field of view then no longer changes the depth; unmarked weights see it as it is."""
    import cv2
    from safetensors.torch import load_file, save_file

    from endo_depth_model.infer import make_engine
    from endo_depth_model.loading import load_depth_model

    marked = tmp_path / "filled.safetensors"
    save_file(load_file(vitt_weights), marked, metadata={"fill_border": "1"})
    h, w = 84, 112
    inside = fov_border_mask(h, w, "circle", 0.8)
    far_outside = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5) > 8
    frames = [np.where(inside[..., None], _scene(h, w, seed=k), 0).astype(np.uint8) for k in range(5)]
    noisy = [f.copy() for f in frames]
    rng = np.random.default_rng(0)
    for f in noisy:
        f[far_outside] = rng.integers(0, 255, (int(far_outside.sum()), 3))

    def run(weights, images):
        bundle = load_depth_model("vitt", weights)
        mode = {"causal": (1, 0, 0, False, True), "aligned": (6, 4, 2, True, False)}
        window, overlap, blend, align, causal = mode.get(engine_kind, (1, 0, 0, False, False))
        engine = make_engine(bundle, (56, 70), window, overlap, None, blend, align, causal, "cpu")
        engine.fov_mask = inside
        out = []
        for img in images:
            out += [r.disparity for r in engine.push(img)]
        return bundle, np.stack(out + [r.disparity for r in engine.flush()])

    bundle, filled = run(marked, frames)
    assert bundle.fill_border and "border filled" in bundle.description
    np.testing.assert_allclose(run(marked, noisy)[1], filled, rtol=1e-5, atol=1e-6)
    plain_bundle, plain = run(vitt_weights, frames)
    assert not plain_bundle.fill_border
    assert np.abs(run(vitt_weights, noisy)[1] - plain).max() > 1e-4
    assert np.abs(plain - filled).max() > 1e-4  # the fill changes what the network sees


def test_pipeline_fills_the_border_only_for_weights_trained_so(vitt_weights, vitt_adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    from endo_depth_model.loading import load_depth_model
    from endo_depth_model.pipeline import (
        DepthPipeline,
        PipelineConfig,
        fill_border_warning,
        weights_fill_border,
    )

    marked = tmp_path / "filled.safetensors"
    save_file(load_file(vitt_weights), marked, metadata={"fill_border": "1"})
    for weights, expected in ((marked, True), (vitt_weights, False)):
        for mode in ("causal", "aligned"):
            pipe = DepthPipeline(PipelineConfig(weights=str(weights), latency_mode=mode, input_height=56,
                                                input_width=70, pose_weights=""))  # fmt: skip
            assert pipe.stream.fill_border is expected
            assert pipe.fill_border_warning is None
    # an SSB adapter (stage 2 trains without the fill) switches it off, and says so
    assert not weights_fill_border(PipelineConfig(weights=str(marked), adapter=str(vitt_adapter)))
    assert "adapter" in fill_border_warning(PipelineConfig(weights=str(marked), adapter=str(vitt_adapter)))
    # so does fov_mask off (no border to fill); unmarked weights need no warning
    assert "fov_mask" in fill_border_warning(PipelineConfig(weights=str(marked), fov_mask="off"))
    assert fill_border_warning(PipelineConfig(weights=str(vitt_weights), fov_mask="off")) is None
    assert not load_depth_model("vitt", marked, adapter=vitt_adapter).fill_border
