#!/usr/bin/env bash
# nnr.onnx against PyTorch, pip's onnx and onnxruntime: PyTorch's exporter (Debian's python3-torch) writes an
# MLP, a CNN with batch norm, an LSTM, a transformer encoder and a ResNet-18 (tests/onnx/make_models.py),
# pip's onnx writes the hostile files (tests/onnx/hostile.py), tests/onnx/check.lua checks every output
# against PyTorch's and every refusal's message and exports nnrun's models, which tests/onnx/ort_check.py
# runs through onnx.checker and onnxruntime. The pip packages go into a venv in the build folder.
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
"$NNRUN" "$SRC/tests/onnx/check.lua" "$tmp/models" "$tmp/hostile/files" "$tmp/exported" || status=1
# nnr.onnx.export's files in pip's onnx.checker and onnxruntime
"$venv/bin/python" "$SRC/tests/onnx/ort_check.py" "$tmp/exported" || status=1
exit $status
