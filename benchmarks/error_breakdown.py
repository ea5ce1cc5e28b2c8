"""Benchmark: where a depth model's error is, on held-out sequences of one preset (a diagnosis for
model work).

For each sequence the node's causal engine predicts relative disparity ``d``; depth is ``1 / (c + d)`` up to
scale, with ``c`` the shift the fixed disparity-to-depth conversion implies (min_depth / max_depth about
0.0033 for the shipped range 0.001-0.3 m). Scored with the per-frame protocol (median scaling, 1e-3 to 150
mm, the field of view only), it reports:

* ``shift``: the per-frame AbsRel for several shifts ``c``, per sequence: how much a per-sequence choice of
  the disparity's zero (an oracle here: it needs the truth) would gain over the fixed one;
* ``by_depth``: pixels binned by true depth over the frame's median; each bin's share of the pixels, its
  share of the AbsRel (mean over frames of the bin's summed error over the frame's pixels) and the median
  log ratio predicted / true there (positive: predicted too far);
* ``boundary``: pixels within 1, 2, 4 and 8 px of a true depth jump (neighbours differing by more than
  15 %): their share, their part of the AbsRel, and the AbsRel of the rest;
* ``instruments`` (presets with instruments): AbsRel on instrument pixels and on the tissue, and the
  instruments' share of the pixels and their median log ratio predicted / true (mean over frames), in
  frames showing one.

    .venv/bin/python benchmarks/error_breakdown.py --preset lap --seeds 10 \\
        --out benchmarks/results/error_breakdown_v20_lap.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from endo_depth_model.evaluate import EvalConfig, frame_error_map  # noqa: E402

SHIFTS = (0.0005, 0.001, 0.002, 0.0033, 0.005, 0.01, 0.02)
DEPTH_BINS = (0.0, 0.3, 0.5, 0.75, 1.0, 1.5, np.inf)
BOUNDARY_PX = (1, 2, 4, 8)
JUMP = np.log(1.15)

#: the per-frame protocol's constants (valid truth in millimetres, clipping)
PROTOCOL = EvalConfig()


def jump_mask(gt_mm: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels next to a true depth jump (a 4-neighbour whose depth differs by more than 15 %)."""
    lg = np.log(np.where(valid, gt_mm, np.median(gt_mm[valid])))
    jump = np.zeros(valid.shape, bool)
    horiz, vert = np.abs(np.diff(lg, axis=1)) > JUMP, np.abs(np.diff(lg, axis=0)) > JUMP
    jump[:, 1:] |= horiz
    jump[:, :-1] |= horiz
    jump[1:, :] |= vert
    jump[:-1, :] |= vert
    return jump


def breakdown(disp: np.ndarray, data: dict, fov: np.ndarray, shift: float) -> dict:
    """One sequence's sums over frames (divided by the frame count in :func:`main`)."""
    import cv2

    from endo_depth_model.metrics import valid_mask

    gt = data["depth"] * PROTOCOL.unit_scale
    acc = {
        "frames": 0,
        "abs_rel": 0.0,
        "shift": np.zeros(len(SHIFTS)),
        "bin_share": np.zeros(len(DEPTH_BINS) - 1),
        "bin_part": np.zeros(len(DEPTH_BINS) - 1),
        "bin_log": [[] for _ in DEPTH_BINS[1:]],
        "band_share": np.zeros(len(BOUNDARY_PX)),
        "band_part": np.zeros(len(BOUNDARY_PX)),
        "band_rest": np.zeros(len(BOUNDARY_PX)),
        "inst": [],
        "inst_log": [],
        "tissue": [],
        "inst_share": [],
    }
    for k in range(len(gt)):
        valid = fov & valid_mask(gt[k], PROTOCOL.min_depth, PROTOCOL.max_depth)
        if valid.sum() < 100:
            continue
        d = np.maximum(disp[k], 0.0)
        for i, c in enumerate(SHIFTS):
            acc["shift"][i] += frame_error_map(gt[k], 1.0 / (c + d), valid, PROTOCOL)[1][valid].mean()
        scaled, err = frame_error_map(gt[k], 1.0 / (shift + d), valid, PROTOCOL)
        n = valid.sum()
        acc["frames"] += 1
        acc["abs_rel"] += err[valid].mean()
        rel = gt[k] / np.median(gt[k][valid])
        for b in range(len(DEPTH_BINS) - 1):
            m = valid & (rel >= DEPTH_BINS[b]) & (rel < DEPTH_BINS[b + 1])
            acc["bin_share"][b] += m.sum() / n
            acc["bin_part"][b] += err[m].sum() / n
            if m.any():
                acc["bin_log"][b].append(float(np.median(np.log(scaled[m] / gt[k][m]))))
        jump = jump_mask(gt[k], valid).astype(np.uint8)
        for i, w in enumerate(BOUNDARY_PX):
            band = cv2.dilate(jump, np.ones((2 * w + 1, 2 * w + 1), np.uint8)).astype(bool) & valid
            acc["band_share"][i] += band.sum() / n
            acc["band_part"][i] += err[band].sum() / n
            acc["band_rest"][i] += err[valid & ~band].mean() if (valid & ~band).any() else 0.0
        inst = data.get("instruments")
        on = None if inst is None else inst[k] & valid
        if on is not None and on.sum() >= 30:
            acc["inst"].append(float(err[on].mean()))
            acc["inst_log"].append(float(np.median(np.log(scaled[on] / gt[k][on]))))
            acc["tissue"].append(float(err[valid & ~inst[k]].mean()))
            acc["inst_share"].append(float(on.sum() / n))
    return acc


def main() -> int:
    import torch
    from model_quality import FIRST_SEED, at_precision, predict_disparity, render
    from tqdm import tqdm

    from endo_depth_model.fov import detect_fov
    from endo_depth_model.loading import load_depth_model, shipped_weights, weights_depth_range

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=shipped_weights("vitt"))
    ap.add_argument("--preset", default="lap", choices=list(FIRST_SEED))
    ap.add_argument("--seeds", type=int, default=10, help="held-out sequences (model_quality's seeds)")
    ap.add_argument("--data", type=Path, default=ROOT / "runs/quality_data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lo, hi = weights_depth_range(args.weights)
    lo, hi = 0.001 if lo is None else lo, 0.3 if hi is None else hi
    shift = (1.0 / hi) / (1.0 / lo - 1.0 / hi)  # the conversion's c, up to scale
    bundle = at_precision(load_depth_model("vitt", args.weights), "fp32")
    t0 = time.time()
    seqs = {}
    for seed in tqdm([FIRST_SEED[args.preset] + i for i in range(args.seeds)], desc=args.preset, unit="seq"):
        data = render(args.preset, seed, 32, (256, 320), args.data)
        fov = detect_fov(data["rgb"]).mask
        seqs[seed] = breakdown(
            predict_disparity(bundle, data["rgb"], "none").astype(np.float64), data, fov, shift
        )
    per_seq_shift = np.stack([a["shift"] / a["frames"] for a in seqs.values()])
    frames = sum(a["frames"] for a in seqs.values())

    def total(key):
        return sum(a[key] for a in seqs.values()) / frames

    inst = [x for a in seqs.values() for x in a["inst"]]
    inst_log = [x for a in seqs.values() for x in a["inst_log"]]
    tissue = [x for a in seqs.values() for x in a["tissue"]]
    shares = [x for a in seqs.values() for x in a["inst_share"]]
    result = {
        "weights": str(args.weights),
        "preset": args.preset,
        "seeds": list(seqs),
        "frames": frames,
        "conversion_shift": shift,
        "abs_rel": total("abs_rel"),
        "shift": {
            "shifts": list(SHIFTS),
            "mean": per_seq_shift.mean(0).tolist(),
            "per_sequence": {str(s): row.tolist() for s, row in zip(seqs, per_seq_shift, strict=True)},
            "oracle_per_sequence": float(per_seq_shift.min(1).mean()),
        },
        "by_depth": [
            {
                "true_over_median": [DEPTH_BINS[b], DEPTH_BINS[b + 1]],
                "pixel_share": total("bin_share")[b],
                "abs_rel_part": total("bin_part")[b],
                "median_log_pred_over_true": float(
                    np.mean([x for a in seqs.values() for x in a["bin_log"][b]] or [np.nan])
                ),
            }
            for b in range(len(DEPTH_BINS) - 1)
        ],
        "boundary": [
            {
                "within_px": w,
                "pixel_share": total("band_share")[i],
                "abs_rel_part": total("band_part")[i],
                "abs_rel_elsewhere": total("band_rest")[i],
            }
            for i, w in enumerate(BOUNDARY_PX)
        ],
        "instruments": {
            "frames": len(inst),
            "abs_rel_instrument": float(np.mean(inst)) if inst else None,
            "abs_rel_tissue": float(np.mean(tissue)) if tissue else None,
            "median_log_pred_over_true": float(np.mean(inst_log)) if inst_log else None,
            "pixel_share": float(np.mean(shares)) if shares else None,
        },
        "minutes": (time.time() - t0) / 60,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    # one-screen summary
    print(f"\n{args.preset}: {args.weights}, {frames} frames, per-frame AbsRel {result['abs_rel']:.4f}")
    means = zip(SHIFTS, result["shift"]["mean"], strict=True)
    print("disparity shift c:  " + "  ".join(f"{c:g}: {m:.4f}" for c, m in means))
    print(f"  the best c for each sequence (oracle): {result['shift']['oracle_per_sequence']:.4f}")
    for row in result["by_depth"]:
        lo_b, hi_b = row["true_over_median"]
        print(
            f"true / median in [{lo_b:g}, {hi_b:g}): {100 * row['pixel_share']:5.1f} % of pixels, "
            f"{row['abs_rel_part']:.4f} of the AbsRel, "
            f"median log(pred / true) {row['median_log_pred_over_true']:+.3f}"
        )
    for row in result["boundary"]:
        print(
            f"within {row['within_px']} px of a depth jump: {100 * row['pixel_share']:4.1f} % of pixels, "
            f"{row['abs_rel_part']:.4f} of the AbsRel; AbsRel elsewhere {row['abs_rel_elsewhere']:.4f}"
        )
    if inst:
        print(
            f"instruments ({len(inst)} frames): AbsRel {result['instruments']['abs_rel_instrument']:.3f}, "
            f"tissue {result['instruments']['abs_rel_tissue']:.3f}, "
            f"{100 * result['instruments']['pixel_share']:.0f} % of those frames' pixels, "
            f"median log(pred / true) {result['instruments']['median_log_pred_over_true']:+.3f}"
        )
    print(f"saved {args.out} ({result['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
