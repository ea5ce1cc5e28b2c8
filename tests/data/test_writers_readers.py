"""Folder, MP4 and rosbag2 (mcap, sqlite3) writers and readers: round trips with measured bounds."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from endo_depth_model.data.folder import open_folder, write_folder
from endo_depth_model.data.rosbag import RosbagWriter, open_rosbag, write_rosbag
from endo_depth_model.data.sequence import CorruptFileError, DataError, MissingFileError
from endo_depth_model.data.video import open_video, write_video

from .conftest import assert_frames_equal


def test_folder_round_trip_png16(tmp_path, synth_frames):
    n = write_folder(synth_frames, tmp_path / "f", fps=30.0)
    seq = open_folder(tmp_path / "f")
    assert n == len(seq) == 5 and seq.fps == 30.0 and seq.meta["intrinsics"] == "K.json"
    for a, b in zip(synth_frames, seq, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_allclose(a.K, b.K, atol=1e-12)
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=1e-9)  # 9 significant digits
        assert a.stamp_ns == b.stamp_ns
        # 16-bit PNG in 0.1 mm units: quantisation error at most 0.05 mm
        assert np.nanmax(np.abs(a.depth - b.depth)) <= 0.5e-4 + 1e-7
        np.testing.assert_array_equal(np.isnan(a.depth), np.isnan(b.depth))
    raw = cv2.imread(str(tmp_path / "f" / "depth" / "000002.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[10, 20] == round(synth_frames[2].depth[10, 20] * 10000)
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["depth_unit"].startswith("0.1 mm")


def test_folder_round_trip_npy_is_exact(tmp_path, synth_frames):
    write_folder(synth_frames[:2], tmp_path / "f", fps=25.0, depth_format="npy")
    for a, b in zip(synth_frames[:2], open_folder(tmp_path / "f"), strict=True):
        np.testing.assert_array_equal(a.depth, b.depth)


def test_plain_image_folder_gets_assumed_intrinsics(tmp_path, synth_frames):
    for i, f in enumerate(synth_frames[:3]):
        cv2.imwrite(str(tmp_path / f"img{10 - i * 5}.png"), f.rgb[..., ::-1])  # img10, img5, img0
    seq = open_folder(tmp_path, fov_deg=90.0)
    assert [f.rgb.tolist() for f in seq][0] == synth_frames[2].rgb.tolist()  # natural order: img0 first
    K = seq[0].K
    assert (
        K[0, 0] == pytest.approx(32.0) and K[0, 2] == pytest.approx(31.5) and K[1, 2] == pytest.approx(23.5)
    )
    assert seq[0].depth is None and seq[0].T_world_cam is None and "assumed" in seq.meta["intrinsics"]
    (tmp_path / "img99.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(CorruptFileError, match="img99.png"):
        open_folder(tmp_path)[3]


def test_a_folder_frame_of_another_size_is_named_with_the_fix(tmp_path):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "000000.png"), rng.integers(0, 255, (48, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "000001.png"), rng.integers(0, 255, (40, 64, 3), np.uint8))
    seq = open_folder(tmp_path)
    assert seq[0].rgb.shape == (48, 64, 3)
    with pytest.raises(DataError) as exc:
        seq[1]
    message = str(exc.value)
    assert str(tmp_path / "000001.png") in message and "40x64" in message and "48x64" in message
    assert "resize the frames" in message and "split the folder" in message and "reset()" not in message


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rosbag_round_trip_is_exact(tmp_path, synth_frames, storage):
    bag = tmp_path / f"bag_{storage}"
    assert write_rosbag(synth_frames, bag, storage=storage) == 5
    seq = open_rosbag(bag)
    assert seq.meta["image_topic"] == "/endoscope/image_raw"
    assert seq.meta["camera_info_topic"] == "/endoscope/camera_info"
    assert seq.meta["depth_topic"] == "/ground_truth/depth" and seq.meta["pose_topic"] == "/ground_truth/pose"
    streamed = list(seq)
    assert len(seq) == len(streamed) == 5
    for a, b in zip(synth_frames, streamed, strict=True):
        assert_frames_equal(a, b)
    assert_frames_equal(synth_frames[3], seq[3])  # random access
    assert [f.index for f in streamed] == list(range(5))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_rosbag_with_compressed_images_reads_like_raw(tmp_path, synth_frames, fmt):
    """A bag of CompressedImage (image_transport naming: <ns>/image_raw/compressed) opens with its
    camera_info, ground truth and poses; PNG is lossless, JPEG within its codec bound."""
    from endo_depth_ros.tools.bag import convert_to_bag

    bag = tmp_path / "bag"
    with RosbagWriter(bag, image_format=fmt) as writer:
        for f in synth_frames:
            writer.add(f)
    seq = open_rosbag(bag)
    assert seq.meta["image_topic"] == "/endoscope/image_raw/compressed"
    assert seq.meta["camera_info_topic"] == "/endoscope/camera_info"
    frames = list(seq)
    assert len(frames) == len(synth_frames)
    for a, b in zip(synth_frames, frames, strict=True):
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_allclose(a.K, b.K)
        err = np.abs(a.rgb.astype(int) - b.rgb.astype(int))
        assert err.max() == 0 if fmt == "png" else err.mean() < 4
    # bag convert reads compressed bags too (into raw images)
    assert convert_to_bag(str(bag), tmp_path / "raw") == len(synth_frames)
    assert open_rosbag(tmp_path / "raw").meta["image_topic"] == "/endoscope/image_raw"
    with pytest.raises(DataError, match="image_format"):
        RosbagWriter(tmp_path / "x", image_format="webp")


def test_rosbag_type_hashes_match_jazzy_and_kilted():
    from rosbags.typesys import Stores, get_typestore

    jazzy, kilted = get_typestore(Stores.ROS2_JAZZY), get_typestore(Stores.ROS2_KILTED)
    for name in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "geometry_msgs/msg/PoseStamped"):
        assert jazzy.hash_rihs01(name) == kilted.hash_rihs01(name)


def test_rosbag_topic_choice_and_errors(tmp_path, synth_frames):
    bag = tmp_path / "two"
    with RosbagWriter(bag, "mcap", image_topic="/left/image_raw", info_topic="/left/camera_info") as w:
        for f in synth_frames[:2]:
            w.add(f)
    # a second colour camera in another bag is fine; here add no GT -> bag without depth/pose topics
    plain = tmp_path / "plain"
    write_rosbag([type(f)(rgb=f.rgb, K=f.K, stamp_ns=f.stamp_ns) for f in synth_frames[:2]], plain)
    seq = open_rosbag(plain)
    assert seq.meta["depth_topic"] is None and seq[1].depth is None and seq[1].T_world_cam is None
    assert open_rosbag(bag).meta["camera_info_topic"] == "/left/camera_info"
    with pytest.raises(DataError, match="no sensor_msgs/Image topic '/right/image_raw'"):
        open_rosbag(bag, image_topic="/right/image_raw")
    with pytest.raises(MissingFileError, match="nothing_here"):
        open_rosbag(tmp_path / "nothing_here")
    with pytest.raises(DataError, match="already exists"):
        write_rosbag(synth_frames[:1], bag)


def test_mp4_round_trip_within_codec_bound(tmp_path, synth_frames):
    """H.264 at crf 18: measured mean |error| 3.4-4.0 grey levels per frame at 48x64 (tiny frames code
    worst); the bound is 6."""
    path = tmp_path / "v.mp4"
    assert write_video((f.rgb for f in synth_frames), path, fps=30.0) == 5
    seq = open_video(path)
    frames = list(seq)
    assert len(seq) == len(frames) == 5 and seq.fps == pytest.approx(30.0)
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in synth_frames]
    errors = [np.abs(a.rgb.astype(int) - b.rgb).mean() for a, b in zip(synth_frames, frames, strict=True)]
    assert max(errors) < 6.0
    np.testing.assert_array_equal(seq[2].rgb, frames[2].rgb)  # random access decodes the same
    with pytest.raises(DataError, match="even"):
        write_video([np.zeros((5, 6, 3), np.uint8)], tmp_path / "odd.mp4", fps=10)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(CorruptFileError, match="bad.mp4"):
        open_video(tmp_path / "bad.mp4")


def _distort(frames, K, D):
    """The frames as a camera with plumb_bob distortion ``D`` sees them: each distorted pixel samples the
    pinhole image where its ray lands (OpenCV's own model), colour bilinear, depth nearest."""
    from endo_depth_model.data.sequence import Frame

    h, w = frames[0].rgb.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    und = cv2.undistortPoints(pts, K, np.asarray(D), P=K).reshape(h, w, 2).astype(np.float32)
    out = []
    for f in frames:
        rgb = cv2.remap(f.rgb, und[..., 0], und[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        depth = cv2.remap(f.depth, und[..., 0], und[..., 1], cv2.INTER_NEAREST, borderValue=float("nan"))
        out.append(
            Frame(rgb=rgb, K=K, depth=depth, T_world_cam=f.T_world_cam, stamp_ns=f.stamp_ns, index=f.index)
        )
    return out


def test_a_distorted_recording_is_rectified_on_reading_never_taken_as_pinhole(tmp_path):
    """A bag whose CameraInfo says plumb_bob distortion (images and ground-truth depth made through
    that lens from exact pinhole renders): reading it gives back the pinhole frames, colour and depth,
    with the bag's K, and says so in meta; giving K as well, or an unknown model, is refused by name."""
    from endo_depth_model.data.simulator import EndoscopySimulator, preset

    truth = list(EndoscopySimulator(preset("target", n_frames=3, seed=5, height=120, width=160)))
    K = truth[0].K
    D = [-0.3, 0.09, 0.0, 0.0, 0.0]
    write_rosbag(_distort(truth, K, D), tmp_path / "lens", distortion=("plumb_bob", D))
    seq = open_rosbag(tmp_path / "lens")
    assert seq.meta["distortion"] == "plumb_bob"
    inner = np.zeros(truth[0].rgb.shape[:2], bool)
    inner[12:-12, 16:-16] = True  # away from the edges the lens pushed out of view
    for t, f, raw in zip(truth, seq, _distort(truth, K, D), strict=True):
        np.testing.assert_allclose(f.K, K)
        err = np.abs(f.rgb.astype(float) - t.rgb)[inner].mean()
        err_raw = np.abs(raw.rgb.astype(float) - t.rgb)[inner].mean()
        assert err < 0.35 * err_raw, (err, err_raw)  # rectified: close to the pinhole render
        ok = inner & np.isfinite(f.depth) & np.isfinite(t.depth)
        assert ok.mean() > 0.6 * inner.mean()
        rel = np.abs(f.depth[ok] / t.depth[ok] - 1)
        rel_raw = np.abs(raw.depth[ok] / t.depth[ok] - 1)  # NaN where the lens moved it out of view
        assert np.median(rel) < 0.02 and np.median(rel) < 0.5 * np.nanmedian(rel_raw), (rel, rel_raw)
    with pytest.raises(DataError, match="plumb_bob lens distortion.*drop K"):
        open_rosbag(tmp_path / "lens", K=K)
    write_rosbag(truth[:1], tmp_path / "odd", distortion=("kannala_brandt_x", [0.1, 0, 0, 0]))
    with pytest.raises(DataError, match="odd.*kannala_brandt_x.*not supported"):
        open_rosbag(tmp_path / "odd")
    plain = open_rosbag(_write_plain(truth[:1], tmp_path / "plain"))
    assert plain.meta["distortion"] == "none"
    np.testing.assert_array_equal(plain[0].rgb, truth[0].rgb)


def _write_plain(frames, path):
    write_rosbag(frames, path)
    return path
