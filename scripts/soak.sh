#!/usr/bin/env bash
# The soak test of docs/reliability.md (by hand, not in CI): about SOAK_SECONDS (default 3600) of
# training the mlp on Fashion-MNIST with a checkpoint after every epoch, killed at random moments
# (SIGKILL, or SIGTERM, which asks for a checkpoint at the end of the current step) and resumed
# each time from what is on disk. At the end, the final weights must equal those of one
# uninterrupted run of the same epochs, resident memory must stay flat over the run, and no file
# descriptor or temporary file may be left behind.
#
#   scripts/soak.sh [NNRUN]            SOAK_SECONDS=600 scripts/soak.sh for a short one
#   SOAK_MODEL (cnn), SOAK_LIMIT (all 60000 images), SOAK_LIFE_MIN/MAX (30/240 s between kills)
# The uninterrupted reference run trains beside the soak (one thread each).
#
# Prints one line per kill and a summary; exits non-zero when a property fails.
set -u
NNRUN=${1:-build/bin/nnrun}
SECONDS_WANTED=${SOAK_SECONDS:-3600}
SCRIPT=scripts/train_fashion_mnist.lua
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
echo "soak: $(date -u +%FT%TZ), $(git -C "$(dirname "$0")/.." log -1 --format=%h 2>/dev/null), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
common=(--model "${SOAK_MODEL:-cnn}" --batch-size 64 --threads 1 --workers 1 --augment --quiet --seed 7)
[ -n "${SOAK_LIMIT:-}" ] && common+=(--limit "$SOAK_LIMIT")
life_min=${SOAK_LIFE_MIN:-30} life_max=${SOAK_LIFE_MAX:-240}

# one epoch's duration (a 4-epoch run less a 1-epoch one: start-up aside) sets the number of epochs,
# unless SOAK_EPOCHS does
if [ -n "${SOAK_EPOCHS:-}" ]; then epochs=$SOAK_EPOCHS; per_epoch="?"; else
t1=$(date +%s%N)
"$NNRUN" $SCRIPT "${common[@]}" --epochs 1 >/dev/null 2>&1 || { echo "soak: a one-epoch run failed"; exit 1; }
t2=$(date +%s%N)
"$NNRUN" $SCRIPT "${common[@]}" --epochs 4 >/dev/null 2>&1 || { echo "soak: a four-epoch run failed"; exit 1; }
t3=$(date +%s%N)
per_epoch=$(awk "BEGIN { printf \"%.2f\", (($t3 - $t2) - ($t2 - $t1)) / 3e9 }")
# the kills repeat work (a resumed run restarts its epoch): about a third more than the epochs alone
epochs=$(awk "BEGIN { e = int($SECONDS_WANTED / $per_epoch / 1.3); print (e < 3 ? 3 : e) }")
fi
echo "soak: $epochs epochs of about $per_epoch s each, killed and resumed at random for about $SECONDS_WANTED s"

# the reference: the same epochs, never interrupted, beside the soak
"$NNRUN" $SCRIPT "${common[@]}" --epochs "$epochs" --save "$work/ref.safetensors" >"$work/ref.log" 2>&1 &
ref_pid=$!

RANDOM=${SOAK_SEED:-1}
ck=$work/ck.safetensors
kills=0 terms=0 restarts=0 fail=0
rss_log=$work/rss.log
fd_max=0
t0=$(date +%s)
while :; do
  args=("${common[@]}" --epochs "$epochs" --save "$ck" --metrics "$work/soak.jsonl")
  [ -f "$ck" ] && args+=(--resume "$ck")
  "$NNRUN" $SCRIPT "${args[@]}" >"$work/out.log" 2>&1 &
  pid=$!
  restarts=$((restarts + 1))
  life=$((life_min + RANDOM % (life_max - life_min + 1)))     # seconds until this one is killed
  for ((s = 0; s < life; s++)); do
    sleep 1
    kill -0 $pid 2>/dev/null || break
    rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null)
    fds=$(ls /proc/$pid/fd 2>/dev/null | wc -l)
    [ -n "$rss" ] && echo "$(( $(date +%s) - t0 )) $rss $fds" >>"$rss_log"
    [ "$fds" -gt "$fd_max" ] && fd_max=$fds
  done
  if kill -0 $pid 2>/dev/null; then
    if ((RANDOM % 3 == 0)); then sig=TERM; terms=$((terms + 1)); else sig=KILL; kills=$((kills + 1)); fi
    kill -$sig $pid 2>/dev/null
    wait $pid; code=$?
    echo "soak: $(( $(date +%s) - t0 )) s: SIG$sig after ${life} s, exit $code; $(tail -1 "$work/out.log" | cut -c1-140)"
    if [ $sig = TERM ] && [ $code -eq 0 ]; then echo "soak: FAIL: SIGTERM gave exit status 0"; fail=1; fi
    continue
  fi
  wait $pid; code=$?
  if [ $code -ne 0 ]; then echo "soak: FAIL: a run ended with status $code:"; tail -5 "$work/out.log"; fail=1; break; fi
  break
done
elapsed=$(( $(date +%s) - t0 ))

wait $ref_pid || { echo "soak: FAIL: the reference run"; cat "$work/ref.log"; fail=1; }
same=$("$NNRUN" -e "
  local a, b = nnr.load_checkpoint('$ck'), nnr.load_checkpoint('$work/ref.safetensors')
  local worst, n = 0, 0
  for k, t in pairs(b.model) do
    n = n + 1
    local d = (a.model[k] - t):abs():max():item()
    if d > worst then worst = d end
  end
  print(string.format('%d tensors, largest difference %g', n, worst))" 2>&1)
echo "soak: final weights against an uninterrupted run: $same"
case "$same" in *"largest difference 0") ;; *) fail=1; echo "soak: FAIL: the weights differ" ;; esac

leftover=$(ls "$work" | grep -c '\.tmp' || true)
echo "soak: temporary files left: $leftover"
[ "$leftover" -eq 0 ] || { fail=1; ls "$work"; }
# RSS: the median of the first and the last fifth of the samples, in MiB
n=$(wc -l <"$rss_log"); k=$((n / 5)); ((k < 1)) && k=1
first=$(sort -n -k1 "$rss_log" | head -n $k | awk '{ print $2 }' | sort -n | sed -n "$(((k + 1) / 2))p")
last=$(sort -n -k1 "$rss_log" | tail -n $k | awk '{ print $2 }' | sort -n | sed -n "$(((k + 1) / 2))p")
first=$((${first:-0} / 1024)) last=$((${last:-0} / 1024))
echo "soak: $elapsed s, $restarts runs ($kills SIGKILL, $terms SIGTERM), $(wc -l <"$rss_log") RSS samples: median RSS first fifth $first MiB, last fifth $last MiB; at most $fd_max file descriptors"
if [ "$last" -gt $((first + first / 10 + 8)) ]; then echo "soak: FAIL: RSS grew"; fail=1; fi
[ $fail -eq 0 ] && echo "soak: passed" || echo "soak: FAILED"
exit $fail
