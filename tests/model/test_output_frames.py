"""Asking the head for some frames of a window gives exactly those frames of the full output, through
the model, the torch backend and the streaming engine (which asks only for the frames it uses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endo_depth_model.models import build_vda
from endo_depth_model.preprocess import Preprocessor
from endo_depth_model.runtime.torch_backend import TorchBackend
from endo_depth_model.streaming import StreamingDepth


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_vda("vitt").eval()
    # non-trivial temporal modules (they start as identity): the selection must not change their input
    with torch.no_grad():
        for p in m.head.motion_modules.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("sel", [slice(2, None), slice(0, 3), slice(5, 6), slice(1, 6, 2)])
def test_selected_frames_equal_the_full_output_sliced(model, sel):
    frames = torch.randn(2, 6, 3, 28, 42)
    with torch.inference_mode():
        feats = model.encode(frames)
        full = model.decode(feats, image_hw=(30, 40))
        part = model.decode(feats, image_hw=(30, 40), output_frames=sel)
        backend = TorchBackend(model, "cpu").decode(feats, image_hw=(30, 40), output_frames=sel)
    assert part.shape == (2, len(range(6)[sel]), 30, 40)
    torch.testing.assert_close(part, full[:, sel], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backend, full[:, sel], rtol=1e-5, atol=1e-5)


def test_an_empty_selection_is_refused(model):
    with torch.inference_mode(), pytest.raises(ValueError, match="selects no frame"):
        model.decode(model.encode(torch.randn(1, 4, 3, 28, 28)), output_frames=slice(4, None))


class _Recorder(torch.nn.Module):
    def __init__(self, inner, selects: bool):
        super().__init__()
        self.inner, self.calls = inner, []
        if not selects:  # a model with the plain protocol: decode(features, image_hw)
            self.decode = lambda features, image_hw=None: self._decode(features, image_hw, None)

    def encode(self, frames):
        return self.inner.encode(frames)

    def decode(self, features, image_hw=None, output_frames=None):
        return self._decode(features, image_hw, output_frames)

    def _decode(self, features, image_hw, output_frames):
        self.calls.append(output_frames)
        return self.inner.decode(features, image_hw=image_hw, output_frames=output_frames)


def test_the_engine_skips_context_frames_and_its_output_is_unchanged(model):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (28, 42, 3), dtype=np.uint8) for _ in range(20)]
    pre = Preprocessor(input_hw=(28, 42))
    outputs = {}
    for selects in (True, False):
        rec = _Recorder(model, selects)
        engine = StreamingDepth(rec, pre, window=8, overlap=5, blend=2, stride=2)
        res = [r for f in frames for r in engine.push(f)] + engine.flush()
        outputs[selects] = np.stack([r.disparity for r in res])
        if selects:  # the first window is used whole; later ones skip their n_context = 3 context frames
            assert rec.calls[0] is None and rec.calls[1:] and all(c == slice(3, None) for c in rec.calls[1:])
        else:
            assert set(rec.calls) == {None}
    np.testing.assert_allclose(outputs[True], outputs[False], rtol=1e-5, atol=1e-6)
