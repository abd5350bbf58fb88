#!/usr/bin/env bash
# TensorBoard's own reader over nnr's event files: tests/tensorboard/write.lua logs every kind of value,
# read.py reads the files back with pip's tensorboard package and checks every value (and that the
# records' CRCs hold). The package goes into a venv in the build folder on the first run.
#   tensorboard_test.sh NNRUN SOURCE_DIR BUILD_DIR
set -eu
NNRUN=$1 SRC=$2 BUILD=$3
venv="$BUILD/py-venv"
# shellcheck source=tests/pyvenv.sh
. "$SRC/tests/pyvenv.sh"
ensure_venv "$venv" tensorboard=tensorboard
echo "tensorboard $("$venv/bin/python" -c 'import tensorboard; print(tensorboard.__version__)')"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$NNRUN" "$SRC/tests/tensorboard/write.lua" "$tmp/run"
"$venv/bin/python" "$SRC/tests/tensorboard/read.py" "$tmp/run"
