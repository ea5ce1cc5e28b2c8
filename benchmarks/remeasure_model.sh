#!/usr/bin/env bash
# Every figure in the docs and tests that depends on the depth model, measured for one weights file.
#
#   bash benchmarks/remeasure_model.sh LABEL WEIGHTS [JOBS]
#
# Run it on the float16 file exactly as it would ship (scripts/ship_default_model.py BASE --out DIR writes
# one without touching the repository's weights). Results go to benchmarks/results/*_LABEL.json, reports
# and previews to runs/remeasure_LABEL/; each step's log is in that folder. Steps run JOBS at a time
# (default 2, one per core of our machine; each step uses one thread). About 50 minutes of CPU in all:
#
#   quality      benchmarks/model_quality.py, 224x280, every method, real-clip flicker and previews
#   quality56    the same at 56x70 (the closed loop's size)
#   static       benchmarks/static_scope.py (odometry: the still EndoNeRF scope, moving held-out sequences)
#   filter       benchmarks/temporal_filter.py (the still-pixel filter)
#   kinematic    benchmarks/kinematic_scale.py (the photometric kinematic scale of the tests) on seeds 0-3
#   loop         endo-depth loop --duration 5 --height 72 --width 96 --margin-mm 5 --seed 0..5
#   integration  endo-depth loop, 12 s: seeds 1, 2, 3, 0 with and without the plausibility check, and the
#                frozen-image fault (docs/integration.md's table; closed_loop_12s_LABEL.json)
#   demo         endo-depth demo (the README's figures and picture) and the 24-frame demo of tests/ros (summaries
#                saved as demo_LABEL.json and demo24_LABEL.json)
#   eval         endo-depth eval on the held-out target tubes (aligned, T = 32, fp32)
#
# The docs then take the numbers from these files (docs/BENCHMARKS.md says which figure comes from where).
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL=${1:?usage: remeasure_model.sh LABEL WEIGHTS [JOBS]}
W=${2:?usage: remeasure_model.sh LABEL WEIGHTS [JOBS]}
JOBS=${3:-2}
[ -f "$W" ] || { echo "weights not found: $W" >&2; exit 1; }
PY=.venv/bin/python
OUT=runs/remeasure_$LABEL
R=benchmarks/results
mkdir -p "$OUT"
export OMP_NUM_THREADS=1

step_quality() {
    $PY benchmarks/model_quality.py --weights "$W" --label "$LABEL" --threads 1 \
        --methods aligned causal per_frame light_heuristic constant \
        --out "$R/model_quality_$LABEL.json" --previews "$OUT/previews"
}
step_quality56() {
    $PY benchmarks/model_quality.py --weights "$W" --label "${LABEL}_56x70" --input-size 56 70 --threads 1 \
        --presets tube lap dome --skip-real --methods causal per_frame light_heuristic constant \
        --out "$R/model_quality_${LABEL}_56x70.json"
}
step_static() { $PY benchmarks/static_scope.py --weights "$W" --threads 1 --out "$R/static_scope_$LABEL.json"; }
step_filter() { $PY benchmarks/temporal_filter.py --weights "$W" --out "$R/temporal_filter_$LABEL.json"; }
step_kinematic() {
    $PY benchmarks/kinematic_scale.py --weights "$W" --seeds 0 1 2 3 --out "$R/kinematic_scale_$LABEL.json"
}
step_loop() {
    local s
    for s in 0 1 2 3 4 5; do
        rm -rf "$OUT/loop_s$s"
        $PY -m endo_depth_ros.cli loop --weights "$W" --duration 5 --height 72 --width 96 --margin-mm 5 \
            --seed "$s" --out "$OUT/loop_s$s" --domain-id "$ROS_DOMAIN_ID" || true  # a seed that trips the margin still reports
    done
    $PY - "$OUT" "$R/closed_loop_$LABEL.json" "$LABEL" <<'PY'
import json, sys
from pathlib import Path
runs = {}
for s in range(6):
    report = Path(sys.argv[1]) / f"loop_s{s}" / "report.json"
    runs[f"photometric_window30_seed{s}"] = json.loads(report.read_text())["summary"] if report.is_file() else None
json.dump({"model": f"{sys.argv[3]} at 56x70", "runs": runs,
           "commands": {"photometric_window30": "endo-depth loop --duration 5 --height 72 --width 96 --margin-mm 5 --seed S"}},
          open(sys.argv[2], "w"), indent=1, default=float)
PY
}
step_integration() {
    # docs/integration.md's table: 12 s at a 15 mm stand-off, margin 3 mm, seeds 1, 2, 3, 0 with and
    # without the controller's plausibility check, and the frozen-image fault from 2 s (seed 1)
    local s check
    for s in 1 2 3 0; do
        for check in on off; do
            rm -rf "$OUT/int_s${s}_$check"
            $PY -m endo_depth_ros.cli loop --weights "$W" --seed "$s" --out "$OUT/int_s${s}_$check" \
                --domain-id "$ROS_DOMAIN_ID" $([ "$check" = off ] && echo --no-plausibility-check) || true
        done
    done
    rm -rf "$OUT/int_frozen"
    $PY -m endo_depth_ros.cli loop --weights "$W" --duration 6 --height 72 --width 96 --margin-mm 5 \
        --freeze-image-after-s 2 --out "$OUT/int_frozen" --domain-id "$ROS_DOMAIN_ID" || true
    $PY - "$OUT" "$R/closed_loop_12s_$LABEL.json" "$LABEL" <<'PY'
import json, sys
from pathlib import Path
runs = {}
for name in [f"int_s{s}_{c}" for s in (1, 2, 3, 0) for c in ("on", "off")] + ["int_frozen"]:
    report = Path(sys.argv[1]) / name / "report.json"
    runs[name] = json.loads(report.read_text())["summary"] if report.is_file() else None
json.dump({"model": sys.argv[3], "runs": runs, "commands": {
    "int_sS_on": "endo-depth loop --seed S", "int_sS_off": "endo-depth loop --seed S --no-plausibility-check",
    "int_frozen": "endo-depth loop --duration 6 --height 72 --width 96 --margin-mm 5 --freeze-image-after-s 2"}},
    open(sys.argv[2], "w"), indent=1, default=float)
PY
}
step_demo() {
    rm -rf "$OUT/demo" "$OUT/demo24"
    $PY -m endo_depth_ros.cli demo --weights "$W" --out "$OUT/demo" --domain-id "$ROS_DOMAIN_ID"
    $PY -m endo_depth_ros.cli demo --weights "$W" --frames 24 --height 96 --width 128 --out "$OUT/demo24" \
        --domain-id "$ROS_DOMAIN_ID"
    cp "$OUT/demo/summary.json" "$R/demo_$LABEL.json"
    cp "$OUT/demo24/summary.json" "$R/demo24_$LABEL.json"
}
step_eval() {
    local s
    for s in 31 32 33; do
        [ -d "$OUT/eval_target/target_s$s" ] || $PY -m endo_depth_ros.cli synth --preset target --seed $s \
            --frames 48 --size 256 320 --out "$OUT/eval_target/target_s$s" --formats folder --depth-format npy
    done
    $PY -m endo_depth_ros.cli eval "$OUT/eval_target" --encoder vitt --weights "$W" --protocol both \
        --precision fp32 --out "$OUT/eval"
    cp "$OUT/eval/results.json" "$R/eval_target_$LABEL.json"
}

read -r -a STEPS <<< "${STEPS:-quality quality56 static filter kinematic loop integration demo eval}"  # STEPS="loop demo" ...
running=0
domain=60
for step in "${STEPS[@]}"; do
    echo "[remeasure] $step -> $OUT/$step.log"
    domain=$((domain + 1))  # each step its own DDS domain: the demo and the loop share node names
    ( export ROS_DOMAIN_ID=$domain
      "step_$step" > "$OUT/$step.log" 2>&1 && echo "[remeasure] $step done" \
          || echo "[remeasure] $step FAILED (see $OUT/$step.log)" ) &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait
echo "[remeasure] results: $R/*_$LABEL.json; reports: $OUT"
