#!/usr/bin/env bash
# Sets everything up, then builds and runs every test twice: the release
# build, and an AddressSanitizer + UndefinedBehaviorSanitizer build. Warnings
# are errors here. Ends with one line: "total: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0 skipped=0
run_suite() {   # run_suite BUILD_DIR CMAKE_ARGS
  NNR_BUILD_DIR=$1 NNR_CMAKE_ARGS="-DNNR_WERROR=ON $2" scripts/setup.sh || { failed=$((failed + 1)); return; }
  local log
  log=$(mktemp)
  ctest --test-dir "$1" --output-on-failure 2>&1 | tee "$log"
  local line
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1)
  if [ -z "$line" ]; then failed=$((failed + 1)); rm -f "$log"; return; fi
  local total fail
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  fail=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
  local skip
  skip=$(grep -c "(Skipped)" "$log")
  passed=$((passed + total - fail - skip))
  failed=$((failed + fail))
  skipped=$((skipped + skip))
  rm -f "$log"
}
echo "== release build"
run_suite build ""
echo "== sanitizer build (ASan + UBSan)"
run_suite build-asan "-DNNR_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo"
echo "== fuzzing the file parsers (libFuzzer, ${NNR_FUZZ_SECONDS:=30} s each)"
if CC=clang NNR_BUILD_DIR=build-fuzz NNR_CMAKE_ARGS="-DNNR_WERROR=ON -DNNR_FUZZ=ON -DNNR_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo" \
     scripts/setup.sh >/dev/null; then
  for target in safetensors idx csv image tokenizer text onnx; do
    corpus=$(mktemp -d)
    cp tests/fuzz/corpus/$target/* "$corpus"/
    if (cd "$corpus" && ASAN_OPTIONS=allocator_may_return_null=1 "$OLDPWD/build-fuzz/bin/fuzz_$target" \
          -max_total_time="$NNR_FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 . >fuzz.log 2>&1); then
      echo "fuzz_$target: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$corpus/fuzz.log"), no crash"
      passed=$((passed + 1))
    else
      echo "FAIL: fuzz_$target"; tail -30 "$corpus/fuzz.log"
      failed=$((failed + 1))
    fi
    rm -rf "$corpus"
  done
else
  echo "FAIL: the fuzzing build"; failed=$((failed + 1))
fi
echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
