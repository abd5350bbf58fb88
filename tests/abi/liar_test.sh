#!/usr/bin/env bash
# A backend whose kernels lie or crash (tests/c/plugins/liar.c) must give FAIL rows naming those ops,
# and the kit must go on past a crash; a user's backward through its corrupt max-pool argmax must be
# an error, not a crash.  liar_test.sh NNRUN LIAR_SO
set -u
nnrun=$1 liar=$2
fail=0
check() { if grep -qE -- "$2" <<<"$1"; then echo "ok: $3"; else echo "FAIL: $3 (no line matching '$2'), in:"; head -c 2000 <<<"$1"; fail=1; fi; }

out=$("$nnrun" --check-backend "$liar" 2>&1)
status=$?
[ "$status" -eq 1 ] && echo "ok: the kit exits 1 on failures" || { echo "FAIL: the kit exited $status"; fail=1; }
# (under the sanitizers the child reports the null store itself, then aborts (signal 6) or exits 1
# instead of dying of SIGSEGV)
check "$out" "neg +f32 +contiguous +FAIL +(crashed: signal (11|6)|the kit stopped)" "a crashing kernel is a FAIL row naming neg"
check "$out" "abs +f32 +contiguous +fallback" "rows after the crash still run"
check "$out" "add +f32 +specials +FAIL +output 1: max relative error" "a wrong result is a FAIL row naming add"
check "$out" "max_pool2d +f32 +argmax +FAIL" "a lying max_pool2d is a FAIL row"
check "$out" "max_pool2d_backward +f32 +bad argmax +fallback +refused: .*outside its 9x8 plane" "the host backend refuses a corrupt argmax"
check "$out" "^summary: 0 native, [0-9]+ fallback, [0-9]+ extension, [0-9]+ skipped, 4 failed" "the summary counts by result"

# only the ops asked for, streamed with the same results
out=$("$nnrun" --check-backend "$liar" --ops '^neg$' 2>&1)
check "$out" "^summary: 0 native, [0-9]+ fallback, 0 extension, 0 skipped, 2 failed" "--ops keeps only the matching ops"

out=$(NNR_LOG=3 NNR_PLUGIN_PATH="$liar" "$nnrun" -e '
local x = nnr.randn(2, 3, 8, 8, { device = "liar:0" }):requires_grad_()
local y = nnr.nn.functional.max_pool2d(x, 2)
local ok, err = pcall(function() y:sum():backward() end)
print(ok, err)' 2>&1)
check "$out" "^false.*max_pool2d backward: argmax [0-9]+ of plane [0-9]+ is outside its 8x8 plane" "a backward through a corrupt argmax is an error"
exit $fail
