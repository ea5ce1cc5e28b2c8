"""launch/depth.launch.py, checked without launch_ros (not installable from PyPI): its structure is read
from the source and held against the node's real interface and the shipped files."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "depth.launch.py"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def _kw(call: ast.Call, key: str):
    return next(k.value for k in call.keywords if k.arg == key)


def test_launch_file_declares_the_documented_arguments_and_uses_them():
    tree = ast.parse(LAUNCH.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"model", "image_topic", "params_file", "namespace"} <= declared
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used == declared, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LaunchDescription", "Node", "DeclareLaunchArgument"} <= imports


def test_launch_node_matches_an_installed_executable_and_the_node_topics():
    tree = ast.parse(LAUNCH.read_text())
    (node,) = _calls(tree, "Node")
    executables = {
        line.split()[0]
        for line in (ROOT / "executables.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    package = _kw(node, "package")
    assert ast.literal_eval(_kw(node, "executable")) in executables
    assert isinstance(package, ast.Name) and package.id == "PACKAGE"
    assert "endo_depth_ros" in LAUNCH.read_text()
    remapped = {ast.literal_eval(t.elts[0]) for t in _kw(node, "remappings").elts}
    # every input the node subscribes to can be remapped from the launch arguments
    assert remapped == {"image", "camera_info", "robot_pose"}
    node_source = (ROOT / "endo_depth_ros" / "depth_node.py").read_text()
    for topic in remapped:
        assert f'"{topic}", self._on_' in node_source


def test_default_params_file_is_shipped_and_matches_the_node_parameters():
    from endo_depth_ros.depth_node import PARAM_DOCS

    data = yaml.safe_load((ROOT / "config" / "depth.yaml").read_text())
    params = data["/**"]["ros__parameters"]

    def flatten(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flatten(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    names = set(flatten(params))
    assert names <= set(PARAM_DOCS), f"unknown parameters in config/depth.yaml: {names - set(PARAM_DOCS)}"
    assert set(PARAM_DOCS) - names == {"intrinsics"}  # the only parameter without a default value
    from endo_depth_ros.depth_node import PARAMETERS

    def lookup(name):
        node = params
        for part in name.split("."):
            node = node[part]
        return node

    for p in PARAMETERS:
        if p.name != "intrinsics":  # the shipped file holds the declared defaults
            assert lookup(p.name) == p.default and type(lookup(p.name)) is type(p.default), p.name


def test_shipped_rviz_config_shows_topics_the_node_publishes_under_the_launch_namespace():
    import re

    data = yaml.safe_load((ROOT / "config" / "endo_depth.rviz").read_text())
    topics = [d["Topic"]["Value"] for d in data["Visualization Manager"]["Displays"] if "Topic" in d]
    tree = ast.parse(LAUNCH.read_text())
    defaults = {
        ast.literal_eval(c.args[0]): ast.literal_eval(_kw(c, "default_value"))
        for c in _calls(tree, "DeclareLaunchArgument")
        if isinstance(_kw(c, "default_value"), ast.Constant)
    }
    ns = "/" + defaults["namespace"]
    published = set(
        re.findall(
            r'create_publisher\(\s*\w+,\s*"([^"]+)"', (ROOT / "endo_depth_ros" / "depth_node.py").read_text()
        )
    )
    for topic in topics:
        if topic == defaults["image_topic"]:
            continue  # the input, shown beside the outputs
        assert topic.startswith(ns + "/") and topic[len(ns) + 1 :] in published, topic
    assert data["Visualization Manager"]["Global Options"]["Fixed Frame"] == "odom"
