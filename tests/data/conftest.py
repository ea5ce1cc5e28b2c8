"""Shared tiny fixtures for the data tests."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.data.sequence import Frame
from endo_depth_model.data.simulator import EndoscopySimulator, preset


@pytest.fixture(scope="session")
def synth_frames() -> list[Frame]:
    """Five 48x64 target-domain frames with ground truth (rendered once per session)."""
    return list(EndoscopySimulator(preset("target", n_frames=5, seed=3, height=48, width=64)))


def assert_frames_equal(a: Frame, b: Frame, pose_atol: float = 1e-12) -> None:
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_allclose(a.K, b.K, atol=1e-12)
    np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=pose_atol)
    assert a.stamp_ns == b.stamp_ns
