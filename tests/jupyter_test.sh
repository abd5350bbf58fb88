#!/usr/bin/env bash
# The Jupyter kernel through a real session: nnrun --install-kernel into a fresh prefix (and its refusals),
# then tests/jupyter/drive.py starts it with jupyter_client and runs cells: state, results, output, an error
# with the user's traceback, an interrupt, inline PNGs. pip's ipykernel and jupyter_client go into a venv in
# the build folder on the first run.
#   jupyter_test.sh NNRUN SOURCE_DIR BUILD_DIR
set -u
NNRUN=$1 SRC=$2 BUILD=$3
venv="$BUILD/py-venv"
# shellcheck source=tests/pyvenv.sh
. "$SRC/tests/pyvenv.sh"
ensure_venv "$venv" ipykernel=ipykernel jupyter_client=jupyter_client
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { local name=$1; shift; if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi; }
contains() { grep -qF -- "$2" <<<"$1" || { echo "  expected: $2"; echo "  got: $1" | head -5; return 1; }; }

out=$("$NNRUN" --install-kernel --prefix "$tmp/p" --python "$venv/bin/python" 2>&1); code=$?
check "install" test "$code" -eq 0
check "install says where" contains "$out" "installed kernel spec nnrun in $tmp/p/share/jupyter/kernels/nnrun"
check "kernel.json" grep -qF '"interrupt_mode":"message"' "$tmp/p/share/jupyter/kernels/nnrun/kernel.json"
out=$("$NNRUN" --install-kernel --prefix "$tmp/p" --python "$venv/bin/python" 2>&1); code=$?
check "a spec that exists: exit code" test "$code" -eq 1
check "a spec that exists" contains "$out" "a kernel spec named nnrun already exists in $tmp/p/share/jupyter/kernels/nnrun; --replace overwrites it"
out=$("$NNRUN" --install-kernel --prefix "$tmp/p" --python "$venv/bin/python" --replace 2>&1)
check "--replace" contains "$out" "installed kernel spec nnrun"
out=$("$NNRUN" --install-kernel --prefix "$tmp/q" --python /usr/bin/true 2>&1)
check "a python without ipykernel" contains "$out" "/usr/bin/true cannot import ipykernel (pip install ipykernel)"
out=$("$NNRUN" --install-kernel --prefix "$tmp/q" --name 'a/b' 2>&1)
check "a bad name" contains "$out" "--name must be letters, digits"
out=$("$NNRUN" --install-kernel --bogus 2>&1)
check "an unknown option" contains "$out" "unknown option --bogus"
out=$("$NNRUN" --kernel-server </dev/null 2>&1)
check "the server outside a kernel" contains "$out" "runs under the Jupyter kernel"

if JUPYTER_PATH="$tmp/p/share/jupyter" timeout 300 "$venv/bin/python" "$SRC/tests/jupyter/drive.py" nnrun 2>&1 | grep -v "WARNING | Kernel is running over TCP" ; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: the session (drive.py)"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
