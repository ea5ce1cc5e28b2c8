"""scripts/diagnose_finetune.py: its two measurements on inputs whose answer is known."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from endo_depth_model.evaluate import EvalConfig
from endo_depth_model.geometry import pose_vec_to_mat
from endo_depth_model.preprocess import depth_to_disparity, disparity_to_depth

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def diag():
    spec = importlib.util.spec_from_file_location(
        "diagnose_finetune", ROOT / "scripts" / "diagnose_finetune.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _trajectory(n=6):
    poses, T = [], np.eye(4)
    for i in range(n):
        poses.append(T.copy())
        step = pose_vec_to_mat(torch.tensor([[0.0, 0.01, 0.003 * i]]), torch.tensor([[0.0005, 0.0, 0.001]]))
        T = T @ step[0].double().numpy()
    return poses


class _TruthPose:
    """Answers ``predict_matrix`` with the true ``T_b_a`` (looked up by the frames' marker value)."""

    def __init__(self, poses, scale=1.0, extra_rotation=None):
        self.poses, self.scale, self.extra = poses, scale, extra_rotation

    def predict_matrix(self, a, b):
        i, j = int(round(a[0, 0, 0, 0].item() * 255)), int(round(b[0, 0, 0, 0].item() * 255))
        T = np.linalg.inv(self.poses[j]) @ self.poses[i]
        T[:3, 3] *= self.scale
        if self.extra is not None:
            T[:3, :3] = self.extra @ T[:3, :3]
        return torch.from_numpy(T)[None]


def _frames(poses):
    return [
        SimpleNamespace(rgb=np.full((28, 28, 3), i, dtype=np.uint8), T_world_cam=p)
        for i, p in enumerate(poses)
    ]


def test_pose_errors_are_zero_for_the_true_motion_and_see_a_wrong_one(diag):
    poses = _trajectory()
    exact = diag.pose_errors(_TruthPose(poses, scale=2.0), _frames(poses), (28, 28))
    # float32 rotations are orthonormal to ~1e-7, which arccos turns into hundredths of a degree
    assert exact["rot_err_deg"] < 0.05 and exact["t_dir_err_deg"] < 0.05
    assert exact["t_len_ratio"] == pytest.approx(2.0, rel=1e-6)
    assert exact["rot_gt_deg"] > 0.5  # the trajectory rotates: the test is not trivial
    tilt = pose_vec_to_mat(torch.tensor([[0.02, 0.0, 0.0]]), torch.zeros(1, 3))[0, :3, :3].double().numpy()
    wrong = diag.pose_errors(_TruthPose(poses, extra_rotation=tilt), _frames(poses), (28, 28))
    assert wrong["rot_err_deg"] == pytest.approx(np.degrees(0.02), rel=1e-3)


def test_disparity_fit_recovers_an_affine_distortion(diag):
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.01, 0.1, size=(3, 20, 24))
    d = depth_to_disparity(gt, 0.001, 0.3)
    distorted = disparity_to_depth(0.25 * d + 0.02, 0.001, 0.3)  # compressed disparity, as the base model
    row = diag.disparity_fit(gt, distorted, 0.001, 0.3, EvalConfig(), None, None)
    assert row["slope_a"] == pytest.approx(4.0, rel=1e-6)
    assert row["offset_c"] == pytest.approx(-0.08, rel=1e-6)
    assert row["abs_rel_disp_fit"] < 1e-6 < 0.01 < row["abs_rel"]


def test_depth_ratio_is_the_median_unaligned_scale(diag):
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.01, 0.1, size=(2, 10, 12))
    gt[0, 0, :4] = np.nan  # invalid ground truth is ignored
    pred = 0.37 * gt
    pred[1, 5, 5] = 50.0  # one outlier does not move a median
    assert diag.depth_ratio(gt, pred) == pytest.approx(0.37, rel=1e-9)
