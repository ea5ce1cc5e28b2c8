"""open_source / open_sequences dispatch, layout detection, and the `endo-depth synth` command."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.cli import main
from endo_depth_model.data import (
    DataError,
    MissingFileError,
    UnknownLayoutError,
    detect_layout,
    open_sequences,
    open_source,
)
from endo_depth_model.data.folder import write_folder
from endo_depth_model.data.rosbag import write_rosbag
from endo_depth_model.data.video import write_video


def test_synth_spec_opens_the_simulator():
    frames = list(open_source("synth:source?seed=4&n_frames=2&height=24&width=32"))
    assert len(frames) == 2 and frames[0].rgb.shape == (24, 32, 3) and frames[0].depth is not None
    with pytest.raises(Exception, match="bogus"):
        open_sequences("synth:target?bogus=1")


def test_detects_each_layout(tmp_path, synth_frames):
    write_folder(synth_frames[:2], tmp_path / "col" / "seqA", fps=30)
    write_folder(synth_frames[2:], tmp_path / "col" / "seqB", fps=30)
    write_rosbag(synth_frames[:2], tmp_path / "bag")
    write_video((f.rgb for f in synth_frames[:2]), tmp_path / "clip.mp4", fps=30)
    (tmp_path / "kf" / "data" / "left").mkdir(parents=True)
    (tmp_path / "ham" / "image01").mkdir(parents=True)
    (tmp_path / "af" / "image_02" / "data").mkdir(parents=True)
    assert detect_layout(tmp_path / "col" / "seqA") == "folder"
    assert detect_layout(tmp_path / "col") == "collection"
    assert detect_layout(tmp_path / "bag") == "rosbag"
    assert detect_layout(tmp_path / "clip.mp4") == "video"
    assert detect_layout(tmp_path / "kf") == "scared-keyframe"
    assert detect_layout(tmp_path / "ham") == "hamlyn-sequence"
    assert detect_layout(tmp_path / "af") == "af-keyframe"
    seqs = open_sequences(tmp_path / "col")
    assert [(s.name, len(s)) for s in seqs] == [("seqA", 2), ("seqB", 3)]
    frames = list(open_source(tmp_path / "bag"))
    np.testing.assert_array_equal(frames[1].depth, synth_frames[1].depth)
    assert len(list(open_source(f"rosbag:{tmp_path / 'bag'}?topic=/endoscope/image_raw"))) == 2


def test_a_video_gets_its_intrinsics_as_numbers_or_a_field_of_view(tmp_path, synth_frames):
    write_video((f.rgb for f in synth_frames[:2]), tmp_path / "clip.mp4", fps=30)
    clip = tmp_path / "clip.mp4"
    given = open_sequences(f"video:{clip}?K=500,510,60.5,40.5")[0]
    np.testing.assert_allclose(given[0].K, [[500, 0, 60.5], [0, 510, 40.5], [0, 0, 1]])
    w = given[0].rgb.shape[1]
    fov = open_sequences(f"video:{clip}?fov_deg=60")[0][0].K
    assert fov[0, 0] == pytest.approx(w / 2 / np.tan(np.radians(30)))
    default = open_sequences(clip)[0][0].K
    assert default[0, 0] == pytest.approx(w / 2)  # 90 deg assumed
    with pytest.raises(DataError, match="four numbers fx,fy,cx,cy"):
        open_sequences(f"video:{clip}?K=500,510")


def test_unknown_and_missing_paths_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnknownLayoutError, match="empty"):
        open_sequences(tmp_path / "empty")
    with pytest.raises(UnknownLayoutError, match="notes.txt"):
        open_sequences(tmp_path / "notes.txt")
    with pytest.raises(MissingFileError, match="does_not_exist"):
        list(open_source(tmp_path / "does_not_exist"))


def test_synth_command_writes_all_formats(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "synth",
        "--out",
        str(out),
        "--frames",
        "3",
        "--size",
        "24",
        "32",
        "--seed",
        "2",
        "--formats",
        "folder",
        "mp4",
        "mcap",
        "sqlite3",
    ]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "3 x 24x32" in summary and "ms/frame" in summary
    folder = open_sequences(out / "frames")[0]
    mcap = open_sequences(out / "bag_mcap")[0]
    sqlite = open_sequences(out / "bag_sqlite3")[0]
    video = open_sequences(out / "video.mp4")[0]
    assert len(folder) == len(mcap) == len(sqlite) == len(video) == 3
    np.testing.assert_array_equal(folder[2].rgb, mcap[2].rgb)
    np.testing.assert_array_equal(mcap[1].depth, sqlite[1].depth)
    assert (out / "config.yaml").is_file()
    assert main(argv) == 2  # refuses to overwrite
    assert main([*argv, "--overwrite", "--formats", "folder", "--shape", "cavity"]) == 0
    assert np.isfinite(open_sequences(out / "frames")[0][0].depth).all()


def test_synth_config_file_reproduces_the_sequence(tmp_path):
    first = tmp_path / "a"
    assert (
        main(["synth", "--out", str(first), "--frames", "2", "--size", "16", "24", "--formats", "folder"])
        == 0
    )
    again = tmp_path / "b"
    argv = ["synth", "--out", str(again), "--config", str(first / "config.yaml"), "--formats", "folder"]
    assert main(argv) == 0
    a, b = open_sequences(first / "frames")[0], open_sequences(again / "frames")[0]
    np.testing.assert_array_equal(a[1].rgb, b[1].rgb)
    (tmp_path / "bad.yaml").write_text("seed: 1\nwarp_speed: 9\n")
    assert main(["synth", "--out", str(tmp_path / "c"), "--config", str(tmp_path / "bad.yaml")]) == 2
