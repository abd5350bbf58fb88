#!/usr/bin/env bash
# Tests of scripts/train_fashion_mnist.lua on a prefix of the real dataset:
# metrics lines, resume giving the same losses as an uninterrupted run,
# checkpoints, and the bad-input messages. Usage: train_test.sh path/to/nnrun
set -u
NNRUN=$1
SCRIPT=scripts/train_fashion_mnist.lua
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { local name=$1; shift; if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi; }
contains() { grep -qF -- "$2" <<<"$1" || { echo "  expected to find: $2"; echo "  in: $1" | head -5; return 1; }; }

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "skipped: Debian's dataset-fashion-mnist is not installed"
  echo "0 passed, 0 failed, 1 skipped"
  exit 0
fi

common=(--model mlp --limit 640 --batch-size 64 --threads 2 --workers 2 --augment --quiet)
"$NNRUN" $SCRIPT "${common[@]}" --epochs 3 --metrics "$tmp/straight.jsonl" >/dev/null 2>&1
"$NNRUN" $SCRIPT "${common[@]}" --epochs 3 --stop-after 2 --metrics "$tmp/resumed.jsonl" --save "$tmp/ck.safetensors" >/dev/null 2>&1
"$NNRUN" $SCRIPT "${common[@]}" --epochs 3 --metrics "$tmp/resumed.jsonl" --resume "$tmp/ck.safetensors" >/dev/null 2>&1
check "three metrics lines" test "$(wc -l <"$tmp/straight.jsonl")" -eq 3
line=$(head -1 "$tmp/straight.jsonl")
for key in epoch train_loss test_loss test_accuracy samples_per_s seconds rss_mib data_wait_fraction; do
  check "metrics has $key" contains "$line" "\"$key\":"
done
straight=$(sed -n 3p "$tmp/straight.jsonl" | grep -o '"train_loss":[^,]*,"test_loss":[^,]*,"test_accuracy":[^,]*')
resumed=$(sed -n 3p "$tmp/resumed.jsonl" | grep -o '"train_loss":[^,]*,"test_loss":[^,]*,"test_accuracy":[^,]*')
check "resume reproduces the losses ($straight)" test -n "$straight" -a "$straight" = "$resumed"
check "checkpoint written" test -s "$tmp/ck.safetensors"
check "no temporary files" test -z "$(ls "$tmp" | grep tmp)"

out=$("$NNRUN" $SCRIPT --data "$tmp/nowhere" 2>&1); code=$?
check "missing data exit code" test "$code" -eq 1
check "missing data names the file" contains "$out" "$tmp/nowhere/train-images-idx3-ubyte.gz is missing"
mkdir -p "$tmp/bad"
printf 'not an idx file at all' | gzip >"$tmp/bad/train-images-idx3-ubyte.gz"
cp /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz "$tmp/bad/"
out=$("$NNRUN" $SCRIPT --data "$tmp/bad" 2>&1)
check "corrupt data names the file" contains "$out" "$tmp/bad/train-images-idx3-ubyte.gz: not an IDX file"
out=$("$NNRUN" $SCRIPT --model resnet 2>&1)
check "bad model" contains "$out" "--model must be mlp, cnn or cnn-bn, got 'resnet'"
out=$("$NNRUN" $SCRIPT --epochs x 2>&1)
check "bad number" contains "$out" "--epochs needs a number, got 'x'"
out=$("$NNRUN" $SCRIPT --bogus 1 2>&1)
check "unknown option" contains "$out" "unknown option --bogus"
out=$("$NNRUN" $SCRIPT "${common[@]}" --epochs 1 --lr 1e6 --detect-anomaly 2>&1); code=$?
check "anomaly stops training" test "$code" -eq 1
check "anomaly message" contains "$out" "training stopped: the loss is"
out=$("$NNRUN" $SCRIPT --model cnn --limit 64 --epochs 1 --resume "$tmp/ck.safetensors" 2>&1)
check "resume of another model" contains "$out" "holds a mlp model, not cnn"
# --tensorboard DIR: an event file holding the epoch's scalars and the weights' histograms (the format
# itself is read back by pip's tensorboard in tensorboard_test.sh); a folder that cannot be made is named
"$NNRUN" $SCRIPT "${common[@]}" --epochs 2 --tensorboard "$tmp/tb/run" >/dev/null 2>&1
ev=$(ls "$tmp"/tb/run/events.out.tfevents.* 2>/dev/null | head -1)
check "--tensorboard writes an event file" test -s "$ev"
for tag in loss/train loss/test accuracy/test lr 2.weight 2.weight.grad; do
  check "--tensorboard logs $tag" grep -qaF "$tag" "$ev"
done
out=$("$NNRUN" $SCRIPT "${common[@]}" --epochs 1 --tensorboard /proc/nnr-tb 2>&1)
check "--tensorboard unwritable" contains "$out" "--tensorboard /proc/nnr-tb: cannot make the directory /proc/nnr-tb"
# --plot FILE: the curves drawn at the end (the picture itself: tests/lua/plot_spec.lua), its name checked first
"$NNRUN" $SCRIPT "${common[@]}" --epochs 2 --plot "$tmp/curves.png" >/dev/null 2>&1
check "--plot draws a PNG" bash -c "head -c 8 '$tmp/curves.png' | grep -q PNG"
out=$("$NNRUN" $SCRIPT "${common[@]}" --epochs 1 --plot "$tmp/curves.gif" 2>&1)
check "--plot bad extension" contains "$out" "--plot: the output must end in .png or .svg, got $tmp/curves.gif"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
