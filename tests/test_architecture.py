"""The offline package stays offline: no module of ``endo_depth_model`` imports rclpy, ROS message
packages or ``endo_depth_ros``, neither at module level nor inside a function."""

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
