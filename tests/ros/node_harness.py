"""Shared test harness: weights for a small model, the node in its own process, and a listener/talker
node in the test process, all over real DDS on loopback (the project's ROS environment)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile

ROOT = Path(__file__).resolve().parents[2]


def make_weights(directory: Path, seed: int = 0, pose: bool = True) -> dict[str, Path]:
    """Random-init ``vitt`` depth weights (and pose weights): a real model of the shipped size."""
    import torch

    from endo_depth_model.checkpoint import save_safetensors
    from endo_depth_model.models import build_vda
    from endo_depth_model.models.pose_net import PoseNet

    torch.manual_seed(seed)
    out = {"weights": save_safetensors(build_vda("vitt"), directory / "vitt.safetensors")}
    if pose:
        out["pose_weights"] = save_safetensors(PoseNet(), directory / "pose.safetensors")
    return out


SMALL = {
    "input_height": 56,
    "input_width": 70,
    "window": 8,
    "overlap": 4,
    "stride": 2,
    "blend": 2,
    "torch_threads": 1,
}


class NodeProcess:
    """``python -m endo_depth_ros.depth_node`` with parameters, in namespace ``ns``."""

    def __init__(
        self, params: dict, ns: str = "/test", extra_args: list[str] | None = None, env: dict | None = None
    ):
        args = [sys.executable, "-m", "endo_depth_ros.depth_node", "--ros-args", "-r", f"__ns:={ns}"]
        for k, v in params.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, (list, tuple)):
                v = "[" + ",".join(str(float(x)) for x in v) + "]"
            args += ["-p", f"{k}:={v}"]
        args += extra_args or []
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.output, _ = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.output, _ = self.proc.communicate()
        elif not self.output and not self.proc.stdout.closed:
            self.output = self.proc.stdout.read()
        return self.proc.returncode


class Peer:
    """A test-side node: publishes inputs, records every message on the topics it subscribes to."""

    def __init__(self, name: str = "endo_depth_test_peer"):
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def subscribe(self, msg_type, topic: str, qos=None):
        qos = qos or QoSProfile(depth=500)
        self.node.create_subscription(msg_type, topic, self.received[topic].append, qos)

    def publisher(self, msg_type, topic: str, qos=None):
        return self.node.create_publisher(msg_type, topic, qos or QoSProfile(depth=500))

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def textured_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smoothly moving coloured texture, (H, W, 3) uint8 frames."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(h + n, w + n, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[i : i + h, i : i + w]) for i in range(n)]
