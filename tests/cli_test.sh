#!/usr/bin/env bash
# Tests of the nnrun executable: options, scripts and their arguments, exit
# codes, piped stdin, the REPL (multi-line input, errors, results printed)
# and Ctrl-C. Usage: cli_test.sh path/to/nnrun test-plugin-dir
set -u
NNRUN=$1
PLUGINS=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

check() {   # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi
}
contains() { grep -qF -- "$2" <<<"$1" || { echo "  expected to find: $2"; echo "  in: $1" | head -20; return 1; }; }

out=$("$NNRUN" --version); check "--version" contains "$out" "nnrun 0.1.0"
out=$("$NNRUN" --help); check "--help" contains "$out" "usage: nnrun"
out=$("$NNRUN" -e 'print((nnr.ones(3) * 2):sum():item())'); check "-e" contains "$out" "6"

cat >"$tmp/script.lua" <<'LUA'
local nnr = require "nnr"
print("args", arg[0] ~= nil, arg[1], arg[2], select("#", ...))
print(nnr.arange(3))
LUA
out=$("$NNRUN" "$tmp/script.lua" a b); check "script args" contains "$out" "args	true	a	b	2"
check "script output" contains "$out" "tensor([0., 1., 2.], shape=[3], dtype=f32, device=cpu)"

# a script sees the global nnr as -e and the REPL do; an error in nnr's own code shows the script's
# frames, not nnr's (NNR_TRACEBACK=full shows every frame)
cat >"$tmp/global.lua" <<'LUA'
local function build()
  local lin = nnr.nn.Linear(784, 10)
  local y = lin(nnr.randn(4, 5))
  return y
end
build()
LUA
err=$("$NNRUN" "$tmp/global.lua" 2>&1); code=$?
check "script: global nnr, error exit code" test "$code" -eq 1
check "script: global nnr" contains "$err" "Linear(784 -> 10): input of shape [4, 5], expected [..., 784]"
check "traceback: the user's frame" contains "$err" "global.lua:3: in function 'build'"
check "traceback: the main chunk" contains "$err" "global.lua:6: in main chunk"
check "traceback: nnr's frames left out" contains "$err" "of nnrun's own left out; NNR_TRACEBACK=full shows them"
check "traceback: no nnr source" bash -c "! grep -qF 'share/lua/5.1/nnr/' <<<\"\$1\"" _ "$err"
err=$(NNR_TRACEBACK=full "$NNRUN" "$tmp/global.lua" 2>&1)
check "NNR_TRACEBACK=full" contains "$err" "share/lua/5.1/nnr/nn/linear.lua"
err=$(NNR_TRACEBACK=fulll "$NNRUN" "$tmp/global.lua" 2>&1)
check "NNR_TRACEBACK bad value" contains "$err" "NNR_TRACEBACK=fulll is not 'full'; tracebacks show your frames only"
out=$(echo 'print(nnr.ones(2):sum():item())' | "$NNRUN" -); check "stdin (-): global nnr" contains "$out" "2"

# nnrun plot: a metrics file to a PNG (the pictures themselves: tests/lua/plot_spec.lua); bad input named
printf '%s\n' '{"epoch":1,"train_loss":0.9,"test_loss":0.8,"test_accuracy":0.7}' '{"epoch":2,"train_loss":0.5,"test_loss":0.6,"test_accuracy":0.8}' >"$tmp/m.jsonl"
out=$("$NNRUN" plot "$tmp/m.jsonl" 2>&1); code=$?
check "plot exit code" test "$code" -eq 0
check "plot default output" contains "$out" "wrote $tmp/m.png"
check "plot writes a PNG" bash -c "head -c 8 '$tmp/m.png' | grep -q PNG"
out=$("$NNRUN" plot "$tmp/m.jsonl" -o "$tmp/c.svg" --title "run 1"); check "plot -o svg" test -s "$tmp/c.svg"
echo 'not json' >"$tmp/bad.jsonl"
err=$("$NNRUN" plot "$tmp/bad.jsonl" 2>&1); code=$?
check "plot bad metrics exit code" test "$code" -eq 1
check "plot bad metrics" contains "$err" "plot: $tmp/bad.jsonl line 1 is not JSON"
err=$("$NNRUN" plot "$tmp/m.jsonl" --bogus 2>&1); check "plot unknown option" contains "$err" "nnrun plot: unknown option --bogus"
err=$(PATH=/nonexistent "$NNRUN" plot "$tmp/m.jsonl" -o "$tmp/x.png" 2>&1)
check "plot without gnuplot" contains "$err" "gnuplot is not installed (Debian: apt-get install gnuplot-nox)"

echo 'error("boom")' >"$tmp/bad.lua"
err=$("$NNRUN" "$tmp/bad.lua" 2>&1); code=$?
check "error exit code" test "$code" -eq 1
check "error message" contains "$err" "boom"
err=$("$NNRUN" -e 'local x = nnr.ones(2, 3) + nnr.ones(4)' 2>&1); code=$?
check "op error exit code" test "$code" -eq 1
check "op error message" contains "$err" "add: shapes [2, 3] and [4] cannot broadcast"
err=$("$NNRUN" "$tmp/missing.lua" 2>&1); code=$?
check "missing script" test "$code" -eq 1
check "missing script message" contains "$err" "cannot open"
err=$("$NNRUN" --bogus 2>&1); code=$?
check "unknown option" test "$code" -eq 1

out=$(echo 'print(nnr.ones(2):sum():item() + 1)' | "$NNRUN"); check "piped stdin" contains "$out" "3"
check "piped stdin has no prompt" bash -c "! grep -qF '> ' <<<\"$out\""

printf '%s\n' 'x = 2' 'x * 3' 'for i = 1, 2 do' 'print("loop", i)' 'end' 'error("oops")' 'print("still here")' \
  'nnr.tensor({1, 2})' '= 7' >"$tmp/repl.txt"
out=$("$NNRUN" -i <"$tmp/repl.txt" 2>&1); code=$?
check "repl exit code" test "$code" -eq 0
check "repl expression" contains "$out" "6"
check "repl multi-line" contains "$out" "loop	2"
check "repl error goes on" contains "$out" "oops"
check "repl after error" contains "$out" "still here"
check "repl tensor printed" contains "$out" "tensor([1., 2.], shape=[2], dtype=f32, device=cpu)"
check "repl =expr" contains "$out" "7"
# a line's locals live on (the line runs without the word), where the rest compiles alone
printf '%s\n' 'local y = 20' 'y + 1' 'local function twice(v) return 2 * v end' 'twice(y)' 'local z' 'z' >"$tmp/repl2.txt"
out=$("$NNRUN" -i <"$tmp/repl2.txt" 2>&1)
check "repl: a local lives on" contains "$out" "21"
check "repl: a local function lives on" contains "$out" "40"
check "repl: local without a value" bash -c "! grep -qi error <<<\"$out\""
# a local named as one of Lua's globals stays local: the libraries that use type() go on working
printf '%s\n' 'local type = "gpt"' 'print(type(1), nnr.nn.Linear(2, 2).in_features)' >"$tmp/repl3.txt"
out=$("$NNRUN" -i <"$tmp/repl3.txt" 2>&1)
check "repl: local type stays local" contains "$out" "number	2"

# Tab completes in the REPL (on a terminal: script(1) gives it one); the names themselves are
# tested in tests/lua/repl_spec.lua
if command -v script >/dev/null; then
  out=$( (sleep 1; printf 'zz = nnr.nn.Li\t(3, 4)\n'; sleep 0.5; printf 'print(zz)\n'; sleep 0.5; printf '\004') |
        timeout 20 script -q -c "$NNRUN" /dev/null 2>&1)
  check "repl Tab completion" contains "$out" "Linear(in_features=3, out_features=4, bias=true)"
else
  echo "SKIP: repl Tab completion (no script(1) for a terminal)"
fi

# Ctrl-C stops a loop of ops and returns to the prompt; the next line runs
wait_for() {   # wait_for FILE TEXT: until TEXT shows up in FILE (at most 30 s)
  for _ in $(seq 300); do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
stop_within() {   # stop_within PID WHAT: after Ctrl-C, PID exits within 10 s (else it is killed and reported); its status
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && { kill -KILL "$1"; echo "$2 hung after Ctrl-C"; }
  wait "$1"
}
printf '%s\n' 'io.write("looping\n"); io.flush(); while true do local y = nnr.ones(4) + 1 end' 'print("after interrupt")' >"$tmp/loop.txt"
"$NNRUN" -i <"$tmp/loop.txt" >"$tmp/loop.out" 2>&1 &
pid=$!
wait_for "$tmp/loop.out" looping
sleep 0.3
kill -INT "$pid"
stop_within "$pid" REPL; code=$?
out=$(cat "$tmp/loop.out")
check "ctrl-c interrupts" contains "$out" "interrupted"
check "ctrl-c back to prompt" contains "$out" "after interrupt"
check "ctrl-c exit" test "$code" -eq 0

# Ctrl-C in a script ends it with an error
"$NNRUN" -e 'io.write("looping\n"); io.flush(); while true do local y = nnr.ones(4) * 2 end' >"$tmp/s.out" 2>&1 &
pid=$!
wait_for "$tmp/s.out" looping
sleep 0.3
kill -INT "$pid"
wait "$pid"; code=$?
check "ctrl-c script exit code" test "$code" -eq 1
check "ctrl-c script message" contains "$(cat "$tmp/s.out")" "interrupted"

# Ctrl-C while the loop waits on the loader's Lua workers: an error, workers stopped, a prompt exit
cat >"$tmp/slow.lua" <<'EOF2'
local nnr = require "nnr"
local slow = { len = function() return 1000 end,
               get = function(_, i) local t = os.clock() + 0.05; while os.clock() < t do end return nnr.tensor({ i }) end }
io.write("loading\n"); io.flush()
for x in nnr.data.DataLoader(slow, { batch_size = 8, num_workers = 2 }):iter() do end
EOF2
"$NNRUN" "$tmp/slow.lua" >"$tmp/slow.out" 2>&1 &
pid=$!
wait_for "$tmp/slow.out" loading
sleep 0.5
kill -INT "$pid"
stop_within "$pid" loader; code=$?
check "ctrl-c loader exit code" test "$code" -eq 1
check "ctrl-c loader message" contains "$(cat "$tmp/slow.out")" "interrupted"

# --profile[=trace.json] profiles a whole script; the script's own options stay its own
cat >"$tmp/prof.lua" <<'EOF2'
local nnr = require "nnr"
local m = nnr.nn.Sequential(nnr.nn.Linear(4, 3), nnr.nn.ReLU())
for _ = 1, 3 do local _ = m(nnr.randn(2, 4)):sum() end
print("args:", arg[1], arg[2])
EOF2
out=$("$NNRUN" --profile="$tmp/trace.json" "$tmp/prof.lua" --help --version 2>"$tmp/prof.err")
check "--profile runs the script with its args" contains "$out" "args:	--help	--version"
check "--profile table by op" contains "$(cat "$tmp/prof.err")" "linear"
check "--profile table by module" contains "$(cat "$tmp/prof.err")" "Linear"
check "--profile trace" contains "$(cat "$tmp/trace.json")" '"cat": "module"'
out=$("$NNRUN" --profile -e 'error("fails")' 2>&1)
check "--profile reports a failed run" contains "$out" "peak memory"

out=$(NNR_PLUGIN_PATH="$PLUGINS" "$NNRUN" --plugins 2>&1)
check "--plugins lists cpu" contains "$out" "loaded: host memory"
check "--plugins lists refusals" contains "$out" "REFUSED: ABI mismatch"
check "--plugins lists devices" contains "$out" "testdev:1"
check "--plugins names a missing entry point" contains "$out" "REFUSED: backend lacks the required entry point copy()"
out=$(NNR_PLUGIN_PATH="$PLUGINS:/no/such/plugins" "$NNRUN" --plugins 2>&1)
check "--plugins reports a missing NNR_PLUGIN_PATH entry" contains "$out" "/no/such/plugins"
check "--plugins says why" contains "$out" "REFUSED: not found (NNR_PLUGIN_PATH names it)"
abi=$("$NNRUN" -e 'local C = require("nnr.binding").C; io.write(C.NNR_ABI_MAJOR, ".", C.NNR_ABI_MINOR)')   # the host's own, not a number to edit at each minor
check "--plugins shows kinds and ABIs" contains "$out" "backend, ABI $abi"
out=$(NNR_PLUGIN_PATH="$PLUGINS" "$NNRUN" -e 'local t = nnr.ones(3, {device = "testdev:1"}); print(t.device, (t + t):sum():item(), (t * 3):cpu():sum():item())' 2>&1)
check "second backend from Lua" contains "$out" "testdev:1	6	9"
check "fallback warns once" contains "$out" "running it on the cpu"

# -e loads the global nnr on first use: a snippet that does not touch it starts nothing
out=$("$NNRUN" -e 'print(rawget(_G, "nnr") == nil)' 2>&1)
check "-e loads nothing it does not use" contains "$out" "true"
out=$("$NNRUN" -e 'local a = nnr; print(a == require "nnr", rawget(_G, "nnr") == a, getmetatable(_G) == nil)' 2>&1)
check "-e loads nnr on first use" contains "$out" "true	true	true"

# naming a cpu device past the count makes it (--data-parallel cpu:0,cpu:1 needs no NNR_CPU_DEVICES)
out=$("$NNRUN" -e 'local t = nnr.ones(3, {device = "cpu:1"}); print(t.device, (t * 2):sum():item(), #nnr.devices(), nnr.backends.cpu.devices)' 2>&1)
check "cpu:1 made on demand" contains "$out" "cpu:1	6	2	2"
out=$("$NNRUN" -e 'print(pcall(nnr.ones, 3, {device = "cpu:16"}))' 2>&1)
check "cpu:16 is past the cpu backend's 16 devices" contains "$out" "device 'cpu:16': the cpu backend offers at most 16 devices"

# without a host backend (only the example backend, or an ABI 1.3 plugin whose reserved word reads as
# NNR_PLUGIN_HOST) there are no devices at all, and both the script and --plugins say why
for only in libtest_testdev.so libtest_old_host.so; do
  out=$(NNR_NO_DEFAULT_PLUGINS=1 NNR_PLUGIN_PATH="$PLUGINS/$only" "$NNRUN" -e 'print(nnr and "ran")' 2>&1)
  check "no host backend is an error ($only)" contains "$out" "nnr: no host backend: no plugin of ABI 1.4 or later offering NNR_PLUGIN_HOST"
  out=$(NNR_NO_DEFAULT_PLUGINS=1 NNR_PLUGIN_PATH="$PLUGINS/$only" "$NNRUN" --plugins 2>&1)
  check "--plugins without a host backend ($only)" contains "$out" "  none: no host backend"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
