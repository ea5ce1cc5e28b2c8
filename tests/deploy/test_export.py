"""ONNX export: graph validity, metadata, SSB merging, and onnxruntime parity with PyTorch (fp32)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import onnx
import pytest
import torch

from endo_depth_model import export as ex
from endo_depth_model.models import build_vda
from endo_depth_model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from endo_depth_model.runtime import load_backend

from .conftest import HW, WINDOW

TOL = 1e-4


def test_graphs_are_valid_with_metadata(graphs, adapted_model):
    enc = ex.check_graph(graphs.encoder)
    head = ex.check_graph(graphs.head)
    assert (enc.kind, head.kind) == ("encoder", "head")
    assert enc.input_hw == head.input_hw == HW
    assert (enc.frames, head.frames) == (1, WINDOW)
    assert enc.patch_hw == (HW[0] // 14, HW[1] // 14) and enc.embed_dim == 192
    assert enc.output_kind == "relative_disparity"
    assert enc.mean == IMAGENET_MEAN and enc.std == IMAGENET_STD
    assert enc.model_config["encoder"] == "vitt" and enc.opset >= 18
    assert enc.fingerprint == head.fingerprint == ex.model_fingerprint(ex.prepare_for_export(adapted_model))
    model = onnx.load(str(graphs.head))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert [i.name for i in model.graph.input] == list(ex.LAYER_NAMES)
    assert head.output_shapes() == {"disparity": (WINDOW, *HW)}
    assert enc.input_shapes() == {"frames": (1, 3, *HW)}
    ex.check_pair(enc, head)


def test_merged_ssb_model_exports_like_a_plain_one(adapted_model):
    from endo_depth_model import ssb

    merged = ex.prepare_for_export(adapted_model)
    assert not list(ssb.ssb_layers(merged))
    assert list(ssb.ssb_layers(adapted_model)), "the caller's model must stay adapted"
    assert list(merged.state_dict()) == list(build_vda("vitt").state_dict())  # official key names
    x = torch.randn(1, WINDOW, 3, *HW, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(merged(x), adapted_model(x), atol=1e-5, rtol=0)


def test_onnxruntime_matches_torch(graphs, adapted_model, frames):
    backend = load_backend("onnxruntime", encoder_onnx=graphs.encoder, head_onnx=graphs.head)
    with torch.no_grad():
        ref_feats = adapted_model.encode(frames)
        ref = adapted_model.decode(ref_feats)
        ref_big = adapted_model.decode(ref_feats, image_hw=(100, 130))
    feats = backend.encode(frames)
    for a, b in zip(feats.layers, ref_feats.layers, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= TOL
    out = backend.decode(feats)
    assert out.shape == ref.shape == (1, WINDOW, *HW)
    assert ref.abs().max() > 0.1  # a non-trivial output, so the comparison means something
    assert (out - ref).abs().max().item() <= TOL
    assert (backend.decode(feats, image_hw=(100, 130)) - ref_big).abs().max().item() <= TOL


def test_streaming_on_onnxruntime_equals_torch(graphs, adapted_model):
    from endo_depth_model.preprocess import Preprocessor
    from endo_depth_model.streaming import infer_video

    rng = np.random.default_rng(3)
    video = [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(9)]
    pre = Preprocessor(HW)
    kwargs = dict(window=WINDOW, overlap=2, stride=2, blend=2)
    backend = load_backend("onnxruntime", encoder_onnx=graphs.encoder, head_onnx=graphs.head)
    ours, _ = infer_video(backend, video, lambda f: pre(f)[0], **kwargs)
    ref, _ = infer_video(adapted_model, video, lambda f: pre(f)[0], **kwargs)
    assert ours.shape == ref.shape == (9, 64, 80)
    assert np.abs(ours - ref).max() <= TOL * max(1.0, np.abs(ref).max())


def test_check_graph_rejects_foreign_and_tampered_files(graphs, tmp_path):
    with pytest.raises(ex.ExportError, match="not found"):
        ex.read_metadata(tmp_path / "missing.onnx")
    plain = onnx.load(str(graphs.encoder))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ex.ExportError, match="not an endo_depth graph"):
        ex.check_graph(tmp_path / "plain.onnx")
    tampered = onnx.load(str(graphs.encoder))
    for prop in tampered.metadata_props:
        if prop.key == "endo_depth.input_hw":
            prop.value = "[70, 56]"
    onnx.save(tampered, str(tmp_path / "tampered.onnx"))
    with pytest.raises(ex.ExportError, match="shape"):
        ex.check_graph(tmp_path / "tampered.onnx")
    enc, head = graphs.metadata()
    with pytest.raises(ex.ExportError, match="fingerprints"):
        ex.check_pair(enc, dataclasses.replace(head, fingerprint="0" * 16))
    with pytest.raises(ex.ExportError, match="input sizes"):
        ex.check_pair(enc, dataclasses.replace(head, input_hw=(70, 56)))


def test_export_rejects_bad_arguments(tmp_path):
    model = build_vda("vitt")
    with pytest.raises(ex.ExportError, match="multiples of 14"):
        ex.export_encoder(model, tmp_path / "e.onnx", (50, 70))
    with pytest.raises(ex.ExportError, match="opset 17"):
        ex.export_encoder(model, tmp_path / "e.onnx", HW, opset=17)
    with pytest.raises(ex.ExportError, match="window 40"):
        ex.export_head(model, tmp_path / "h.onnx", HW, window=40)
    with pytest.raises(ex.ExportError, match="VideoDepthAnything"):
        ex.prepare_for_export(torch.nn.Linear(2, 2))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["onnx/<fingerprint>", "cache folder"])
def test_ensure_graphs_reuses_cached_graphs_of_the_same_weights_only(
    where, graphs, adapted_model, tmp_path, monkeypatch
):
    """The node's own exports (``<cache>/onnx/<fingerprint>/``) and what ``endo-depth export --out
    <cache>`` wrote into the folder itself are both used when the fingerprint matches, never for other
    weights (same file names)."""
    folder = tmp_path / "onnx" / graphs.metadata()[0].fingerprint if where != "cache folder" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for path in (graphs.encoder, graphs.head):
        shutil.copy(path, folder / path.name)

    def no_export(*args, **kwargs):
        raise AssertionError("graphs were exported again")

    monkeypatch.setattr(ex, "export_model", no_export)
    got = ex.ensure_graphs(adapted_model, HW, WINDOW, tmp_path)
    assert got.encoder == folder / graphs.encoder.name and got.head == folder / graphs.head.name
    other = build_vda("vitt")  # other weights -> other fingerprint -> would export
    with pytest.raises(AssertionError, match="exported again"):
        ex.ensure_graphs(other, HW, WINDOW, tmp_path)


def test_export_subcommand_is_registered():
    from endo_depth_model.cli import build_parser
    from endo_depth_model.cli import export as export_cli

    args = build_parser().parse_args(
        ["export", "--encoder", "vitt", "--input-size", "56", "70", "--window", "4", "--tensorrt", "fp16"]
    )
    assert args.func is export_cli.main
    assert tuple(args.input_size) == HW and args.window == 4 and args.tensorrt == "fp16"
