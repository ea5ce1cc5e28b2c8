"""benchmarks/gpu_pretrain.sh, the one-call pretraining for a lent GPU, run here on the CPU at a tiny size:
it renders with worker processes, trains, brings back what a later call (or our CPU) continues from, and a
second call given that state goes on from its step instead of starting again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, work: Path, steps: int, state: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {
        "DEVICE": "cpu", "PYTHON": sys.executable, "WORK": str(work), "MIX": "lap:2,dome:1", "FRAMES": "4",
        "CLIP": "2", "STEPS": str(steps), "EVAL_EVERY": "1", "WORKERS": "2", "MINUTES": "5",
        "EXTRA": "--input-height 42 --input-width 56 --input-scales 1 --val-kinds lap --threads 1",
    }  # fmt: skip
    if state is not None:
        env["STATE"] = str(state)
    return subprocess.run(
        ["bash", "benchmarks/gpu_pretrain.sh", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_gpu_pretrain_script_trains_brings_back_its_state_and_continues(tmp_path):
    first = _run(tmp_path / "out1", tmp_path / "work1", steps=2)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    names = {p.name for p in (tmp_path / "out1").iterdir()}
    assert {"vitt_pretrained.safetensors", "vitt_best.safetensors", "state.pt", "command.txt"} <= names
    assert "--render-workers 2" in (tmp_path / "out1/command.txt").read_text()
    assert len(list((tmp_path / "work1/data").glob("lap_*_v2.npz"))) == 2
    # a fresh machine (another work folder) given the state continues at step 2
    second = _run(tmp_path / "out2", tmp_path / "work2", steps=3, state=tmp_path / "out1/state.pt")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "resumed from" in second.stdout and "at step 2" in second.stdout
    log = json.loads((tmp_path / "out2/pretrain_log.json").read_text())["log"]
    assert [r["step"] for r in log][-1] == 3 and len(log) == 3
