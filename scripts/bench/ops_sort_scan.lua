-- nnrun side of the sort / topk / cumsum benchmark (issue 16's targets: sort and topk over 1M f32,
-- cumsum over 16M f32, at 2 threads; ops_sort_scan_torch.py runs the same workloads in PyTorch).
-- Prints one JSON object of medians in milliseconds. No timing is asserted.
-- Usage: nnrun scripts/bench/ops_sort_scan.lua [REPEATS]
local nnr = require "nnr"
local clock = nnr.clock
local repeats = tonumber(arg and arg[1]) or 11

local function median(t)
  table.sort(t)
  return t[math.floor(#t / 2) + 1]
end

-- the median time of fn() in ms, after two warm-up calls (threads, the allocator's cache)
local function time_ms(fn)
  fn(); fn()
  local runs = {}
  for r = 1, repeats do
    local t0 = clock()
    fn()
    runs[r] = (clock() - t0) * 1e3
  end
  return median(runs)
end

nnr.manual_seed(0)
local out = {}
local x = nnr.randn(2 ^ 20)                          -- 1M f32, one row
out.sort_1m_f32_ms = time_ms(function() return x:sort() end)
out.sort_1m_f32_descending_ms = time_ms(function() return x:sort(1, true) end)
out.topk_1m_f32_k10_ms = time_ms(function() return x:topk(10) end)
out.topk_1m_f32_k1000_ms = time_ms(function() return x:topk(1000) end)
local rows = nnr.randn(1024, 1024)                   -- 1M f32 as 1024 rows
out.sort_1024x1024_f32_ms = time_ms(function() return rows:sort(2) end)
out.topk_1024x1024_f32_k10_ms = time_ms(function() return rows:topk(10, 2) end)
local big = nnr.randn(2 ^ 24)                        -- 16M f32, one row
out.cumsum_16m_f32_ms = time_ms(function() return big:cumsum(1) end)
local grid = nnr.randn(4096, 4096)                   -- 16M f32 as 4096 rows
out.cumsum_4096x4096_f32_ms = time_ms(function() return grid:cumsum(2) end)

out.threads = nnr.get_num_threads()
out.version = nnr.version()
local parts = {}
for k, v in pairs(out) do
  parts[#parts + 1] = string.format("%q: %s", k, type(v) == "number" and string.format("%.6g", v) or string.format("%q", v))
end
print("{" .. table.concat(parts, ", ") .. "}")
