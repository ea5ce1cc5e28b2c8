"""The Image <-> numpy converter: round trips for every encoding, step padding, byte order, errors."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.image_encoding import (
    ENCODINGS,
    ImageEncodingError,
    bytes_per_pixel,
    image_to_numpy,
    numpy_to_image_fields,
    to_rgb8,
)


def _random(encoding: str, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scalar, channels = ENCODINGS[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    if scalar is np.float32:
        arr = rng.uniform(0.01, 0.3, shape).astype(np.float32)
        arr[0, 0] = np.nan  # REP 118 invalid depth survives the trip
        return arr
    return rng.integers(0, np.iinfo(scalar).max, shape, endpoint=True).astype(scalar)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_round_trip_every_encoding(encoding, big_endian):
    arr = _random(encoding)
    fields = numpy_to_image_fields(arr, encoding, is_bigendian=big_endian)
    assert fields["step"] == arr.shape[1] * bytes_per_pixel(encoding)
    assert len(fields["data"]) == fields["step"] * fields["height"]
    back = image_to_numpy(**fields)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)  # NaN positions compare equal


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_step_padding_is_skipped(encoding):
    arr = _random(encoding, h=4, w=3, seed=1)
    fields = numpy_to_image_fields(arr, encoding)
    pad = 5
    rows = [fields["data"][r * fields["step"] : (r + 1) * fields["step"]] + b"\xab" * pad for r in range(4)]
    back = image_to_numpy(encoding, 4, 3, fields["step"] + pad, False, b"".join(rows))
    np.testing.assert_array_equal(back, arr)


def test_byte_order_of_known_values():
    data = bytes([0x01, 0x02, 0x03, 0x04])
    assert image_to_numpy("16UC1", 1, 2, 4, True, data).tolist() == [[0x0102, 0x0304]]
    assert image_to_numpy("16UC1", 1, 2, 4, False, data).tolist() == [[0x0201, 0x0403]]
    one_be = np.array([1.5], dtype=">f4").tobytes()
    assert image_to_numpy("32FC1", 1, 1, 4, 1, one_be)[0, 0] == 1.5
    # result is native byte order and independent of the message buffer
    buf = bytearray(data)
    out = image_to_numpy("mono16", 1, 2, 4, True, buf)
    buf[0] = 0xFF
    assert out.dtype == np.dtype(np.uint16) and out.dtype.isnative and out.tolist() == [[0x0102, 0x0304]]


def test_colour_channel_orders_to_rgb8():
    rgb = np.array([[[10, 20, 30]]], np.uint8)
    bgr = rgb[..., ::-1].copy()
    assert to_rgb8(image_to_numpy(**numpy_to_image_fields(bgr, "bgr8")), "bgr8").tolist() == rgb.tolist()
    bgra = np.array([[[30, 20, 10, 255]]], np.uint8)
    assert to_rgb8(bgra, "bgra8").tolist() == rgb.tolist()
    assert to_rgb8(np.array([[65535]], np.uint16), "mono16").tolist() == [[[255, 255, 255]]]
    with pytest.raises(ImageEncodingError, match="depth encoding"):
        to_rgb8(np.zeros((1, 1), np.float32), "32FC1")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("yuv422", 2, 2, 4, False, bytes(8)), "unsupported image encoding 'yuv422'"),
        (("rgb8", 2, 2, 5, False, bytes(10)), "step 5 is smaller than"),
        (("rgb8", 2, 2, 6, False, bytes(11)), "data has 11 bytes but step\\*height = 6\\*2 = 12"),
        (("mono8", 2, 2, 2, False, bytes(5)), "data has 5 bytes"),
        (("mono8", 0, 4, 4, False, b""), "zero-size image"),
    ],
)
def test_bad_fields_raise_clear_errors(args, reason):
    with pytest.raises(ImageEncodingError, match=reason):
        image_to_numpy(*args)


def test_encode_rejects_mismatched_arrays():
    with pytest.raises(ImageEncodingError, match="does not match 16UC1"):
        numpy_to_image_fields(np.zeros((2, 2), np.float32), "16UC1")  # metres must not truncate to mm
    with pytest.raises(ImageEncodingError, match="expected \\(H, W, 3\\)"):
        numpy_to_image_fields(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ImageEncodingError, match="zero-size"):
        numpy_to_image_fields(np.zeros((0, 3), np.uint8), "mono8")
    # float64 depth is accepted for 32FC1 and stored as float32
    f = numpy_to_image_fields(np.full((1, 2), 0.25), "32FC1")
    assert image_to_numpy(**f).tolist() == [[0.25, 0.25]]


def test_accepts_the_buffer_types_of_rclpy_and_rosbags():
    import array

    arr = _random("rgb8", h=2, w=3, seed=4)
    raw = numpy_to_image_fields(arr, "rgb8")["data"]
    for data in (
        raw,
        bytearray(raw),
        memoryview(raw),
        array.array("B", raw),
        np.frombuffer(raw, np.uint8),
        list(raw),
        np.repeat(np.frombuffer(raw, np.uint8), 2)[::2],
    ):
        np.testing.assert_array_equal(image_to_numpy("rgb8", 2, 3, 9, False, data), arr)
    with pytest.raises(ImageEncodingError, match="not bytes"):
        image_to_numpy("rgb8", 2, 3, 9, False, ["x"] * 18)
