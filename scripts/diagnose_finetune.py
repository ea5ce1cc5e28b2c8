r"""Where does a fine-tuned depth/pose pair lose accuracy? Three measurements on sequences with ground truth.

1. Pose network vs ground-truth relative motion of consecutive frames: rotation error (degrees, next to
   the true rotation per frame), translation direction error (degrees) and the median ratio of
   predicted to true translation length. A pose network whose rotation error is as large as the true
   rotation gives the self-supervised losses the wrong geometry to fit the depth to.
2. Depth: the per-sequence AbsRel of the evaluation (median/MAD alignment in depth), next to the AbsRel
   after the best per-sequence affine fit in *disparity* (least squares of the predicted disparity to
   the ground truth's). The fit's slope ``a`` and offset ``c`` show how far the predicted disparity is
   from an affine image of the true one; the AbsRel after it is what the depth's shape alone allows.
3. Scale agreement of the pair: ``depth_ratio`` is the median of predicted / true depth (before any
   alignment) and ``scale_agreement`` = ``t_len_ratio / depth_ratio``. The node's kinematic scale mode
   needs the pose network's translations in the depth's scale, i.e. an agreement near 1 (a pair at 0.1
   makes the robot-measured scale ten times too small).

    .venv/bin/python scripts/diagnose_finetune.py runs/eval_target
    .venv/bin/python scripts/diagnose_finetune.py runs/eval_target \
        --weights runs/pretrain/vitt_pretrained.safetensors \
        --pose runs/pretrain/vitt_pose_pretrained.safetensors

Without ``--weights``/``--pose`` the shipped model is measured. ``--checkpoint`` takes a training
checkpoint folder (SSB adapter + pose network) on top of ``--weights``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pose_errors(pose_net, frames, input_hw) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    def tensor(frame):
        x = torch.from_numpy(frame.rgb).permute(2, 0, 1)[None].float().div(255.0)
        return F.interpolate(x, size=input_hw, mode="bilinear", align_corners=False)

    rot_err, rot_gt, dir_err, ratio = [], [], [], []
    with torch.inference_mode():
        for a, b in zip(frames[:-1], frames[1:], strict=True):
            pred = pose_net.predict_matrix(tensor(a), tensor(b))[0].double().numpy()  # T_b_a
            gt = np.linalg.inv(b.T_world_cam) @ a.T_world_cam
            angle = lambda R: np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)))  # noqa: E731
            rot_err.append(angle(pred[:3, :3] @ gt[:3, :3].T))
            rot_gt.append(angle(gt[:3, :3]))
            tp, tg = pred[:3, 3], gt[:3, 3]
            cos = tp @ tg / max(np.linalg.norm(tp) * np.linalg.norm(tg), 1e-12)
            dir_err.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
            ratio.append(np.linalg.norm(tp) / max(np.linalg.norm(tg), 1e-12))
    return {
        "rot_err_deg": float(np.mean(rot_err)),
        "rot_gt_deg": float(np.mean(rot_gt)),
        "t_dir_err_deg": float(np.mean(dir_err)),
        "t_len_ratio": float(np.median(ratio)),
    }


def depth_ratio(gt_m, pred_depth) -> float:
    """Median of predicted / true depth over the valid ground-truth pixels (no alignment)."""
    valid = np.isfinite(gt_m) & (gt_m > 0) & np.isfinite(pred_depth)
    return float(np.median(pred_depth[valid] / gt_m[valid]))


def disparity_fit(gt_m, pred_depth, min_depth, max_depth, cfg, T, K) -> dict[str, float]:
    from endo_depth_model.evaluate import evaluate_sequence
    from endo_depth_model.preprocess import depth_to_disparity, disparity_to_depth

    plain = evaluate_sequence("seq", gt_m, pred_depth, "per-sequence", cfg, T, K)
    disp = depth_to_disparity(pred_depth, min_depth, max_depth)
    valid = np.isfinite(gt_m) & (gt_m > 0) & (gt_m < max_depth)
    gt_disp = depth_to_disparity(np.where(valid, gt_m, max_depth), min_depth, max_depth)
    A = np.stack([disp[valid], np.ones(int(valid.sum()))], axis=1)
    (a, c), *_ = np.linalg.lstsq(A, gt_disp[valid], rcond=None)
    fitted = disparity_to_depth(np.clip(a * disp + c, 1e-9, None), min_depth, max_depth)
    best = evaluate_sequence("seq", gt_m, fitted, "per-sequence", cfg, T, K)
    mean = lambda e: float(np.mean([r["abs_rel"] for r in e.frame_errors]))  # noqa: E731
    return {
        "abs_rel": mean(plain),
        "abs_rel_disp_fit": mean(best),
        "tae": float(np.mean(plain.tae_pairs)) if plain.tae_pairs else float("nan"),
        "slope_a": float(a),
        "offset_c": float(c),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="folder of sequences with depth and poses (endo-depth synth output)")
    p.add_argument("--weights", default=None, help="VDA weights (default: the shipped model)")
    p.add_argument("--checkpoint", default=None, help="training checkpoint folder (adapter + pose net)")
    p.add_argument("--pose", default=None, help="pose network weights (default: checkpoint's, else shipped)")
    p.add_argument("--min-depth", type=float, default=0.001)
    p.add_argument("--max-depth", type=float, default=0.3)
    p.add_argument("--device", default="cpu", help="torch device for the depth network (cpu)")
    p.add_argument("--json", default=None, help="also write the rows and their mean here")
    args = p.parse_args()

    import torch

    from endo_depth_model.data import open_sequences
    from endo_depth_model.evaluate import EvalConfig, _predict_sequence
    from endo_depth_model.loading import POSE_FILE, load_depth_model, load_pose_model, shipped_weights

    weights = args.weights or (None if args.checkpoint else str(shipped_weights("vitt")))
    bundle = load_depth_model("vitt", weights, None, args.checkpoint, args.device)
    pose_path = args.pose or (
        str(Path(args.checkpoint) / POSE_FILE) if args.checkpoint else str(shipped_weights("vitt", pose=True))
    )
    pose_net = load_pose_model(pose_path, predict_intrinsics=False)
    bundle.pose_net = None  # depth only below; the pose network is measured on its own
    run = argparse.Namespace(
        input_size=(224, 280),
        window=32,
        overlap=10,
        stride=None,
        blend=8,
        device=args.device,
        max_frames=None,
        min_depth=args.min_depth,
        max_depth=args.max_depth,
    )
    cfg = EvalConfig()
    torch.set_grad_enabled(False)
    rows = []
    for seq in open_sequences(args.data):
        frames = list(seq)
        pred, gt, T, K, _, _ = _predict_sequence(frames_sequence(seq, frames), bundle, run)
        row = {"sequence": seq.name, **disparity_fit(gt, pred, args.min_depth, args.max_depth, cfg, T, K)}
        row.update(pose_errors(pose_net, frames, run.input_size))
        row["depth_ratio"] = depth_ratio(gt, pred)
        row["scale_agreement"] = row["t_len_ratio"] / row["depth_ratio"]
        rows.append(row)
    print(f"depth: {weights or '-'} + {args.checkpoint or 'no checkpoint'}; pose: {pose_path}")
    cols = list(rows[0])
    mean = {"sequence": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in cols[1:]}}
    print(" | ".join(cols))
    for r in rows + [mean]:
        print(" | ".join(str(r[k]) if k == "sequence" else f"{r[k]:.4g}" for k in cols))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"rows": rows, "mean": mean}, indent=1))
    return 0


def frames_sequence(seq, frames):
    """The sequence again, iterable twice (frames already read), with its name."""

    class _Seq(list):
        name = seq.name

    return _Seq(frames)


if __name__ == "__main__":
    raise SystemExit(main())
