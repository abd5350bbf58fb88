#!/usr/bin/env bash
# nnr.onnx against PyTorch, pip's onnx and onnxruntime: PyTorch's exporter (Debian's python3-torch) writes an
# MLP, a CNN with batch norm, an LSTM, a transformer encoder and a ResNet-18 (tests/onnx/make_models.py),
# pip's onnx writes the hostile files (tests/onnx/hostile.py), tests/onnx/check.lua checks every output
# against PyTorch's and every refusal's message and exports nnrun's models, which tests/onnx/ort_check.py
# runs through onnx.checker and onnxruntime; tests/onnx/ops.py's one-node models check every operator
# against onnxruntime (tests/onnx/ops_check.lua). The pip packages go into a venv in the build folder.
#   onnx_test.sh NNRUN SOURCE_DIR BUILD_DIR
set -eu
NNRUN=$1 SRC=$2 BUILD=$3
venv="$BUILD/onnx-venv"
# shellcheck source=tests/pyvenv.sh
. "$SRC/tests/pyvenv.sh"
ensure_venv "$venv" onnx=onnx onnxruntime=onnxruntime
torch_py=/usr/bin/python3
if ! "$torch_py" -c "import torch" 2>/dev/null; then
  echo "SKIP: $torch_py cannot import torch (Debian: apt-get install python3-torch)"; exit 77
fi
echo "torch $("$torch_py" -c 'import torch; print(torch.__version__)'), onnx $("$venv/bin/python" -c 'import onnx; print(onnx.__version__)')," \
     "onnxruntime $("$venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$torch_py" "$SRC/tests/onnx/make_models.py" "$tmp/models" >"$tmp/export.log" 2>&1; then
  tail -20 "$tmp/export.log"; echo "FAIL: torch.onnx.export"; exit 1
fi
"$venv/bin/python" "$SRC/tests/onnx/hostile.py" "$tmp/hostile/files" >/dev/null
mkdir -p "$tmp/exported"
status=0
NNR_CPU_DEVICES=2 "$NNRUN" "$SRC/tests/onnx/check.lua" "$tmp/models" "$tmp/hostile/files" "$tmp/exported" || status=1
# every operator against onnxruntime: one-node models with the attributes and edge cases that matter
"$venv/bin/python" "$SRC/tests/onnx/ops.py" "$tmp/ops" >/dev/null
"$NNRUN" "$SRC/tests/onnx/ops_check.lua" "$tmp/ops" || status=1
# nnr.onnx.export's files in pip's onnx.checker and onnxruntime
"$venv/bin/python" "$SRC/tests/onnx/ort_check.py" "$tmp/exported" || status=1

# Fashion-MNIST models trained in PyTorch: scripts/onnx_run.lua gives PyTorch's test accuracy (fp32), and
# within a point of it with --int8; --bench times one
data=/usr/share/datasets/fashion-mnist
if [ -d "$data" ]; then
  if ! "$torch_py" "$SRC/tests/onnx/train_fashion.py" "$data" "$tmp/fashion" >"$tmp/fashion.log" 2>&1; then
    tail -20 "$tmp/fashion.log"; echo "FAIL: training the Fashion-MNIST models in PyTorch"; exit 1
  fi
  for name in fashion_mlp fashion_cnn_bn; do
    "$NNRUN" "$SRC/scripts/onnx_run.lua" "$tmp/fashion/$name.onnx" --threads 2 --metrics "$tmp/fashion/runs.jsonl" || status=1
  done
  "$NNRUN" "$SRC/scripts/onnx_run.lua" "$tmp/fashion/fashion_mlp.onnx" --int8 --threads 2 --metrics "$tmp/fashion/runs.jsonl" || status=1
  "$venv/bin/python" - "$tmp/fashion" <<'PY' || status=1
import json, os, sys
d = sys.argv[1]
want = json.load(open(os.path.join(d, "fashion_accuracy.json")))
runs = [json.loads(l) for l in open(os.path.join(d, "runs.jsonl"))]
bad = 0
for r in runs:
    name = os.path.basename(r["model"])[:-5]
    tol = 0.01 if r["int8"] else 1e-4       # fp32: the same predictions (a tie at most); int8: within a point
    ok = abs(r["accuracy"] - want[name]) <= tol
    bad += not ok
    print("%s %s%s: nnrun %.4f, PyTorch %.4f" % ("ok" if ok else "FAIL", name, " --int8" if r["int8"] else "", r["accuracy"], want[name]))
print("%d passed, %d failed" % (len(runs) - bad, bad))
sys.exit(1 if bad else 0)
PY
  out=$("$NNRUN" "$SRC/scripts/onnx_run.lua" "$tmp/fashion/fashion_mlp.onnx" --bench --iters 5 --batch 4 2>&1) || status=1
  grep -q "input \[4, 1, 28, 28\], .* samples/s" <<<"$out" || { echo "FAIL: onnx_run.lua --bench: $out"; status=1; }
else
  echo "skipped: the Fashion-MNIST accuracy check ($data is missing: apt-get install dataset-fashion-mnist)"
fi
exit $status
