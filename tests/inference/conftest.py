"""Shared fixtures: a seeded tiny ``vitt`` model file whose temporal modules and output are not trivial
(a fresh VDA's temporal modules are identity and its random head outputs zeros) and an SSB adapter."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def vitt_weights(tmp_path_factory):
    """A seeded ``vitt`` whose temporal modules and output are not trivial, saved as safetensors."""
    import torch

    from endo_depth_model.checkpoint import save_safetensors
    from endo_depth_model.models import build_vda

    torch.manual_seed(0)
    model = build_vda("vitt")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj_out" in name:
                p.normal_(0.0, 0.05)
        model.head.scratch.output_conv2[2].bias.fill_(0.5)
    path = tmp_path_factory.mktemp("w") / "vitt.safetensors"
    save_safetensors(model, path)
    return path


@pytest.fixture(scope="session")
def vitt_adapter(tmp_path_factory):
    import torch

    from endo_depth_model import ssb
    from endo_depth_model.models import build_vda

    torch.manual_seed(1)
    model = ssb.apply_ssb(build_vda("vitt"))
    with torch.no_grad():
        for _, _, layer in ssb.ssb_layers(model):
            for vec in (*layer.lora_ssb_in.values(), *layer.lora_ssb_out.values()):
                vec.mul_(1.0 + 0.1 * torch.randn_like(vec))
    path = tmp_path_factory.mktemp("a") / "adapter.safetensors"
    ssb.save_adapter(model, path)
    return path
