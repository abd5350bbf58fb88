#!/usr/bin/env bash
# Faults during long work (docs/reliability.md): a stop signal during training, a full disk during a
# save, the temporary files of a killed save, out of memory in the caching allocator, a loader
# worker that fails, and bad numeric options of the training scripts.
#   faults_test.sh path/to/nnrun [signals|distributed|options|disk|stale|oom|loader|all]
# Run from the source tree. Exits 0 when every check passed, 77 when the part cannot run here (disk:
# no tmpfs can be mounted; signals, options, distributed: no Fashion-MNIST; distributed: no MPI), 1 otherwise.
set -u
NNRUN=$(realpath "$1")
PART=${2:-all}
cd "$(dirname "$0")/.." || exit 1
TRAIN=scripts/train_fashion_mnist.lua
QUANT=scripts/quantize_fashion_mnist.lua
AT_STEP=tests/faults/signal_at_step.lua
SAME=tests/faults/same_checkpoint.lua
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0 skipped=""
check() { local name=$1; shift; if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi; }
contains() { grep -qF -- "$2" <<<"$1" || { echo "  expected to find: $2"; echo "  in: $(head -c 600 <<<"$1")"; return 1; }; }
fails() { ! "$@" 2>/dev/null; }
lacks() { ! grep -qF -- "$2" <<<"$1" || { echo "  did not expect: $2"; return 1; }; }
no_temps() { local left; left=$(find "$1" -name '*.tmp.*'); [ -z "$left" ] || { echo "  left: $left"; return 1; }; }
metrics_of() { grep -o '"epoch":[^,]*,"train_loss":[^,]*,"test_loss":[^,]*,"test_accuracy":[^,]*' "$1"; }
same_metrics() {   # the epochs' losses and accuracies of two metrics files: present and equal
  local a b
  a=$(metrics_of "$1"); b=$(metrics_of "$2")
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "  $a"; echo "  vs"; echo "  $b"; return 1; }
}
have_data() { [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; }
meta() { "$NNRUN" -e "local _, m = nnr.load('$1'); io.write(tostring(m['$2']))"; }

# ---- 1. SIGTERM / SIGINT during training: the step finishes, a checkpoint of the position, 130 / 143, exact resume
signals_part() {
  local common=(--model mlp --limit 640 --batch-size 64 --threads 2 --workers 2 --augment --quiet --epochs 3) out code
  "$NNRUN" $TRAIN "${common[@]}" --metrics "$tmp/straight.jsonl" --save "$tmp/straight.st" >/dev/null 2>&1
  check "straight run: three epochs" test "$(wc -l <"$tmp/straight.jsonl")" -eq 3

  # SIGTERM after step 14 = epoch 2, step 4 (10 steps an epoch)
  out=$("$NNRUN" $AT_STEP TERM 14 $TRAIN "${common[@]}" --metrics "$tmp/term.jsonl" --save "$tmp/term.st" 2>&1); code=$?
  check "SIGTERM: exit status 143" test "$code" -eq 143
  check "SIGTERM: message" contains "$out" "interrupted at epoch 2 step 4 (SIGTERM): checkpoint written to $tmp/term.st; resume with --resume $tmp/term.st"
  check "SIGTERM: the checkpoint is of epoch 2 step 4" test "$(meta "$tmp/term.st" nnr:n:epoch)/$(meta "$tmp/term.st" nnr:n:step)" = "1/4"
  check "SIGTERM: one metrics line (epoch 1)" test "$(wc -l <"$tmp/term.jsonl")" -eq 1
  cp "$tmp/term.st" "$tmp/term_mid.st"
  out=$("$NNRUN" $TRAIN "${common[@]}" --metrics "$tmp/term.jsonl" --save "$tmp/term.st" --resume "$tmp/term.st" 2>&1); code=$?
  check "SIGTERM resume: exit status 0 ($out)" test "$code" -eq 0
  check "SIGTERM resume: the same losses and accuracies as a run never interrupted" same_metrics "$tmp/straight.jsonl" "$tmp/term.jsonl"
  check "SIGTERM resume: the same final weights and optimizer state, bit for bit" "$NNRUN" $SAME "$tmp/straight.st" "$tmp/term.st"
  check "(the comparison can fail: the mid-epoch checkpoint differs)" fails "$NNRUN" $SAME "$tmp/straight.st" "$tmp/term_mid.st"

  # SIGINT after an epoch's last step: the epoch finishes (evaluation, metrics, checkpoint), then the stop
  out=$("$NNRUN" $AT_STEP INT 10 $TRAIN "${common[@]}" --metrics "$tmp/int.jsonl" --save "$tmp/int.st" 2>&1); code=$?
  check "SIGINT at an epoch's end: exit status 130" test "$code" -eq 130
  check "SIGINT at an epoch's end: message" contains "$out" "interrupted after epoch 1 (SIGINT): checkpoint written to $tmp/int.st"
  "$NNRUN" $TRAIN "${common[@]}" --metrics "$tmp/int.jsonl" --save "$tmp/int.st" --resume "$tmp/int.st" >/dev/null 2>&1
  check "SIGINT at an epoch's end: resume gives the same metrics" same_metrics "$tmp/straight.jsonl" "$tmp/int.jsonl"
  check "SIGINT at an epoch's end: resume gives the same weights" "$NNRUN" $SAME "$tmp/straight.st" "$tmp/int.st"

  # another model, optimizer and schedule: cnn-bn (BatchNorm's running statistics), Adam, constant lr
  local bn=(--model cnn-bn --optimizer adam --lr 0.001 --lr-schedule none --limit 256 --batch-size 32 --threads 2 --workers 1 --quiet --epochs 2)
  "$NNRUN" $TRAIN "${bn[@]}" --save "$tmp/bn_straight.st" >/dev/null 2>&1
  out=$("$NNRUN" $AT_STEP INT 11 $TRAIN "${bn[@]}" --save "$tmp/bn.st" 2>&1); code=$?
  check "cnn-bn SIGINT: exit status 130" test "$code" -eq 130
  check "cnn-bn SIGINT: message" contains "$out" "interrupted at epoch 2 step 3 (SIGINT)"
  "$NNRUN" $TRAIN "${bn[@]}" --save "$tmp/bn.st" --resume "$tmp/bn.st" >/dev/null 2>&1
  check "cnn-bn SIGINT: resume gives the same weights and Adam state" "$NNRUN" $SAME "$tmp/bn_straight.st" "$tmp/bn.st"

  # without --save: still a clean stop, saying nothing was written
  out=$("$NNRUN" $AT_STEP INT 3 $TRAIN "${common[@]}" 2>&1); code=$?
  check "no --save: exit status 130" test "$code" -eq 130
  check "no --save: message" contains "$out" "interrupted at epoch 1 step 3 (SIGINT); no --save was given, so no checkpoint was written"

  # a second signal interrupts at once: no new checkpoint, the previous one (epoch 1) intact
  out=$("$NNRUN" $AT_STEP TERM2 14 $TRAIN "${common[@]}" --save "$tmp/twice.st" 2>&1); code=$?
  check "second signal: exit status 143" test "$code" -eq 143
  check "second signal: an interruption" contains "$out" "interrupted"
  check "second signal: no checkpoint written" lacks "$out" "checkpoint written"
  check "second signal: the epoch-1 checkpoint is intact" test "$(meta "$tmp/twice.st" nnr:n:epoch)/$(meta "$tmp/twice.st" nnr:n:step)" = "1/nil"
  check "second signal: no temporary file" no_temps "$tmp"

  # a mid-epoch checkpoint refuses another batch size (its position would point at other batches)
  out=$("$NNRUN" $TRAIN --model mlp --limit 640 --batch-size 32 --threads 2 --quiet --epochs 3 --resume "$tmp/term_mid.st" 2>&1); code=$?
  check "mid-epoch resume with another --batch-size: refused" test "$code" -eq 1
  check "mid-epoch resume with another --batch-size: message" contains "$out" "resume it with the same --batch-size, --limit"

  # a real Ctrl-C from outside, at whatever step it lands
  local cnn=(--model cnn --limit 2560 --batch-size 64 --threads 2 --workers 2 --epochs 2)
  "$NNRUN" $TRAIN "${cnn[@]}" --quiet --metrics "$tmp/cnn_straight.jsonl" --save "$tmp/cnn_straight.st" >/dev/null 2>&1
  "$NNRUN" $TRAIN "${cnn[@]}" --metrics "$tmp/cnn.jsonl" --save "$tmp/cnn.st" >"$tmp/cnn.out" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do grep -q "^Fashion-MNIST" "$tmp/cnn.out" && break; sleep 0.05; done
  sleep 0.4
  kill -INT "$pid"
  wait "$pid"; code=$?
  out=$(cat "$tmp/cnn.out")
  check "Ctrl-C from outside: exit status 130" test "$code" -eq 130
  check "Ctrl-C from outside: message" grep -qE "interrupted (at epoch [12] step [0-9]+|after epoch 1) \(SIGINT\): checkpoint written to $tmp/cnn.st" "$tmp/cnn.out"
  echo "  (Ctrl-C landed: $(grep -o 'interrupted [a-z]* epoch [0-9]*\( step [0-9]*\)\?' "$tmp/cnn.out"))"
  "$NNRUN" $TRAIN "${cnn[@]}" --quiet --metrics "$tmp/cnn.jsonl" --save "$tmp/cnn.st" --resume "$tmp/cnn.st" >/dev/null 2>&1
  check "Ctrl-C from outside: resume gives the same metrics" same_metrics "$tmp/cnn_straight.jsonl" "$tmp/cnn.jsonl"
  check "Ctrl-C from outside: resume gives the same weights" "$NNRUN" $SAME "$tmp/cnn_straight.st" "$tmp/cnn.st"

  # the quantize script's training: the same stop, checkpoint and resume
  local q=(--limit 1280 --epochs 2 --threads 2 --seed 3 --quiet)
  "$NNRUN" $QUANT "${q[@]}" --save "$tmp/q_straight.st" --metrics "$tmp/q_straight.jsonl" >/dev/null 2>&1
  out=$("$NNRUN" $AT_STEP TERM 25 $QUANT "${q[@]}" --save "$tmp/q.st" 2>&1); code=$?
  check "quantize SIGTERM: exit status 143" test "$code" -eq 143
  check "quantize SIGTERM: message" contains "$out" "interrupted at epoch 2 step 5 (SIGTERM): checkpoint written to $tmp/q.st; resume with --resume $tmp/q.st"
  "$NNRUN" $QUANT "${q[@]}" --save "$tmp/q.st" --resume "$tmp/q.st" --metrics "$tmp/q.jsonl" >/dev/null 2>&1
  check "quantize SIGTERM: resume gives the same mlp" "$NNRUN" $SAME "$tmp/q_straight.st" "$tmp/q.st"
  local qa
  qa=$(grep -o '"accuracy":[^,]*' "$tmp/q_straight.jsonl")
  check "quantize SIGTERM: resume gives the same accuracies ($(tr '\n' ' ' <<<"$qa"))" test -n "$qa" -a "$qa" = "$(grep -o '"accuracy":[^,]*' "$tmp/q.jsonl")"
  out=$("$NNRUN" $AT_STEP INT 41 $QUANT "${q[@]}" --save "$tmp/q2.st" 2>&1); code=$?
  check "quantize SIGINT while fine-tuning: exit status 130" test "$code" -eq 130
  check "quantize SIGINT while fine-tuning: message" contains "$out" "of the pruned model's fine-tuning (SIGINT); the trained mlp is in $tmp/q2.st: rerun with --checkpoint $tmp/q2.st"
}

# ---- 1b. the same under mpirun: a signal in one rank stops every rank after the same step
distributed_part() {
  command -v mpirun >/dev/null || { skipped="distributed: mpirun not found"; return; }
  "$NNRUN" -e 'os.exit(nnr.parallel.Distributed.available() and 0 or 77)' || { skipped="distributed: nnrun was built without MPI"; return; }
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
  local mpi=(timeout 180 mpirun -np 2 --oversubscribe "$NNRUN") out code
  local d=(--distributed --model mlp --limit 1280 --batch-size 64 --threads 1 --workers 1 --quiet --epochs 2)
  "${mpi[@]}" $TRAIN "${d[@]}" --save "$tmp/d_straight.st" --metrics "$tmp/d_straight.jsonl" >/dev/null 2>&1
  out=$(SIGNAL_RANK=1 "${mpi[@]}" $AT_STEP TERM 13 $TRAIN "${d[@]}" --save "$tmp/d.st" --metrics "$tmp/d.jsonl" 2>&1); code=$?
  check "distributed, SIGTERM in rank 1: the job ends non-zero" test "$code" -ne 0
  check "distributed, SIGTERM in rank 1: rank 0 saved where both stopped" contains "$out" "interrupted at epoch 1 step 13 (SIGTERM): checkpoint written to $tmp/d.st"
  "${mpi[@]}" $TRAIN "${d[@]}" --save "$tmp/d.st" --resume "$tmp/d.st" --metrics "$tmp/d.jsonl" >/dev/null 2>&1
  check "distributed: resume gives the same metrics (the epoch's loss summed over ranks)" same_metrics "$tmp/d_straight.jsonl" "$tmp/d.jsonl"
  check "distributed: resume gives the same weights" "$NNRUN" $SAME "$tmp/d_straight.st" "$tmp/d.st"
}

# ---- 7. numeric options: refused before any training, naming the option
options_part() {
  local args out code
  while IFS='|' read -r script args want; do
    # shellcheck disable=SC2086
    out=$("$NNRUN" "$script" $args --limit 64 --epochs 1 --metrics "$tmp/never.jsonl" --quiet 2>&1); code=$?
    check "$(basename "$script") $args: refused" test "$code" -ne 0
    check "$(basename "$script") $args: message" contains "$out" "$want"
  done <<EOF
$TRAIN|--lr nan|--lr must be a finite number >= 0, got nan
$TRAIN|--lr inf|--lr must be a finite number >= 0, got inf
$TRAIN|--lr -0.1|--lr must be a finite number >= 0, got -0.1
$TRAIN|--epochs inf|--epochs must be an integer in [0, 1000000], got inf
$TRAIN|--epochs 1e300|--epochs must be an integer in [0, 1000000], got 1e+300
$TRAIN|--epochs 2.5|--epochs must be an integer
$TRAIN|--batch-size 2.5|--batch-size must be an integer in [1, 2147483647], got 2.5
$TRAIN|--batch-size 0|--batch-size must be an integer in [1, 2147483647], got 0
$TRAIN|--batch-size nan|--batch-size must be an integer
$TRAIN|--threads 0|--threads must be an integer in [1, 1024], got 0
$TRAIN|--threads 1.5|--threads must be an integer
$TRAIN|--workers 65|--workers must be an integer in [0, 64], got 65
$TRAIN|--workers -1|--workers must be an integer in [0, 64], got -1
$TRAIN|--seed -1|--seed must be an integer in [0, 9007199254740992], got -1
$TRAIN|--seed 1e20|--seed must be an integer in [0, 9007199254740992]
$TRAIN|--momentum nan|--momentum must be a finite number in [0, 1], got nan
$TRAIN|--stop-after 1.5|--stop-after must be an integer in [0, 1000000], got 1.5
$TRAIN|--limit 0|--limit must be an integer in [1, 9007199254740992], got 0
$TRAIN|--lr x|--lr needs a number, got 'x'
$QUANT|--prune nan|--prune must be a finite number, got nan
$QUANT|--prune 1|--prune must be in [0, 1), got 1
$QUANT|--epochs 2.5|--epochs must be an integer in [0, 1000000], got 2.5
$QUANT|--threads 1e300|--threads must be an integer in [1, 1024], got 1e+300
$QUANT|--seed inf|--seed must be an integer
EOF
  # --limit comes last on those lines, so a bad --limit has a line of its own
  out=$("$NNRUN" $QUANT --epochs 1 --limit 0.5 --quiet 2>&1); code=$?
  check "quantize --limit 0.5: refused" test "$code" -ne 0
  check "quantize --limit 0.5: message" contains "$out" "--limit must be an integer in [1, 9007199254740992], got 0.5"
  check "no training happened" test ! -e "$tmp/never.jsonl"
}

# ---- 2. a full disk during a save: a clear error, the previous file intact, no temporary file
disk_inside() {   # runs where it may mount (as root, or in a user+mount namespace): DIR
  local mnt=$1 out code
  mount -t tmpfs -o size=256k tmpfs "$mnt" || return 1
  out=$("$NNRUN" - <<EOF 2>&1
local nnr = require "nnr"
local path = "$mnt/ck.st"
nnr.save_checkpoint(path, { w = nnr.arange(1000), epoch = 1 })
local ok, err = pcall(nnr.save_checkpoint, path, { w = nnr.arange(100000), epoch = 2 })
print("big save:", ok, err)
local ck = nnr.load_checkpoint(path)
print("kept:", ck.epoch, ck.w:size(1), ck.w:sum():item())
ok, err = pcall(nnr.save, "$mnt/plain.st", { w = nnr.zeros(100000) })
print("plain save:", ok, err)
EOF
)
  check "full disk: the save fails with the reason" contains "$out" "big save:	false	save $mnt/ck.st: No space left on device"
  check "full disk: the previous checkpoint is intact" contains "$out" "kept:	1	1000	499500"
  check "full disk: a new file fails too, and is not created" contains "$out" "plain save:	false	save $mnt/plain.st: No space left on device"
  check "full disk: no plain.st" test ! -e "$mnt/plain.st"
  check "full disk: no temporary file" no_temps "$mnt"
  if have_data; then
    out=$("$NNRUN" $TRAIN --model mlp --limit 128 --epochs 1 --threads 2 --quiet --save "$mnt/train.st" 2>&1); code=$?
    check "full disk during training: exit status 1" test "$code" -eq 1
    check "full disk during training: message" contains "$out" "save $mnt/train.st: No space left on device"
    out=$("$NNRUN" $AT_STEP TERM 1 $TRAIN --model mlp --limit 128 --batch-size 64 --epochs 1 --threads 2 --quiet --save "$mnt/train.st" 2>&1); code=$?
    check "full disk at a stop: exit status 143" test "$code" -eq 143
    check "full disk at a stop: message" contains "$out" "interrupted at epoch 1 step 1 (SIGTERM), but the checkpoint could not be written: save $mnt/train.st: No space left on device"
    check "full disk during training: no temporary file" no_temps "$mnt"
  fi
  umount "$mnt" 2>/dev/null
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}

disk_part() {
  local mnt=$tmp/small why
  mkdir -p "$mnt"
  if why=$(mount -t tmpfs -o size=256k tmpfs "$mnt" 2>&1); then
    umount "$mnt"
    bash "$0" "$NNRUN" disk-inside "$mnt" && pass=$((pass + 1)) || fail=$((fail + 1))
  elif why2=$(unshare -rm sh -c "mount -t tmpfs -o size=256k tmpfs '$mnt'" 2>&1); then
    unshare -rm bash "$0" "$NNRUN" disk-inside "$mnt" && pass=$((pass + 1)) || fail=$((fail + 1))
  else
    skipped="disk: cannot mount a tmpfs to fill (mount: ${why:-refused}; unshare -rm: ${why2:-refused})"
  fi
}

# ---- 3. temporary files of a killed save are removed by the next save to that path
stale_part() {
  local d=$tmp/stale dead live out
  mkdir -p "$d"
  sleep 0 >/dev/null & dead=$!; wait "$dead"            # a pid that is no process any more
  sleep 60 >/dev/null 2>&1 & live=$!
  touch "$d/ck.st.tmp.$dead.AAAAAA"                      # a writer that is gone
  touch "$d/ck.st.tmp.$live.BBBBBB"                      # a live writer's (its pid runs, the file is new)
  touch "$d/ck.st.tmp.$dead.CCCCCC"                      # a gone pid, but someone holds the lock: this shell
  local lockfd
  exec {lockfd}<"$d/ck.st.tmp.$dead.CCCCCC"
  flock -x "$lockfd"
  touch "$d/ck.st.tmp.XXXXXX" "$d/ck.st.tmp.$dead.short" "$d/other.st.tmp.$dead.DDDDDD"   # not this path's, or not ours
  sleep 0.2
  "$NNRUN" -e "nnr.save_checkpoint('$d/ck.st', { w = nnr.ones(3) })"
  check "stale: a dead writer's temporary file is removed" test ! -e "$d/ck.st.tmp.$dead.AAAAAA"
  check "stale: a live writer's file stays" test -e "$d/ck.st.tmp.$live.BBBBBB"
  check "stale: a locked file stays" test -e "$d/ck.st.tmp.$dead.CCCCCC"
  check "stale: other names stay" test -e "$d/ck.st.tmp.XXXXXX" -a -e "$d/ck.st.tmp.$dead.short" -a -e "$d/other.st.tmp.$dead.DDDDDD"
  exec {lockfd}<&-
  kill "$live" 2>/dev/null; wait "$live" 2>/dev/null

  # a real one: kill -9 a process in the middle of saving 64 MiB, again and again
  rm -f "$d"/*
  local left="" tries
  for tries in 1 2 3 4 5; do
    "$NNRUN" -e "local t = nnr.randn(16, 1024, 1024); for i = 1, 1000 do nnr.save('$d/big.st', { t = t }) end" &
    local writer=$!
    for _ in $(seq 400); do compgen -G "$d/big.st.tmp.$writer.*" >/dev/null && break; sleep 0.01; done
    kill -9 "$writer"; wait "$writer" 2>/dev/null
    left=$(compgen -G "$d/big.st.tmp.$writer.*")
    [ -n "$left" ] && break
  done
  check "killed mid-save: it left its temporary file (after $tries tries)" test -n "$left"
  if [ -e "$d/big.st" ]; then
    check "killed mid-save: the previous complete file still loads" "$NNRUN" -e "assert(nnr.load('$d/big.st').t:numel() == 16 * 1024 * 1024)"
  fi
  out=$("$NNRUN" -e "nnr.save('$d/big.st', { t = nnr.ones(2) })" 2>&1)
  check "killed mid-save: the next save to the path removes it" test -z "$(compgen -G "$d/big.st.tmp.*")"
  check "killed mid-save: the next save works" "$NNRUN" -e "assert(nnr.load('$d/big.st').t:numel() == 2)"
}

# ---- 4. out of memory in the caching allocator
oom_part() {
  local m out
  for m in message reclaim control gc; do
    out=$("$NNRUN" tests/faults/oom.lua $m 2>&1)
    check "oom $m ($out)" test $? -eq 0
    echo "  $out"
  done
}

# ---- 5. a loader worker that raises, or tries to end the process
loader_part() {
  local root=$tmp/images out
  mkdir -p "$root/a" "$root/b"
  "$NNRUN" -e "for _, p in ipairs { 'a/1.png', 'a/2.png', 'b/c.png' } do nnr.data.save_image('$root/' .. p, nnr.zeros(1, 4, 4, { dtype = 'u8' })) end"
  printf '\211PNG\r\n\032\nnot really' >"$root/b/bad.png"
  out=$("$NNRUN" tests/faults/loader_faults.lua "$root" 2>&1)
  check "loader faults ($(tail -1 <<<"$out"))" test $? -eq 0
  grep FAIL <<<"$out"
}

case $PART in
  disk-inside) disk_inside "$3"; exit $? ;;
  signals|options|distributed) have_data || { echo "skipped: Debian's dataset-fashion-mnist is not installed"; exit 77; }; "${PART}_part" ;;
  disk|stale|oom|loader) "${PART}_part" ;;
  all)
    if have_data; then signals_part; distributed_part; options_part; else skipped="signals, distributed, options: no Fashion-MNIST"; fi
    disk_part; stale_part; oom_part; loader_part ;;
  *) echo "unknown part $PART"; exit 2 ;;
esac
[ -n "$skipped" ] && echo "skipped: $skipped"
echo "$pass passed, $fail failed"
[ "$fail" -ne 0 ] && exit 1
[ -n "$skipped" ] && [ "$PART" != all ] && exit 77
exit 0
