"""TensorRT path: everything up to the engine in CI (fp32 islands, cache keys, engine cache, I/O checks);
engine builds and fp16 parity where TensorRT and a GPU exist (marked ``tensorrt``, skipped elsewhere)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from endo_depth_model.runtime import BackendUnavailable, EngineError, load_backend
from endo_depth_model.runtime import tensorrt_backend as trtb

from .conftest import HW, WINDOW

GPU = trtb.GpuInfo("NVIDIA Test GPU", (8, 6))


def test_fp32_islands_cover_temporal_attention_and_output_convs(graphs):
    model = onnx.load(str(graphs.head))
    pinned = trtb.fp32_node_names(model)
    by_name = {n.name: n for n in model.graph.node}
    kinds = [by_name[n].op_type for n in pinned]
    softmax = [n.name for n in model.graph.node if n.op_type == "Softmax"]
    assert len(softmax) == 8 and set(softmax) <= set(pinned)  # 4 modules x 2 attention blocks
    assert kinds.count("LayerNormalization") == 12  # 4 modules x 3 norms
    out_convs = [by_name[n] for n in pinned if by_name[n].op_type == "Conv"]
    assert sorted(c.input[1] for c in out_convs) == [
        "vda.head.scratch.output_conv2.0.weight",
        "vda.head.scratch.output_conv2.2.weight",
    ]
    assert kinds.count("Relu") == 2  # the ReLUs after those convolutions
    other_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in pinned]
    assert len(other_convs) > 20  # the rest of the head stays free to run in fp16
    assert trtb.fp32_node_names(graphs.encoder) == []


def test_head_without_scope_metadata_is_refused(graphs, tmp_path):
    model = onnx.load(str(graphs.head))
    for node in model.graph.node:
        del node.metadata_props[:]
        if node.op_type == "Conv":
            node.input[1] = node.input[1].replace("output_conv2", "oc2")
    with pytest.raises(EngineError, match="nothing|no temporal"):
        trtb.fp32_node_names(model)


def test_onnx_layer_names():
    assert trtb.onnx_layer_names("x", "[ONNX Layer: node_Conv_3]") == {"node_Conv_3"}
    two = trtb.onnx_layer_names("fused", "[ONNX Layer: a]\x1e[ONNX Layer: b]")
    assert two == {"a", "b"}
    names = trtb.onnx_layer_names("node_Softmax_12_output")
    assert "node_Softmax_12" in names and "node_Softmax_1" not in names


def test_engine_key_covers_everything_an_engine_depends_on(graphs, tmp_path):
    key = trtb.engine_key(graphs.head, "fp16", GPU, "10.3.0")
    assert key == trtb.engine_key(graphs.head, "fp16", GPU, "10.3.0")
    assert dict(key.input_shapes) == {f"layer_{i}": (WINDOW, 20, 192) for i in range(4)}
    assert key.graph_kind == "head"
    variants = [
        trtb.engine_key(graphs.head, "fp32", GPU, "10.3.0"),
        trtb.engine_key(graphs.head, "fp16", trtb.GpuInfo("NVIDIA Other", (8, 6)), "10.3.0"),
        trtb.engine_key(graphs.head, "fp16", trtb.GpuInfo("NVIDIA Test GPU", (8, 9)), "10.3.0"),
        trtb.engine_key(graphs.head, "fp16", GPU, "10.4.0"),
        trtb.engine_key(graphs.head, "fp16", GPU, "10.3.0", fp32_nodes=["x"]),
        trtb.engine_key(graphs.encoder, "fp16", GPU, "10.3.0"),
    ]
    digests = {v.digest() for v in variants} | {key.digest()}
    assert len(digests) == len(variants) + 1
    name = key.file_name("vitt_head")
    assert name.startswith("vitt_head.fp16.nvidia-test-gpu-sm86.trt10.3.0.") and name.endswith(".engine")
    assert trtb.EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    with pytest.raises(EngineError, match="precision"):
        trtb.engine_key(graphs.head, "int8", GPU, "10.3.0")
    with pytest.raises(EngineError, match="not found"):
        trtb.engine_key(tmp_path / "none.onnx", "fp16", GPU, "10.3.0")


def test_engine_cache_roundtrip_and_mismatch(graphs, tmp_path):
    cache = trtb.EngineCache(tmp_path)
    key = trtb.engine_key(graphs.encoder, "fp16", GPU, "10.3.0")
    with pytest.raises(EngineError, match="not found"):
        cache.load(key, "enc")
    path = cache.store(key, b"serialized-engine", "enc")
    assert path.parent == tmp_path and cache.load(key, "enc") == b"serialized-engine"
    other = dataclasses.replace(key, trt_version="10.4.0")
    with pytest.raises(EngineError, match=r"trt_version: 10.3.0 != 10.4.0|trt_version: 10.4.0 != 10.3.0"):
        trtb.EngineCache.load_file(path, other)
    path.with_name(path.name + ".json").unlink()
    with pytest.raises(EngineError, match="no key file"):
        cache.load(key, "enc")


def test_engine_io_check(graphs):
    meta = graphs.metadata()[1]
    io = {f"layer_{i}": ("input", (WINDOW, 20, 192)) for i in range(4)}
    io["disparity"] = ("output", (WINDOW, *HW))
    trtb.check_engine_io("e.engine", meta, io)
    with pytest.raises(EngineError, match="disparity: engine"):
        trtb.check_engine_io("e.engine", meta, {**io, "disparity": ("output", (8, *HW))})
    with pytest.raises(EngineError, match="do not match the graph's"):
        trtb.check_engine_io("e.engine", meta, {k: v for k, v in io.items() if k != "layer_3"})


@pytest.mark.skipif(trtb.tensorrt_unavailable_reason() is None, reason="TensorRT is present here")
def test_without_tensorrt_the_backend_is_unavailable(graphs):
    with pytest.raises(BackendUnavailable) as info:
        load_backend("tensorrt", encoder_onnx=graphs.encoder, head_onnx=graphs.head)
    print(f"TensorRT backend unavailable here: {info.value}")
    assert str(info.value) == trtb.tensorrt_unavailable_reason()


# ---- on machines with TensorRT and a GPU ---------------------------------------------------------------
@pytest.fixture
def needs_tensorrt():
    reason = trtb.tensorrt_unavailable_reason()
    if reason:
        print(f"skipping TensorRT engine test: {reason}")
        pytest.skip(f"TensorRT engine test: {reason}")


@pytest.mark.tensorrt
def test_fp16_engine_matches_torch_fp32(needs_tensorrt, graphs, adapted_model, frames, tmp_path):
    backend = load_backend(
        "tensorrt", encoder_onnx=graphs.encoder, head_onnx=graphs.head, cache_dir=tmp_path, precision="fp16"
    )
    with torch.no_grad():
        ref = adapted_model(frames).numpy()
    out = backend(frames).numpy()
    valid = ref > 1e-3
    absrel = float(np.mean(np.abs(out[valid] - ref[valid]) / ref[valid]))
    print(f"TensorRT fp16 vs torch fp32 AbsRel {absrel:.5f}")
    assert absrel <= 0.01


@pytest.mark.tensorrt
def test_fp32_engine_and_cache_reuse(needs_tensorrt, graphs, adapted_model, frames, tmp_path):
    first = load_backend(
        "tensorrt", encoder_onnx=graphs.encoder, head_onnx=graphs.head, cache_dir=tmp_path, precision="fp32"
    )
    mtimes = [p.stat().st_mtime_ns for p in first.engine_paths]
    again = load_backend(
        "tensorrt",
        encoder_onnx=graphs.encoder,
        head_onnx=graphs.head,
        cache_dir=tmp_path,
        precision="fp32",
        build_engines=False,
    )
    assert [p.stat().st_mtime_ns for p in again.engine_paths] == mtimes
    with torch.no_grad():
        ref = adapted_model(frames)
    assert (again(frames) - ref).abs().max().item() <= 1e-3


@pytest.mark.tensorrt
def test_missing_engine_without_build_falls_back(needs_tensorrt, graphs, adapted_model, tmp_path):
    with pytest.raises(EngineError, match="not found"):
        load_backend(
            "tensorrt",
            encoder_onnx=graphs.encoder,
            head_onnx=graphs.head,
            cache_dir=tmp_path,
            build_engines=False,
        )
    backend = load_backend(
        "auto",
        adapted_model,
        device="cuda",
        encoder_onnx=graphs.encoder,
        head_onnx=graphs.head,
        cache_dir=tmp_path,
        build_engines=False,
    )
    assert backend.name != "tensorrt" and backend.fallbacks[0][0] == "tensorrt"
    assert "not found" in backend.fallbacks[0][1]
