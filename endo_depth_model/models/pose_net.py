"""Pose network: ResNet-18-style encoder on two stacked frames, Monodepth2 pose decoder, optional intrinsics.

Our own implementation (torchvision is not a dependency). Encoder module names follow torchvision's
ResNet (``encoder.conv1``, ``encoder.bn1``, ``encoder.layer{1..4}.{0,1}.conv1/bn1/conv2/bn2/downsample``),
so ImageNet ResNet-18 weights can initialise it with :func:`resnet18_state_for_pairs`.

Convention (Monodepth2): feed the two frames in temporal order (earlier ``frame_a``, later
``frame_b``); the predicted transform ``pose_vec_to_mat(axis_angle, translation)`` maps points from
camera a to camera b (``T_b_a``); ``invert=True`` gives ``T_a_b``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import pose_vec_to_mat

__all__ = [
    "BasicBlock",
    "ResNetEncoder",
    "PoseDecoder",
    "IntrinsicsHead",
    "PoseNet",
    "resnet18_state_for_pairs",
]

RESNET18_LAYERS = (2, 2, 2, 2)
ENCODER_CHANNELS = (64, 64, 128, 256, 512)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNetEncoder(nn.Module):
    """ResNet-18 trunk on ``num_input_images`` RGB frames stacked on channels -> (B, 512, H/32, W/32)."""

    def __init__(self, num_input_images: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3 * num_input_images, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for i, (width, blocks) in enumerate(zip(ENCODER_CHANNELS[1:], RESNET18_LAYERS, strict=True), start=1):
            stride = 1 if i == 1 else 2
            layer = [BasicBlock(channels, width, stride)] + [
                BasicBlock(width, width) for _ in range(blocks - 1)
            ]
            setattr(self, f"layer{i}", nn.Sequential(*layer))
            channels = width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class PoseDecoder(nn.Module):
    """Monodepth2 pose decoder: 1x1 squeeze, two 3x3 convs, 1x1 to 6, spatial mean, times ``output_scale``."""

    def __init__(self, in_channels: int = 512, output_scale: float = 0.01):
        super().__init__()
        self.output_scale = output_scale
        self.squeeze = nn.Conv2d(in_channels, 256, 1)
        self.pose_0 = nn.Conv2d(256, 256, 3, padding=1)
        self.pose_1 = nn.Conv2d(256, 256, 3, padding=1)
        self.pose_2 = nn.Conv2d(256, 6, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.squeeze(features))
        x = F.relu(self.pose_0(x))
        x = F.relu(self.pose_1(x))
        out = self.output_scale * self.pose_2(x).mean(dim=(2, 3))
        return out[:, :3], out[:, 3:]


class IntrinsicsHead(nn.Module):
    """Pinhole intrinsics from the encoder bottleneck (EndoDAC-style).

    ``fx, fy = (softplus(.) + 0.5) * (W, H)``, ``cx, cy = (. + 0.5) * (W, H)``, in pixels of the input.
    """

    def __init__(self, in_channels: int = 512):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, 256, 1)
        self.focal = nn.Conv2d(256, 2, 1, bias=False)
        self.offset = nn.Conv2d(256, 2, 1, bias=False)

    def forward(self, features: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.squeeze(features)), 1)
        size = torch.tensor([image_hw[1], image_hw[0]], dtype=x.dtype, device=x.device)
        focal = (F.softplus(self.focal(x).flatten(1)) + 0.5) * size
        centre = (self.offset(x).flatten(1) + 0.5) * size
        K = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
        K[:, 0, 0], K[:, 1, 1] = focal[:, 0], focal[:, 1]
        K[:, 0, 2], K[:, 1, 2] = centre[:, 0], centre[:, 1]
        K[:, 2, 2] = 1.0
        return K


class PoseNet(nn.Module):
    """Relative camera motion between two frames.

    ``forward(frame_a, frame_b)`` with frames (B, 3, H, W) float in [0, 1] returns
    ``axis_angle`` (B, 3) radians and ``translation`` (B, 3), both scaled by ``output_scale``
    (Monodepth2: 0.01), plus ``K`` (B, 3, 3) in pixels when ``predict_intrinsics``.
    """

    def __init__(self, predict_intrinsics: bool = False, output_scale: float = 0.01):
        super().__init__()
        self.predict_intrinsics = predict_intrinsics
        self.encoder = ResNetEncoder(num_input_images=2)
        self.decoder = PoseDecoder(ENCODER_CHANNELS[-1], output_scale)
        self.intrinsics = IntrinsicsHead(ENCODER_CHANNELS[-1]) if predict_intrinsics else None

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor):
        if frame_a.shape != frame_b.shape or frame_a.dim() != 4 or frame_a.shape[1] != 3:
            raise ValueError(
                f"expected two (B, 3, H, W) frames, got {tuple(frame_a.shape)} and {tuple(frame_b.shape)}"
            )
        x = (torch.cat([frame_a, frame_b], dim=1) - 0.45) / 0.225  # Monodepth2 input normalisation
        features = self.encoder(x)
        axis_angle, translation = self.decoder(features)
        if self.intrinsics is None:
            return axis_angle, translation
        return axis_angle, translation, self.intrinsics(features, tuple(frame_a.shape[-2:]))

    def predict_matrix(
        self, frame_a: torch.Tensor, frame_b: torch.Tensor, invert: bool = False
    ) -> torch.Tensor:
        """(B, 4, 4) transform ``T_b_a`` (``T_a_b`` with ``invert``) via ``geometry.pose_vec_to_mat``."""
        axis_angle, translation = self(frame_a, frame_b)[:2]
        with torch.autocast(device_type=frame_a.device.type, enabled=False):  # geometry in fp32
            return pose_vec_to_mat(axis_angle.float(), translation.float(), invert=invert)


def resnet18_state_for_pairs(resnet18_state: Mapping[str, torch.Tensor], num_input_images: int = 2) -> dict:
    """Map a torchvision ResNet-18 ImageNet state dict onto ``PoseNet.encoder`` (Monodepth2 recipe).

    ``conv1`` is repeated over the stacked frames and divided by their number; the classifier (``fc``)
    is dropped. Load the result with ``pose_net.encoder.load_state_dict(..., strict=True)``.
    """
    state = {k: v for k, v in resnet18_state.items() if not k.startswith("fc.")}
    state["conv1.weight"] = torch.cat([state["conv1.weight"]] * num_input_images, dim=1) / num_input_images
    return state
