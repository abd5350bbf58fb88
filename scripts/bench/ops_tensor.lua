-- nnrun side of the tensor-op benchmark (run_math.py runs it next to ops_tensor_torch.py): reductions,
-- softmax along either dim, indexing, joins, casts, comparisons and broadcasting on [2048, 2048] f32
-- (16 MiB), pooling and batch norm on [32, 64, 56, 56], a classifier's loss, each as a user writes it (a new tensor per
-- call). Usage: nnrun scripts/bench/ops_tensor.lua [THREADS]. Prints one JSON object of median ms.
local nnr = require "nnr"
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)
local F = nnr.nn.functional

nnr.manual_seed(1)
local x, y, v = nnr.randn(2048, 2048), nnr.randn(2048, 2048), nnr.randn(2048)
local idx = nnr.randint(1, 2049, { 2048 })
local gidx = idx:view(2048, 1):expand(2048, 16):contiguous()
local m = x:gt(0)
local img = nnr.randn(32, 64, 56, 56)
local out = { threads = threads }
local function bench(key, fn) out[key .. "_ms"] = timing.time_ms(fn, 2, 9) end
bench("sum", function() return x:sum() end)
bench("sum_rows", function() return x:sum(2) end)
bench("mean_cols", function() return x:mean(1) end)
bench("max", function() return x:max() end)
bench("max_rows", function() return x:max(2) end)
bench("norm", function() return x:norm() end)
bench("var_rows", function() return x:var(2) end)
bench("softmax_rows", function() return x:softmax(2) end)
bench("softmax_cols", function() return x:softmax(1) end)
bench("cumsum_cols", function() return x:cumsum(1) end)
bench("index_select_rows", function() return x:index_select(1, idx) end)
bench("index_select_cols", function() return x:index_select(2, idx) end)
bench("gather", function() return x:gather(2, gidx) end)
bench("cat", function() return nnr.cat({ x, y }, 2) end)
bench("transpose_contiguous", function() return x:t():contiguous() end)
bench("where", function() return nnr.where(m, x, y) end)
bench("clamp", function() return x:clamp(-1, 1) end)
bench("masked_fill", function() return x:masked_fill(m, 0) end)
bench("add_row", function() return x + v end)
bench("eq", function() return x:eq(y) end)
bench("to_bf16", function() return x:bfloat16() end)
bench("to_f64", function() return x:double() end)
bench("max_pool", function() return F.max_pool2d(img, 2) end)
bench("avg_pool", function() return F.avg_pool2d(img, 2) end)
bench("batch_norm_eval", function() return F.batch_norm(img, nnr.zeros(64), nnr.ones(64), nil, nil, false) end)
bench("randn", function() return nnr.randn(2048, 2048) end)
-- a classifier's loss: log-softmax over rows of 10, and cross-entropy forward and backward at [256, 10]
-- and [256, 1000] (the fused op since ABI 1.10)
local s10, s1000 = nnr.randn(256, 10), nnr.randn(256, 1000)
local l10, l1000 = nnr.randint(1, 11, { 256 }), nnr.randint(1, 1001, { 256 })
bench("log_softmax_short", function() return s10:log_softmax(2) end)
local function ce(s, l)
  local xs = s:detach():requires_grad_()
  F.cross_entropy(xs, l):backward()
  return xs.grad
end
bench("cross_entropy_10", function() return ce(s10, l10) end)
bench("cross_entropy_1000", function() return ce(s1000, l1000) end)
timing.print_json(out)
