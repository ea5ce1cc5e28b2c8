#!/usr/bin/env bash
# Supervised pretraining on a lent GPU machine, in one call that fits a short slot (run from the
# repository root):
#
#   benchmarks/gpu_pretrain.sh OUT_DIR
#
# 1. renders the training scenes with one process per core (`--render-workers`; deterministic by seed, so
#    the data equal our CPU runs'), into WORK (default /tmp/gpu_pretrain, not OUT_DIR: gigabytes);
# 2. trains on DEVICE (cuda) from INIT (default: the shipped weights) for STEPS steps or MINUTES minutes,
#    whichever ends first, with a resumable state every 2 minutes; a STATE file (e.g. an earlier call's
#    OUT_DIR/state.pt, carried to the machine) continues that run instead;
# 3. copies what must come back into OUT_DIR: the final and best weights (float32), state.pt (to go on
#    later, here or on the CPU), the log and the run's command; small enough for the device's return.
# Then, on our CPU: scripts/ship_default_model.py OUT_DIR/vitt_pretrained.safetensors --out runs/candidate_gpu
# and benchmarks/model_quality.py --seeds 10 against the shipped model (docs/training.md).
#
# Environment (defaults: session 14's recipe, v17's mixture): PYTHON (python3), DEVICE (cuda), WORK,
# INIT, STATE, STEPS (6000), MINUTES (8), LR (0.00004), MIX (lap:320,colon:48,source:16,dome:32),
# FRAMES (24), CLIP (16), WORKERS ($(nproc)), EVAL_EVERY (500), PRECISION (bf16 on a GPU), EXTRA (more
# pretrain options; later ones win).
set -euo pipefail
out=${1:?usage: benchmarks/gpu_pretrain.sh OUT_DIR}
py=${PYTHON:-python3}
work=${WORK:-/tmp/gpu_pretrain}
init=${INIT:-endo_depth_model/weights/vitt_endodav.safetensors}
# bf16 autocast on the GPU ("auto" would mean fp32 there); auto on a CPU (bf16 where it is native)
precision=${PRECISION:-$([ "${DEVICE:-cuda}" = cpu ] && echo auto || echo bf16)}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[gpu_pretrain $(($(date +%s) - t0)) s] $*"; }
if [ "${DEVICE:-cuda}" != cpu ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
fi
if [ -n "${STATE:-}" ]; then
    cp "$STATE" "$work/state.pt"
    stamp "continuing the run of $STATE"
fi
# shellcheck disable=SC2086  # EXTRA is a list of options
cmd=("$py" -m endo_depth_ros.cli pretrain --out "$work" --device "${DEVICE:-cuda}"
    --mix "${MIX:-lap:320,colon:48,source:16,dome:32}" --frames "${FRAMES:-24}" --clip "${CLIP:-16}"
    --steps "${STEPS:-6000}" --max-minutes "${MINUTES:-8}" --lr "${LR:-0.00004}" --schedule cosine
    --grad-weight 0.5 --temporal-weight 0.5 --shift-weight 0.5 --depth-log-weight 1.0 --clip-log-weight 1.0
    --causal-fraction 0.75 --input-scales 1,0.75,0.5,0.375,0.25 --precision "$precision" --checkpoint-minutes 2
    --resume --eval-every "${EVAL_EVERY:-500}" --val-kinds target,lap,colon,dome --val-sequences 2
    --render-workers "${WORKERS:-$(nproc)}" --init "$init" ${EXTRA:-})
printf '%q ' "${cmd[@]}" >"$out/command.txt"
echo >>"$out/command.txt"
stamp "pretrain: $(cat "$out/command.txt")"
status=0
"${cmd[@]}" 2>&1 | tr '\r' '\n' | grep -v '^pretrain: \|^render' | tee "$out/log.txt" || status=$?
for f in vitt_pretrained.safetensors vitt_best.safetensors state.pt pretrain_log.json; do
    [ -f "$work/$f" ] && cp "$work/$f" "$out/"
done
stamp "done (exit $status): $(ls "$out" | tr '\n' ' ')"
exit "$status"
