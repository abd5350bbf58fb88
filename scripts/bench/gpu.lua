-- nnrun's side of the GPU micro-benchmarks (scripts/bench/run_gpu.py): matmul of n^3 in f32 and
-- bf16, and a large elementwise add and copy, on cuda:0. Medians of timed repetitions, each
-- ended by a synchronize. Prints one JSON line.
--   nnrun scripts/bench/gpu.lua [n]
local nnr = require "nnr"
local n = tonumber(arg[1] or 8192)
local dev = "cuda"

local function median_seconds(reps, f)
  f(); f()
  nnr.cuda.synchronize()
  local t = {}
  for r = 1, reps do
    local t0 = nnr.clock()
    f()
    nnr.cuda.synchronize()
    t[r] = nnr.clock() - t0
  end
  table.sort(t)
  return t[math.floor(reps / 2) + 1]
end

local out = {}
for _, dt in ipairs { "f32", "bf16" } do
  local a = nnr.randn(n, n, { device = dev }):to(dt)
  local b = nnr.randn(n, n, { device = dev }):to(dt)
  local s = median_seconds(10, function() return a:matmul(b) end)
  out[#out + 1] = string.format('"%s_tflops": %.2f', dt, 2 * n * n * n / s / 1e12)
end
local m = 2 ^ 28                          -- 1 GiB of f32 per tensor
local x, y = nnr.randn(m, { device = dev }), nnr.randn(m, { device = dev })
local z = nnr.empty(m, { device = dev })
local s_add = median_seconds(10, function() return x + y end)
local s_copy = median_seconds(10, function() z:copy_(x) end)
out[#out + 1] = string.format('"add_gbs": %.1f', 3 * 4 * m / s_add / 1e9)
out[#out + 1] = string.format('"copy_gbs": %.1f', 2 * 4 * m / s_copy / 1e9)
print("{" .. table.concat(out, ", ") .. "}")
