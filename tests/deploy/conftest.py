"""Shared fixtures: one tiny SSB-adapted model and its exported graphs (exported once per session)."""

from __future__ import annotations

import pytest
import torch

HW = (56, 70)
WINDOW = 4


def make_model():
    """``vitt`` with random non-trivial temporal modules, positive output bias and perturbed SSB vectors."""
    from endo_depth_model import ssb
    from endo_depth_model.models import build_vda

    torch.manual_seed(0)
    model = build_vda("vitt").eval()
    for mm in model.head.motion_modules:  # fresh temporal modules are the identity: make them matter
        torch.nn.init.normal_(mm.temporal_transformer.proj_out.weight, std=0.05)
    torch.nn.init.constant_(model.head.scratch.output_conv2[2].bias, 0.5)  # non-zero disparity after ReLU
    model = ssb.apply_ssb(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, _, layer in ssb.ssb_layers(model):
            for vec in (*layer.lora_ssb_in.values(), *layer.lora_ssb_out.values()):
                vec.copy_(1.0 + 0.2 * torch.randn(vec.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="session")
def adapted_model():
    return make_model()


@pytest.fixture(scope="session")
def graphs(adapted_model, tmp_path_factory):
    from endo_depth_model.export import export_model

    return export_model(adapted_model, tmp_path_factory.mktemp("onnx"), HW, WINDOW)


@pytest.fixture(scope="session")
def frames():
    """(1, T, 3, H, W) normalised-looking input, a smooth pattern plus noise."""
    gen = torch.Generator().manual_seed(2)
    return torch.randn(1, WINDOW, 3, *HW, generator=gen)
