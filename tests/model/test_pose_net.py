"""Pose network: shapes, output scale, near-identity motion at initialisation, intrinsics, key names."""

from __future__ import annotations

import pytest
import torch

from endo_depth_model.geometry import invert_pose, pose_vec_to_mat
from endo_depth_model.models.pose_net import PoseNet, resnet18_state_for_pairs


@pytest.fixture
def frames():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 80, generator=generator), torch.rand(2, 3, 64, 80, generator=generator)


def test_output_shapes(frames):
    torch.manual_seed(0)
    net = PoseNet().eval()
    with torch.no_grad():
        out = net(*frames)
    assert len(out) == 2
    axis_angle, translation = out
    assert axis_angle.shape == (2, 3) and translation.shape == (2, 3)


def test_output_scale_is_applied(frames):
    torch.manual_seed(0)
    net = PoseNet(output_scale=0.01).eval()
    assert net.decoder.output_scale == 0.01
    with torch.no_grad():
        small = torch.cat(net(*frames), dim=1)
        net.decoder.output_scale = 1.0
        raw = torch.cat(net(*frames), dim=1)
    assert raw.abs().max() > 0
    assert torch.allclose(small, 0.01 * raw, rtol=1e-5, atol=0)


def test_initial_motion_is_near_identity(frames):
    torch.manual_seed(0)
    net = PoseNet().eval()
    with torch.no_grad():
        T = net.predict_matrix(*frames)
        T_inv = net.predict_matrix(*frames, invert=True)
        axis_angle, translation = net(*frames)
    assert T.shape == (2, 4, 4)
    assert torch.allclose(T, torch.eye(4).expand(2, 4, 4), atol=0.01)  # measured ~1e-3
    rot = T[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert torch.allclose(T, pose_vec_to_mat(axis_angle, translation))
    assert torch.allclose(T_inv, invert_pose(T), atol=1e-6)


def test_intrinsics_head(frames):
    torch.manual_seed(0)
    net = PoseNet(predict_intrinsics=True).eval()
    with torch.no_grad():
        axis_angle, translation, K = net(*frames)
    assert K.shape == (2, 3, 3)
    assert torch.equal(K[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(2, 3))
    assert torch.all(K[:, 0, 1] == 0) and torch.all(K[:, 1, 0] == 0)
    assert torch.all(K[:, 0, 0] > 0.5 * 80) and torch.all(K[:, 1, 1] > 0.5 * 64)  # softplus + 0.5, times size
    # one frame size for the batch: B = 1 works too
    with torch.no_grad():
        assert net(frames[0][:1], frames[1][:1])[2].shape == (1, 3, 3)


def test_rejects_mismatched_frames(frames):
    with pytest.raises(ValueError, match="expected two"):
        PoseNet()(frames[0], frames[1][:, :, :32])


def test_encoder_uses_torchvision_resnet18_names():
    net = PoseNet()
    keys = net.encoder.state_dict()
    assert len(keys) == 120  # torchvision resnet18 has 122, its 2 are fc.weight / fc.bias
    for name in (
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.num_batches_tracked",
        "layer4.1.bn2.bias",
    ):
        assert name in keys
    assert keys["conv1.weight"].shape == (64, 6, 7, 7)
    # an ImageNet ResNet-18 state dict (3-channel conv1, classifier) maps onto the 6-channel encoder
    imagenet = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in keys.items()}
    imagenet["conv1.weight"] = torch.randn(64, 3, 7, 7)
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    mapped = resnet18_state_for_pairs(imagenet)
    net.encoder.load_state_dict(mapped, strict=True)
    assert torch.allclose(net.encoder.conv1.weight[:, :3], imagenet["conv1.weight"] / 2)
    assert torch.allclose(net.encoder.conv1.weight[:, 3:], imagenet["conv1.weight"] / 2)
