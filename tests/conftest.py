"""Test-wide setup: the project's ROS environment (loopback discovery, temp log dir, FastDDS profile)
with a random ROS domain per test session, applied before any test calls ``rclpy.init``."""

from __future__ import annotations

import os
import random

import pytest

from endo_depth_ros import ros_env

# A random domain keeps concurrent test runs on one machine apart (0..101 avoids the port range
# collisions of high domain ids with ephemeral ports).
ros_env.apply(domain_id=int(os.environ.get("ENDO_DEPTH_TEST_DOMAIN", random.randint(1, 101))))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - torch missing or broken: no GPU tests
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
