"""The offline package stays offline: no module of ``endo_depth_model`` imports rclpy, ROS message
packages or ``endo_depth_ros``, neither at module level nor inside a function; its modules import
each other without cycles (function-level imports count too); and the command line lives in
``endo_depth_model/cli/``: no other module registers a subcommand or imports the CLI."""

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


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_paths(package: str, root: Path = ROOT) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _import_graph(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports anywhere in its file (function-level imports
    included), relative imports resolved; ``from a import b`` names ``a.b`` when that is a module."""
    paths = _module_paths(package, root)
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


def _in_cli(module: str, package: str) -> bool:
    return module == f"{package}.cli" or module.startswith(f"{package}.cli.")


def _cli_outside_cli(package: str, root: Path = ROOT) -> list[str]:
    """Modules of ``package`` outside ``<package>/cli/`` that define ``register`` at module level or
    import ``<package>.cli`` (anywhere in the file, relative imports resolved)."""
    graph = _import_graph(package, root)
    bad = []
    for name, path in _module_paths(package, root).items():
        if _in_cli(name, package):
            continue
        bad += [f"{name} imports {t}" for t in sorted(graph[name]) if _in_cli(t, package)]
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            bad += [f"{name} defines register" for n in names if n == "register"]
    return bad


def test_cli_check_finds_commands_outside_the_cli_package(tmp_path):
    files = {
        "pkg/__init__.py": "",
        "pkg/cli/__init__.py": "from pkg.cli import run\n",
        "pkg/cli/run.py": "from pkg import work\n\ndef register(subparsers):\n    pass\n",
        "pkg/work.py": "def f():\n    from pkg.cli import run\n",
        "pkg/data/__init__.py": "",
        "pkg/data/tool.py": "from .. import cli\n\ndef register(subparsers):\n    pass\n",
        "pkg/data/alias.py": "register = print\n",
        "pkg/data/fine.py": "class Registry:\n    def register(self, name):\n        pass\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert sorted(_cli_outside_cli("pkg", tmp_path)) == [
        "pkg.data.alias defines register",
        "pkg.data.tool defines register",
        "pkg.data.tool imports pkg.cli",
        "pkg.work imports pkg.cli.run",
    ]


def test_library_modules_hold_no_command_line():
    """Subcommands are registered and run by the modules of ``endo_depth_model/cli/``; the library
    modules they call never register one and never import the CLI (the CLI imports the library)."""
    from endo_depth_model.cli import COMMANDS

    assert all(_in_cli(m, "endo_depth_model") for m in COMMANDS.values()), COMMANDS
    bad = _cli_outside_cli("endo_depth_model")
    assert not bad, "command line outside endo_depth_model/cli/:\n" + "\n".join(bad)
