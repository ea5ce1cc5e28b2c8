"""Losses on an analytic scene: near their floor at ground truth, growing with pose and scale error."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from endo_depth_model import geometry
from endo_depth_model.losses import (
    SSIM,
    LossError,
    SelfSupervisedLoss,
    min_reprojection_loss,
    photometric_error,
    projection_loss,
    smoothness_loss,
    warp_image,
)


def perturb(T: torch.Tensor, translation=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Compose ``T`` (1, 4, 4) with a small extra motion of the destination camera."""
    delta = geometry.pose_vec_to_mat(
        torch.tensor([rotation], dtype=T.dtype), torch.tensor([translation], dtype=T.dtype)
    )
    return delta @ T


def photometric_at(scene, T_prev, T_next, depth=None) -> float:
    depth = scene.depths[1:2] if depth is None else depth
    target = scene.images[1:2]
    sources = [scene.images[0:1], scene.images[2:3]]
    warped = [warp_image(s, depth, scene.K, T) for s, T in zip(sources, [T_prev, T_next], strict=True)]
    loss, _ = min_reprojection_loss(target, sources, warped, automask=False)
    return float(loss)


def projection_at(scene, T_next, scale=1.0) -> float:
    loss, _ = projection_loss(scene.depths[1:2] * scale, scene.depths[2:3] * scale, scene.K, T_next)
    return float(loss)


def test_ssim_bounds_and_identity():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 20, generator=gen)
    ssim = SSIM()
    assert ssim(x, x).abs().max() < 1e-6
    d = ssim(x, 1 - x)
    assert d.min() >= 0 and d.max() <= 1 and d.mean() > 0.4
    assert torch.allclose(ssim(x, 1 - x), ssim(1 - x, x), atol=1e-6)
    # alpha = 0 is pure L1
    y = x + 0.1
    assert torch.allclose(photometric_error(y, x, alpha=0.0), torch.full((2, 1, 16, 20), 0.1), atol=1e-6)


def test_photometric_near_floor_at_ground_truth(scene):
    T_prev, T_next = scene.T(0, 1), scene.T(2, 1)
    at_gt = photometric_at(scene, T_prev, T_next)
    identity = float(photometric_error(scene.images[0:1], scene.images[1:2]).mean())
    # bilinear resampling of a smooth texture: a tiny residual, far below the unwarped error
    assert at_gt < 1e-3
    assert at_gt < 0.01 * identity


@pytest.mark.parametrize(
    "kind",
    ["tx", "ty", "tz", "rx", "ry"],
)
def test_photometric_grows_with_pose_error(scene, kind):
    T_prev, T_next = scene.T(0, 1), scene.T(2, 1)
    values = []
    for eps in [0.0, 0.1, 0.2, 0.4, 0.8]:
        motion = {"translation": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0]}
        axis = "xyz".index(kind[1])
        key = "translation" if kind[0] == "t" else "rotation"
        motion[key][axis] = eps if key == "translation" else eps * 0.05  # mm, or 0.05 rad per unit
        values.append(photometric_at(scene, perturb(T_prev, **motion), perturb(T_next, **motion)))
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] > 5 * values[0]


def test_photometric_grows_with_depth_scale_error(scene):
    T_prev, T_next = scene.T(0, 1), scene.T(2, 1)
    up = [photometric_at(scene, T_prev, T_next, scene.depths[1:2] * s) for s in [1.0, 1.1, 1.25, 1.5, 2.0]]
    down = [photometric_at(scene, T_prev, T_next, scene.depths[1:2] * s) for s in [1.0, 0.9, 0.8, 0.65, 0.5]]
    for values in (up, down):
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), values


def test_projection_loss_floor_and_growth(scene):
    T_next = scene.T(2, 1)
    at_gt = projection_at(scene, T_next)
    mean_depth = float(scene.depths.mean())
    assert at_gt < 1e-4 * mean_depth  # mm: interpolation of a smooth depth map only
    for kind in range(6):
        motion = {"translation": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0]}
        key = "translation" if kind < 3 else "rotation"
        values = []
        for eps in [0.0, 0.1, 0.2, 0.4, 0.8]:
            motion[key][kind % 3] = eps if key == "translation" else eps * 0.05
            values.append(projection_at(scene, perturb(T_next, **motion)))
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), (kind, values)
    scaled = [projection_at(scene, T_next, s) for s in [1.0, 1.2, 1.5, 2.0]]
    assert all(b > a for a, b in zip(scaled, scaled[1:], strict=False)), scaled
    shrunk = [projection_at(scene, T_next, s) for s in [1.0, 0.8, 0.6]]
    assert all(b > a for a, b in zip(shrunk, shrunk[1:], strict=False)), shrunk


def test_projection_mask_excludes_pixels_leaving_the_view(scene):
    # a large sideways motion moves part of the frame out of the neighbour image
    T = perturb(scene.T(2, 1), translation=[6.0, 0.0, 0.0])
    _, mask = projection_loss(scene.depths[1:2], scene.depths[2:3], scene.K, T)
    frac = float(mask.mean())
    assert 0.2 < frac < 0.95
    # all-zero neighbour depth: nothing valid, loss exactly 0 (and no NaN)
    loss, mask = projection_loss(scene.depths[1:2], torch.zeros_like(scene.depths[2:3]), scene.K, T)
    assert float(mask.sum()) == 0 and float(loss) == 0.0


def test_pose_gradient_points_towards_ground_truth(scene):
    """At a perturbed pose, the photometric gradient w.r.t. the pose vector is a descent direction."""
    T_gt = scene.T(2, 1)
    offset = torch.tensor([[0.3, -0.2, 0.2]], dtype=torch.float64)
    t = (T_gt[:, :3, 3] + offset).clone().requires_grad_(True)
    T = torch.cat([torch.cat([T_gt[:, :3, :3], t[..., None]], 2), T_gt[:, 3:]], 1)
    warped = warp_image(scene.images[2:3], scene.depths[1:2], scene.K, T)
    loss = photometric_error(warped, scene.images[1:2]).mean()
    loss.backward()
    assert float((t.grad * offset).sum()) > 0  # -grad has a component towards the ground truth


def test_smoothness_properties():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 20, 24, generator=gen)
    flat = torch.full((1, 1, 20, 24), 0.3)
    assert float(smoothness_loss(flat, image)) == pytest.approx(0.0, abs=1e-7)
    disp = torch.rand(1, 1, 20, 24, generator=gen) + 0.5
    assert float(smoothness_loss(disp * 7.0, image)) == pytest.approx(
        float(smoothness_loss(disp, image)), rel=1e-5
    )
    # a disparity edge that coincides with an image edge costs less than the same edge on flat texture
    step = torch.ones(1, 1, 20, 24)
    step[..., 12:] = 2.0
    edge_image = torch.zeros(1, 3, 20, 24)
    edge_image[..., 12:] = 1.0
    assert float(smoothness_loss(step, edge_image)) < 0.5 * float(
        smoothness_loss(step, torch.zeros_like(edge_image))
    )


def test_automask_removes_static_pixels():
    """A neighbour identical to the target (camera not moving): the identity wins everywhere."""
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(1, 3, 16, 16, generator=gen)
    warped = torch.rand(1, 3, 16, 16, generator=gen)
    loss, mask = min_reprojection_loss(target, [target.clone()], [warped])
    assert float(mask.sum()) == 0 and float(loss) == pytest.approx(1e-5, rel=1e-3)
    loss_nomask, mask = min_reprojection_loss(target, [target.clone()], [warped], automask=False)
    assert float(mask.mean()) == 1 and float(loss_nomask) > 0.1


def test_combined_loss_is_per_sample(scene):
    """Per-sample values: a batch of two equals the two samples alone (needed for DDP equivalence)."""
    loss_fn = SelfSupervisedLoss()
    T_prev, T_next = scene.T(0, 1), scene.T(2, 1)
    T_prev2 = perturb(T_prev, translation=[0.3, 0.0, 0.0])
    T_next2 = perturb(T_next, rotation=[0.0, 0.02, 0.0])

    def run(idx, Tp, Tn):
        b = len(idx)
        rep = lambda x: x.expand(b, *x.shape[1:])  # noqa: E731
        return loss_fn(
            rep(scene.images[1:2]),
            {-1: rep(scene.images[0:1]), 1: rep(scene.images[2:3])},
            rep(scene.depths[1:2]),
            1.0 / rep(scene.depths[1:2]),
            scene.K,
            {-1: Tp, 1: Tn},
            {1: (rep(scene.depths[2:3]), torch.ones(b, dtype=torch.float64))},
            projection=True,
        )

    both = run([0, 1], torch.cat([T_prev, T_prev2]), torch.cat([T_next, T_next2]))
    one = run([0], T_prev, T_next)
    two = run([1], T_prev2, T_next2)
    for key in ("loss", "photometric", "smoothness", "projection"):
        assert torch.allclose(both[key], torch.cat([one[key], two[key]]), rtol=1e-10), key
    assert float(both["loss"][1]) > float(both["loss"][0])
    expected = one["photometric"] + 1e-3 * one["smoothness"] + 1e-2 * one["projection"]
    assert torch.allclose(one["loss"], expected)


def test_bad_inputs_raise_clear_errors(scene):
    with pytest.raises(LossError, match="pose"):
        projection_loss(scene.depths[1:2], scene.depths[2:3], scene.K, torch.eye(4)[None].repeat(2, 1, 1))
    with pytest.raises(LossError, match="differ"):
        photometric_error(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(LossError, match="ssim"):
        SelfSupervisedLoss(ssim=1.5)


# ---- the project's simulator: ground-truth depth and pose of a lit, textured tube ----------------


@pytest.fixture(scope="module")
def sim_scene():
    simulator = pytest.importorskip("endo_depth_model.data.simulator")
    cfg = simulator.preset("source", height=48, width=64, n_frames=7, seed=3)
    cfg = dataclasses.replace(cfg, lighting=dataclasses.replace(cfg.lighting, noise_std=0.0))
    sim = simulator.EndoscopySimulator(cfg)
    frames = [sim.render(k) for k in (0, 3, 6)]  # a 3-frame step gives a useful baseline
    images = torch.stack([torch.from_numpy(f.rgb).permute(2, 0, 1).double() / 255 for f in frames])
    far = cfg.far_mm / 1000.0
    depths = torch.stack([torch.from_numpy(f.depth).double().nan_to_num(far)[None] for f in frames])
    poses = torch.stack([torch.from_numpy(f.T_world_cam) for f in frames])
    K = torch.from_numpy(frames[0].K)

    class SimScene:
        pass

    s = SimScene()
    s.images, s.depths, s.K = images, depths, K
    s.T = lambda dst, src: geometry.relative_pose(poses[src : src + 1], poses[dst : dst + 1])
    return s


def test_simulator_losses_floor_and_growth(sim_scene):
    s = sim_scene
    T_prev, T_next = s.T(0, 1), s.T(2, 1)
    at_gt = photometric_at(s, T_prev, T_next)
    identity = float(photometric_error(s.images[0:1], s.images[1:2]).mean())
    # the light moves with the camera, so the floor is the shading change, not zero (measured 0.38)
    assert at_gt < 0.5 * identity
    for key, axis, unit in (("translation", 0, 1e-3), ("translation", 1, 1e-3), ("rotation", 1, 0.02)):
        values = []
        for eps in [0.0, 0.5, 1.0, 2.0]:
            motion = {"translation": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0]}
            motion[key][axis] = eps * unit  # 1 mm / 0.02 rad per unit
            values.append(photometric_at(s, perturb(T_prev, **motion), perturb(T_next, **motion)))
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), (key, axis, values)
    proj = projection_at(s, T_next)
    floor = projection_at(s, perturb(T_next, translation=[0.5e-3, 0.0, 0.0]))
    assert proj < 0.15 * floor and proj < 2e-4  # m: interpolation across occluding folds only
    grown = [projection_at(s, perturb(T_next, translation=[eps * 1e-3, 0.0, 0.0])) for eps in [0, 0.5, 1, 2]]
    assert all(b > a for a, b in zip(grown, grown[1:], strict=False)), grown
    scaled = [projection_at(s, T_next, k) for k in (1.0, 1.3, 1.7)]
    assert all(b > a for a, b in zip(scaled, scaled[1:], strict=False)), scaled
