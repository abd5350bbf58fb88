#!/usr/bin/env bash
# The benchmarks' second PyTorch: pip's current torch (CPU and CUDA wheels from PyPI) in a virtual
# environment, beside Debian's python3-torch. Prints the interpreter's path.
#   NNR_BENCH_VENV (default ~/.cache/nnrun/bench-venv)
set -euo pipefail
venv=${NNR_BENCH_VENV:-$HOME/.cache/nnrun/bench-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --no-cache-dir torch numpy >&2
fi
echo "$venv/bin/python"
