"""``endo-depth eval``: the command line of the evaluation in :mod:`endo_depth_model.evaluate` (the
report's rows: the model, the ablations, the baselines). The command's description is the docstring of
:mod:`endo_depth_model.evaluate`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from endo_depth_model import evaluate
from endo_depth_model.cli.infer import add_model_arguments, resolve_model_defaults
from endo_depth_model.evaluate import (
    PROTOCOLS,
    EvalConfig,
    evaluate_baselines,
    evaluate_method,
    format_table,
    save_report,
)
from endo_depth_model.metrics import MetricError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="depth protocols (per-frame, per-sequence), TAE, ATE and paper-style tables",
        description=evaluate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "data", help="dataset path or spec, e.g. scared:ROOT?split=test, hamlyn:ROOT, synth:target"
    )
    p.add_argument("--protocol", choices=(*PROTOCOLS, "both"), default="both", help="protocol(s) (both)")
    p.add_argument("--name", default="EndoDAV (ours)", help="method name in the table")
    p.add_argument("--out", type=Path, default=Path("eval_results"), help="report folder (eval_results)")
    p.add_argument(
        "--ablation", action="store_true", help="add rows: SSB off, projection loss off, alignment off"
    )
    p.add_argument("--no-proj-checkpoint", type=Path, help="checkpoint trained without the projection loss")
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="leave out the baseline rows (light heuristic depth ∝ 1/sqrt(blurred grey), constant depth)",
    )
    p.add_argument("--eval-min-depth", type=float, default=1e-3, help="valid GT lower bound, report unit")
    p.add_argument("--eval-max-depth", type=float, default=150.0, help="valid GT upper bound, report unit")
    p.add_argument("--unit-scale", type=float, default=1000.0, help="metres -> report unit (1000: mm)")
    add_model_arguments(p, precision_default="fp32")  # reported numbers: fp32 unless asked
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from endo_depth_model.checkpoint import CheckpointError
    from endo_depth_model.data import DataError, open_sequences
    from endo_depth_model.infer import InferError, load_depth_model
    from endo_depth_model.streaming import StreamError

    t0 = time.perf_counter()
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    cfg = EvalConfig(args.eval_min_depth, args.eval_max_depth, args.unit_scale)
    try:
        resolve_model_defaults(args)
        sequences = open_sequences(args.data)
        if not sequences:
            raise InferError(f"no sequences in {args.data}")

        def load(adapter, checkpoint):
            bundle = load_depth_model(args.encoder, args.weights, adapter, checkpoint, args.device)
            bundle.set_precision(args.precision, args.device)
            return bundle

        full = load(args.adapter, args.checkpoint)
        print(f"model: {full.description}; {len(sequences)} sequence(s)")
        rows = {p: [] for p in protocols}

        def add(result: dict) -> None:
            for p, r in result.items():
                rows[p].append(r)

        add(evaluate_method(args.name, full, sequences, protocols, cfg, args))
        if args.ablation:
            adapted = args.adapter is not None or args.checkpoint is not None
            if adapted:
                base = load(None, None)
                add(evaluate_method("w/o SSB (base VDA)", base, sequences, protocols, cfg, args))
            else:
                print("ablation: no --adapter/--checkpoint, so the model is the base model; SSB row skipped")
            if args.no_proj_checkpoint is not None:
                nop = load(None, args.no_proj_checkpoint)
                add(evaluate_method("w/o projection loss", nop, sequences, protocols, cfg, args))
            else:
                print("ablation: no --no-proj-checkpoint given; projection-loss row skipped")
            add(
                evaluate_method(
                    "w/o alignment",
                    full,
                    sequences,
                    protocols,
                    cfg,
                    args,
                    align=False,
                    note="windows concatenated without scale/shift fit or blending",
                )
            )
        if not args.no_baselines:
            for result in evaluate_baselines(sequences, protocols, cfg, args):
                add(result)
    except (InferError, DataError, CheckpointError, StreamError, MetricError, ValueError) as exc:
        print(f"endo-depth eval: error: {exc}")
        return 1
    rows = {p: r for p, r in rows.items() if r}
    if not rows:
        print("endo-depth eval: error: no sequence had ground-truth depth")
        return 1
    md = save_report(rows, args.out, title=f"{args.name} on {args.data}")
    for p, r in rows.items():
        print()
        print(format_table(r, title=f"{p} protocol"))
    print(f"\nreport: {md} (+ results.json); {time.perf_counter() - t0:.1f} s")
    return 0
