-- nnrun side of the sort / topk / cumsum benchmark (issue 16's targets: sort and topk over 1M f32,
-- cumsum over 16M f32, at 2 threads; ops_sort_scan_torch.py runs the same workloads in PyTorch).
-- Prints one JSON object of medians in milliseconds. No timing is asserted.
-- Usage: nnrun scripts/bench/ops_sort_scan.lua [THREADS]
local nnr = require "nnr"
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)
local time_ms = timing.time_ms

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

out.threads = threads
out.version = nnr.version()
timing.print_json(out)
