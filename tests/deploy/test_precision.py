"""Compute precision: ``auto`` resolution, refusals, bf16 autocast parity, and its use by the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endo_depth_model.runtime import BackendError, load_backend
from endo_depth_model.runtime import precision as prec
from endo_depth_model.runtime.precision import PrecisionError, resolve_precision
from endo_depth_model.runtime.torch_backend import TorchBackend


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend this CPU computes bf16 natively (the arithmetic is the same when it is emulated)."""
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)


def test_auto_is_bf16_exactly_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "fp32"  # fp16 on a GPU is asked for, not assumed
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_unrunnable_precisions_are_refused_with_the_reason(no_native_bf16, adapted_model):
    with pytest.raises(PrecisionError, match="emulated"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(PrecisionError, match="CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(PrecisionError, match="must be one of"):
        resolve_precision("int4", "cpu")
    with pytest.raises(BackendError, match="emulated"):
        TorchBackend(adapted_model, "cpu", precision="bf16")


def test_bf16_backend_stays_close_to_fp32_and_really_runs_in_bf16(native_bf16, adapted_model, frames):
    ref = load_backend("torch", adapted_model)(frames)
    backend = load_backend("torch", adapted_model, bf16=True)
    assert backend.precision == "bf16" and "bf16 autocast" in backend.describe()
    out = backend(frames)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    rel = ((out - ref).abs() / ref.abs().clamp_min(1e-3)).mean().item()
    assert 0 < rel < 0.02, rel  # differs (bf16 really ran) but by about bf16's 3 significant digits


def test_bf16_is_a_torch_option_and_auto_puts_torch_first(native_bf16, adapted_model, graphs):
    with pytest.raises(BackendError, match="torch backend option"):
        load_backend(
            "onnxruntime", adapted_model, encoder_onnx=graphs.encoder, head_onnx=graphs.head, bf16=True
        )
    backend = load_backend(
        "auto", adapted_model, encoder_onnx=graphs.encoder, head_onnx=graphs.head, bf16=True
    )
    assert isinstance(backend, TorchBackend) and backend.precision == "bf16"
    # without a torch model, auto falls back to onnxruntime, which runs its graphs in fp32
    graph = load_backend("auto", None, encoder_onnx=graphs.encoder, head_onnx=graphs.head, bf16=True)
    assert graph.name == "onnxruntime" and [n for n, _ in graph.fallbacks] == ["torch"]


def test_pipeline_config_rejects_bad_precisions():
    from endo_depth_model.pipeline import PipelineConfig, PipelineError

    with pytest.raises(PipelineError, match="precision 'half'"):
        PipelineConfig(precision="half").validate()
    with pytest.raises(PipelineError, match="for the torch backend"):
        PipelineConfig(precision="bf16", backend="onnxruntime").validate()
    PipelineConfig(precision="auto", backend="onnxruntime").validate()


def test_shipped_model_pipeline_in_bf16_matches_fp32(native_bf16):
    """The shipped depth and pose networks through the node's pipeline: bf16 depth within 1 % of fp32,
    odometry within 2 % of the fp32 path (translation) over a short simulated sequence."""
    from endo_depth_model.data.simulator import EndoscopySimulator, preset
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig

    sim = EndoscopySimulator(preset("target", seed=3, n_frames=12, height=112, width=140))
    frames = [f.rgb for f in sim]
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = PipelineConfig(input_height=112, input_width=140, window=8, overlap=4, stride=4, blend=2)
        cfg.precision = precision
        pipe = DepthPipeline(cfg)
        assert pipe.precision == precision and getattr(pipe.model, "precision", "fp32") == precision
        depth, poses = [], []
        for rgb in frames:
            out, motion = pipe.push(rgb)
            depth += [f.depth for f in out]
            poses.append(motion.T_odom_cam)
        depth += [f.depth for f in pipe.flush()]
        runs[precision] = (np.stack(depth), np.stack(poses))
    (d32, p32), (d16, p16) = runs["fp32"], runs["bf16"]
    assert d16.shape == d32.shape and np.isfinite(d16).all()
    depth_rel = np.mean(np.abs(d16 - d32) / d32)
    assert 0 < depth_rel < 0.01, depth_rel
    t32, t16 = p32[:, :3, 3], p16[:, :3, 3]
    assert p16.dtype == np.float64
    assert np.linalg.norm(t16 - t32) / np.linalg.norm(t32) < 0.02


def test_pipeline_refuses_bf16_on_a_cpu_without_it(no_native_bf16):
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig, PipelineError

    with pytest.raises(PipelineError, match="emulated"):
        DepthPipeline(
            PipelineConfig(input_height=56, input_width=70, window=8, overlap=4, stride=2, precision="bf16")
        )


def test_cast_weights_stores_matmul_and_conv_weights_once_leaving_norms_and_kept_layers_fp32():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last),
        torch.nn.BatchNorm2d(8),
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4)),
        torch.nn.Linear(4, 2),
    )
    net(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    assert prec.cast_weights(net, "fp32") is net and net[0].weight.dtype == torch.float32
    prec.cast_weights(net, "bf16", keep=("3",))
    assert net[0].weight.dtype == net[0].bias.dtype == net[2][1].weight.dtype == torch.bfloat16
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net[1].weight.dtype == net[1].running_mean.dtype == torch.float32  # norms untouched
    assert net[3].weight.dtype == torch.float32  # kept


def test_bf16_backend_casts_a_copy_once_and_rounds_as_autocast_does(native_bf16, adapted_model, frames):
    # the backend stores bf16 weights on a copy: the caller's model stays fp32, and the numbers are
    # autocast's over the fp32 model (which rounds each weight to bf16 on every call, the same rounding);
    # oneDNN picks other kernels for some bf16-weight GEMMs (the MLPs' wider products) and accumulates in
    # another order, so single bf16 roundings flip and propagate: measured a quarter of bf16's own
    # difference from fp32
    backend = TorchBackend(adapted_model, precision="bf16")
    assert backend.model is not adapted_model
    assert all(p.dtype == torch.float32 for p in adapted_model.parameters())
    assert backend.model.pretrained.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert backend.head.scratch.output_conv2[0].weight.dtype == torch.float32  # runs with autocast off
    got = backend(frames)
    backend.model, backend.head = adapted_model, TorchBackend(adapted_model, precision="fp32").head
    want = backend(frames)  # fp32 weights under the same autocast
    fp32 = TorchBackend(adapted_model, precision="fp32")(frames)
    rel = ((got - want).abs() / want.abs().clamp_min(1e-3)).mean().item()
    rel_fp32 = ((want - fp32).abs() / fp32.abs().clamp_min(1e-3)).mean().item()
    assert rel < 0.5 * rel_fp32, (rel, rel_fp32)
