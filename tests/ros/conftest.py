"""Fixtures shared by the ROS tests."""

from __future__ import annotations

import pytest

from .node_harness import make_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random vitt depth and pose weights on disk, made once per test module."""
    return make_weights(tmp_path_factory.mktemp("weights"))
