"""Benchmark: does the depth model see? Held-out synthetic presets against honest baselines, and the
two real clips.

Held-out presets (never used in training; rendered once into ``--data``):

* ``tube``: the target tube preset, seeds 31-33 (the model card's earlier held-out set);
* ``lap``: domain-randomised laparoscopy with instruments, seeds 9001-9003;
* ``lap_unseen``: laparoscopy with textures and lighting that training never draws, seeds 9101-9103;
* ``dome``: a closed lumen end (the closed-loop simulation's kind of scene), seeds 9201-9203.

``--seeds N`` takes N sequences per preset from those first seeds on (31-40, 9001-9010, ... for 10): three
sequences decide little between two models of similar quality.

``--input-size`` sets the network's input (default 224x280, the node's); smaller sizes show how the depth
holds up where users lower ``input_height`` for speed (the closed loop runs at 56x70).

Methods: the model with EndoDAV's aligned streaming (T = 32, overlap 10), the model per frame (T = 1,
no alignment), the light heuristic (depth ∝ 1/sqrt(blurred grey)) and a constant depth. Pixels outside
the scope's field of view (detected from the images) are excluded everywhere.

Reported per preset and method: per-frame AbsRel and δ<1.25 (median scaling per frame), per-sequence
AbsRel, δ<1.25 and TAE (one MAD alignment per sequence), the depth range ratio (p95/p5 predicted over
true, median over frames), instrument order (share of frames showing an instrument whose pixels are
predicted nearer than the tissue around them), edge ordinal accuracy, and on sequences with a scope border
the per-frame AbsRel of the rim (tissue within ``RIM_PX`` of the field of view's edge) and of the rest
(``rim_abs_rel``, ``inner_abs_rel``). On the real clips
(``../shared/data/real``, skipped when absent): flicker (aligned and per frame, and their ratio), a
preview image input | depth per clip, and on the EndoNeRF clip the instrument order with instrument masks
from a colour rule (``quality.grey_tool_mask``; ``--previews`` also saves them over the frames to look at).

    .venv/bin/python benchmarks/model_quality.py --out benchmarks/results/model_quality.json
    .venv/bin/python benchmarks/model_quality.py --weights runs/pretrain_v2/vitt_pretrained.safetensors \\
        --out /tmp/q.json --previews /tmp/q
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

#: the first held-out seed of each preset; the benchmark's sequences are the ``--seeds`` (default 3) seeds
#: from there (training draws seeds from 1000 up per kind offset, validation 7001-7005: never these)
FIRST_SEED = {"tube": 31, "lap": 9001, "lap_unseen": 9101, "dome": 9201}
PRESETS = {name: [first + i for i in range(3)] for name, first in FIRST_SEED.items()}
INPUT_SIZE = (224, 280)
#: pixels from the field of view's edge that count as the rim (``rim_abs_rel``; 256x320 frames: about one
#: network patch at 224x280)
RIM_PX = 16
REAL = ROOT.parent / "shared" / "data" / "real"


def render(preset: str, seed: int, frames: int, hw: tuple[int, int], cache: Path) -> dict:
    """A held-out sequence (the training data's renderer; ``tube`` is the target tube preset), cached."""
    from endo_depth_model.training.pretrain import render_sequence

    path = cache / f"{preset}_{seed}_{frames}_{hw[0]}x{hw[1]}.npz"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        data = render_sequence("target" if preset == "tube" else preset, seed, frames, hw[0], hw[1])
        data.setdefault("instruments", np.zeros((frames, *hw), bool))
        np.savez_compressed(path, **data)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def at_precision(bundle, precision: str):
    """``bundle`` with its model run by the torch backend at ``precision`` (what the node runs: ``auto`` is
    bf16 on a CPU with native bf16); ``fp32``: the bundle as it is (what ``endo-depth infer`` and ``eval``
    run)."""
    import dataclasses

    from endo_depth_model.runtime.precision import resolve_precision
    from endo_depth_model.runtime.torch_backend import TorchBackend

    precision = resolve_precision(precision, "cpu")
    if precision == "fp32":
        return bundle
    return dataclasses.replace(bundle, model=TorchBackend(bundle.model, precision=precision))


def predict_disparity(bundle, rgbs: np.ndarray, per_frame, input_hw=INPUT_SIZE, context=None) -> np.ndarray:
    """``per_frame``: True (T = 1), False (aligned streaming) or a causal fit name (causal engine), with the
    network at ``input_hw``; the relative disparity comes back at the frames' size, (T, H, W), in the
    engine's dtype."""
    from endo_depth_model.infer import make_engine

    causal = isinstance(per_frame, str)
    window, overlap, blend = (1, 0, 0) if per_frame is True else (32, 10, 8)
    engine = make_engine(bundle, input_hw, window, overlap, None, blend, per_frame is False, causal, "cpu",
                         causal_fit=per_frame if causal else "none", causal_context=context)  # fmt: skip
    # the scope's border as the node sees it (FovTracker over the sequence): the aligned fits leave it out,
    # and weights trained with a filled border get it filled
    from endo_depth_model.fov import detect_fov

    found = detect_fov(rgbs)
    engine.fov_mask = found.mask if found.kind == "border" else None
    disp = []
    for rgb in rgbs:
        disp += [r.disparity for r in engine.push(rgb)]
    disp += [r.disparity for r in engine.flush()]
    return np.stack(disp)


def predict(
    bundle, rgbs: np.ndarray, per_frame, min_depth: float, max_depth: float, input_hw=INPUT_SIZE, context=None
) -> np.ndarray:
    """:func:`predict_disparity` through the fixed disparity-to-depth conversion."""
    from endo_depth_model.preprocess import disparity_to_depth

    disp = predict_disparity(bundle, rgbs, per_frame, input_hw, context)
    return np.asarray(disparity_to_depth(disp, min_depth, max_depth), dtype=np.float64)


def method_prediction(
    method: str, bundle, rgbs: np.ndarray, lo: float, hi: float, input_hw=INPUT_SIZE, context=None
) -> np.ndarray:
    from endo_depth_model.quality import constant_depth, light_heuristic_depth

    if method == "light_heuristic":
        return np.stack([light_heuristic_depth(x) for x in rgbs])
    if method == "constant":
        return np.stack([constant_depth(x) for x in rgbs])
    mode = {"aligned": False, "per_frame": True, "causal": "none", "causal_fit": "previous"}[method]
    return predict(bundle, rgbs, mode, lo, hi, input_hw, context)


def score(pred: np.ndarray, data: dict, fov: np.ndarray) -> dict:
    from endo_depth_model.evaluate import EvalConfig, evaluate_sequence, frame_error_map, summarise
    from endo_depth_model.metrics import valid_mask
    from endo_depth_model.quality import depth_range_ratio, edge_ordinal_accuracy, instrument_nearer

    gt = np.where(fov[None], data["depth"], np.nan)
    pred = np.where(fov[None], pred, np.nan)
    pred_filled = np.nan_to_num(pred, nan=1.0)
    cfg = EvalConfig()
    out = {}
    pf = summarise("m", [evaluate_sequence("s", gt, pred_filled, "per-frame", cfg)])
    ps = summarise(
        "m", [evaluate_sequence("s", gt, pred_filled, "per-sequence", cfg, data["poses"], data["K"])]
    )
    out["per_frame_abs_rel"], out["per_frame_a1"] = pf.metrics["abs_rel"], pf.metrics["a1"]
    out["per_seq_abs_rel"], out["per_seq_a1"], out["tae"] = ps.metrics["abs_rel"], ps.metrics["a1"], ps.tae
    ranges, edges, order, rim, inner = [], [], [], [], []
    # the tissue along the scope's stop (within RIM_PX of the field of view's edge) against the rest, per
    # frame with the frame's median scaling: where a network that sees the black border goes wrong
    dist = None
    if not fov.all():
        import cv2

        dist = cv2.distanceTransform(fov.astype(np.uint8), cv2.DIST_L2, 5)
    for k in range(len(gt)):
        valid = np.isfinite(gt[k])
        ranges.append(depth_range_ratio(pred[k], gt[k], valid))
        edges.append(edge_ordinal_accuracy(pred[k], gt[k], valid))
        # the per-frame protocol's pixels, scaling and clipping (evaluate_sequence): only the averages differ
        gt_mm = gt[k] * cfg.unit_scale
        scored = valid_mask(gt_mm, cfg.min_depth, cfg.max_depth)
        if dist is not None and scored.sum() >= 10:
            err = frame_error_map(gt_mm, pred_filled[k], scored, cfg)[1]
            band = scored & (dist <= RIM_PX)
            if band.sum() >= 10 and (scored & ~band).sum() >= 10:
                rim.append(float(err[band].mean()))
                inner.append(float(err[scored & ~band].mean()))
        inst = data["instruments"][k] & valid
        if inst.sum() >= 30:
            r = instrument_nearer(pred[k], inst, valid)
            if r is not None:
                order.append(r)
    out["range_ratio"] = float(np.nanmedian(ranges))
    out["rim_abs_rel"] = float(np.mean(rim)) if rim else float("nan")
    out["inner_abs_rel"] = float(np.mean(inner)) if inner else float("nan")
    out["edge_accuracy"] = float(np.nanmean(edges)) if np.isfinite(edges).any() else float("nan")
    out["instrument_frames"] = len(order)
    out["instrument_nearer"] = float(np.mean(order)) if order else float("nan")
    return out


def _finite_stat(stat, values) -> float:
    """``stat`` over the finite values (None and NaN left out: a preset without instruments, a sequence
    without TAE); NaN, without numpy's empty-slice warning, when there are none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(stat(finite)) if finite else float("nan")


def read_clip(path: Path, max_frames: int, width: int = 640) -> np.ndarray:
    """Up to ``max_frames`` RGB frames of a video, area-resized to ``width`` (0: the video's own size)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        if width:
            bgr = cv2.resize(bgr, (width, int(round(h * width / w / 2)) * 2), interpolation=cv2.INTER_AREA)
        frames.append(bgr[..., ::-1].copy())
    return np.stack(frames)


def static_odometry(weights: Path, rgbs: np.ndarray) -> dict:
    """The node's pipeline (causal, shipped pose network) over a clip whose camera does not move: the
    integrated path length over the median predicted depth, and the final rotation in degrees (both
    should be near 0)."""
    from endo_depth_model.geometry import matrix_to_axis_angle
    from endo_depth_model.pipeline import DepthPipeline, PipelineConfig

    cfg = PipelineConfig(weights=str(weights))
    pipe = DepthPipeline(cfg)
    poses, depths = [], []
    for i, rgb in enumerate(rgbs):
        out, motion = pipe.push(rgb, i)
        depths += [np.nanmedian(d.depth) for d in out]
        if motion is not None:
            poses.append(motion.T_odom_cam)
    if len(poses) < 2:
        return {}
    xyz = np.stack([p[:3, 3] for p in poses])
    path = float(np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum())
    angle = float(np.degrees(np.linalg.norm(matrix_to_axis_angle(poses[-1][:3, :3]))))
    return {
        "static_path_over_depth": path / float(np.nanmedian(depths)),
        "static_final_rotation_deg": angle,
    }


def real_instrument_order(masks: list, fov: np.ndarray, *preds: np.ndarray) -> dict:
    """Instrument order on a real clip whose instruments :func:`grey_tool_mask` finds (``masks``, one per
    frame): for the aligned,
    per-frame, causal and light-heuristic depths (``preds``, in that order), the share of frames whose
    instrument pixels are predicted nearer than the tissue around them, and the share of (frame,
    instrument) pairs, each connected instrument region on its own (two tools, one of them wrongly far,
    fail the pair measure but may pass the frame's)."""
    import cv2

    from endo_depth_model.quality import instrument_nearer

    out: dict = {}
    for name, pred in zip(("aligned", "per_frame", "causal", "light_heuristic"), preds, strict=True):
        frames, tools = [], []
        for k, mask in enumerate(masks):
            r = instrument_nearer(pred[k], mask, fov)
            if r is not None:
                frames.append(r)
            n, labels = cv2.connectedComponents(mask.astype(np.uint8))
            each = (instrument_nearer(pred[k], labels == i, fov) for i in range(1, n))
            tools += [r for r in each if r is not None]
        out[f"instrument_nearer_{name}"] = float(np.mean(frames)) if frames else float("nan")
        out[f"instrument_tool_nearer_{name}"] = float(np.mean(tools)) if tools else float("nan")
        out["instrument_frames"], out["instrument_tools"] = len(frames), len(tools)
    return out


def main() -> int:
    import cv2
    import torch
    from tqdm import tqdm

    from endo_depth_model.colormap import colorize_depth
    from endo_depth_model.fov import detect_fov
    from endo_depth_model.loading import load_depth_model, shipped_weights, weights_depth_range
    from endo_depth_model.quality import flicker, grey_tool_mask, light_heuristic_depth

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=shipped_weights("vitt"))
    ap.add_argument("--label", default="model")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/model_quality.json")
    ap.add_argument("--data", type=Path, default=ROOT / "runs/quality_data")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 320))
    ap.add_argument(
        "--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS), help="none: only the real clips"
    )
    ap.add_argument(
        "--seeds", type=int, default=3, help="held-out sequences per preset (3: the figures in the docs)"
    )
    ap.add_argument("--input-size", type=int, nargs=2, default=INPUT_SIZE, help="network input H W")
    ap.add_argument("--skip-real", action="store_true", help="only the synthetic presets")
    ap.add_argument("--real-frames", type=int, default=63)
    ap.add_argument("--previews", type=Path, default=None, help="folder for input | depth preview PNGs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "auto"),
        help="fp32: as endo-depth infer / eval run; auto or bf16: as the node runs on a CPU with bf16",
    )
    ap.add_argument(
        "--causal-context",
        type=int,
        default=None,
        help="earlier frames the causal engine attends to (default 31)",
    )
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["aligned", "causal", "causal_fit", "per_frame", "light_heuristic", "constant"],
        help="methods to score (the causal fit variant is the slowest to evaluate)",
    )
    args = ap.parse_args()
    input_hw = tuple(args.input_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    min_depth, max_depth = weights_depth_range(args.weights)
    lo, hi = 0.001 if min_depth is None else min_depth, 0.3 if max_depth is None else max_depth
    bundle = at_precision(load_depth_model("vitt", args.weights), args.precision)
    t0 = time.time()
    methods = list(args.methods)
    results: dict = {
        "weights": str(args.weights),
        "label": args.label,
        "input_size": list(input_hw),
        "seeds_per_preset": args.seeds,
        "causal_context": args.causal_context,
        "precision": args.precision,
        "presets": {},
        "real": {},
    }
    for preset in args.presets:
        rows = {m: [] for m in methods}
        seeds = [FIRST_SEED[preset] + i for i in range(args.seeds)]
        for seed in tqdm(seeds, desc=f"{preset}", unit="seq"):
            data = render(preset, seed, args.frames, tuple(args.size), args.data)
            fov = detect_fov(data["rgb"]).mask
            preds = {
                m: method_prediction(m, bundle, data["rgb"], lo, hi, input_hw, args.causal_context)
                for m in methods
            }
            for m in methods:
                rows[m].append(score(preds[m], data, fov))
        summary = {}
        for m in methods:
            keys = rows[m][0].keys()
            summary[m] = {
                k: (
                    int(np.sum([r[k] for r in rows[m]]))
                    if k == "instrument_frames"
                    else _finite_stat(np.mean, [r[k] for r in rows[m]])
                )
                for k in keys
            }
            # the mean TAE over sequences can be one sequence's blow-up (a per-sequence fit that puts some
            # aligned depths near zero); the median says what a typical sequence does
            summary[m]["tae_median"] = _finite_stat(np.median, [r["tae"] for r in rows[m]])
        results["presets"][preset] = summary
        # each sequence's row too, so two models can be compared sequence by sequence
        results.setdefault("sequences", {})[preset] = {
            m: {str(seed): row for seed, row in zip(seeds, rows[m], strict=True)} for m in methods
        }
    # real clips: flicker and previews
    clips = {
        "endonerf_pulling": REAL / "endonerf_pulling/pulling_gt.mp4",
        "laparoscopic_rvim": REAL / "laparoscopic_rvim/endo.mp4",
    }
    for name, path in clips.items():
        if args.skip_real:
            break
        if not path.is_file():
            print(f"real clip {path} not found: skipped")
            continue
        rgbs = read_clip(path, args.real_frames, width=320)
        fov = detect_fov(rgbs).mask
        aligned = predict(bundle, rgbs, False, lo, hi, input_hw)
        single = predict(bundle, rgbs, True, lo, hi, input_hw)
        causal = predict(bundle, rgbs, "none", lo, hi, input_hw, args.causal_context)
        fa, fs = flicker(aligned, rgbs, fov), flicker(single, rgbs, fov)
        fc = flicker(causal, rgbs, fov)
        heur = np.stack([light_heuristic_depth(x) for x in rgbs])
        odo = static_odometry(args.weights, rgbs) if name == "endonerf_pulling" else {}
        # instrument order where a colour rule finds the instruments (EndoNeRF's blue-grey da Vinci tools;
        # the laparoscopic clip's grey tools on pale tissue defeat it)
        tools = {}
        if name == "endonerf_pulling":
            masks = [grey_tool_mask(x) for x in rgbs]
            tools = real_instrument_order(masks, fov, aligned, single, causal, heur)
            if args.previews is not None:
                args.previews.mkdir(parents=True, exist_ok=True)
                tiles = []
                for k in np.linspace(0, len(rgbs) - 1, 3).astype(int):
                    shade = rgbs[k].copy()
                    shade[masks[k]] = (0.5 * shade[masks[k]] + [127, 0, 0]).astype(np.uint8)
                    tiles.append(shade)
                path = args.previews / f"{name}_tool_masks.png"
                cv2.imwrite(str(path), np.concatenate(tiles, 1)[..., ::-1])
        results["real"][name] = {
            **odo,
            **tools,
            "frames": len(rgbs),
            "fov_fraction": float(fov.mean()),
            "flicker_aligned": fa,
            "flicker_per_frame": fs,
            "flicker_ratio": fa / fs if fs > 0 else float("nan"),
            "flicker_causal": fc,
        }
        if args.previews is not None:
            args.previews.mkdir(parents=True, exist_ok=True)
            tiles = []
            for k in np.linspace(0, len(rgbs) - 1, 3).astype(int):
                d = np.where(fov, aligned[k], np.nan)
                hh = np.where(fov, heur[k], np.nan)
                tiles.append(
                    np.concatenate(
                        [rgbs[k], colorize_depth(d, cmap="inferno"), colorize_depth(hh, cmap="inferno")], 1
                    )
                )
            cv2.imwrite(str(args.previews / f"{name}_{args.label}.png"), np.concatenate(tiles, 0)[..., ::-1])
    results["minutes"] = (time.time() - t0) / 60
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    # one-screen summary
    print(f"\n{args.label}: {args.weights}")
    cols = [
        "per_frame_abs_rel",
        "per_seq_abs_rel",
        "per_seq_a1",
        "tae",
        "tae_median",
        "range_ratio",
        "instrument_nearer",
        "edge_accuracy",
        "rim_abs_rel",
        "inner_abs_rel",
    ]
    print(f"{'preset':<11}{'method':<17}" + "".join(f"{c[:14]:>15}" for c in cols))
    for preset, summary in results["presets"].items():
        for m, r in summary.items():
            print(
                f"{preset:<11}{m:<17}"
                + "".join(f"{r[c]:>15.3f}" if r[c] is not None else f"{'-':>15}" for c in cols)
            )
    for name, r in results["real"].items():
        print(
            f"real {name}: flicker aligned {r['flicker_aligned']:.4f}, "
            f"per frame {r['flicker_per_frame']:.4f}, "
            f"ratio {r['flicker_ratio']:.2f}, causal {r['flicker_causal']:.4f}; "
            + (
                f"static camera: path {r['static_path_over_depth']:.2f} x median depth, "
                f"rotation {r['static_final_rotation_deg']:.1f} deg; "
                if "static_path_over_depth" in r
                else ""
            )
            + f"field of view {100 * r['fov_fraction']:.0f} %"
        )
        if "instrument_tools" in r:
            print(
                f"real {name}: instruments nearer than the tissue around them (colour-rule masks, "
                f"{r['instrument_frames']} frames / {r['instrument_tools']} tool regions): "
                + ", ".join(
                    f"{m} {100 * r[f'instrument_nearer_{m}']:.0f} / "
                    f"{100 * r[f'instrument_tool_nearer_{m}']:.0f} %"
                    for m in ("aligned", "per_frame", "causal", "light_heuristic")
                )
            )
    print(f"saved {args.out} ({results['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
