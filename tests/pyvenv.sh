# Sourced by the tests that use pip packages (tensorboard_test.sh, jupyter_test.sh): ensure_venv DIR MODULE=PACKAGE...
# makes the venv DIR (Debian's python3 -m venv) if it is missing and pip-installs each package whose module
# does not import. Exits 77 (ctest: skipped, with the reason) when pip cannot reach PyPI, 1 when venv fails.
ensure_venv() {
  local venv=$1; shift
  local py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" >"$venv.log" 2>&1; then
      tail -5 "$venv.log"; echo "FAIL: $py -m venv $venv (Debian: apt-get install python3-venv)"; exit 1
    fi
  fi
  local spec missing=()
  for spec in "$@"; do
    "$venv/bin/python" -c "import ${spec%%=*}" 2>/dev/null || missing+=("${spec#*=}")
  done
  if [ ${#missing[@]} -gt 0 ] && ! "$venv/bin/pip" install -q "${missing[@]}" >>"$venv.log" 2>&1; then
    tail -5 "$venv.log"; echo "SKIP: pip cannot install ${missing[*]} into $venv (is PyPI reachable?)"; exit 77
  fi
}
