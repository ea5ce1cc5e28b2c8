"""The offline package stays offline: no module of ``endo_depth_model`` imports rclpy, ROS message
packages or ``endo_depth_ros``, neither at module level nor inside a function; and its modules import
each other without cycles (function-level imports count too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("rclpy", "endo_depth_ros", "rosidl", "builtin_interfaces")
MSG_SUFFIX = "_msgs"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_model_package_never_imports_ros():
    bad = []
    for path in sorted((ROOT / "endo_depth_model").rglob("*.py")):
        for name in _imports(path):
            if name in FORBIDDEN or name.endswith(MSG_SUFFIX):
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, "endo_depth_model imports ROS:\n" + "\n".join(bad)


def test_importing_every_model_module_loads_no_ros():
    code = (
        "import importlib, pkgutil, sys, endo_depth_model\n"
        "for m in pkgutil.walk_packages(endo_depth_model.__path__, 'endo_depth_model.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('rclpy', 'endo_depth_ros') "
        "or k.split('.')[0].endswith('_msgs'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports anywhere in its file (function-level imports
    included), relative imports resolved; ``from a import b`` names ``a.b`` when that is a module."""
    paths = {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in paths else module)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_import_graph_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_model_package_has_no_import_cycle():
    graph = _import_graph("endo_depth_model")
    assert "endo_depth_model.runtime.base" in graph["endo_depth_model.runtime.torch_backend"]
    assert "endo_depth_model.ssb" in graph["endo_depth_model.export"]  # `from endo_depth_model import ssb`
    cycles = _cycles(graph)
    assert not cycles, "import cycles in endo_depth_model:\n" + "\n".join(" <-> ".join(c) for c in cycles)
