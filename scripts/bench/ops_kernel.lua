-- nnrun side of the LuaJIT kernel benchmark (issue 16's target: an nnr.kernel.map GELU over 16M f32
-- within 1.5x of the built-in GELU's time); ops_kernel_torch.py times PyTorch's GELU for reference.
-- Usage: nnrun scripts/bench/ops_kernel.lua [THREADS]. Prints one JSON object (median milliseconds).
local nnr = require "nnr"
local F = nnr.nn.functional
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)
local time_ms = timing.time_ms

nnr.manual_seed(1)
local x = nnr.randn(16 * 1024 * 1024)
local y = nnr.empty(16 * 1024 * 1024)
-- GELU's tanh form, written with exp: x * sigmoid(2u) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
local gelu = nnr.kernel.map("function(x) return x / (1 + math.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x))) end")
local gelu_tanh = nnr.kernel.map("function(x) return 0.5 * x * (1 + math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) end")
local sumsq = nnr.kernel.reduce("function(acc, x) return acc + x * x end", { init = 0, combine = "function(a, b) return a + b end" })
local out = { threads = threads }
out.builtin_gelu_ms = time_ms(function() return F.gelu(x) end, 2, 9)
out.kernel_gelu_ms = time_ms(function() return gelu(x) end, 2, 9)
out.kernel_gelu_out_ms = time_ms(function() return gelu(x, { out = y }) end, 2, 9)
out.kernel_gelu_tanh_ms = time_ms(function() return gelu_tanh(x) end, 2, 9)
out.builtin_sumsq_ms = time_ms(function() return (x * x):sum() end, 2, 9)
out.kernel_sumsq_ms = time_ms(function() return sumsq(x) end, 2, 9)
timing.print_json(out)
