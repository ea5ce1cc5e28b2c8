"""docs/node.md lists exactly the parameters, topics and services the node declares."""

from __future__ import annotations

import re
from pathlib import Path

from endo_depth_ros.depth_node import PARAM_DOCS

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "node.md").read_text()
SOURCE = (ROOT / "endo_depth_ros" / "depth_node.py").read_text()


def _table(heading: str) -> list[str]:
    """First-column names (in backticks) of the table under ``## heading``."""
    section = PAGE.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


def test_every_declared_parameter_is_documented_and_nothing_else():
    documented = _table("Parameters")
    assert len(documented) == len(set(documented))
    assert set(documented) == set(PARAM_DOCS)


def test_every_topic_the_node_uses_is_documented_and_nothing_else():
    published = set(re.findall(r'create_publisher\(\s*\w+,\s*"([^"]+)"', SOURCE))
    subscribed = set(re.findall(r'create_subscription\(\s*\w+,\s*"([^"]+)"', SOURCE))
    assert published and subscribed
    documented = _table("Topics")
    assert set(documented) == published | subscribed
    rows = {name: row for name, row in re.findall(r"^\| `([^`]+)` \|(.*)$", PAGE, re.M)}
    for topic in published:
        assert "| out |" in rows[topic], topic
    for topic in subscribed:
        assert "| in |" in rows[topic], topic


def test_services_are_documented():
    services = set(re.findall(r'create_service\(\s*\w+,\s*"([^"]+)"', SOURCE))
    assert services and set(_table("Services")) == services


def test_documented_defaults_match_the_code():
    from dataclasses import fields

    from endo_depth_model.pipeline import PipelineConfig
    from endo_depth_ros.depth_node import _PIPELINE_PARAM, NodeParams

    section = PAGE.split("## Parameters\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([^`]+)` \| [^|]+ \| ([^|]+) \|", section, re.M))
    pdef, ndef = PipelineConfig(), NodeParams()
    for name in PARAM_DOCS:
        value = getattr(pdef, _PIPELINE_PARAM[name]) if name in _PIPELINE_PARAM else getattr(ndef, name)
        shown = rows[name].strip()
        if name == "intrinsics":
            assert shown == "unset"
            continue
        expected = "true" if value is True else "false" if value is False else str(value)
        assert shown == f"`{expected}`" or (expected == "" and shown == '`""`'), (name, shown, expected)
    assert {f.name for f in fields(NodeParams)} <= set(PARAM_DOCS)


def test_documented_choices_and_ranges_are_the_declared_ones():
    from endo_depth_ros.depth_node import PARAMETERS

    section = PAGE.split("## Parameters\n", 1)[1].split("\n## ", 1)[0]
    ranges = dict(re.findall(r"^\| `([^`]+)` \| [^|]+ \| [^|]+ \|([^|]*)\|", section, re.M))
    for p in PARAMETERS:
        shown = ranges[p.name].strip()
        if p.choices:
            assert sorted(c.strip() for c in shown.split(",")) == sorted(p.choices), (p.name, shown)
        elif p.range:
            lo, hi = (f"{v:g}" for v in p.range[:2])
            assert shown.startswith(f"{lo}..{hi}"), (p.name, shown)


def test_start_up_checks_come_from_the_declarations():
    import pytest

    from endo_depth_model.pipeline import PipelineConfig, PipelineError
    from endo_depth_ros.depth_node import parameter_problems

    assert parameter_problems({"qos": "sensor_data", "transport": "raw", "queue_policy": "drop_oldest"}) == []
    problems = parameter_problems({"qos": "fast", "transport": "raw", "queue_policy": "block"})
    assert problems == [
        "qos must be one of sensor_data, reliable, got 'fast'",
        "queue_policy must be one of drop_oldest, drop_newest, got 'block'",
    ]
    with pytest.raises(PipelineError, match="model config 'vitx' is not one of vitt, vits, vitb, vitl"):
        PipelineConfig(model_config="vitx").validate()


def test_every_diagnostics_key_the_node_publishes_is_documented():
    """The keys of the node's /diagnostics status (read from its source: the values dict and the process
    counters) all appear in docs/node.md's "Diagnostics keys" section, and so do the reason prefixes."""
    section = PAGE.split("## Diagnostics keys\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([^`]+)`", section))
    body = SOURCE.split("    def diagnostics_values", 1)[1]
    block = body.split("values = {\n", 1)[1].split("\n        }\n", 1)[0]
    keys = set(re.findall(r'^\s+"([a-z0-9_]+)":', block, re.M))
    process = SOURCE.split("def _process_values", 1)[1].split("def ", 1)[0]
    keys |= set(re.findall(r'"([a-z_]+)": ', process))
    assert len(keys) > 30 and {"frames_received", "scene_cuts", "rss_mb", "overexposed_frames"} <= keys
    assert keys <= documented, sorted(keys - documented)
    for prefix in ("reanchors.", "rejected.", "error."):
        assert f'f"{prefix}{{k}}"' in SOURCE and any(d.startswith(prefix) for d in documented), prefix
