"""Safe checkpoint loading: official and Depth Anything V2 layouts, clear errors, no unpickling."""

from __future__ import annotations

import os

import pytest
import torch
from vda_testing import GOLDEN, assert_matches_golden, deterministic_state

from endo_depth_model.checkpoint import CheckpointError, load_vda_weights, read_state_dict, save_safetensors
from endo_depth_model.models import build_vda


@pytest.fixture(scope="module")
def tiny_state():
    return deterministic_state(build_vda("vitt").state_dict())


def outputs_equal(a, b, x) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt"])
def test_round_trip_loads_strictly(tmp_path, tiny_state, det_frames, suffix):
    path = tmp_path / f"vda{suffix}"
    if suffix == ".safetensors":
        save_safetensors(tiny_state, path, metadata={"encoder": "vitt"})
    else:
        torch.save(tiny_state, path)
    model = build_vda("vitt")
    report = load_vda_weights(model, path)
    assert report.source == "vda" and report.num_tensors == len(tiny_state) and not report.temporal_reset
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_state.items())


def test_wrapped_and_dataparallel_checkpoints(tmp_path, tiny_state):
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in tiny_state.items()}}, path)
    model = build_vda("vitt")
    load_vda_weights(model, path)
    assert torch.equal(model.state_dict()["pretrained.pos_embed"], tiny_state["pretrained.pos_embed"])


def test_depth_anything_v2_checkpoint_initialises_vda(tmp_path, det_state, det_frames):
    reference = build_vda("vits")
    state = det_state(reference.state_dict())
    dav2 = {
        ("depth_head." + k[5:] if k.startswith("head.") else k): v
        for k, v in state.items()
        if "motion_modules" not in k
    }
    assert not any(k.startswith("head.") for k in dav2)
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(dav2, path)

    model = build_vda("vits").eval()
    with torch.no_grad():  # make the temporal modules non-identity first: loading must reset them
        for module in model.head.motion_modules:
            module.temporal_transformer.proj_out.weight.fill_(0.1)
    report = load_vda_weights(model, path)
    assert report.source == "depth_anything_v2" and report.temporal_reset
    for module in model.head.motion_modules:
        assert torch.count_nonzero(module.temporal_transformer.proj_out.weight) == 0
        assert torch.count_nonzero(module.temporal_transformer.proj_out.bias) == 0
    x = det_frames(1, 3, 42, 56)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, model(x, temporal=False))
    # ... and equals the official Depth Anything V2 head on the same weights
    assert_matches_golden(out, GOLDEN["dav2"])


def test_wrong_size_config_names_both_sizes(tmp_path):
    with torch.device("meta"):
        small = build_vda("vits")
    state = {k: torch.zeros(v.shape) for k, v in small.state_dict().items()}
    path = tmp_path / "vits.safetensors"
    save_safetensors(state, path)
    with pytest.raises(CheckpointError) as err:
        load_vda_weights(build_vda("vitt"), path)
    message = str(err.value)
    assert str(path) in message and "'vits'" in message and "'vitt'" in message and "shape" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path, tiny_state):
    partial = dict(tiny_state)
    del partial["pretrained.norm.weight"]
    partial["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.safetensors"
    save_safetensors(partial, path)
    model = build_vda("vitt")
    before = model.state_dict()["pretrained.pos_embed"].clone()
    with pytest.raises(CheckpointError) as err:
        load_vda_weights(model, path)
    message = str(err.value)
    assert "1 missing key(s): pretrained.norm.weight" in message
    assert "1 unexpected key(s): head.extra.weight" in message
    assert torch.equal(model.state_dict()["pretrained.pos_embed"], before)  # nothing half-loaded
    # non-strict loading takes what matches
    load_vda_weights(model, path, strict=False)
    assert torch.equal(model.state_dict()["pretrained.pos_embed"], tiny_state["pretrained.pos_embed"])


def test_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"pretrained.cls_token": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused: the file contains pickled Python objects"):
        load_vda_weights(build_vda("vitt"), path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("missing.pth", None, "file not found"),
        ("notes.pth", b"hello, this is not a checkpoint", "not a readable PyTorch checkpoint"),
        ("empty.pt", b"", "not a readable PyTorch checkpoint"),
        ("broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "not a valid safetensors file"),
        ("weights.onnx", b"onnx", "unsupported file type '.onnx'"),
    ],
)
def test_wrong_files_give_clear_errors(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as err:
        read_state_dict(path)
    assert err.value.path == path and str(path) in str(err.value)


def test_non_state_dict_payloads(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="expected a state dict, found a list"):
        read_state_dict(path)
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 1, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="no state dict of tensors found"):
        read_state_dict(path)


def test_int8_weight_storage_round_trips_within_half_a_step(tmp_path):
    import torch

    from endo_depth_model.checkpoint import QSCALE_SUFFIX, quantize_int8, read_state_dict, save_safetensors
    from endo_depth_model.models.pose_net import PoseNet

    torch.manual_seed(0)
    net = PoseNet()
    state = net.state_dict()
    q = quantize_int8(state)
    big = [k for k, v in state.items() if v.is_floating_point() and v.dim() >= 2 and v.numel() >= 4096]
    assert big and all(q[k].dtype == torch.int8 for k in big)
    path = save_safetensors(q, tmp_path / "pose_int8.safetensors")
    back = read_state_dict(path)
    assert set(back) == set(state) and not any(k.endswith(QSCALE_SUFFIX) for k in back)
    for k in big:
        step = q[k + QSCALE_SUFFIX].reshape(-1, *([1] * (state[k].dim() - 1)))
        assert back[k].dtype == torch.float32
        assert ((back[k] - state[k]).abs() <= step / 2 + 1e-7).all(), k
    restored = PoseNet()
    restored.load_state_dict(back, strict=True)
    raw_size = sum(v.numel() * v.element_size() for v in state.values())
    assert path.stat().st_size < raw_size / 3.5  # about 4x smaller than float32
