"""Fixtures for the model tests (helpers live in ``vda_testing``)."""

from __future__ import annotations

import pytest
from vda_testing import deterministic_frames, deterministic_state


@pytest.fixture(scope="module")
def tiny_model():
    """``vitt`` in eval mode with :func:`deterministic_state` weights (outputs of order 1). Do not mutate."""
    from endo_depth_model.models import build_vda

    model = build_vda("vitt").eval()
    model.load_state_dict(deterministic_state(model.state_dict()))
    return model


@pytest.fixture
def det_state():
    return deterministic_state


@pytest.fixture
def det_frames():
    return deterministic_frames
