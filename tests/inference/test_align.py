"""The snippet aligner: exact recovery of a known scale/shift, the blend, EndoDAV equivalence, re-anchors."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.align import AlignError, SnippetAligner, blend_weights, fit_scale_shift


def _endodav_reference(raw_windows: list[np.ndarray], overlap: int = 8, blend: int = 8) -> np.ndarray:
    """Straightforward transcription of EndoDAV's offline chaining (list of frames, one fit per window)."""
    aligned = list(raw_windows[0])
    for win in raw_windows[1:]:
        pre = np.stack(aligned[-blend:]).astype(np.float64)
        post = win[:overlap].astype(np.float64)
        target = np.stack(aligned[-overlap:]).astype(np.float64)
        a00, a01, a11 = (post * post).sum(), post.sum(), post.size
        b0, b1 = (post * target).sum(), target.sum()
        det = a00 * a11 - a01 * a01
        s, t = (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det
        post = np.maximum(post * s + t, 0)[overlap - blend :]
        w = np.array([i / (blend - 1) for i in range(blend)])[:, None, None]
        aligned[-blend:] = list(pre * (1 - w) + post * w)
        aligned += list(np.maximum(win[overlap:].astype(np.float64) * s + t, 0))
    return np.stack(aligned)


def _run(aligner: SnippetAligner, windows: list[np.ndarray]) -> tuple[np.ndarray, list]:
    out, stats = [], []
    for win in windows:
        res = aligner.push(win)
        out.append(res.disparity)
        stats.append(res.stats)
    out.append(aligner.flush())
    return np.concatenate(out), stats


def test_fit_recovers_known_scale_and_shift_exactly():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.1, 2.0, size=(8, 6, 5))
    target = 3.7 * pred - 0.42
    scale, shift, ok = fit_scale_shift(pred, target)
    assert ok
    assert scale == pytest.approx(3.7, abs=1e-12)
    assert shift == pytest.approx(-0.42, abs=1e-12)


def test_fit_with_mask_ignores_outliers_and_flags_degenerate():
    pred = np.linspace(1, 2, 20)
    target = 2 * pred + 1
    target[:5] = 1000.0
    mask = np.ones(20, bool)
    mask[:5] = False
    scale, shift, ok = fit_scale_shift(pred, target, mask)
    assert ok and scale == pytest.approx(2.0) and shift == pytest.approx(1.0)
    assert fit_scale_shift(np.ones(10), np.arange(10.0)) == (1.0, 0.0, False)


def test_aligner_recovers_known_scale_shift_of_second_snippet():
    """Snippet 2 sees the truth as ``raw = (truth - t) / s``: the fit is (s, t), the output the truth."""
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.5, 2.0, size=(32 + 22, 4, 5)).astype(np.float32)
    s, t = 2.5, 0.3
    second = ((truth[24:] - t) / s).astype(np.float32)  # 8 shared frames 24..31 + 22 new frames 32..53
    aligner = SnippetAligner(overlap=8, blend=8, max_residual=None, scale_range=None)
    out1 = aligner.push(truth[:32])
    assert out1.stats.reanchored and out1.stats.reason == "first"
    assert out1.disparity.shape[0] == 24 and aligner.n_pending == 8
    res = aligner.push(second)
    assert res.stats.scale == pytest.approx(s, rel=1e-6)
    assert res.stats.shift == pytest.approx(t, abs=1e-6)
    assert res.stats.residual < 1e-6
    assert res.stats.n_overlap == 8 and not res.stats.reanchored
    # 8 blended + 14 new released, 8 pending
    assert res.disparity.shape[0] == 22 and aligner.n_pending == 8
    out = np.concatenate([out1.disparity, res.disparity, aligner.flush()])
    np.testing.assert_allclose(out, truth, atol=1e-5)


def test_blend_is_linear_crossfade_over_pending_frames():
    """Old alignment of the 8 overlap frames = A, new fit = B: blended frame i = A (1 - i/7) + B i/7."""
    h, w = 3, 4
    first = np.full((32, h, w), 1.0, np.float32)
    first[24:] = 2.0  # the frames that stay pending: old value A = 2
    # second snippet: shared raw frames with a fit target of 2 (exact: s=1, t=0) except that the
    # blended outcome is checked on a snippet whose shared raw values differ per pixel from the history
    aligner = SnippetAligner(overlap=8, blend=8, max_residual=None, scale_range=None)
    aligner.push(first)
    rng = np.random.default_rng(2)
    shared = rng.uniform(1.0, 3.0, size=(8, h, w)).astype(np.float32)
    new = rng.uniform(1.0, 3.0, size=(22, h, w)).astype(np.float32)
    res = aligner.push(np.concatenate([shared, new]))
    s, t = res.stats.scale, res.stats.shift
    assert np.isfinite(s) and np.isfinite(t)
    post = np.maximum(shared.astype(np.float64) * s + t, 0)
    wts = np.arange(8) / 7.0
    expected = 2.0 * (1 - wts[:, None, None]) + post * wts[:, None, None]
    np.testing.assert_allclose(res.disparity[:8], expected, rtol=1e-6)
    # first blended frame keeps the old alignment, last one is the new fit
    np.testing.assert_allclose(res.disparity[0], 2.0, rtol=1e-6)
    np.testing.assert_allclose(res.disparity[7], post[7], rtol=1e-6)
    np.testing.assert_allclose(res.disparity[8:], np.maximum(new[:14] * s + t, 0), rtol=1e-6)
    np.testing.assert_allclose(blend_weights(8), wts)


def test_matches_independent_endodav_transcription_over_many_snippets():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 1.0, size=(4, 5))
    windows = []
    for k in range(5):
        n = 32 if k == 0 else 30
        drift = np.linspace(0, 0.3, n)[:, None, None]
        noise = rng.normal(0, 0.02, size=(n, 4, 5))
        windows.append(
            (rng.uniform(0.5, 2) * (base + drift + noise) + rng.uniform(-0.1, 0.1)).astype(np.float32)
        )
    ours, stats = _run(SnippetAligner(overlap=8, blend=8, max_residual=None, scale_range=None), windows)
    ref = _endodav_reference(windows)
    assert ours.shape == ref.shape == (32 + 4 * 22, 4, 5)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert [st.n_overlap for st in stats] == [0, 8, 8, 8, 8]


@pytest.mark.parametrize("stride", [1, 3, 22])
def test_any_stride_chain_recovers_per_snippet_affine_distortions(stride):
    """Each snippet sees the truth through its own (s, t); stitched output equals the truth for any stride."""
    rng = np.random.default_rng(4)
    overlap, blend, first = 8, 8, 32
    n_frames = first + 6 * stride
    truth = rng.uniform(0.5, 2.0, size=(n_frames, 3, 3))
    aligner = SnippetAligner(overlap=overlap, blend=blend, max_residual=1e-3, scale_range=(0.05, 20))
    outs = [aligner.push(truth[:first]).disparity]
    for start in range(first, n_frames, stride):
        s, t = rng.uniform(0.3, 3.0), rng.uniform(-0.2, 0.2)
        snippet = (truth[start - overlap : start + stride] - t) / s
        res = aligner.push(snippet)
        assert res.disparity.shape[0] == stride
        assert res.stats.scale == pytest.approx(s, rel=1e-6) and not res.stats.reanchored
        outs.append(res.disparity)
    outs.append(aligner.flush())
    np.testing.assert_allclose(np.concatenate(outs), truth, rtol=1e-5)


def test_scene_cut_reanchors_instead_of_fitting_garbage():
    rng = np.random.default_rng(5)
    aligner = SnippetAligner(overlap=8, blend=8, max_residual=0.2)
    first = rng.uniform(1.0, 1.2, size=(32, 6, 6)).astype(np.float32)
    aligner.push(first)
    # a new scene: unrelated structure, ten times larger raw disparity
    cut = rng.uniform(0.0, 20.0, size=(30, 6, 6)).astype(np.float32)
    res = aligner.push(cut)
    assert res.stats.reanchored and res.stats.reason == "residual"
    assert res.stats.residual > 0.2
    # re-anchor = median matching, no blend: pending frames come out unchanged
    np.testing.assert_allclose(res.disparity[:8], first[24:], rtol=1e-6)
    assert res.stats.shift == 0.0
    assert res.stats.scale == pytest.approx(np.median(first[24:]) / np.median(cut[:8]), rel=1e-5)
    # the chain keeps working after the cut: an exact affine copy aligns without re-anchoring
    tail = np.concatenate([aligner._history, rng.uniform(1, 2, size=(22, 6, 6)).astype(np.float32)])
    res2 = aligner.push(tail * 0.5 + 0.1)
    assert not res2.stats.reanchored and res2.stats.scale == pytest.approx(2.0, rel=1e-5)


def test_scale_out_of_range_and_degenerate_fits_reanchor():
    rng = np.random.default_rng(6)
    aligner = SnippetAligner(overlap=4, blend=2, max_residual=None, scale_range=(0.1, 10.0))
    first = rng.uniform(1, 2, size=(8, 2, 2)).astype(np.float32)
    aligner.push(first)
    hist = aligner._history.copy()
    res = aligner.push(np.concatenate([hist / 100.0, np.ones((3, 2, 2), np.float32)]))
    assert res.stats.reanchored and res.stats.reason == "scale"
    res = aligner.push(np.ones((6, 2, 2), np.float32))
    assert res.stats.reanchored and res.stats.reason == "degenerate"
    assert np.isfinite(res.disparity).all()


def test_fit_off_keeps_raw_values_on_the_same_schedule():
    rng = np.random.default_rng(7)
    aligner = SnippetAligner(overlap=4, blend=2, fit=False)
    first = rng.uniform(1, 2, size=(6, 2, 2)).astype(np.float32)
    second = rng.uniform(5, 9, size=(7, 2, 2)).astype(np.float32)
    out1 = aligner.push(first)
    out2 = aligner.push(second)
    stitched = np.concatenate([out1.disparity, out2.disparity, aligner.flush()])
    # no fit, no blend: the first snippet, then the new frames of the second as they are
    np.testing.assert_array_equal(stitched, np.concatenate([first, second[4:]]))
    assert out2.stats.scale == 1.0 and out2.stats.shift == 0.0 and not out2.stats.reanchored


def test_reset_and_flush_and_bad_input():
    aligner = SnippetAligner(overlap=4, blend=2)
    assert not aligner.anchored
    aligner.push(np.ones((6, 2, 2), np.float32) + np.arange(6, dtype=np.float32)[:, None, None])
    assert aligner.anchored and aligner.n_pending == 2
    assert aligner.reset() == 2
    assert not aligner.anchored and aligner.n_pending == 0
    res = aligner.push(np.full((5, 2, 2), 3.0, np.float32))
    assert res.stats.reason == "first" and res.stats.scale == 1.0
    with pytest.raises(AlignError, match="shared frames"):
        aligner.push(np.ones((4, 2, 2), np.float32))
    with pytest.raises(AlignError, match=r"\(N, H, W\)"):
        aligner.push(np.ones((4, 2), np.float32))
    with pytest.raises(AlignError, match="blend"):
        SnippetAligner(overlap=4, blend=1)
    with pytest.raises(AlignError, match="blend"):
        SnippetAligner(overlap=4, blend=6)
    no_blend = SnippetAligner(overlap=3, blend=0)
    out = no_blend.push(np.ones((4, 2, 2), np.float32))
    assert out.disparity.shape[0] == 4 and no_blend.n_pending == 0 and no_blend.flush().shape[0] == 0


def test_subsampled_fit_recovers_exact_affine_and_bounds_work():
    rng = np.random.default_rng(8)
    truth = rng.uniform(0.5, 2.0, size=(40, 30, 40)).astype(np.float32)
    aligner = SnippetAligner(overlap=8, blend=8, max_fit_pixels=1000)
    aligner.push(truth[:32])
    assert aligner._fit_view(truth[:8]).size <= 1000
    res = aligner.push((truth[24:] - 0.2) / 1.7)
    assert res.stats.scale == pytest.approx(1.7, rel=1e-5) and res.stats.shift == pytest.approx(0.2, abs=1e-5)
    with pytest.raises(AlignError, match="max_fit_pixels"):
        SnippetAligner(max_fit_pixels=1)


def test_fit_mask_keeps_the_scope_border_out_of_the_fit():
    """Values outside the field of view (any garbage) do not change the fitted scale and shift."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.5, 1.5, (12, 10, 12)).astype(np.float32)
    mask = np.zeros((10, 12), bool)
    mask[2:8, 2:10] = True
    raw = (truth - 0.2) / 2.0
    raw[:, ~mask] = rng.uniform(5, 50, (12, int((~mask).sum())))  # the border: nonsense
    aligner = SnippetAligner(overlap=4, blend=0)
    aligner.fit_mask = mask
    aligner.push(truth[:8])
    out = aligner.push(raw[4:])
    assert out.stats.scale == pytest.approx(2.0, rel=1e-4) and out.stats.shift == pytest.approx(0.2, abs=1e-4)
    assert not out.stats.reanchored
    np.testing.assert_allclose(out.disparity[:, mask], truth[8:, mask], rtol=1e-4)
