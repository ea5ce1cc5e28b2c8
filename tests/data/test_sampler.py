"""Clip sampler: windows stay inside one sequence; resizing scales intrinsics; item layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from endo_depth_model.data.sampler import ClipDataset, clip_windows
from endo_depth_model.data.sequence import DataError, Frame, Sequence


def _sequence(name: str, n: int, h: int = 8, w: int = 12, offset: int = 0) -> Sequence:
    K = np.array([[10.0, 0, 5.5], [0, 9.0, 3.5], [0, 0, 1]])

    def load(i: int) -> Frame:
        rgb = np.full((h, w, 3), offset + i, np.uint8)
        depth = np.full((h, w), 0.01 * (i + 1), np.float32)
        depth[0, 0] = np.nan
        T = np.eye(4)
        T[2, 3] = 0.001 * i
        return Frame(rgb=rgb, K=K, depth=depth, T_world_cam=T, stamp_ns=i, index=i, sequence=name)

    return Sequence(name=name, length=n, load=load)


@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    clip_len=st.integers(1, 8),
    stride=st.integers(1, 8),
    neighbours=st.integers(0, 2),
)
def test_windows_never_cross_a_sequence_boundary(lengths, clip_len, stride, neighbours):
    span = clip_len + 2 * neighbours
    windows = clip_windows(lengths, clip_len, stride, neighbours)
    for s, start in windows:
        assert 0 <= start and start + span <= lengths[s]
    # complete: every sequence contributes all strided starts that fit
    expected = sum(len(range(0, n - span + 1, stride)) for n in lengths)
    assert len(windows) == expected


def test_clip_item_layout_neighbours_and_scaled_intrinsics():
    seqs = [_sequence("a", 7, offset=0), _sequence("b", 4, offset=100)]
    ds = ClipDataset(seqs, clip_len=2, size=(4, 6), stride=1)
    assert [(s, start) for s, start in ds.windows] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    item = ds[4]
    assert item["sequence"] == "b" and item["frame_index"].tolist() == [0, 1, 2, 3]
    assert item["rgb"].shape == (4, 3, 4, 6) and item["rgb"].dtype == torch.float32
    # previous / clip / next slices: rgb[0:T], rgb[1:T+1], rgb[2:T+2]
    assert (item["rgb"][:, 0, 0, 0] * 255).round().tolist() == [100, 101, 102, 103]
    # K for an image halved in both directions: f/2, c' = (c + 0.5) / 2 - 0.5
    np.testing.assert_allclose(item["K"][0].numpy(), [[5.0, 0, 2.5], [0, 4.5, 1.5], [0, 0, 1]], atol=1e-6)
    assert item["depth"].shape == (4, 1, 4, 6) and torch.isnan(item["depth"][0, 0, 0, 0])
    assert item["depth"][2, 0, 3, 3].item() == pytest.approx(0.03)
    assert (
        item["has_depth"] and item["has_pose"] and item["T_world_cam"][3, 2, 3].item() == pytest.approx(0.003)
    )
    with pytest.raises(DataError, match="no clip of 8\\+2 frames"):
        ClipDataset(seqs, clip_len=8)


def test_clip_dataset_batches_with_default_collate():
    ds = ClipDataset([_sequence("a", 9)], clip_len=3, size=None, stride=3)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["rgb"].shape == (2, 5, 3, 8, 12) and batch["K"].shape == (2, 5, 3, 3)
    assert batch["frame_index"][:, 0].tolist() == [0, 3]


def test_simulator_clips_load_in_forked_workers():
    """The renderer's thread pool is per process: forked DataLoader workers must not hang."""
    from endo_depth_model.data import open_sequences

    seqs = open_sequences("synth:target?seed=1&n_frames=5&height=16&width=20")
    seqs[0][0]  # start the pool in the parent before forking
    ds = ClipDataset(seqs, clip_len=1, size=None, stride=2)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=1, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    batches = list(loader)
    assert len(batches) == 2 and torch.isfinite(batches[0]["depth"]).any()
