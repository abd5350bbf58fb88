-- nnrun side of the LuaJIT kernel benchmark (issue 16's target: an nnr.kernel.map GELU over 16M f32
-- within 1.5x of the built-in GELU's time); ops_kernel_torch.py times PyTorch's GELU for reference.
-- Usage: nnrun scripts/bench/ops_kernel.lua [THREADS]. Prints one JSON object (median milliseconds).
local nnr = require "nnr"
local F = nnr.nn.functional
local clock = nnr.clock
local threads = tonumber(arg and arg[1])
if threads then nnr.set_num_threads(threads) end

local function median(t) table.sort(t); return t[math.floor(#t / 2) + 1] end
local function time_ms(fn, warm, runs)
  for _ = 1, warm do fn() end
  local t = {}
  for r = 1, runs do
    local t0 = clock()
    fn()
    t[r] = (clock() - t0) * 1e3
  end
  return median(t)
end

nnr.manual_seed(1)
local x = nnr.randn(16 * 1024 * 1024)
local y = nnr.empty(16 * 1024 * 1024)
-- GELU's tanh form, written with exp: x * sigmoid(2u) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
local gelu = nnr.kernel.map("function(x) return x / (1 + math.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x))) end")
local gelu_tanh = nnr.kernel.map("function(x) return 0.5 * x * (1 + math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) end")
local sumsq = nnr.kernel.reduce("function(acc, x) return acc + x * x end", { init = 0, combine = "function(a, b) return a + b end" })
local out = { threads = nnr.get_num_threads() }
out.builtin_gelu_ms = time_ms(function() return F.gelu(x) end, 2, 9)
out.kernel_gelu_ms = time_ms(function() return gelu(x) end, 2, 9)
out.kernel_gelu_out_ms = time_ms(function() return gelu(x, { out = y }) end, 2, 9)
out.kernel_gelu_tanh_ms = time_ms(function() return gelu_tanh(x) end, 2, 9)
out.builtin_sumsq_ms = time_ms(function() return (x * x):sum() end, 2, 9)
out.kernel_sumsq_ms = time_ms(function() return sumsq(x) end, 2, 9)
local keys = {}
for key in pairs(out) do keys[#keys + 1] = key end
table.sort(keys)
local parts = {}
for _, key in ipairs(keys) do parts[#parts + 1] = string.format("%q: %.6g", key, out[key]) end
print("{" .. table.concat(parts, ", ") .. "}")
