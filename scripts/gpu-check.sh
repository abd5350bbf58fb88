#!/usr/bin/env bash
# The one command for a lent GPU machine (docs/cuda.md). Here, first:
#   scripts/gpu-bundle.sh                      # builds and packs bundle/ (git-ignored)
# then, with the device tool: command "scripts/gpu-check.sh", carry ["bundle"].
# On the GPU machine (which has a driver, CUDA and PyTorch but none of our dependencies) it
# unpacks the bundle and runs, within about 8 minutes:
#   1. every op of the cuda backend against the cpu backend (nnrun --check-backend)
#   2. the cuda specs: training steps vs the cpu, gradient checks on the GPU, errors, memory
#   3. train_fashion_mnist.lua --device cuda --model cnn for one epoch, with its accuracy
#   4. tests/dist/gpu_parallel.lua: NCCL collectives (a world of one), DDP and DataParallel on cuda:0
#   5. scripts/bench/run_gpu.py: nnrun vs the machine's PyTorch, matmul vs cuBLAS, bandwidth
# and prints a short table at the end. The full log and the results go to $OUT (the device
# tool brings that folder back), or ./gpu-check-out elsewhere.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
cd "$ROOT"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START ))s; }
declare -a SUMMARY

B=${NNR_GPU_PREFIX:-/tmp/nnrun-gpu}
if [ -f bundle/nnrun-gpu.tar.xz ]; then
  rm -rf "$B" && mkdir -p "$B" && tar -C "$B" -xJf bundle/nnrun-gpu.tar.xz
elif [ -x build/bin/nnrun ]; then
  B=$ROOT/build      # a machine where the project was built in place
else
  echo "gpu-check: no bundle/nnrun-gpu.tar.xz (run scripts/gpu-bundle.sh first) and no build/"; exit 2
fi
NNRUN=$B/bin/nnrun
PLUGIN=$(ls "$B"/lib/nnr/libnnr_cuda.so 2>/dev/null)
# cuBLAS: the toolkit's, or the one PyTorch's wheels bring
CUBLAS_DIR=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  if ls "$d"/libcublas.so.1[23]* >/dev/null 2>&1; then CUBLAS_DIR=$d; break; fi
done
if [ -z "$CUBLAS_DIR" ]; then
  f=$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name 'libcublas.so.1[23]*' -print 2>/dev/null | head -1)
  [ -n "$f" ] && CUBLAS_DIR=$(dirname "$f")
fi
# NCCL (for the collectives on GPU tensors): the toolkit's folder, or PyTorch's wheels
NCCL_DIR=""
for d in "$CUBLAS_DIR" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
  if [ -n "$d" ] && ls "$d"/libnccl.so.2* >/dev/null 2>&1; then NCCL_DIR=$d; break; fi
done
if [ -z "$NCCL_DIR" ]; then
  f=$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name 'libnccl.so.2*' -print 2>/dev/null | head -1)
  [ -n "$f" ] && NCCL_DIR=$(dirname "$f")
fi
export LD_LIBRARY_PATH="$B/lib${CUBLAS_DIR:+:$CUBLAS_DIR}${NCCL_DIR:+:$NCCL_DIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LUA_PATH="$B/busted/share/?.lua;$B/busted/share/?/init.lua;;"
export LUA_CPATH="$B/busted/lib/?.so;;"
DATA=bundle/fashion-mnist
[ -d "$DATA" ] || DATA=/usr/share/datasets/fashion-mnist

echo "== gpu-check $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi failed"
echo "cuBLAS from: ${CUBLAS_DIR:-not found}; NCCL from: ${NCCL_DIR:-not found}"
"$NNRUN" --plugins
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
SUMMARY+=("card: ${CARD:-unknown}")

echo "== 1. conformance: every cuda op against the cpu backend ($(elapsed))"
timeout 180 "$NNRUN" --check-backend "$PLUGIN" >"$OUT/conformance.txt" 2>&1
rc=$?
grep -E "FAIL|skip:" "$OUT/conformance.txt" | head -40
line=$(tail -1 "$OUT/conformance.txt")
SUMMARY+=("conformance (rc $rc): $line")

echo "== 2. cuda specs ($(elapsed))"
timeout 180 "$NNRUN" "$B/busted/busted" --lpath='tests/lua/?.lua' -o tests/lua/handler.lua tests/lua/cuda_spec.lua \
  >"$OUT/cuda_spec.txt" 2>&1
rc=$?
cat "$OUT/cuda_spec.txt" | tail -40
SUMMARY+=("cuda specs (rc $rc): $(tail -1 "$OUT/cuda_spec.txt")")

echo "== 3. train_fashion_mnist.lua --device cuda --model cnn, 1 epoch ($(elapsed))"
timeout 180 "$NNRUN" scripts/train_fashion_mnist.lua --device cuda --model cnn --epochs 1 --data "$DATA" --quiet \
  --metrics "$OUT/train_metrics.jsonl" >"$OUT/train.txt" 2>&1
rc=$?
tail -5 "$OUT/train.txt"
acc=$(grep -o '"test_accuracy":[0-9.e-]*' "$OUT/train_metrics.jsonl" 2>/dev/null | tail -1)
sps=$(grep -o '"samples_per_s":[0-9.e+-]*' "$OUT/train_metrics.jsonl" 2>/dev/null | tail -1)
SUMMARY+=("cnn 1 epoch on cuda (rc $rc): ${acc:-no accuracy} ${sps:-}")

echo "== 4. parallel on the GPU: NCCL collectives, DDP and DataParallel on cuda:0 ($(elapsed))"
timeout 120 "$NNRUN" tests/dist/gpu_parallel.lua >"$OUT/gpu_parallel.txt" 2>&1
rc=$?
tail -5 "$OUT/gpu_parallel.txt"
SUMMARY+=("parallel on cuda (rc $rc): $(tail -1 "$OUT/gpu_parallel.txt")")

echo "== 5. benchmarks vs PyTorch ($(elapsed))"
NNRUN="$NNRUN" NNR_CUBLAS_BENCH="$B/bin/nnr_cublas_bench" timeout 330 python3 scripts/bench/run_gpu.py --rounds=2 "$OUT/perf-gpu.md"
rc=$?
SUMMARY+=("benchmarks (rc $rc): $OUT/perf-gpu.md")

echo "== summary ($(elapsed))"
for s in "${SUMMARY[@]}"; do echo "  $s"; done
[ -f "$OUT/perf-gpu.md" ] && cat "$OUT/perf-gpu.md"
