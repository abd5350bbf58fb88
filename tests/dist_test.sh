#!/usr/bin/env bash
# Distributed training over MPI (nnr.parallel): mpirun -np 2 --oversubscribe on this machine.
# Collectives and DDP against one process; a rank that raises, dies or holds another model
# ends the job with an error naming it, within a timeout. Skipped (77) without mpirun or when
# nnrun was built without MPI.
set -u
NNRUN=$1
command -v mpirun >/dev/null || { echo "skip: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
"$NNRUN" -e 'os.exit(nnr.parallel.Distributed.available() and 0 or 77)' || { echo "skip: nnrun was built without MPI"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# containers often forbid the cross-memory attach of the shared-memory transport: copy instead
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN=(mpirun -np 2 --oversubscribe)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for np in 1 2; do
  if timeout 120 mpirun -np $np --oversubscribe "$NNRUN" tests/dist/collectives.lua >"$tmp/out" 2>&1; then
    tail -1 "$tmp/out"
  else
    echo "FAIL: collectives with $np ranks"; cat "$tmp/out"; fail=1
  fi
done
# the training script: the same losses and accuracy on 1 and 2 ranks, and without --distributed, for the
# same command line: the global batches are the same samples whatever the world size
for np in 1 2; do
  timeout 180 mpirun -np $np --oversubscribe "$NNRUN" scripts/train_fashion_mnist.lua --distributed --model mlp --limit 1000 \
    --epochs 1 --batch-size 32 --workers 0 --threads 1 --quiet --metrics "$tmp/m$np.jsonl" >"$tmp/out" 2>&1 || { echo "FAIL: training on $np ranks"; cat "$tmp/out"; fail=1; }
done
timeout 180 "$NNRUN" scripts/train_fashion_mnist.lua --model mlp --limit 1000 --epochs 1 --batch-size 32 --workers 0 --threads 1 --quiet \
  --metrics "$tmp/m0.jsonl" >"$tmp/out" 2>&1 || { echo "FAIL: training without --distributed"; cat "$tmp/out"; fail=1; }
if python3 - "$tmp/m0.jsonl" "$tmp/m1.jsonl" "$tmp/m2.jsonl" <<'PY'
import json, sys
plain, a, b = (json.loads(open(p).read().splitlines()[-1]) for p in sys.argv[1:])
for k in ("train_loss", "test_loss", "test_accuracy"):
    for other in (a, b):
        assert abs(plain[k] - other[k]) <= 1e-5 * max(1, abs(plain[k])), (k, plain[k], other[k])
print(f"train_fashion_mnist.lua: plain, --distributed on 1 and on 2 ranks agree (test accuracy {a['test_accuracy']})")
PY
then :; else echo "FAIL: 1 and 2 ranks differ"; fail=1; fi
# the language-model job: the same metrics line on 1 and 2 ranks (each rank takes every other window)
if [ -f /usr/share/games/fortunes/fortunes ]; then
  for np in 1 2; do
    timeout 180 mpirun -np $np --oversubscribe "$NNRUN" scripts/train_charlm.lua --distributed --data /usr/share/games/fortunes/fortunes \
      --d-model 32 --heads 2 --layers 2 --seq-len 32 --batch-size 8 --steps 10 --eval-every 10 --sample-tokens 0 --workers 0 --threads 1 \
      --quiet --metrics "$tmp/lm$np.jsonl" >"$tmp/out" 2>&1 || { echo "FAIL: train_charlm.lua on $np ranks"; cat "$tmp/out"; fail=1; }
  done
  a=$(grep -o '"train_loss":[^,]*,"val_loss":[^,]*' "$tmp/lm1.jsonl" 2>/dev/null); b=$(grep -o '"train_loss":[^,]*,"val_loss":[^,]*' "$tmp/lm2.jsonl" 2>/dev/null)
  if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "train_charlm.lua --distributed: 1 and 2 ranks agree ($a)"
  else echo "FAIL: train_charlm.lua on 1 and 2 ranks: '$a' and '$b'"; fail=1; fi
else
  echo "train_charlm.lua --distributed: skipped (Debian's fortunes is not installed)"
fi
expect_failure() {     # case, pattern the output must hold
  local start=$SECONDS
  timeout 60 "${MPIRUN[@]}" "$NNRUN" tests/dist/faults.lua "$1" >"$tmp/out" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then echo "FAIL: $1: the job succeeded"; fail=1; return; fi
  if [ $rc -eq 124 ]; then echo "FAIL: $1: the job hung (killed after 60 s)"; cat "$tmp/out"; fail=1; return; fi
  if grep -q "unexpected" "$tmp/out" || ! grep -Eq "$2" "$tmp/out"; then
    echo "FAIL: $1: expected /$2/ in:"; cat "$tmp/out"; fail=1; return
  fi
  echo "$1: the job stopped in $((SECONDS - start)) s naming the rank"
}
expect_failure raise "rank 1 gives up on purpose.*|rank 1 of 2 failed"
expect_failure die "rank 1|process rank 1"
expect_failure mismatch "rank 1's model has 2 parameters \(25 elements\), rank 0's 2 \(15 elements\)"
[ $fail -eq 0 ] && echo "distributed ok" || exit 1
