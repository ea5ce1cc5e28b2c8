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
