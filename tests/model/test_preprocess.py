"""Preprocessing: sizes multiple of 14, ImageNet normalisation, back-resizing, disparity <-> depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endo_depth_model.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessor,
    depth_to_disparity,
    disparity_to_depth,
    fit_to_multiple,
    frames_to_tensor,
)


def test_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_default_input_is_endodav_224x280():
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 256, 320, 3), dtype=np.uint8)
    x = Preprocessor()(frames)
    assert x.shape == (1, 5, 3, 224, 280) and x.dtype == torch.float32
    assert x.shape[-1] % 14 == 0 and x.shape[-2] % 14 == 0


def test_normalisation_values():
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 28, 42)
    x = Preprocessor(input_hw=(28, 42))(mean.unsqueeze(0))
    assert x.abs().max() < 1e-6
    white = Preprocessor(input_hw=(28, 42))(np.full((28, 42, 3), 255, dtype=np.uint8))
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(white[0, 0, :, 0, 0], expected, atol=1e-6)
    assert white.shape == (1, 1, 3, 28, 42)


def test_uint8_float_and_layouts_agree():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, size=(2, 64, 80, 3), dtype=np.uint8)
    pre = Preprocessor(input_hw=(56, 70))
    a = pre(u8)
    b = pre(u8.astype(np.float32) / 255.0)
    c = pre(torch.from_numpy(u8).permute(0, 3, 1, 2))  # channels-first tensor
    d = pre([u8[0], u8[1]])  # list of frames
    for other in (b, c, d):
        assert torch.allclose(a, other, atol=1e-6)


def test_upstream_sizes_are_multiples_of_14():
    assert fit_to_multiple((256, 320), short_side=224) == (224, 280)
    assert fit_to_multiple((480, 640)) == (518, 686)
    for hw in [(720, 1280), (1080, 1920), (256, 320), (300, 301), (1024, 768)]:
        h, w = fit_to_multiple(hw)
        assert h % 14 == 0 and w % 14 == 0 and min(h, w) >= 518
        assert abs(h / w - hw[0] / hw[1]) < 0.03
    x = Preprocessor(input_hw=None)(np.zeros((1, 480, 640, 3), dtype=np.uint8))
    assert x.shape == (1, 1, 3, 518, 686)


def test_bad_sizes_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="multiples of 14"):
        Preprocessor(input_hw=(224, 281))
    with pytest.raises(ValueError, match="3 channels"):
        frames_to_tensor(np.zeros((2, 32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 or float"):
        frames_to_tensor(torch.zeros(2, 3, 32, 32, dtype=torch.int32))


def test_postprocess_restores_the_original_size():
    out = torch.arange(2 * 224 * 280, dtype=torch.float32).reshape(1, 2, 224, 280)
    back = Preprocessor.postprocess(out, (256, 320))
    assert back.shape == (2, 256, 320)
    # align_corners=True keeps the corner values
    assert torch.equal(back[:, 0, 0], out[0, :, 0, 0]) and torch.allclose(back[:, -1, -1], out[0, :, -1, -1])
    assert Preprocessor.postprocess(out, (224, 280)).shape == (2, 224, 280)


def test_disparity_to_depth_monodepth2():
    disp = torch.tensor([0.0, 0.5, 1.0])
    depth = disparity_to_depth(disp, 0.1, 150.0)
    assert depth[0].item() == pytest.approx(150.0)
    assert depth[2].item() == pytest.approx(0.1)
    assert depth[1].item() == pytest.approx(1.0 / (1 / 150 + 0.5 * (10 - 1 / 150)))
    assert torch.all(depth[1:] < depth[:-1])
    assert np.allclose(depth_to_disparity(depth, 0.1, 150.0), disp, atol=1e-6)
    # numpy in, numpy out
    assert np.allclose(disparity_to_depth(np.array([0.0, 1.0]), 0.1, 150.0), [150.0, 0.1])
    # VDA's unbounded disparity (EndoDAV applies the same formula): above 1 it goes below min_depth
    assert disparity_to_depth(torch.tensor(4.0), 0.1, 150.0).item() < 0.1
    with pytest.raises(ValueError):
        disparity_to_depth(disp, 1.0, 0.5)
