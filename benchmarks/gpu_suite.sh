#!/usr/bin/env bash
# Everything this project measures on an NVIDIA GPU, in one run from the repository root:
#   1. the GPU-marked tests (CUDA training + resume on CPU, CUDA streaming, fp16 and CUDA-graph parity);
#   2. `endo-depth bench` on CUDA, in fp32, fp16 autocast and fp16 + CUDA graphs: VDA-S with EndoDAV's
#      offline layout (T=32, stride 22), and the ROS node's pipeline (T=16, stride 4) with VDA-S and with
#      vitt (the shipped model's size; random weights, the shipped pose network for odometry);
#   3. benchmarks/finetune_sweep.py: the shipped model's recipe and its stage-2 variants (all, or those
#      named in SWEEP_VARIANTS), trained and evaluated on the GPU, with the best variant's shipped files;
#      at most SWEEP_TIMEOUT seconds (330).
# Usage: benchmarks/gpu_suite.sh OUT_DIR   (PYTHON defaults to python3; TensorRT is not needed)
# Writes OUT_DIR/results.tar.gz (logs, JSON, markdown) and the best variant's weights beside it.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_suite.sh OUT_DIR}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
res=$(mktemp -d)
mkdir -p "$out"
t0=$(date +%s)
stamp() { echo "[gpu_suite $(($(date +%s) - t0)) s] $*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$res/gpu.txt" 2>&1
$py -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" >>"$res/gpu.txt"
cat "$res/gpu.txt"

stamp "GPU tests"
timeout 240 $py -m pytest -p no:cacheprovider -q -m gpu -o addopts="" \
    tests/training/test_trainer.py tests/deploy/test_runtime.py tests/inference/test_streaming.py \
    tests/deploy/test_precision.py >"$res/gpu_tests.log" 2>&1
echo "pytest exit $?" >>"$res/gpu_tests.log"
tail -5 "$res/gpu_tests.log"

stamp "bench"
bench() {  # name, then bench arguments
    local name=$1; shift
    timeout 100 $py -m endo_depth_model.cli bench --device cuda --backends torch --repeats 20 --passes 6 \
        --json "$res/bench_$name.json" --markdown "$res/bench_$name.md" "$@" >"$res/bench_$name.log" 2>&1
    echo "exit $?" >>"$res/bench_$name.log"
    tail -4 "$res/bench_$name.log"
}
for p in fp32 fp16 fp16_graphs; do
    flags=()
    case $p in fp16) flags=(--fp16) ;; fp16_graphs) flags=(--fp16 --cuda-graphs) ;; esac
    bench "vits_$p" --encoder vits --windows 32 --strides 22 "${flags[@]}"
    bench "node_vits_$p" --encoder vits --windows 16 --strides 4 --pipeline "${flags[@]}"
    bench "node_vitt_$p" --encoder vitt --windows 16 --strides 4 --pipeline "${flags[@]}"
done
stamp "fine-tuning sweep"
timeout "${SWEEP_TIMEOUT:-330}" $py benchmarks/finetune_sweep.py --work /tmp/sweep --out "$res/sweep" \
    --jobs "$(nproc)" --device cuda --ship ${SWEEP_VARIANTS:+--variants $SWEEP_VARIANTS} >"$res/sweep.log" 2>&1
echo "sweep exit $?" >>"$res/sweep.log"
tail -16 "$res/sweep.log"
[ -d "$res/sweep/ship" ] && cp "$res/sweep/ship/"*.safetensors "$out/"
if [ -f /tmp/sweep/pretrain/vitt_pretrained.safetensors ]; then
    $py - <<'EOF' "$out/vitt_base_fp16.safetensors"
import sys, torch
from safetensors.torch import load_file, save_file
state = load_file("/tmp/sweep/pretrain/vitt_pretrained.safetensors")
save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, sys.argv[1], metadata={"stage": "supervised-source (fp16 copy)"})
EOF
fi
cp -r /tmp/sweep/logs "$res/sweep_logs" 2>/dev/null
for d in /tmp/sweep/runs/*/; do
    n=$(basename "$d"); mkdir -p "$res/sweep_runs/$n"
    cp "$d"/*.csv "$res/sweep_runs/$n/" 2>/dev/null
done

stamp "done"
tar -czf "$out/results.tar.gz" -C "$res" .
ls -la "$out"
