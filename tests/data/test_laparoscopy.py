"""Laparoscopy simulator: exact depth for tissue and instruments, field-of-view border, determinism;
the randomised colon preset."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_model.data.laparoscopy import (
    LaparoscopySimulator,
    fov_border_mask,
    laparoscopy_preset,
)
from endo_depth_model.data.simulator import EndoscopySimulator, SimulatorConfigError, colon_preset


def _backproject(depth_m: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    h, w = depth_m.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(h * w)])
    pts_cam = rays * depth_m.ravel().astype(np.float64)
    return (T_world_cam[:3, :3] @ pts_cam + T_world_cam[:3, 3:4]) * 1000.0  # (3, N) mm


@pytest.fixture(scope="module")
def lap():
    # seed chosen so that the scene shows instruments and a circular border
    for seed in range(1, 40):
        cfg = laparoscopy_preset("lap", seed, n_frames=6, height=60, width=76, noise_std=0.0)
        if cfg.instruments >= 1 and cfg.border != "none":
            sim = LaparoscopySimulator(cfg)
            frames = [sim._render(k) for k in range(len(sim))]
            if any(f[2].sum() > 20 for f in frames):
                return sim, frames
    pytest.fail("no seed in 1..39 gives a bordered scene with a visible instrument")


def test_tissue_depth_lies_on_the_surface(lap):
    sim, frames = lap
    rgb, depth, inst = frames[2]
    tissue = np.isfinite(depth) & ~inst
    pts = _backproject(depth, sim.K, sim.poses[2])[:, tissue.ravel()]
    gap = pts[2] - sim.surface.height(pts[0], pts[1])
    # bisection to well below a pixel: the point is on the height field to within 1e-3 mm
    assert np.abs(gap).max() < 1e-3


def test_instrument_depth_lies_on_a_tool_cylinder(lap):
    sim, frames = lap
    k = max(range(len(frames)), key=lambda i: frames[i][2].sum())
    rgb, depth, inst = frames[k]
    pts = _backproject(depth, sim.K, sim.poses[k])[:, inst.ravel()]
    best = np.full(pts.shape[1], np.inf)
    for tool in sim.instruments:
        for a, b, r, _ in tool.segments(k / sim.config.fps):
            w = (b - a) / np.linalg.norm(b - a)
            rel = pts - a[:, None]
            h = w @ rel
            radial = np.linalg.norm(rel - np.outer(w, h), axis=0)
            # side wall: radial distance = r; caps: axial coordinate at an end with radial <= r
            length = np.linalg.norm(b - a)
            side = np.abs(radial - r)
            cap = np.where(radial <= r + 1e-6, np.minimum(np.abs(h), np.abs(h - length)), np.inf)
            best = np.minimum(best, np.minimum(side, cap))
    assert pts.shape[1] > 20
    assert np.median(best) < 1e-6 and best.max() < 1e-4
    # and the instrument is in front of the tissue behind it
    tissue_behind = sim._trace_tissue(sim.poses_mm[k][:3, 3], sim.poses_mm[k][:3, :3] @ sim._rays_cam)
    behind = tissue_behind[inst.ravel()]
    hit = np.isfinite(behind)  # a ray past the tissue grid's edge (far periphery) may miss it
    assert hit.mean() > 0.8
    assert np.all(depth[inst][hit] * 1000.0 < behind[hit] + 1e-6)


def test_static_tissue_reprojects_between_frames(lap):
    """Frame a's tissue points projected into frame b land where b sees them (unoccluded pixels)."""
    sim, frames = lap
    a, b = 1, 4
    da, db = frames[a][1], frames[b][1]
    pts = _backproject(da, sim.K, sim.poses[a]) / 1000.0
    keep = (np.isfinite(da) & ~frames[a][2]).ravel()
    T_cam_world = np.linalg.inv(sim.poses[b])
    cam = T_cam_world[:3, :3] @ pts[:, keep] + T_cam_world[:3, 3:4]
    uvw = sim.K @ cam
    u, v = np.round(uvw[0] / uvw[2]).astype(int), np.round(uvw[1] / uvw[2]).astype(int)
    h, w = db.shape
    inside = (u >= 1) & (u < w - 1) & (v >= 1) & (v < h - 1)
    z_proj, z_b = cam[2][inside], db[v[inside], u[inside]]
    ok = np.isfinite(z_b) & ~frames[b][2][v[inside], u[inside]]
    rel = np.abs(z_proj[ok] - z_b[ok]) / z_b[ok]
    assert ok.sum() > 500
    # nearest-pixel sampling on a smooth surface: most points agree closely, occlusions are few
    assert np.median(rel) < 0.01 and np.mean(rel < 0.05) > 0.9


def test_border_is_black_and_has_no_depth(lap):
    sim, frames = lap
    outside = ~sim.fov_mask
    assert outside.any() and sim.fov_mask.any()
    for rgb, depth, inst in frames:
        assert np.all(np.isnan(depth[outside]))
        assert rgb[outside].max() == 0
        assert not inst[outside].any()
        assert np.isfinite(depth[sim.fov_mask]).mean() > 0.99


def test_border_shapes():
    circle = fov_border_mask(100, 100, "circle", 0.5)
    octagon = fov_border_mask(100, 100, "octagon", 0.8)
    assert circle[50, 50] and not circle[0, 0] and not circle[50, 10]
    assert octagon[50, 50] and octagon[50, 12] and not octagon[2, 2] and not octagon[15, 15]
    assert fov_border_mask(10, 12, "none", 1.0).all()


def test_same_seed_same_frames_other_seed_differs():
    a = LaparoscopySimulator(laparoscopy_preset("lap", 3, n_frames=2, height=24, width=32))
    b = LaparoscopySimulator(laparoscopy_preset("lap", 3, n_frames=2, height=24, width=32))
    c = LaparoscopySimulator(laparoscopy_preset("lap", 4, n_frames=2, height=24, width=32))
    fa, fb, fc = a.render(1), b.render(1), c.render(1)
    assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth, equal_nan=True)
    assert not np.array_equal(fa.rgb, fc.rgb)


def test_unseen_preset_draws_only_unseen_palettes():
    from endo_depth_model.data.laparoscopy import ORGAN_PALETTES, UNSEEN_PALETTES

    for seed in range(5):
        seen = laparoscopy_preset("lap", seed)
        unseen = laparoscopy_preset("lap_unseen", seed)
        assert set(seen.palettes) <= set(ORGAN_PALETTES)
        assert set(unseen.palettes) <= set(UNSEEN_PALETTES)
        assert not set(unseen.palettes) & set(ORGAN_PALETTES)


def test_bad_config_is_refused():
    with pytest.raises(SimulatorConfigError, match="border"):
        laparoscopy_preset("lap", 1, border="hexagon")
    with pytest.raises(SimulatorConfigError, match="palette"):
        laparoscopy_preset("lap", 1, palettes=("chrome",))
    with pytest.raises(SimulatorConfigError, match="unknown laparoscopy preset"):
        laparoscopy_preset("abdomen", 1)


def test_colon_preset_varies_and_keeps_the_camera_inside():
    radii = set()
    for seed in range(4):
        cfg = colon_preset(seed, n_frames=4, height=24, width=32)
        sim = EndoscopySimulator(cfg)  # raises when the camera leaves the lumen
        frame = sim.render(3)
        assert np.isfinite(frame.depth).mean() > 0.5
        radii.add(round(cfg.geometry.radius_mm, 3))
    assert len(radii) == 4


def test_synth_command_writes_laparoscopy_with_masks_and_colon(tmp_path, capsys):
    import cv2

    from endo_depth_model.cli import main
    from endo_depth_model.data import open_sequences

    out = tmp_path / "lap"
    argv = ["synth", "--preset", "lap", "--seed", "3", "--frames", "2", "--size", "40", "52",
            "--out", str(out), "--formats", "folder", "--depth-format", "npy"]  # fmt: skip
    assert main(argv) == 0
    seq = open_sequences(str(out / "frames"))[0]
    frame = seq[1]
    assert frame.rgb.shape == (40, 52, 3) and frame.depth.shape == (40, 52) and frame.T_world_cam is not None
    sim = LaparoscopySimulator(laparoscopy_preset("lap", 3, n_frames=2, height=40, width=52))
    np.testing.assert_array_equal(frame.depth, sim.render(1).depth)
    mask = cv2.imread(str(out / "frames/instruments/000001.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask > 0, sim.instrument_mask(1))
    assert "instruments" in capsys.readouterr().out
    assert main(["synth", "--preset", "lap", "--out", str(out), "--formats", "mcap"]) == 2
    assert "folder and mp4" in capsys.readouterr().out
    colon = tmp_path / "colon"
    argv = ["synth", "--preset", "colon", "--seed", "2", "--frames", "2", "--size", "32", "40",
            "--out", str(colon), "--formats", "folder"]  # fmt: skip
    assert main(argv) == 0


def test_near_preset_adds_close_organs_to_the_same_scene():
    """``lap_near`` (training only) is ``lap``'s scene for the seed plus large organs in the middle of the
    view: nearer tissue there, the depth still exact on the height field, everything else drawn alike."""
    from dataclasses import asdict

    nearer = 0
    for seed in range(4):
        base = laparoscopy_preset("lap", seed, n_frames=2, height=48, width=60, noise_std=0.0)
        near = laparoscopy_preset("lap_near", seed, n_frames=2, height=48, width=60, noise_std=0.0)
        assert base.near_organs == 0 and near.near_organs in (1, 2)
        assert {k: v for k, v in asdict(near).items() if k != "near_organs"} == {
            k: v for k, v in asdict(base).items() if k != "near_organs"
        }
        sim_b, sim_n = LaparoscopySimulator(base), LaparoscopySimulator(near)
        rgb, depth, inst = sim_n._render(0)
        tissue = np.isfinite(depth) & ~inst
        pts = _backproject(depth, sim_n.K, sim_n.poses[0])[:, tissue.ravel()]
        assert np.abs(pts[2] - sim_n.surface.height(pts[0], pts[1])).max() < 1e-3
        # the centre of the view: tissue there is nearer than lap's for the same seed
        db = sim_b._render(0)[1]
        centre = (slice(12, 36), slice(15, 45))
        tb = np.isfinite(db[centre]) & ~sim_b._render(0)[2][centre]
        tn = np.isfinite(depth[centre]) & ~inst[centre]
        if np.median(depth[centre][tn]) < 0.8 * np.median(db[centre][tb]):
            nearer += 1
    assert nearer >= 3
