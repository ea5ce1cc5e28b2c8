"""Backend registry: selection by name and ``auto``, fallbacks with reasons, shape checks, helpers."""

from __future__ import annotations

import shutil

import onnx
import pytest
import torch

from endo_depth_model.runtime import (
    AUTO_ORDER,
    BackendError,
    BackendUnavailable,
    available_backends,
    load_backend,
)
from endo_depth_model.runtime.base import chunked, finish_output
from endo_depth_model.runtime.onnxruntime_backend import OnnxRuntimeBackend, select_providers
from endo_depth_model.runtime.torch_backend import TorchBackend

from .conftest import HW, WINDOW


def _foreign_head(graphs, tmp_path):
    """A copy of the head graph claiming other weights (fingerprint), as a stale cached file would."""
    model = onnx.load(str(graphs.head))
    for prop in model.metadata_props:
        if prop.key == "endo_depth.fingerprint":
            prop.value = "0123456789abcdef"
    path = tmp_path / graphs.head.name
    onnx.save(model, str(path))
    return path


def test_torch_backend_equals_the_model(adapted_model, frames):
    backend = load_backend("torch", adapted_model)
    assert isinstance(backend, TorchBackend) and backend.config.num_frames == 32
    with torch.no_grad():
        ref = adapted_model(frames)
    out = backend(frames)
    # on CPU the backend runs a channels-last copy of the head: same arithmetic, other summation order
    assert out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert all(p.is_contiguous() for p in adapted_model.parameters())  # the model's layout is untouched


def test_auto_on_cpu_prefers_onnxruntime(graphs, adapted_model, frames):
    assert AUTO_ORDER["cpu"][0] == "onnxruntime"
    backend = load_backend("auto", adapted_model, encoder_onnx=graphs.encoder, head_onnx=graphs.head)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.fallbacks == []
    assert (backend.input_hw, backend.window) == (HW, WINDOW)
    assert "onnxruntime" in backend.describe() and "CPU" in backend.describe()


def test_auto_falls_back_with_the_reason(graphs, adapted_model, tmp_path, frames):
    bad_head = _foreign_head(graphs, tmp_path)
    with pytest.raises(BackendError, match="do not belong together"):
        load_backend("onnxruntime", encoder_onnx=graphs.encoder, head_onnx=bad_head)
    logged = []
    backend = load_backend(
        "auto", adapted_model, encoder_onnx=graphs.encoder, head_onnx=bad_head, log=logged.append
    )
    assert isinstance(backend, TorchBackend)
    assert [name for name, _ in backend.fallbacks] == ["onnxruntime"]
    assert "fingerprints" in backend.fallbacks[0][1] and len(logged) == 1
    with pytest.raises(BackendError, match="no backend could be loaded"):
        load_backend("auto", None, encoder_onnx=graphs.encoder, head_onnx=bad_head)


def test_missing_graph_file_is_a_clear_error(graphs, tmp_path):
    with pytest.raises(BackendError, match="not found"):
        load_backend("onnxruntime", encoder_onnx=graphs.encoder, head_onnx=tmp_path / "nope.onnx")
    with pytest.raises(BackendError, match="both"):
        load_backend("onnxruntime", encoder_onnx=graphs.encoder)
    with pytest.raises(BackendError, match="unknown backend 'bogus'"):
        load_backend("bogus")


def test_graph_backend_checks_shapes(graphs, frames):
    backend = load_backend("onnxruntime", encoder_onnx=graphs.encoder, head_onnx=graphs.head)
    with pytest.raises(BackendError, match="built for 56x70"):
        backend.encode(torch.zeros(1, 2, 3, 70, 56))
    with pytest.raises(BackendError, match="expected frames"):
        backend.encode(torch.zeros(2, 3, *HW))
    feats = backend.encode(frames)
    with pytest.raises(BackendError, match=f"windows of {WINDOW} frames, got 3"):
        backend.decode(feats.frames(slice(0, 3)))
    # any number of frames encodes in chunks of the graph's N, matching one-by-one encoding
    five = backend.encode(torch.cat([frames, frames[:, :1]], dim=1))
    assert five.num_frames == WINDOW + 1
    assert torch.equal(five.layers[2][:, :WINDOW], feats.layers[2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_cuda_without_gpu(graphs, adapted_model):
    status = available_backends("cuda")
    assert status["torch"] and status["tensorrt"]
    with pytest.raises(BackendUnavailable, match="CUDA is not available"):
        load_backend("torch", adapted_model, device="cuda")
    with pytest.raises(BackendError) as info:
        load_backend("auto", adapted_model, device="cuda", encoder_onnx=graphs.encoder, head_onnx=graphs.head)
    message = str(info.value)
    assert all(name in message for name in ("tensorrt", "torch", "onnxruntime"))


def test_cpu_availability():
    status = available_backends("cpu")
    assert status["torch"] is None and status["onnxruntime"] is None
    assert status["tensorrt"] == "TensorRT runs on CUDA devices only"


def test_select_providers():
    assert select_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("cuda", both) == both
    with pytest.raises(BackendUnavailable, match="no CUDAExecutionProvider"):
        select_providers("cuda:0", ["CPUExecutionProvider"])


def test_chunked_pads_with_the_last_frame():
    x = torch.arange(5.0).view(5, 1)
    parts = chunked(x, 2)
    assert [v for _, v in parts] == [2, 2, 1]
    assert parts[-1][0].flatten().tolist() == [4.0, 4.0]
    assert torch.equal(torch.cat([c[:v] for c, v in parts]), x)


def test_finish_output_matches_decode_postprocessing():
    raw = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])  # (1, 1, 2, 2)
    out = finish_output(raw, (3, 3))
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == 0.0 and out[0, 0, 0, 2] == 1.0 and out[0, 0, 2, 0] == 2.0
    assert out.min() >= 0.0  # clamped like VideoDepthAnything.decode
    assert out[0, 0, 1, 1].item() == pytest.approx(0.5)  # bilinear, align_corners=True


def test_ort_graphs_can_be_copied_elsewhere(graphs, tmp_path, frames):
    """Graphs are self-contained files (no external data): a copy runs on its own."""
    for p in (graphs.encoder, graphs.head):
        shutil.copy(p, tmp_path / p.name)
    assert not [p for p in tmp_path.iterdir() if p.suffix not in (".onnx",)]
    a = load_backend(
        "onnxruntime", encoder_onnx=tmp_path / graphs.encoder.name, head_onnx=tmp_path / graphs.head.name
    )
    b = load_backend("onnxruntime", encoder_onnx=graphs.encoder, head_onnx=graphs.head)
    assert torch.equal(a(frames), b(frames))


@pytest.mark.gpu
def test_torch_cuda_graphs_and_fp16_match_fp32(adapted_model, frames):
    from endo_depth_model.export import prepare_for_export

    model = prepare_for_export(adapted_model)
    ref = load_backend("torch", model, device="cuda")(frames.cuda()).cpu()
    graphed = load_backend("torch", model, device="cuda", cuda_graphs=True)
    first, second = graphed(frames.cuda()).cpu(), graphed(frames.cuda()).cpu()  # capture, then replay
    assert torch.equal(first, second) and (first - ref).abs().max().item() <= 1e-4
    half = load_backend("torch", model, device="cuda", fp16=True)(frames.cuda()).cpu()
    valid = ref > 1e-3
    assert ((half[valid] - ref[valid]).abs() / ref[valid]).mean().item() <= 0.01


@pytest.mark.gpu
def test_cuda_graphs_with_fp16_and_selected_output_frames(adapted_model, frames):
    """The streaming engine's head call on a GPU: fp16 autocast, CUDA graphs and a head that computes
    only the last frames. The frame selection must not copy from the host inside the captured graph."""
    from endo_depth_model.export import prepare_for_export

    model = prepare_for_export(adapted_model)
    x, last = frames.cuda(), slice(frames.shape[1] // 2, None)
    plain = load_backend("torch", model, device="cuda")
    ref = plain.decode(plain.encode(x), image_hw=HW, output_frames=last).cpu()
    graphed = load_backend("torch", model, device="cuda", fp16=True, cuda_graphs=True)
    feats = graphed.encode(x)
    first = graphed.decode(feats, image_hw=HW, output_frames=last).cpu()  # capture
    second = graphed.decode(feats, image_hw=HW, output_frames=last).cpu()  # replay
    assert first.shape == ref.shape == (1, frames.shape[1] - frames.shape[1] // 2, *HW)
    assert torch.equal(first, second)
    valid = ref > 1e-3
    assert ((first[valid] - ref[valid]).abs() / ref[valid]).mean().item() <= 0.01
