#!/usr/bin/env bash
# TensorBoard's own reader over nnr's event files: tests/tensorboard/write.lua logs every kind of value,
# read.py reads the files back with pip's tensorboard package and checks every value (and that the
# records' CRCs hold). The package goes into a venv in the build folder on the first run.
#   tensorboard_test.sh NNRUN SOURCE_DIR BUILD_DIR
set -eu
NNRUN=$1 SRC=$2 BUILD=$3
venv="$BUILD/tb-venv"
if ! "$venv/bin/python" -c "import tensorboard" 2>/dev/null; then
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  rm -rf "$venv"
  if ! "$py" -m venv "$venv" >"$BUILD/tb-venv.log" 2>&1; then
    tail -5 "$BUILD/tb-venv.log"; echo "FAIL: $py -m venv (Debian: apt-get install python3-venv)"; exit 1
  fi
  if ! "$venv/bin/pip" install -q tensorboard >>"$BUILD/tb-venv.log" 2>&1; then
    tail -5 "$BUILD/tb-venv.log"; echo "SKIP: pip cannot install tensorboard into $venv (is PyPI reachable?)"; exit 77
  fi
fi
echo "tensorboard $("$venv/bin/python" -c 'import tensorboard; print(tensorboard.__version__)')"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$NNRUN" "$SRC/tests/tensorboard/write.lua" "$tmp/run"
"$venv/bin/python" "$SRC/tests/tensorboard/read.py" "$tmp/run"
