#!/usr/bin/env bash
# The cpu plugin names OpenBLAS's kernel family from the CPU (plugins/cpu/blas.c) unless the user set
# OPENBLAS_CORETYPE: run the f32-against-f64 products under every family this CPU can execute
# (Prescott: SSE3; Haswell: AVX2+FMA; SkylakeX: AVX-512), as the plugin would choose on each class.
#   blas_coretypes.sh NNRUN
set -u
nnrun=$1 here=$(dirname "$0")
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { for f in "$@"; do grep -qw "$f" <<<"$flags" || return 1; done; }
types="Prescott"
has avx2 fma && types="$types Haswell"
has avx512f avx512bw avx512vl && types="$types SkylakeX"
fail=0
for t in $types; do OPENBLAS_CORETYPE=$t "$nnrun" "$here/blas_coretypes.lua" || fail=1; done
exit $fail
