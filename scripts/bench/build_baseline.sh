#!/usr/bin/env bash
# Builds another commit of nnrun (default: the commit before issue 14's layout, 6e7272a) in a git
# worktree beside the build, for scripts/bench/run.py --baseline and run_cpu.py --baseline.
#   scripts/bench/build_baseline.sh [COMMIT [DIR]]    (DIR default: build-baseline)
set -euo pipefail
cd "$(dirname "$0")/../.."
commit=${1:-6e7272a}
dir=${2:-build-baseline}
src="$dir/src"
if [ ! -d "$src" ]; then git worktree add --detach "$src" "$commit" >/dev/null; else git -C "$src" checkout -q --detach "$commit"; fi
cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNNR_BUILD_TESTS=OFF >/dev/null
cmake --build "$dir" >/dev/null
echo "$dir/bin/nnrun: $(git -C "$src" log -1 --format='%h %s')"
