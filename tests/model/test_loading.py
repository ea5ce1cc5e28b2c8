"""endo_depth_model.loading: weights resolution, metadata, pose networks and checkpoint folders, and the
errors the commands and the pipeline see."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from endo_depth_model import loading
from endo_depth_model.checkpoint import save_safetensors
from endo_depth_model.models.pose_net import PoseNet


def test_resolve_weights_prefers_the_given_file_and_refuses_a_missing_one(tmp_path):
    given, shipped = tmp_path / "w.safetensors", tmp_path / "shipped.safetensors"
    given.write_bytes(b"x")
    assert loading.resolve_weights(str(given), shipped) == given
    assert loading.resolve_weights("", shipped) is None  # no shipped file either
    shipped.write_bytes(b"x")
    assert loading.resolve_weights("", shipped) == shipped
    with pytest.raises(loading.LoadError, match="weights file not found: .*nope.safetensors"):
        loading.resolve_weights(tmp_path / "nope.safetensors", shipped)


def test_shipped_weights_carry_their_depth_range():
    assert loading.shipped_weights("vitt").is_file()
    assert loading.weights_depth_range(loading.shipped_weights("vitt")) == (0.001, 0.3)
    assert not loading.weights_are_metric(loading.shipped_weights("vitt"))


def test_weights_metadata_of_other_and_broken_files(tmp_path):
    partial = tmp_path / "partial.safetensors"
    save_file({"x": torch.zeros(1)}, str(partial), metadata={"max_depth": "80"})
    assert loading.weights_depth_range(partial) == (None, 80.0)
    assert loading.weights_depth_range(tmp_path / "official.pth") == (None, None)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(partial.read_bytes()[:20])
    with pytest.raises(loading.LoadError, match="cannot read weights .*broken.safetensors"):
        loading.weights_metadata(broken)
    assert not loading.weights_are_metric(broken)  # unreadable: fails later with its own error


def test_pose_model_gets_the_intrinsics_head_its_weights_have(tmp_path):
    torch.manual_seed(0)
    with_k = PoseNet(predict_intrinsics=True)
    path = save_safetensors(with_k.state_dict(), tmp_path / "pose_k.safetensors")
    net = loading.load_pose_model(path)
    assert net.predict_intrinsics and not net.training
    assert all(torch.equal(net.state_dict()[k], v) for k, v in with_k.state_dict().items())
    with pytest.raises(loading.LoadError, match="pose_k.safetensors: not pose network weights"):
        loading.load_pose_model(path, predict_intrinsics=False)


def test_checkpoint_folder_names_the_missing_file(tmp_path):
    from endo_depth_model import ssb
    from endo_depth_model.models import build_vda

    model = ssb.apply_ssb(build_vda("vitt"))
    ssb.save_adapter(model, tmp_path / loading.ADAPTER_FILE)
    with pytest.raises(loading.LoadError, match=f"missing {loading.META_FILE}"):
        loading.load_checkpoint_weights(model, None, tmp_path)
    (tmp_path / loading.META_FILE).write_text('{"step": 7}')
    assert loading.load_checkpoint_weights(model, None, tmp_path) == {"step": 7}
    with pytest.raises(loading.LoadError, match=f"missing {loading.POSE_FILE}"):
        loading.load_checkpoint_weights(model, PoseNet(), tmp_path)


def test_the_commands_and_the_pipeline_keep_their_error_types(tmp_path):
    from endo_depth_model.infer import InferError
    from endo_depth_model.infer import load_depth_model as infer_load
    from endo_depth_model.pipeline import PipelineConfig, PipelineError, load_pose_model

    with pytest.raises(InferError, match="checkpoint folder not found"):
        infer_load("vitt", checkpoint=tmp_path / "none")
    with pytest.raises(PipelineError, match="weights file not found"):
        load_pose_model(PipelineConfig(pose_weights=str(tmp_path / "none.safetensors")))


def test_the_pipeline_takes_the_depth_range_from_the_weights_unless_set(tmp_path):
    from endo_depth_model.pipeline import (
        DEFAULT_DEPTH_RANGE,
        PipelineConfig,
        PipelineError,
        resolve_depth_range,
    )

    assert resolve_depth_range(PipelineConfig()) == (0.001, 0.3)  # the shipped model's metadata
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"min_depth": "0.5", "max_depth": "80"})
    assert resolve_depth_range(PipelineConfig(weights=str(other))) == (0.5, 80.0)
    assert resolve_depth_range(PipelineConfig(weights=str(other), max_depth=200.0)) == (0.5, 200.0)
    assert resolve_depth_range(PipelineConfig(weights=str(other), min_depth=0.1, max_depth=9.0)) == (0.1, 9.0)
    bare = tmp_path / "official.safetensors"
    save_file({"x": torch.zeros(1)}, str(bare))
    assert resolve_depth_range(PipelineConfig(weights=str(bare))) == DEFAULT_DEPTH_RANGE
    with pytest.raises(PipelineError, match="min_depth"):
        resolve_depth_range(PipelineConfig(weights=str(other), min_depth=100.0))  # 100 > the stored 80
    with pytest.raises(PipelineError, match=">= 0"):
        PipelineConfig(min_depth=-1.0).validate()
