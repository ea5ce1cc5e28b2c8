"""The project's one converter between ``sensor_msgs/Image`` fields and numpy arrays.

Pure Python + numpy, no ROS import: the ROS node calls it on message fields, the rosbag reader and
writer call it on deserialised messages. Supported encodings (REP 118 for depth):

=========  =======  ========  ==========================================
encoding   dtype    channels  meaning
=========  =======  ========  ==========================================
rgb8       uint8    3         colour, R G B
bgr8       uint8    3         colour, B G R (returned as stored, not swapped)
rgba8      uint8    4         colour with alpha
bgra8      uint8    4         colour with alpha, B G R A
mono8      uint8    1         grey
mono16     uint16   1         grey
16UC1      uint16   1         depth in millimetres (REP 118)
32FC1      float32  1         depth in metres, NaN where invalid (REP 118)
=========  =======  ========  ==========================================

Arrays come back as (H, W) for one channel and (H, W, C) otherwise, in the encoding's channel order
and native byte order. ``step`` (bytes per row) may exceed ``width * bytes_per_pixel``: the padding
is skipped on decode. ``is_bigendian`` is honoured for multi-byte encodings.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "COMPRESSED_FORMATS",
    "decode_compressed",
    "ENCODINGS",
    "ImageEncodingError",
    "bytes_per_pixel",
    "image_to_numpy",
    "numpy_to_image_fields",
    "to_rgb8",
]


class ImageEncodingError(ValueError):
    """Image fields cannot be converted (unsupported encoding, bad step, size mismatch, zero size)."""


# encoding -> (numpy scalar type, channels)
ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def _lookup(encoding: str) -> tuple[np.dtype, int]:
    try:
        scalar, channels = ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        ) from None
    return np.dtype(scalar), channels


def bytes_per_pixel(encoding: str) -> int:
    """Bytes of one pixel in ``encoding`` (e.g. 3 for rgb8, 4 for 32FC1)."""
    dtype, channels = _lookup(encoding)
    return dtype.itemsize * channels


def image_to_numpy(
    encoding: str, height: int, width: int, step: int, is_bigendian: bool | int, data
) -> np.ndarray:
    """Decode ``sensor_msgs/Image`` fields into a new array.

    ``data`` holds exactly ``step * height`` bytes: bytes, bytearray, memoryview, ``array.array('B')``
    (rclpy), a uint8 numpy array (rosbags) or a list of ints. Returns (H, W) for one-channel
    encodings, (H, W, C) otherwise, with the dtype of the encoding in native byte order; the result
    is a copy (safe to keep after the message is gone).
    """
    dtype, channels = _lookup(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"zero-size image: height={height}, width={width} ({encoding})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageEncodingError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{channels * dtype.itemsize}"
            f" = {row_bytes} ({encoding})"
        )
    try:
        buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints or a non-contiguous array
        try:
            buf = np.asarray(data, dtype=np.uint8).ravel()
        except (TypeError, ValueError) as exc:
            raise ImageEncodingError(f"image data of type {type(data).__name__} is not bytes: {exc}") from exc
    needed = step * height
    if buf.size != needed:
        raise ImageEncodingError(
            f"data has {buf.size} bytes but step*height = {step}*{height} = {needed} ({encoding})"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    stored = dtype.newbyteorder(">" if is_bigendian else "<") if dtype.itemsize > 1 else dtype
    out = np.ascontiguousarray(rows).view(stored).reshape(height, width, channels)
    out = out.astype(dtype, copy=True)  # native byte order, owns its memory
    return out[..., 0] if channels == 1 else out


def numpy_to_image_fields(array: np.ndarray, encoding: str, is_bigendian: bool = False) -> dict:
    """Encode an array as ``sensor_msgs/Image`` fields.

    ``array`` is (H, W) or (H, W, 1) for one-channel encodings, (H, W, C) otherwise, with the dtype of
    the encoding (a float array for 32FC1 is cast to float32; other dtype mismatches are errors so
    that, e.g., depth in metres is never silently truncated to uint16). Returns
    ``dict(encoding, height, width, step, is_bigendian, data: bytes)`` with ``step = width * bpp``.
    """
    dtype, channels = _lookup(encoding)
    arr = np.asarray(array)
    if arr.ndim == 3 and channels == 1 and arr.shape[2] == 1:
        arr = arr[..., 0]
    expected_ndim = 2 if channels == 1 else 3
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ImageEncodingError(f"array of shape {arr.shape} does not fit {encoding}: expected {want}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageEncodingError(f"zero-size image of shape {arr.shape} ({encoding})")
    if arr.dtype != dtype:
        if encoding == "32FC1" and np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        else:
            raise ImageEncodingError(f"array dtype {arr.dtype} does not match {encoding} (needs {dtype})")
    stored = dtype.newbyteorder(">" if is_bigendian else "<") if dtype.itemsize > 1 else dtype
    payload = np.ascontiguousarray(arr, dtype=stored).tobytes()
    height, width = arr.shape[:2]
    return {
        "encoding": encoding,
        "height": int(height),
        "width": int(width),
        "step": int(width * channels * dtype.itemsize),
        "is_bigendian": bool(is_bigendian) if dtype.itemsize > 1 else False,
        "data": payload,
    }


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Colour or grey image decoded by :func:`image_to_numpy` -> (H, W, 3) uint8 RGB.

    mono16 is scaled by 1/257 to 8 bits. Depth encodings (16UC1, 32FC1) are rejected: they are not
    pictures.
    """
    if encoding in ("16UC1", "32FC1"):
        raise ImageEncodingError(f"{encoding} is a depth encoding, not a colour image")
    _lookup(encoding)
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return np.ascontiguousarray(array[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(array[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(array[..., 2::-1])
    if encoding == "mono8":
        return np.repeat(array[..., None], 3, axis=2)
    grey = (array.astype(np.uint32) + 128) // 257
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)


#: image codecs a ``sensor_msgs/CompressedImage`` may carry that :func:`decode_compressed` reads
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


def decode_compressed(data, fmt: str = "") -> np.ndarray:
    """``sensor_msgs/CompressedImage`` payload -> (H, W, 3) uint8 RGB.

    ``fmt`` is the message's ``format`` field (``jpeg``, ``png``, or image_transport's
    ``rgb8; jpeg compressed bgr8``); colour order is taken from the codec (OpenCV decodes BGR, which is
    what image_transport's compressed publisher encodes), grey images are replicated to 3 channels.
    :class:`ImageEncodingError` for a format that is not JPEG or PNG (e.g. compressedDepth) or bytes
    that do not decode.
    """
    import cv2

    low = (fmt or "").lower()
    if "compresseddepth" in low:
        raise ImageEncodingError(f"compressed format {fmt!r} is a depth codec, not an endoscope colour image")
    if low and not any(f in low for f in COMPRESSED_FORMATS):
        raise ImageEncodingError(f"compressed format {fmt!r} is not one of {COMPRESSED_FORMATS}")
    buf = np.frombuffer(bytes(data), np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise ImageEncodingError(f"{buf.size} bytes do not decode as {fmt or 'an image'}")
    return np.ascontiguousarray(img[..., ::-1])
