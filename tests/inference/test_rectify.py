"""Lens distortion: rectified images put known 3D points where the pinhole camera sees them, for the
three ROS distortion models; zero D needs nothing; unknown models are refused, never ignored."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from endo_depth_model.rectify import DistortionError, make_rectifier

H, W = 240, 320
K = np.array([[220.0, 0.0, 159.5], [0.0, 220.0, 119.5], [0.0, 0.0, 1.0]])
POINTS = np.array([[x, y, 1.0] for x in (-0.5, -0.2, 0.0, 0.3, 0.55) for y in (-0.35, 0.0, 0.4)])

CASES = [
    ("plumb_bob", [-0.28, 0.09, 0.001, -0.0005, -0.012]),
    ("rational_polynomial", [-0.25, 0.07, 0.0005, 0.0003, -0.01, 0.02, -0.01, 0.003]),
    ("equidistant", [-0.05, 0.01, -0.004, 0.001]),
]


def _distorted_pixels(model, D):
    rvec = tvec = np.zeros(3)
    if model == "equidistant":
        pts, _ = cv2.fisheye.projectPoints(POINTS.reshape(-1, 1, 3), rvec, tvec, K, np.asarray(D))
    else:
        pts, _ = cv2.projectPoints(POINTS, rvec, tvec, K, np.asarray(D))
    return pts.reshape(-1, 2)


def _dots(pixels):
    """Gaussian dots (sigma 1.5 px) at sub-pixel positions, rendered analytically."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W))
    for x, y in pixels:
        img += np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * 1.5**2))
    return np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize(("model", "D"), CASES)
def test_rectified_dots_land_on_the_pinhole_projection(model, D):
    distorted = _distorted_pixels(model, D)
    pinhole = (POINTS[:, :2] / POINTS[:, 2:]) @ K[:2, :2].T + K[:2, 2]
    assert np.abs(distorted - pinhole).max() > 3.0  # the distortion is real, several pixels
    rect = make_rectifier(K, D, model, (H, W))
    out = rect.rectify(_dots(distorted))[..., 0].astype(np.float64)
    v, u = np.mgrid[0:H, 0:W]
    for x, y in pinhole:
        win = (np.abs(u - x) <= 5) & (np.abs(v - y) <= 5)
        w = out * win
        cx, cy = (w * u).sum() / w.sum(), (w * v).sum() / w.sum()
        assert abs(cx - x) < 0.35 and abs(cy - y) < 0.35, (model, x, y, cx, cy)
    K2, D2, model2 = rect.camera_model()
    assert np.allclose(K2, K) and not np.any(D2) and model2 == "plumb_bob"


def test_zero_distortion_needs_nothing_and_bad_models_are_refused():
    assert make_rectifier(K, [0.0] * 5, "plumb_bob", (H, W)) is None
    assert make_rectifier(K, [], "", (H, W)) is None
    with pytest.raises(DistortionError, match="not supported"):
        make_rectifier(K, [0.1, 0.0, 0.0], "kannala_brandt_x", (H, W))
    with pytest.raises(DistortionError, match="4 coefficients"):
        make_rectifier(K, [0.1] * 5, "equidistant", (H, W))
    with pytest.raises(DistortionError, match="finite"):
        make_rectifier(K, [np.nan, 0, 0, 0, 0], "plumb_bob", (H, W))
    rect = make_rectifier(K, CASES[0][1], "plumb_bob", (H, W))
    with pytest.raises(DistortionError, match="calibration"):
        rect.rectify(np.zeros((H + 2, W, 3), np.uint8))
