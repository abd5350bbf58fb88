-- The command-line hostile inputs of tests/hostile/run.lua: nnrun's options, scripts, the REPL and
-- piped stdin, plugins (NNR_PLUGIN_PATH), and the training scripts' options. One case a line:
--   { name, shell command, pattern, status = N, stdout = true, also = {patterns}, never = {patterns},
--     env = {...}, stdin = "...", files = {name = contents}, timeout = S }
-- The command runs under sh with $NNRUN, $PLUGINS (the test plugins, build/tests/plugins), $TMP (the case's own
-- folder, holding `files`) and $ROOT (the repository) set. By default it must fail (non-zero status,
-- not a signal or a hang) with `pattern` on stderr (on stdout with stdout = true); status = N asks for
-- exactly N. `also` are patterns that must appear somewhere in the output, `never` ones that must not.
local function be32(n) return string.char(math.floor(n / 2 ^ 24) % 256, math.floor(n / 2 ^ 16) % 256, math.floor(n / 256) % 256, n % 256) end
-- a tiny Fashion-MNIST (64 training and 64 test images of zeros) for --data $TMP/fm, so that a
-- wrongly accepted option trains for a moment instead of a minute
local N = 64
local images = "\0\0\8\3" .. be32(N) .. be32(28) .. be32(28) .. string.rep("\0", N * 784)
local labels = "\0\0\8\1" .. be32(N) .. string.rep("\3", N)
local FM = { ["fm/train-images-idx3-ubyte"] = images, ["fm/train-labels-idx1-ubyte"] = labels,
             ["fm/t10k-images-idx3-ubyte"] = images, ["fm/t10k-labels-idx1-ubyte"] = labels }
-- every training-script case runs on the tiny data, one worker, quiet, and stops after one epoch
-- (so --epochs inf wrongly accepted ends at once with status 0 rather than running forever)
local TRAIN = "$NNRUN $ROOT/scripts/train_fashion_mnist.lua --data $TMP/fm --model mlp --workers 0 --quiet --stop-after 1 "
local TRAIN_FREE = "$NNRUN $ROOT/scripts/train_fashion_mnist.lua --data $TMP/fm --model mlp --workers 0 --quiet "
local QUANT = "$NNRUN $ROOT/scripts/quantize_fashion_mnist.lua --data $TMP/fm --quiet "
-- the language-model job on a small corpus written for the case (its errors come before any training)
local CHARLM = "printf 'some text to learn from\\n%.0s' $(seq 40) > $TMP/t.txt && $NNRUN $ROOT/scripts/train_charlm.lua --data $TMP/t.txt --quiet --steps 1 --seq-len 16 "

-- a test plugin from build/tests/plugins, or built here from tests/c/plugins when the build lacks it
local function plugin(name)
  return string.format('P=$PLUGINS/libtest_%s.so; [ -f "$P" ] || { P=$TMP/libtest_%s.so; cc -shared -fPIC -I$ROOT/core/include -o "$P" $ROOT/tests/c/plugins/%s.c || exit 99; }; ',
    name, name, name)
end

local cases = {
  -- nnrun's own options -------------------------------------------------------------------------------------------------------
  { "cli: unknown option", "$NNRUN --bogus", "unknown option %-%-bogus", status = 1 },
  { "cli: missing script", "$NNRUN $TMP/none.lua", "cannot open", status = 1 },
  { "cli: a folder as the script", "$NNRUN $TMP", "cannot read|[Ii]s a directory", status = 1 },
  { "cli: -e without code", "$NNRUN -e", "%-e needs an argument", status = 1 },
  { "cli: -e raising", "$NNRUN -e 'error(\"boom\")'", "boom", status = 1 },
  { "cli: -e syntax error", "$NNRUN -e 'local x = '", "unexpected symbol|expected", status = 1 },
  { "cli: -e raising a table", "$NNRUN -e 'error({})'", "error object is a table value", status = 1 },
  { "cli: -e raising a failing __tostring", "$NNRUN -e 'error(setmetatable({}, {__tostring = function() error(\"inner\") end}))'", "error", status = 1 },
  { "cli: -e op error names the op", "$NNRUN -e 'local x = nnr.ones(2, 3) + nnr.ones(4)'", "add: shapes %[2, 3%] and %[4%] cannot broadcast", status = 1 },
  { "cli: -e u8 from 300", "$NNRUN -e 'print(nnr.tensor(300, {dtype = \"u8\"}))'", "cannot be converted to u8|out of range for u8", status = 1 },
  { "cli: script with a NUL byte", "$NNRUN $TMP/nul.lua", "unexpected|near|NUL", status = 1, files = { ["nul.lua"] = "print(1)\0print(2)\n" } },
  { "cli: truncated bytecode script", "$NNRUN -e 'local f = io.open(os.getenv(\"TMP\") .. \"/bc.lua\", \"wb\"); f:write(string.dump(function() return 1 end):sub(1, 12)); f:close()' && $NNRUN $TMP/bc.lua",
    "bc%.lua is precompiled bytecode; nnrun runs Lua source only", status = 1 },
  { "cli: corrupt bytecode script", "$NNRUN -e 'local s = string.dump(function(a) local t = {} for i = 1, 10 do t[i] = a .. i end return t end); local f = io.open(os.getenv(\"TMP\") .. \"/bc2.lua\", \"wb\"); f:write(s:sub(1, 6) .. string.rep(\"\\255\", #s - 6)); f:close()' && $NNRUN $TMP/bc2.lua",
    "bc2%.lua is precompiled bytecode; nnrun runs Lua source only", status = 1 },
  { "cli: --check-backend without a library", "$NNRUN --check-backend", "%-%-check%-backend needs a plugin library", status = 1 },
  { "cli: --check-backend of a missing file", "$NNRUN --check-backend $TMP/none.so", "cannot find .*none%.so|none%.so.*not found", status = 1 },
  { "cli: --check-backend of a text file", "$NNRUN --check-backend $TMP/junk.so", "junk%.so was refused: cannot load", status = 1, files = { ["junk.so"] = "not a library\n" } },
  { "cli: --check-backend --ops without a pattern", "$NNRUN --check-backend $PLUGINS/libtest_testdev.so --ops", "%-%-ops needs a pattern", status = 1 },
  { "cli: --check-backend --ops with a malformed pattern", "$NNRUN --check-backend $PLUGINS/libtest_testdev.so --ops '[a'", "malformed pattern" },
  { "cli: --check-backend of a plugin whose init fails", plugin("init_fail") .. "$NNRUN --check-backend \"$P\"", "refused: init failed %(status %d+%): no driver found", status = 1 },
  { "cli: --profile to a missing folder", "$NNRUN --profile=$TMP/no/such/trace.json -e 'local x = nnr.ones(2) + 1'", "trace%.json.*No such file|cannot write.*trace", status = 1 },
  -- piped stdin and the REPL --------------------------------------------------------------------------------------------------
  { "stdin: an error ends the run", "$NNRUN", "boom", status = 1, stdin = "print('before')\nerror('boom')\nprint('after')\n", never = { "after" } },
  { "stdin: a NUL byte in the chunk", "$NNRUN", "unexpected|near|NUL", status = 1, stdin = "print(1)\0print(2)\n" },
  { "repl: an op error, then the next line runs", "$NNRUN -i", "cannot be converted to u8|out of range for u8", status = 0, stdin = "x = nnr.tensor(300, {dtype = 'u8'})\nprint('still' .. ' here')\n", also = { "still here" } },
  { "repl: a fractional size, then the next line runs", "$NNRUN -i", "integer", status = 0, stdin = "nnr.zeros(2.5)\nprint('still' .. ' here')\n", also = { "still here" } },
  { "repl: a statement cut by end of input", "$NNRUN -i", "still here", status = 0, stdout = true, stdin = "print('still' .. ' here')\nfor i = 1, 2 do\n" },
  { "repl: a result whose __tostring fails", "$NNRUN -i", "error printing result", status = 0, stdin = "setmetatable({}, {__tostring = function() error('bad tostring') end})\nprint('still' .. ' here')\n", also = { "still here" } },
  { "repl: a 1 MiB line", "$NNRUN -i", "still here", status = 0, stdout = true, stdin = "x = '" .. string.rep("a", 1048576) .. "'\nprint('still' .. ' here', #x)\n" },
  { "repl: an in-place write into an expanded view", "$NNRUN -i", "more than one element of the written%-to tensor", status = 0, stdin = "nnr.zeros(1):expand(4):add_(1)\nprint('still' .. ' here')\n", also = { "still here" } },
  -- plugins -----------------------------------------------------------------------------------------------------------------
  { "plugins: NNR_PLUGIN_PATH at a text file", "NNR_PLUGIN_PATH=$TMP/junk.so $NNRUN --plugins", "junk%.so.*\n%s*REFUSED: cannot load", status = 0, stdout = true, files = { ["junk.so"] = "junk\n" } },
  { "plugins: a text file does not stop a script", "NNR_PLUGIN_PATH=$TMP/junk.so $NNRUN -e 'print((nnr.ones(2) + 1):sum():item())'", "^4", status = 0, stdout = true, files = { ["junk.so"] = "junk\n" } },
  { "plugins: NNR_PLUGIN_PATH at a missing file", "NNR_PLUGIN_PATH=$TMP/none.so $NNRUN --plugins", "REFUSED: not found %(NNR_PLUGIN_PATH names it%)", status = 0, stdout = true },
  { "plugins: NNR_PLUGIN_PATH of colons and spaces", "NNR_PLUGIN_PATH=':: : :' $NNRUN -e 'print(nnr.ones(2):sum():item())'", "^2", status = 0, stdout = true },
  { "plugins: NNR_PLUGIN_PATH of 5000 characters", "NNR_PLUGIN_PATH=$($NNRUN -e 'io.write(string.rep(\"x\", 5000))') $NNRUN --plugins", "REFUSED", status = 0, stdout = true },
  { "plugins: init returns success but no object", plugin("no_object") .. "NNR_PLUGIN_PATH=\"$P\" $NNRUN --plugins", "no_object%.so[^\n]*\n%s*REFUSED: init failed[^\n]*no plugin object", status = 0, stdout = true },
  { "plugins: init with no object does not stop a script", plugin("no_object") .. "NNR_PLUGIN_PATH=\"$P\" $NNRUN -e 'print(#nnr.plugins() > 0, (nnr.ones(2) + 1):sum():item())'", "true\t4", status = 0, stdout = true },
  { "plugins: nnr.plugins() lists a plugin with no object", plugin("no_object") .. "NNR_PLUGIN_PATH=\"$P\" $NNRUN -e 'for _, p in ipairs(nnr.plugins()) do if p.path:find(\"no_object\") then print(p.loaded, p.kind, p.message) end end'", "false\t[^\n]*no plugin object", status = 0, stdout = true },
  { "plugins: init fails silently, no stale reason", plugin("init_fail") .. "Q=$P; " .. plugin("silent_fail") .. "NNR_PLUGIN_PATH=\"$Q:$P\" $NNRUN --plugins", "silent_fail%.so[^\n]*\n%s*REFUSED: init failed %(status %d+%)", status = 0, stdout = true,
    never = { "silent_fail%.so[^\n]*\n[^\n]*no driver found" } },
  { "plugins: every test plugin at once", "NNR_PLUGIN_PATH=$PLUGINS $NNRUN -e 'local t = nnr.ones(3, {device = \"testdev:1\"}); print((t + t):sum():item())'", "^6", status = 0, stdout = true },
  { "plugins: a device of a refused plugin", plugin("init_fail") .. "NNR_PLUGIN_PATH=\"$P\" $NNRUN -e 'nnr.zeros(2, {device = \"initfail:0\"})'", "no backend plugin provides|device", status = 1 },
  -- environment variables: junk is not silently taken; a warning naming the variable is enough (the run goes on)
  { "env: NNR_NUM_THREADS=nan", "NNR_NUM_THREADS=nan $NNRUN -e 'print(nnr.get_num_threads())'", "NNR_NUM_THREADS", status = 0 },
  { "env: NNR_NUM_THREADS=-4", "NNR_NUM_THREADS=-4 $NNRUN -e 'print(nnr.get_num_threads())'", "NNR_NUM_THREADS", status = 0 },
  { "env: NNR_CACHE_LIMIT_MB=junk", "NNR_CACHE_LIMIT_MB=junk $NNRUN -e 'print(nnr.ones(2):sum():item())'", "NNR_CACHE_LIMIT_MB", status = 0 },
  { "env: NNR_CACHE_LIMIT_MB past int64", "NNR_CACHE_LIMIT_MB=99999999999999999 $NNRUN -e 'print(nnr.ones(2):sum():item())'", "NNR_CACHE_LIMIT_MB", status = 0 },
  { "env: NNR_CPU_DEVICES=0.5", "NNR_CPU_DEVICES=0.5 $NNRUN -e 'print(#nnr.devices())'", "NNR_CPU_DEVICES", status = 0 },
  { "env: NNR_CPU_SPIN_US=nan", "NNR_CPU_SPIN_US=nan $NNRUN -e 'print(nnr.ones(2):sum():item())'", "NNR_CPU_SPIN_US", status = 0 },
  { "env: NNR_CPU_SPIN_US=-1", "NNR_CPU_SPIN_US=-1 $NNRUN -e 'print(nnr.ones(2):sum():item())'", "NNR_CPU_SPIN_US", status = 0 },
  { "env: NNR_CPU_ISA=sse9", "NNR_CPU_ISA=sse9 $NNRUN -e 'print(nnr.ones(2):sum():item())'", "NNR_CPU_ISA=sse9 is not a class", status = 0 },
  { "env: NNR_CPU_ISA empty is the CPU's class", "NNR_CPU_ISA= $NNRUN -e 'print(nnr.ones(2):matmul(nnr.ones(2)):item())'", "^2", status = 0, stdout = true },
  { "env: NNR_LOG=verbose", "NNR_LOG=verbose $NNRUN -e 'print(nnr.ones(1))'", "NNR_LOG", status = 0 },
  -- scripts/train_fashion_mnist.lua -------------------------------------------------------------------------------------------
  { "train: --lr nan", TRAIN .. "--lr nan", "%-%-lr|lr must be.*finite", files = FM },
  { "train: --lr inf", TRAIN .. "--lr inf", "%-%-lr|lr must be.*finite", files = FM },
  { "train: --lr 1e999", TRAIN .. "--lr 1e999", "%-%-lr|lr must be.*finite", files = FM },
  { "train: --lr -1", TRAIN .. "--lr -1", "%-%-lr|lr must be.*>= 0|learning rate must be >= 0", files = FM },
  { "train: --lr abc", TRAIN .. "--lr abc", "%-%-lr needs a number, got 'abc'", status = 1, files = FM },
  { "train: --epochs inf", TRAIN_FREE .. "--epochs inf", "%-%-epochs", files = FM, timeout = 15 },
  { "train: --epochs 1e300", TRAIN_FREE .. "--epochs 1e300", "%-%-epochs", files = FM, timeout = 15 },
  { "train: --epochs nan", TRAIN .. "--epochs nan", "%-%-epochs", files = FM },
  { "train: --epochs 2.5", TRAIN .. "--epochs 2.5", "%-%-epochs", files = FM },
  { "train: --epochs -1", TRAIN .. "--epochs -1", "%-%-epochs", files = FM },
  { "train: --batch-size 2.5", TRAIN .. "--batch-size 2.5", "%-%-batch%-size", files = FM },
  { "train: --batch-size nan", TRAIN .. "--batch-size nan", "%-%-batch%-size|batch_size must be", files = FM },
  { "train: --batch-size inf", TRAIN .. "--batch-size inf", "%-%-batch%-size|batch_size must be", files = FM },
  { "train: --batch-size 0", TRAIN .. "--batch-size 0", "%-%-batch%-size must be.*0", status = 1, files = FM },
  { "train: --batch-size 1e300", TRAIN .. "--batch-size 1e300", "%-%-batch%-size", files = FM },
  { "train: --momentum nan", TRAIN .. "--momentum nan", "%-%-momentum|momentum must be", files = FM },
  { "train: --workers 2.5", TRAIN .. "--workers 2.5", "%-%-workers|num_workers must be", files = FM },
  { "train: --workers -1", TRAIN .. "--workers -1", "%-%-workers|num_workers must be", files = FM },
  { "train: --threads 0", TRAIN .. "--threads 0", "%-%-threads|set_num_threads: .*must be", files = FM },
  { "train: --threads nan", TRAIN .. "--threads nan", "%-%-threads|set_num_threads: .*must be", files = FM },
  { "train: --seed nan", TRAIN .. "--seed nan", "%-%-seed|seed must be", files = FM },
  { "train: --limit nan", TRAIN .. "--limit nan", "%-%-limit", files = FM },
  { "train: --limit 2.5", TRAIN .. "--limit 2.5", "%-%-limit", files = FM },
  { "train: --stop-after nan", TRAIN_FREE .. "--stop-after nan --epochs 1", "%-%-stop%-after", files = FM },
  { "train: --stop-after 1.5", TRAIN_FREE .. "--stop-after 1.5 --epochs 2", "%-%-stop%-after", files = FM },
  { "train: --model bogus", TRAIN .. "--model bogus", "%-%-model must be mlp, cnn or cnn%-bn, got 'bogus'", status = 1, files = FM },
  { "train: --optimizer bogus", TRAIN .. "--optimizer bogus", "%-%-optimizer must be sgd or adam", status = 1, files = FM },
  { "train: --lr without a value", TRAIN .. "--lr", "%-%-lr needs a value", status = 1, files = FM },
  { "train: a bare argument", TRAIN .. "oops", "unexpected argument 'oops'", status = 1, files = FM },
  { "train: --data of a missing folder", "$NNRUN $ROOT/scripts/train_fashion_mnist.lua --data $TMP/none --quiet", "is missing %(%-%-data", status = 1 },
  { "train: --device cuda:99", TRAIN .. "--device cuda:99", "%-%-device cuda:99", status = 1, files = FM },
  -- the files a run writes are tried before any work (not at the end of the first epoch)
  { "train: an unwritable --metrics", TRAIN .. "--metrics /nonexistent/m.jsonl", "%-%-metrics /nonexistent/m%.jsonl: cannot write", status = 1, files = FM },
  { "train: an unwritable --save", TRAIN .. "--save /nonexistent/ck.st", "%-%-save /nonexistent/ck%.st: cannot write there", status = 1, files = FM },
  { "train: --resume of a missing file", TRAIN .. "--resume $TMP/none.safetensors", "none%.safetensors", status = 1, files = FM },
  { "train: --resume of a checkpoint with epoch NaN", TRAIN .. "--epochs 1 --save $TMP/ck.st && $NNRUN -e 'local p = os.getenv(\"TMP\") .. \"/ck.st\"; local ck = nnr.load_checkpoint(p); ck.epoch = 0/0; nnr.save_checkpoint(p, ck)' && " .. TRAIN_FREE .. "--epochs 2 --resume $TMP/ck.st",
    "epoch", files = FM },
  { "train: --resume of a checkpoint with epoch 1.5", TRAIN .. "--epochs 1 --save $TMP/ck.st && $NNRUN -e 'local p = os.getenv(\"TMP\") .. \"/ck.st\"; local ck = nnr.load_checkpoint(p); ck.epoch = 1.5; nnr.save_checkpoint(p, ck)' && " .. TRAIN_FREE .. "--epochs 3 --resume $TMP/ck.st",
    "epoch", files = FM },
  { "train: --resume of a checkpoint without a model", "$NNRUN -e 'nnr.save_checkpoint(os.getenv(\"TMP\") .. \"/bare.st\", {epoch = 1, rng = nnr.get_rng_state()})' && " .. TRAIN_FREE .. "--epochs 2 --resume $TMP/bare.st",
    "bare%.st.*model|model.*missing|no model", files = FM },
  { "train: --save into a missing folder", TRAIN .. "--save $TMP/no/such/ck.safetensors", "ck%.safetensors", status = 1, files = FM },
  -- scripts/quantize_fashion_mnist.lua ----------------------------------------------------------------------------------------
  { "quantize: --prune nan", QUANT .. "--prune nan", "%-%-prune must be", status = 1, files = FM },
  { "quantize: --prune 1", QUANT .. "--prune 1", "%-%-prune must be in %[0, 1%)", status = 1, files = FM },
  { "quantize: --epochs inf", QUANT .. "--epochs inf", "%-%-epochs", files = FM, timeout = 15 },
  { "quantize: --epochs nan", QUANT .. "--epochs nan", "%-%-epochs", files = FM },
  { "quantize: --epochs 1.5", QUANT .. "--epochs 1.5", "%-%-epochs", files = FM },
  { "quantize: --limit nan", QUANT .. "--limit nan --epochs 1", "%-%-limit", files = FM },
  { "quantize: --threads nan", QUANT .. "--threads nan --epochs 1", "%-%-threads|set_num_threads: .*must be", files = FM },
  { "quantize: --seed inf", QUANT .. "--seed inf --epochs 1", "%-%-seed|seed must be", files = FM },
  { "quantize: --checkpoint of a missing file", QUANT .. "--checkpoint $TMP/none.safetensors", "none%.safetensors", status = 1, files = FM },
  { "quantize: --bogus", QUANT .. "--bogus", "unknown option %-%-bogus", status = 1, files = FM },
  -- a FIFO or a device named as a data file: refused at once, never a wait on open() or read() -------------------------------
  { "files: a FIFO as a checkpoint", "mkfifo $TMP/p && $NNRUN -e 'nnr.load(os.getenv(\"TMP\") .. \"/p\")'", "not a regular file", status = 1, timeout = 10 },
  { "files: a FIFO to load_checkpoint", "mkfifo $TMP/p && $NNRUN -e 'nnr.load_checkpoint(os.getenv(\"TMP\") .. \"/p\")'", "not a regular file", status = 1, timeout = 10 },
  { "files: a FIFO as a tokenizer", "mkfifo $TMP/p && $NNRUN -e 'nnr.text.load(os.getenv(\"TMP\") .. \"/p\")'", "not a regular file", status = 1, timeout = 10 },
  { "files: /dev/zero as a checkpoint", "$NNRUN -e 'nnr.load(\"/dev/zero\")'", "not a regular file", status = 1, timeout = 10 },
  -- scripts/onnx_run.lua ----------------------------------------------------------------------------------------------------
  { "onnx_run: no model", "$NNRUN $ROOT/scripts/onnx_run.lua --bench", "give the model: nnrun scripts/onnx_run.lua MODEL.onnx", status = 1 },
  { "onnx_run: not a model", "printf 'hello' > $TMP/m.onnx && $NNRUN $ROOT/scripts/onnx_run.lua $TMP/m.onnx", "onnx .*m%.onnx: ", status = 1 },
  { "onnx_run: --shape 0", "$NNRUN $ROOT/scripts/onnx_run.lua $TMP/m.onnx --shape 1,0", "%-%-shape must be whole numbers", status = 1 },
  { "onnx_run: --iters nan", "$NNRUN $ROOT/scripts/onnx_run.lua $TMP/m.onnx --iters nan", "%-%-iters", status = 1 },
  -- scripts/train_charlm.lua and scripts/generate.lua ---------------------------------------------------------------------------
  { "charlm: a FIFO as the corpus", "mkfifo $TMP/p && " .. CHARLM .. "--data $TMP/p", "not a regular file", status = 1, timeout = 10 },
  { "charlm: --steps inf", CHARLM .. "--steps inf", "%-%-steps must be an integer", status = 1 },
  { "charlm: --seq-len 0", CHARLM .. "--seq-len 0", "%-%-seq%-len must be an integer", status = 1 },
  { "charlm: --clip 0", CHARLM .. "--clip 0", "%-%-clip must be", status = 1 },
  { "charlm: --dropout 1", CHARLM .. "--dropout 1", "%-%-dropout must be", status = 1 },
  { "charlm: --val-fraction 1", CHARLM .. "--val-fraction 1", "%-%-val%-fraction must be", status = 1 },
  { "charlm: --min-lr above --lr", CHARLM .. "--lr 1e-3 --min-lr 1e-2", "%-%-min%-lr 0.01 is above %-%-lr 0.001", status = 1 },
  { "charlm: --tokens words", CHARLM .. "--tokens words", "%-%-tokens must be char, bpe", status = 1 },
  { "charlm: --batch-size 1e300", CHARLM .. "--batch-size 1e300", "%-%-batch%-size must be an integer", status = 1 },
  { "charlm: --resume of a missing file", CHARLM .. "--resume $TMP/none.st", "none%.st", status = 1 },
  { "generate: --max-tokens -1", "$NNRUN $ROOT/scripts/generate.lua --checkpoint $TMP/x --max-tokens -1", "%-%-max%-tokens must be an integer", status = 1 },
  { "generate: --top-p 0", "$NNRUN $ROOT/scripts/generate.lua --checkpoint $TMP/x --top-p 0", "%-%-top%-p must be", status = 1 },
  { "generate: --checkpoint of a FIFO", "mkfifo $TMP/p && $NNRUN $ROOT/scripts/generate.lua --checkpoint $TMP/p", "not a regular file", status = 1, timeout = 10 },
}
return cases
