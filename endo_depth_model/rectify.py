"""Lens distortion: rectify endoscope images before the network, with maps computed once per calibration.

The depth network and every geometric output (point clouds, odometry, TAE) assume a pinhole camera.
Endoscopes have strong radial distortion; their ``sensor_msgs/CameraInfo`` carries it as
``distortion_model`` and ``D``. :class:`Rectifier` undistorts each image to the pinhole camera ``K``
(the same intrinsics, so the rectified image keeps its size and scale; pixels that fall outside the
distorted image are black and become part of the field-of-view mask) with cached ``cv2.remap`` maps.
Outputs computed from the rectified image describe the rectified camera, whose ``CameraInfo`` has zero
distortion (:meth:`Rectifier.camera_model`). Supported models (ROS names):

* ``plumb_bob`` (k1, k2, t1, t2, k3) and ``rational_polynomial`` (k1, k2, t1, t2, k3, k4, k5, k6):
  OpenCV's standard model;
* ``equidistant`` (k1, k2, k3, k4): OpenCV's fisheye model.

A ``D`` of zeros (or empty) needs no rectification (:func:`make_rectifier` returns None); any other
model with non-zero ``D`` raises :class:`DistortionError`, so distorted input is never taken as pinhole
silently.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DistortionError", "Rectifier", "make_rectifier", "SUPPORTED_MODELS"]

SUPPORTED_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


class DistortionError(ValueError):
    """The camera's distortion model is unknown or its coefficients do not fit it."""


class Rectifier:
    """Undistort (H, W, 3) images of a camera ``K`` with ``model`` and coefficients ``D``."""

    def __init__(self, K: np.ndarray, D, model: str, hw: tuple[int, int]):
        import cv2

        self.K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        self.D = np.asarray(D, dtype=np.float64).ravel()
        self.model, self.hw = model, (int(hw[0]), int(hw[1]))
        h, w = self.hw
        if model == "equidistant":
            if self.D.size != 4:
                raise DistortionError(f"equidistant distortion needs 4 coefficients, got {self.D.size}")
            self.map1, self.map2 = cv2.fisheye.initUndistortRectifyMap(
                self.K, self.D.reshape(4, 1), np.eye(3), self.K, (w, h), cv2.CV_16SC2
            )
        elif model in ("plumb_bob", "rational_polynomial"):
            if self.D.size not in (4, 5, 8, 12, 14):
                raise DistortionError(f"{model} distortion with {self.D.size} coefficients is not supported")
            self.map1, self.map2 = cv2.initUndistortRectifyMap(
                self.K, self.D, np.eye(3), self.K, (w, h), cv2.CV_16SC2
            )
        else:
            raise DistortionError(
                f"distortion model {model!r} with non-zero D is not supported (supported: {SUPPORTED_MODELS})"
            )

    def rectify(self, image: np.ndarray) -> np.ndarray:
        """The undistorted image (same size; outside the source image: 0)."""
        import cv2

        if image.shape[:2] != self.hw:
            raise DistortionError(f"image is {image.shape[:2]}, the calibration is for {self.hw}")
        return cv2.remap(image, self.map1, self.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def rectify_depth(self, depth: np.ndarray) -> np.ndarray:
        """A depth map aligned with the distorted image, moved onto the rectified pixels.

        Depth along the optical axis belongs to the 3D point, not the pixel, so values are carried over
        unchanged (nearest neighbour: no blending across edges); pixels with no source are NaN.
        """
        import cv2

        if depth.shape[:2] != self.hw:
            raise DistortionError(f"depth is {depth.shape[:2]}, the calibration is for {self.hw}")
        return cv2.remap(
            depth.astype(np.float32),
            self.map1,
            self.map2,
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float("nan"),
        )

    def camera_model(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(K, D, model) of the rectified images: the same K, no distortion."""
        return self.K.copy(), np.zeros(5), "plumb_bob"


def make_rectifier(K: np.ndarray, D, model: str, hw: tuple[int, int]) -> Rectifier | None:
    """A :class:`Rectifier`, or None when ``D`` is empty or all zero (nothing to rectify)."""
    d = np.asarray(D if D is not None else [], dtype=np.float64).ravel()
    if d.size == 0 or not np.any(d):
        return None
    if not np.all(np.isfinite(d)):
        raise DistortionError(f"distortion coefficients are not finite: {d.tolist()}")
    return Rectifier(K, d, model, hw)
