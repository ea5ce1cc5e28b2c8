"""``endo-depth infer`` over an MP4 and an image folder: depth arrays, 16-bit PNGs, the colourised MP4
beside the input, point clouds and meta.json agree with each other and with the frame count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from endo_depth_model.infer import InferError, load_depth_model, source_path, write_ply

N, H, W = 14, 28, 42


def _frame_folder(tmp_path, frames) -> Path:
    """``frames`` written as numbered PNGs into ``tmp_path/imgs`` (an image-folder source)."""
    from endo_depth_model.data.sequence import write_rgb

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(frames):
        write_rgb(folder / f"{i:04d}.png", f)
    return folder


def _frames(n=N):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    out = []
    for i in range(n):
        base = 120 + 80 * np.sin(0.3 * x + 0.2 * i)[..., None] * np.cos(0.2 * y)[..., None]
        out.append(np.clip(base + rng.normal(0, 5, (H, W, 3)), 0, 255).astype(np.uint8))
    return out


def _read_video(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_infer_mp4_writes_all_outputs(tmp_path, vitt_weights, capsys):
    import cv2

    from endo_depth_model.cli import main
    from endo_depth_model.data.video import write_video

    video = tmp_path / "clip.mp4"
    write_video(_frames(), video, fps=10)
    out = tmp_path / "out"
    argv = [
        "infer", str(video), "--encoder", "vitt", "--weights", str(vitt_weights), "--input-size", "28", "42",
        "--device", "cpu", "--out", str(out), "--window", "8", "--overlap", "4", "--blend", "2",
        "--pointcloud-every", "5",
    ]  # fmt: skip
    assert main(argv) == 0
    seq_dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(seq_dirs) == 1
    seq = seq_dirs[0]
    meta = json.loads((seq / "meta.json").read_text())
    assert meta["n_frames"] == N and meta["encoded_frames"] == N and meta["stride"] == 4
    depth = [np.load(seq / "depth" / f"{i:06d}.npy") for i in range(N)]
    assert all(
        d.shape == (H, W) and d.dtype == np.float32 and np.isfinite(d).all() and (d > 0).all() for d in depth
    )
    png = cv2.imread(str(seq / "depth_png" / "000003.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (H, W)
    np.testing.assert_allclose(png / meta["png_scale"], depth[3], atol=1.0 / meta["png_scale"])
    # colourised video in the given --out (not beside the input): input | depth, one frame per input frame
    mp4 = out / f"{seq.name}_depth.mp4"
    assert not (tmp_path / "clip_depth.mp4").exists()
    assert meta["video"] == str(mp4) and mp4.is_file()
    frames = _read_video(mp4)
    assert len(frames) == N and frames[0].shape == (H, 2 * W, 3)
    plys = sorted((seq / "points").glob("*.ply"))
    assert [p.name for p in plys] == ["000000.ply", "000005.ply", "000010.ply"]
    assert b"element vertex 1176" in plys[0].read_bytes()[:200]  # 28 x 42 points
    # window 8, stride 4: contexts at lags 10 and 8; the third pass is padded with the last frame
    assert [(p["first"], p["last"]) for p in meta["alignment"]] == [(0, 7), (1, 11), (5, 15)]
    assert "frames in" in capsys.readouterr().out


def test_infer_image_folder_no_video(tmp_path, vitt_weights):
    from endo_depth_model.cli import main

    folder = _frame_folder(tmp_path, _frames(9))
    out = tmp_path / "o"
    argv = [
        "infer", str(folder), "--encoder", "vitt", "--weights", str(vitt_weights),
        "--input-size", "28", "42", "--device", "cpu", "--out", str(out), "--no-video", "--no-png",
    ]  # fmt: skip
    assert main(argv) == 0
    seq = next(p for p in out.iterdir() if p.is_dir())
    assert len(list((seq / "depth").glob("*.npy"))) == 9
    assert not (seq / "depth_png").exists() and not (tmp_path / "imgs_depth.mp4").exists()


def test_infer_errors_are_reported(tmp_path, capsys):
    from endo_depth_model.cli import main

    assert main(["infer", str(tmp_path / "nope.mp4"), "--encoder", "vitt", "--device", "cpu"]) == 1
    assert "nope.mp4" in capsys.readouterr().out
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for cmd in ("infer", "eval"):
        assert main([cmd, str(tmp_path / "nope.mp4"), "--weights", str(bad), "--device", "cpu"]) == 1
        assert "corrupt or truncated" in capsys.readouterr().out
    with pytest.raises(InferError, match="adapter file not found"):
        load_depth_model("vitt", adapter=tmp_path / "missing.safetensors")
    with pytest.raises(InferError, match="unknown VDA config"):
        load_depth_model("vitx")


def test_infer_on_frames_of_mixed_sizes_names_the_file_and_leaves_no_empty_folders(
    tmp_path, vitt_weights, capsys
):
    from endo_depth_model.cli import main
    from endo_depth_model.data.sequence import write_rgb

    folder = tmp_path / "imgs"
    folder.mkdir()
    frames = _frames(2)
    write_rgb(folder / "0000.png", frames[0])
    write_rgb(folder / "0001.png", frames[1][: H - 6])
    out = tmp_path / "runs" / "o"
    argv = [
        "infer", str(folder), "--encoder", "vitt", "--weights", str(vitt_weights),
        "--input-size", "28", "42", "--device", "cpu", "--out", str(out), "--pointcloud-every", "1",
    ]  # fmt: skip
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert str(folder / "0001.png") in printed and "resize the frames" in printed and "reset()" not in printed
    assert not (tmp_path / "runs").exists()  # neither the folders it made nor their parents are left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_write_ply_and_source_path(tmp_path):
    pts = np.array([[0.0, 1.0, 2.0], [np.nan, 0, 0], [3.0, 4.0, 5.0]], np.float32)
    cols = np.array([[255, 0, 0], [0, 0, 0], [0, 255, 0]], np.uint8)
    assert write_ply(tmp_path / "a.ply", pts, cols) == 2
    raw = (tmp_path / "a.ply").read_bytes()
    header, body = raw.split(b"end_header\n")
    assert b"element vertex 2" in header and len(body) == 2 * 15
    rec = np.frombuffer(body, dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    np.testing.assert_array_equal(rec["p"], pts[[0, 2]])
    np.testing.assert_array_equal(rec["c"], cols[[0, 2]])
    assert source_path("rosbag:/data/bag?topic=/x") == source_path("/data/bag")
    assert str(source_path("video:clip.mp4")) == "clip.mp4"


def test_infer_rosbag_topic(tmp_path, vitt_weights):
    from endo_depth_model.cli import main
    from endo_depth_model.data.rosbag import write_rosbag
    from endo_depth_model.data.sequence import Frame

    K = np.array([[30.0, 0, 20.5], [0, 30.0, 13.5], [0, 0, 1]])
    frames = [Frame(rgb=f, K=K, stamp_ns=1_000_000 * i, index=i) for i, f in enumerate(_frames(7))]
    bag = tmp_path / "bag"
    write_rosbag(frames, bag, image_topic="/endoscope/image_raw")
    out = tmp_path / "o"
    argv = [
        "infer", f"rosbag:{bag}?topic=/endoscope/image_raw",
        "--encoder", "vitt", "--weights", str(vitt_weights),
        "--input-size", "28", "42", "--device", "cpu", "--out", str(out), "--no-png",
        "--window", "6", "--overlap", "4", "--blend", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    seq = next(p for p in out.iterdir() if p.is_dir())
    assert sorted(p.name for p in (seq / "depth").glob("*.npy")) == [f"{i:06d}.npy" for i in range(7)]
    assert (out / f"{seq.name}_depth.mp4").is_file()  # in the given --out, not beside the bag
    assert not (tmp_path / "bag_depth.mp4").exists()


def test_infer_on_onnxruntime_backend_matches_torch(tmp_path, vitt_weights):
    """The same `infer` run through the onnxruntime backend (exported graphs) gives the torch depths."""
    from endo_depth_model.cli import main
    from endo_depth_model.data.folder import write_folder
    from endo_depth_model.data.sequence import Frame

    K = np.array([[30.0, 0, 20.5], [0, 30.0, 13.5], [0, 0, 1]])
    folder = tmp_path / "frames"
    write_folder([Frame(rgb=f, K=K, index=i, stamp_ns=i) for i, f in enumerate(_frames(10))], folder, fps=10)
    results = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        argv = [
            "infer", str(folder), "--encoder", "vitt", "--weights", str(vitt_weights),
            "--input-size", "28", "42", "--device", "cpu", "--out", str(out),
            "--window", "8", "--overlap", "4", "--blend", "2", "--backend", backend, "--no-video",
            "--precision", "fp32",  # fp32 parity (auto would run torch in bf16 on an AMX CPU)
        ]  # fmt: skip
        assert main(argv) == 0
        (seq,) = [p for p in out.iterdir() if p.is_dir()]
        results[backend] = np.stack([np.load(p) for p in sorted((seq / "depth").glob("*.npy"))])
    assert results["torch"].shape == (10, H, W)
    np.testing.assert_allclose(results["onnxruntime"], results["torch"], rtol=1e-4, atol=1e-4)


def test_infer_defaults_to_the_shipped_model_and_its_depth_range(tmp_path):
    from endo_depth_model.cli import main
    from endo_depth_model.data.folder import write_folder
    from endo_depth_model.data.sequence import Frame

    K = np.array([[30.0, 0, 20.5], [0, 30.0, 13.5], [0, 0, 1]])
    folder = tmp_path / "frames"
    write_folder([Frame(rgb=f, K=K, index=i, stamp_ns=i) for i, f in enumerate(_frames(8))], folder, fps=10)
    out = tmp_path / "out"
    argv = [
        "infer", str(folder), "--input-size", "28", "42", "--device", "cpu", "--out", str(out),
        "--window", "6", "--overlap", "4", "--blend", "2", "--no-video",
    ]  # fmt: skip
    assert main(argv) == 0
    (seq,) = [p for p in out.iterdir() if p.is_dir()]
    meta = json.loads((seq / "meta.json").read_text())
    assert "vitt_endodav.safetensors" in meta["model"]
    assert (meta["min_depth"], meta["max_depth"]) == (0.001, 0.3)  # stored in the shipped file
    depth = np.stack([np.load(p) for p in sorted((seq / "depth").glob("*.npy"))])
    assert depth.shape == (8, H, W) and np.all(depth > 0) and np.all(depth < 0.3)


def test_a_checkpoint_without_weights_uses_the_base_it_was_trained_on(tmp_path, monkeypatch):
    """`--checkpoint` alone takes the base weights from the checkpoint's config (an adapter on a random
    base would be meaningless); with that file gone it falls back to the shipped model."""
    import argparse

    from endo_depth_model.cli.infer import resolve_model_defaults
    from endo_depth_model.pipeline import SHIPPED_MODEL_DIR

    monkeypatch.chdir(tmp_path)
    base = tmp_path / "bases" / "my_base.safetensors"
    base.parent.mkdir()
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(base), metadata={"min_depth": "0.5", "max_depth": "80"})
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.yaml").write_text("model:\n  name: vitt\n  weights: bases/my_base.safetensors\n")

    def resolved(**kw):
        args = argparse.Namespace(
            encoder="vitt", weights=None, checkpoint=str(ckpt), min_depth=None, max_depth=None
        )
        vars(args).update(kw)
        resolve_model_defaults(args)
        return args

    args = resolved()
    assert Path(args.weights) == Path("bases/my_base.safetensors")
    assert (args.min_depth, args.max_depth) == (0.5, 80.0)  # the range of that base
    assert Path(resolved(weights="given.pth").weights) == Path("given.pth")  # an explicit choice wins
    base.unlink()
    assert Path(resolved().weights) == SHIPPED_MODEL_DIR / "vitt_endodav.safetensors"


def test_infer_per_frame_runs_each_frame_alone(tmp_path, vitt_weights):
    from endo_depth_model.cli import main
    from endo_depth_model.preprocess import Preprocessor

    frames = _frames(6)
    folder = _frame_folder(tmp_path, frames)
    out = tmp_path / "o"
    argv = [
        "infer", str(folder), "--encoder", "vitt", "--weights", str(vitt_weights), "--input-size", "28", "42",
        "--device", "cpu", "--out", str(out), "--no-video", "--no-png", "--per-frame", "--precision", "fp32",
        "--min-depth", "0.1",
        "--max-depth", "150",
    ]  # fmt: skip
    assert main(argv) == 0
    seq = next(p for p in out.iterdir() if p.is_dir())
    meta = json.loads((seq / "meta.json").read_text())
    assert meta["per_frame"] and meta["window"] == 1 and meta["head_passes"] == 6
    # each depth equals the model on that frame alone (T = 1), with no scale or shift applied
    from endo_depth_model.preprocess import disparity_to_depth

    bundle = load_depth_model("vitt", vitt_weights)
    x = Preprocessor(input_hw=(28, 42))(frames[4])
    x = x.reshape(1, 1, *x.shape[-3:])
    with torch.no_grad():
        disp = bundle.model(x)[0, 0].numpy()
    expected = np.asarray(disparity_to_depth(disp, 0.1, 150.0))
    np.testing.assert_allclose(np.load(seq / "depth" / "000004.npy"), expected, rtol=1e-4, atol=1e-4)


def test_infer_masks_the_scope_border(tmp_path, vitt_weights):
    """Frames behind a circular stop: NaN depth and no points outside it; an all-black frame gives an
    all-NaN depth map, not an error."""
    from endo_depth_model.cli import main
    from endo_depth_model.data.laparoscopy import fov_border_mask
    from endo_depth_model.data.sequence import write_rgb

    stop = fov_border_mask(H, W, "circle", 0.8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    frames = _frames(9)
    for i, f in enumerate(frames):
        f[~stop] = 0
        if i == 7:
            f[:] = 0  # scope withdrawn: nothing visible
        write_rgb(folder / f"{i:04d}.png", f)
    out = tmp_path / "o"
    argv = [
        "infer", str(folder), "--encoder", "vitt", "--weights", str(vitt_weights), "--input-size", "28", "42",
        "--device", "cpu", "--out", str(out), "--no-video", "--pointcloud-every", "3", "--window", "6",
        "--overlap", "4", "--blend", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    seq = next(p for p in out.iterdir() if p.is_dir())
    depth = np.load(seq / "depth" / "000003.npy")
    assert np.isnan(depth[~stop]).all()
    assert np.isfinite(depth[stop]).mean() > 0.75  # a 2-pixel margin inside the stop, at 28 x 42
    assert np.isnan(np.load(seq / "depth" / "000007.npy")).all()
    header = (seq / "points" / "000003.ply").read_bytes()[:200]
    n_points = int(header.split(b"element vertex ")[1].split(b"\n")[0])
    assert 0.75 * stop.sum() < n_points <= stop.sum()
    meta = json.loads((seq / "meta.json").read_text())
    assert meta["field_of_view"]["empty"] == 1 and meta["field_of_view"]["border"] == 8


def test_metric_weights_are_recognised_and_not_converted_as_disparity(tmp_path, vitt_weights):
    """A metric-depth VDA (official name metric_video_depth_anything_*, or output_kind metadata) outputs
    metres: infer writes that output as depth, not disparity_to_depth of it."""
    import shutil

    from endo_depth_model.checkpoint import read_state_dict, save_safetensors
    from endo_depth_model.cli import main
    from endo_depth_model.infer import weights_are_metric
    from endo_depth_model.preprocess import Preprocessor

    named = tmp_path / "metric_video_depth_anything_vitt.safetensors"
    shutil.copy(vitt_weights, named)
    tagged = save_safetensors(read_state_dict(vitt_weights), tmp_path / "m.safetensors",
                              metadata={"output_kind": "metric_depth"})  # fmt: skip
    assert weights_are_metric(named) and weights_are_metric(tagged) and not weights_are_metric(vitt_weights)
    bundle = load_depth_model("vitt", tagged)
    assert bundle.model.config.metric and "metric depth" in bundle.description
    frames = _frames(3)
    folder = _frame_folder(tmp_path, frames)
    out = tmp_path / "o"
    argv = ["infer", str(folder), "--encoder", "vitt", "--weights", str(tagged), "--input-size", "28", "42",
            "--device", "cpu", "--out", str(out), "--no-video", "--no-png", "--per-frame",
            "--precision", "fp32"]  # fmt: skip
    assert main(argv) == 0
    seq = next(p for p in out.iterdir() if p.is_dir())
    x = Preprocessor(input_hw=(28, 42))(frames[1])
    with torch.no_grad():
        metres = bundle.model(x.reshape(1, 1, *x.shape[-3:]))[0, 0].numpy()
    np.testing.assert_allclose(np.load(seq / "depth" / "000001.npy"), metres, rtol=1e-4, atol=1e-5)
    assert "metres" in json.loads((seq / "meta.json").read_text())["units"]


def test_infer_and_eval_run_the_causal_engine(tmp_path, vitt_weights):
    from endo_depth_model.causal import CausalDepth
    from endo_depth_model.cli import main
    from endo_depth_model.preprocess import Preprocessor, disparity_to_depth

    frames = _frames(5)
    folder = _frame_folder(tmp_path, frames)
    out = tmp_path / "o"
    argv = ["infer", str(folder), "--encoder", "vitt", "--weights", str(vitt_weights),
            "--input-size", "28", "42", "--device", "cpu", "--out", str(out), "--no-video", "--no-png",
            "--causal", "--precision", "fp32", "--min-depth", "0.1", "--max-depth", "150"]  # fmt: skip
    assert main(argv) == 0
    seq = next(p for p in out.iterdir() if p.is_dir())
    assert json.loads((seq / "meta.json").read_text())["head_passes"] == 5  # one single-frame pass each
    engine = CausalDepth(load_depth_model("vitt", vitt_weights).model, Preprocessor(input_hw=(28, 42)))
    want = [engine.push(f)[0].disparity for f in frames][3]
    np.testing.assert_allclose(
        np.load(seq / "depth" / "000003.npy"), disparity_to_depth(want, 0.1, 150.0), rtol=1e-4, atol=1e-5
    )
    argv = ["eval", "synth:target?n_frames=6&height=28&width=42", "--encoder", "vitt", "--weights",
            str(vitt_weights), "--input-size", "28", "42", "--device", "cpu", "--out", str(tmp_path / "r"),
            "--causal", "--no-baselines"]  # fmt: skip
    assert main(argv) == 0
