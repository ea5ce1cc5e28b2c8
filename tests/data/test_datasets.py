"""SCARED (raw and AF-SfMLearner layouts) and Hamlyn readers on tiny fixtures; shipped splits."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile
import torch

from endo_depth_model.data.hamlyn import open_hamlyn, open_hamlyn_sequence
from endo_depth_model.data.scared import (
    open_scared,
    open_scared_af,
    open_scared_keyframe,
    read_scene_points_depth,
    read_split,
)
from endo_depth_model.data.sequence import CorruptFileError, MissingFileError
from endo_depth_model.geometry import relative_pose

H, W = 8, 10
KL = [[1035.3, 0.0, 597.0], [0.0, 1035.0, 520.5], [0.0, 0.0, 1.0]]


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _pose_mm(deg: float, t_mm) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = _rot_y(deg), t_mm
    return T


def _scene_points(k: int) -> np.ndarray:
    """(2H, W, 3) XYZ mm: left rows Z = 40 + k + row + col / 10, right rows Z = 999; one hole at (2, 3)."""
    xyz = np.zeros((2 * H, W, 3), np.float32)
    rows, cols = np.mgrid[0:H, 0:W]
    xyz[:H, :, 0], xyz[:H, :, 1] = cols, rows
    xyz[:H, :, 2] = 40 + k + rows + cols / 10
    xyz[H:, :, 2] = 999.0
    xyz[2, 3] = 0.0
    return xyz


@pytest.fixture
def scared_root(tmp_path):
    """Raw layout: train/dataset1/keyframe1 with 3 frames."""
    kf = tmp_path / "train" / "dataset1" / "keyframe1" / "data"
    for sub in ("left", "scene_points", "frame_data"):
        (kf / sub).mkdir(parents=True)
    for k in range(3):
        rgb = np.full((H, W, 3), (10 * k, 100, 200), np.uint8)
        cv2.imwrite(str(kf / "left" / f"{k:06d}.png"), rgb[..., ::-1])
        tifffile.imwrite(
            kf / "scene_points" / f"scene_points{k:06d}.tiff", _scene_points(k), photometric="rgb"
        )
        data = {
            "camera-pose": _pose_mm(10 * k, [5.0 * k, 0, 2.0 * k]).tolist(),
            "camera-calibration": {"KL": KL},
        }
        (kf / "frame_data" / f"frame_data{k:06d}.json").write_text(json.dumps(data))
    return tmp_path


def test_scared_raw_values(scared_root):
    seq = open_scared(scared_root, split=["train/dataset1/keyframe1"])[0]
    assert len(seq) == 3 and seq.name == "train/dataset1/keyframe1"
    f = seq[1]
    assert f.rgb[0, 0].tolist() == [10, 100, 200]
    # depth: Z of the left rows, millimetres -> metres, 0 -> NaN
    assert f.depth.shape == (H, W) and f.depth.dtype == np.float32
    assert f.depth[5, 7] == pytest.approx((40 + 1 + 5 + 0.7) / 1000, rel=1e-6)
    assert np.isnan(f.depth[2, 3]) and np.nanmax(f.depth) < 0.1  # right-image rows (999 mm) not used
    # intrinsics: EndoDAV's normalised K scaled to the image
    np.testing.assert_allclose(f.K, [[0.82 * W, 0, 0.5 * W], [0, 1.02 * H, 0.5 * H], [0, 0, 1]])
    np.testing.assert_allclose(open_scared_keyframe(seq.meta["path"], intrinsics="calibration")[0].K, KL)
    # poses: camera-to-world in metres; relative motion composes as T_2_0 = T_2_1 @ T_1_0
    T = [torch.from_numpy(seq[k].T_world_cam)[None] for k in range(3)]
    np.testing.assert_allclose(seq[2].T_world_cam[:3, 3], [0.010, 0.0, 0.004])
    T10, T21, T20 = relative_pose(T[0], T[1]), relative_pose(T[1], T[2]), relative_pose(T[0], T[2])
    np.testing.assert_allclose((T21 @ T10).numpy(), T20.numpy(), atol=1e-12)
    np.testing.assert_allclose(T10[0, :3, :3].numpy(), _rot_y(-10), atol=1e-12)
    w2c = open_scared_keyframe(seq.meta["path"], pose_convention="world_to_camera")[2].T_world_cam
    np.testing.assert_allclose(w2c @ seq[2].T_world_cam, np.eye(4), atol=1e-12)


def test_scared_bad_inputs_name_the_path(scared_root, tmp_path):
    tiff = scared_root / "train/dataset1/keyframe1/data/scene_points/scene_points000001.tiff"
    tiff.write_bytes(tiff.read_bytes()[:300])  # truncated
    seq = open_scared(scared_root, split=["train/dataset1/keyframe1"])[0]
    with pytest.raises(CorruptFileError, match="scene_points000001.tiff"):
        seq[1]
    assert np.isfinite(seq[0].depth).any()  # other frames still read
    with pytest.raises(MissingFileError, match="keyframe9/data/left"):
        open_scared(scared_root, split=["train/dataset1/keyframe9"])
    with pytest.raises(MissingFileError, match="no_such_split.txt"):
        open_scared(scared_root, split=str(tmp_path / "no_such_split.txt"))
    bad_json = scared_root / "train/dataset1/keyframe1/data/frame_data/frame_data000002.json"
    bad_json.write_text("{not json")
    with pytest.raises(CorruptFileError, match="frame_data000002.json"):
        seq[2]
    with pytest.raises(CorruptFileError, match="has 5 rows"):
        tifffile.imwrite(tmp_path / "odd.tiff", np.zeros((5, W, 3), np.float32), photometric="rgb")
        read_scene_points_depth(tmp_path / "odd.tiff", image_height=H)


def test_scared_af_layout_split_runs_and_gt(tmp_path):
    data = tmp_path / "dataset3" / "keyframe4" / "image_02" / "data"
    (data / "groundtruth").mkdir(parents=True)
    for idx in range(1, 8):
        cv2.imwrite(str(data / f"{idx:010d}.png"), np.full((H, W, 3), idx, np.uint8))
        # AF-SfMLearner: image index i pairs with scene_points{i-1}
        tifffile.imwrite(
            data / "groundtruth" / f"scene_points{idx - 1:06d}.tiff",
            _scene_points(idx - 1),
            photometric="rgb",
        )
    split = tmp_path / "test_files.txt"
    split.write_text("".join(f"dataset3/keyframe4\t{i}\tl\n" for i in (1, 2, 3, 6, 7)))
    seqs = open_scared_af(tmp_path, split=split)
    assert [(s.name, len(s)) for s in seqs] == [("dataset3/keyframe4@1", 3), ("dataset3/keyframe4@6", 2)]
    f = seqs[1][1]  # image 7 -> scene_points000006
    assert f.rgb[0, 0, 0] == 7 and f.depth[0, 0] == pytest.approx((40 + 6) / 1000)
    gt = np.stack([np.full((H, W), 50.0 + i) for i in range(5)])
    np.savez_compressed(tmp_path / "gt_depths.npz", data=gt)
    seqs = open_scared_af(tmp_path, split=split, gt_depths=tmp_path / "gt_depths.npz")
    assert seqs[1][0].depth[3, 3] == pytest.approx(0.053)  # 4th split line
    all_frames = open_scared_af(tmp_path, keyframe="dataset3/keyframe4")
    assert len(all_frames) == 1 and len(all_frames[0]) == 7


@pytest.fixture
def hamlyn_root(tmp_path):
    for name, nested in (("rectified01", False), ("rectified04", True)):
        root = tmp_path / name / name if nested else tmp_path / name
        (root / "image01").mkdir(parents=True)
        (root / "depth01").mkdir()
        for k in range(3):
            cv2.imwrite(str(root / "image01" / f"{k:010d}.jpg"), np.full((H, W, 3), 128, np.uint8))
            depth = np.full((H, W), 60 + k, np.uint16)
            depth[0, 0] = 0
            cv2.imwrite(str(root / "depth01" / f"{k:010d}.png"), depth)
        (root / "intrinsics.txt").write_text("383.2 0 155.9\n0 383.2 124.3\n0 0 1\n")
    return tmp_path


def test_hamlyn_values_and_nesting(hamlyn_root):
    seqs = open_hamlyn(hamlyn_root, split=["rectified01", "rectified04"])
    assert [len(s) for s in seqs] == [3, 3]
    f = seqs[1][2]
    assert f.depth[4, 4] == pytest.approx(0.062) and np.isnan(f.depth[0, 0])
    np.testing.assert_allclose(f.K, [[383.2, 0, 155.9], [0, 383.2, 124.3], [0, 0, 1]])
    assert f.T_world_cam is None and abs(int(f.rgb[3, 3, 0]) - 128) <= 2
    (hamlyn_root / "rectified01" / "intrinsics.txt").unlink()
    with pytest.raises(MissingFileError, match="rectified01/intrinsics.txt"):
        open_hamlyn_sequence(hamlyn_root / "rectified01")
    assert open_hamlyn_sequence(hamlyn_root / "rectified01", K=np.eye(3))[0].K[0, 0] == 1.0


def test_shipped_splits_match_endodav():
    train, val, test = read_split("train"), read_split("val"), read_split("test")
    assert (len(train), len(val), len(test)) == (24, 3, 8)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert {int(n.split("/")[1][len("dataset") :]) for n in train} == set(range(1, 8))
    assert sorted(val) == ["train/dataset3/keyframe3", "train/dataset4/keyframe3", "train/dataset5/keyframe1"]
    assert sorted(test) == [f"test/dataset{d}/keyframe{k}" for d in (8, 9) for k in range(4)]
    hamlyn = read_split("hamlyn_val")
    assert len(hamlyn) == 21 and hamlyn[0] == "rectified01" and "rectified27" in hamlyn
    assert not {f"rectified{n:02d}" for n in (2, 3, 7, 8, 10, 13)} & set(hamlyn)


def test_open_sequences_finds_dataset_roots(scared_root, hamlyn_root, tmp_path):
    from endo_depth_model.data import open_sequences

    assert scared_root == hamlyn_root  # both fixtures fill tmp_path: a folder holding two datasets
    found = [(s.name, len(s), s.meta["source"]) for s in open_sequences(tmp_path)]
    assert found == [
        ("rectified01", 3, "hamlyn"),
        ("rectified04", 3, "hamlyn"),  # nested rectified04/rectified04
        ("dataset1/keyframe1", 3, "scared"),  # train/dataset1/keyframe1: three levels down
    ]
    split = tmp_path / "hamlyn_split.txt"
    split.write_text("rectified04\nrectified01\n")
    ham = open_sequences(f"hamlyn:{hamlyn_root}?split={split}")
    assert [s.name for s in ham] == ["rectified04", "rectified01"]
    with pytest.raises(MissingFileError, match="rectified05"):
        open_sequences(f"hamlyn:{hamlyn_root}")  # the fixture holds only 01 and 04 of EndoDAV's 21
