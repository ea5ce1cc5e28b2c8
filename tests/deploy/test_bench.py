"""``endo-depth bench``: geometry rules, a tiny real run over torch and onnxruntime, the report."""

from __future__ import annotations

import json
import shutil

import pytest

from endo_depth_model import bench

from .conftest import HW, WINDOW


def test_stream_geometry_follows_endodav():
    assert bench.stream_geometry(32, 22) == (10, 8)  # EndoDAV offline constants
    assert bench.stream_geometry(32, 1) == (10, 8)
    assert bench.stream_geometry(16, 2) == (5, 4)
    overlap, blend = bench.stream_geometry(4, 2)
    assert overlap <= 4 - 2 and (blend == 0 or 2 <= blend <= overlap)


def test_bad_options_are_rejected():
    with pytest.raises(bench.BenchError, match="multiples of 14"):
        bench.run_bench(bench.BenchConfig(encoder="vitt", sizes=[(50, 70)]), progress=False)
    with pytest.raises(bench.BenchError, match="unknown backend"):
        bench.run_bench(
            bench.BenchConfig(encoder="vitt", sizes=[HW], backends=["tensorflow"]), progress=False
        )


def test_official_needs_a_checkout(tmp_path):
    with pytest.raises(bench.BenchError, match="not a Video-Depth-Anything checkout"):
        bench.bench_official(str(tmp_path), "vits", (224, 280), 32, 1, "cpu")


def test_tiny_bench_measures_both_backends(graphs, adapted_model, tmp_path):
    cache = tmp_path / "cache"
    folder = cache / "onnx" / graphs.metadata()[0].fingerprint
    folder.mkdir(parents=True)
    for p in (graphs.encoder, graphs.head):
        shutil.copy(p, folder / p.name)  # the bench finds the graphs in its cache: no export here
    cfg = bench.BenchConfig(
        encoder="vitt",
        sizes=[HW],
        windows=[WINDOW],
        strides=[2],
        backends=["torch", "onnxruntime"],
        passes=1,
        repeats=1,
        warmup=0,
        cache_dir=str(cache),
    )
    result = bench.run_bench(cfg, progress=False, model=adapted_model)
    rows = result["rows"]
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime"]
    for r in rows:
        assert "error" not in r, r
        assert r["frames"] == WINDOW + 2  # every pushed frame came out (window + passes * stride)
        assert r["encoder_ms"] > 0 and r["head_ms"] > 0 and r["stream_ms"] > 0
        assert r["speedup"] == pytest.approx(r["rerun_ms"] / r["stream_ms"])
        assert r["push_p95_ms"] >= r["push_p50_ms"] > 0
        assert r["peak_rss_mib"] > 50
    assert "onnxruntime" in rows[1]["description"]
    md = bench.to_markdown(result, "endo-depth bench --encoder vitt")
    assert "| torch | fp32 | 56x70 | 4 | 2 |" in md and "| onnxruntime | fp32 | 56x70 | 4 | 2 |" in md
    assert "Command: `endo-depth bench --encoder vitt`" in md and result["machine"]["cpu_count"] >= 1
    json.dumps(result)  # serialisable as written by --json


def test_markdown_lists_pipeline_official_and_failed_rows():
    row = {
        "backend": "onnxruntime",
        "height": 224,
        "width": 280,
        "window": 16,
        "stride": 2,
        "stream_ms": 99.04,
        "pipeline_fps": 10.26,
        "pipeline_p50_ms": 80.0,
        "pipeline_p95_ms": 120.0,
        "pipeline_cpu_ms": 95.0,
        "pipeline_window": 16,
        "pipeline_stride": 2,
        "pipeline_odometry": True,
    }
    failed = {
        "backend": "tensorrt",
        "height": 224,
        "width": 280,
        "window": 16,
        "stride": 2,
        "error": "BackendUnavailable: no CUDA GPU is available",
    }
    official = {
        "backend": "official VDA (torch)",
        "height": 224,
        "width": 280,
        "window": 32,
        "forward_ms": 8320.0,
        "per_frame_ms": 260.0,
        "per_frame_cpu_ms": 255.5,
    }
    result = {"machine": {"cpu": "X", "cpu_count": 2}, "rows": [row, failed], "official": [official]}
    md = bench.to_markdown(result)
    assert "| onnxruntime | 224x280 | 16 | 2 | 10.3 | 80.0 | 120.0 | 95.0 | True |" in md
    assert "| official VDA (torch) | 224x280 | 32 | 8320 | 260.0 | 255.5 |" in md
    assert "- tensorrt 224x280 T=16: BackendUnavailable: no CUDA GPU is available" in md
    assert "| 99.0 |" in md and md.count("| onnxruntime |") == 2
