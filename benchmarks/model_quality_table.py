"""Markdown tables from saved ``benchmarks/model_quality.py`` results (one row per model and method).

    .venv/bin/python benchmarks/model_quality_table.py benchmarks/results/model_quality_previous_model.json \\
        benchmarks/results/model_quality_v2.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLS = [
    ("per_frame_abs_rel", "AbsRel (per frame)", 3),
    ("per_frame_a1", "δ<1.25 (per frame)", 3),
    ("per_seq_abs_rel", "AbsRel (per seq.)", 3),
    ("per_seq_a1", "δ<1.25 (per seq.)", 3),
    ("tae", "TAE %", 2),
    ("range_ratio", "range ratio", 2),
    ("instrument_nearer", "instrument nearer", 2),
    ("edge_accuracy", "edge acc.", 3),
]


def main(paths: list[str]) -> int:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    presets = list(dict.fromkeys(k for r in runs for k in r["presets"]))
    for preset in presets:
        print(f"\n**{preset}**\n")
        print("| model | method | " + " | ".join(c[1] for c in COLS) + " |")
        print("|---|---|" + "---:|" * len(COLS))
        for r in runs:
            for method, row in r["presets"].get(preset, {}).items():
                cells = []
                for key, _, digits in COLS:
                    v = row.get(key)
                    cells.append("-" if v is None or v != v else f"{v:.{digits}f}")
                print(f"| {r['label']} | {method} | " + " | ".join(cells) + " |")
    print("\n**real clips**\n")
    print(
        "| model | clip | flicker aligned | flicker per frame | aligned / per frame | flicker causal "
        "| static path / depth | static rotation ° |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        for clip, row in r["real"].items():

            def f(k, d=4, row=row):
                v = row.get(k)
                return "-" if v is None else f"{v:.{d}f}"

            print(
                f"| {r['label']} | {clip} | {f('flicker_aligned')} | {f('flicker_per_frame')} | "
                f"{f('flicker_ratio', 2)} | {f('flicker_causal')} | {f('static_path_over_depth', 2)} | "
                f"{f('static_final_rotation_deg', 1)} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
