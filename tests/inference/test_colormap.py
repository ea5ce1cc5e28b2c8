"""Colour maps match the published tables; colourising is range-correct and marks invalid pixels."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.colormap import ColorError, ColorRange, colorize, colorize_depth, lut, robust_range


@pytest.mark.parametrize("name", ["turbo", "inferno"])
def test_lut_matches_matplotlib_within_5_levels(name):
    matplotlib = pytest.importorskip("matplotlib")
    ref = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255
    table = lut(name)
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert np.abs(table.astype(float) - ref).max() <= 5.0


def test_colorize_endpoints_clipping_and_invalid():
    values = np.array([[0.0, 1.0], [2.0, np.nan]])
    rgb = colorize(values, vmin=0.0, vmax=1.0, cmap="gray", invalid_rgb=(255, 0, 255))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(rgb[1, 0], [255, 255, 255])  # clipped
    np.testing.assert_array_equal(rgb[1, 1], [255, 0, 255])
    mid = colorize(np.array([[0.5]]), 0.0, 1.0, cmap="gray")
    assert abs(int(mid[0, 0, 0]) - 128) <= 1
    with pytest.raises(ColorError, match="unknown colour map"):
        colorize(values, 0, 1, cmap="jet")
    with pytest.raises(ColorError, match="empty colour range"):
        colorize(values, 1.0, 1.0)


def test_colorize_depth_near_is_bright_and_nonpositive_invalid():
    depth = np.array([[1.0, 2.0, 0.0]])
    rgb = colorize_depth(depth, dmin=1.0, dmax=2.0, cmap="gray")
    assert rgb[0, 0, 0] == 255 and rgb[0, 1, 0] == 0 and (rgb[0, 2] == 0).all()


def test_robust_range_and_color_range_freezes():
    v = np.arange(101, dtype=float)
    assert robust_range(v) == pytest.approx((2.0, 98.0))
    cr = ColorRange(warmup=2)
    cr.update(np.full((4, 4), 1.0))
    frozen = cr.update(np.linspace(0, 10, 16).reshape(4, 4))
    assert cr.range == frozen
    assert cr.update(np.full((4, 4), 100.0)) == frozen
    with pytest.raises(ColorError):
        robust_range(np.array([np.nan]))


def test_an_all_nan_map_does_not_break_the_colour_range():
    """A depth image with nothing valid (nothing visible, a metric model out of range) draws in the
    invalid colour and is not a sample of the range: the frames after it set the range as usual."""
    cr = ColorRange(warmup=2)
    nan = np.full((4, 4), np.nan)
    assert cr.update(nan) == (0.0, 1.0) and cr.range is None
    assert (colorize_depth(nan, *cr.update(nan)) == 0).all()
    cr.update(np.full((4, 4), 1.0))
    assert cr.update(nan) == pytest.approx((1.0, 1.0 + 1e-6))
    frozen = cr.update(np.linspace(0, 10, 16).reshape(4, 4))
    assert cr.range == frozen and frozen[0] < 1.0 < frozen[1]
