-- nnrun side of the einsum benchmark (issue 16's target: the batched contraction bhqd,bhkd->bhqk at
-- 8x8x256x64, f32, >= 1.0x PyTorch); ops_einsum_torch.py runs the same workloads in PyTorch.
-- Usage: nnrun scripts/bench/ops_einsum.lua [THREADS]. Prints one JSON object: median milliseconds
-- of each einsum and of the equivalent matmul it reduces to. Medians over repeats; no timing is asserted.
local nnr = require "nnr"
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)
local time_ms = timing.time_ms

nnr.manual_seed(1)
local B, Hh, T, D = 8, 8, 256, 64
local q, k, v = nnr.randn(B, Hh, T, D), nnr.randn(B, Hh, T, D), nnr.randn(B, Hh, T, D)
local s = nnr.randn(B, Hh, T, T)
local out = { threads = threads }
local onednn_before = tonumber(nnr.backends.cpu.onednn_calls)
out.einsum_bhqd_bhkd_ms = time_ms(function() return nnr.einsum("bhqd,bhkd->bhqk", q, k) end, 5, 21)
out.matmul_qkt_ms = time_ms(function() return q:matmul(k:transpose(-1, -2)) end, 5, 21)
out.einsum_bhqk_bhkd_ms = time_ms(function() return nnr.einsum("bhqk,bhkd->bhqd", s, v) end, 5, 21)
out.matmul_sv_ms = time_ms(function() return s:matmul(v) end, 5, 21)
local x, w = nnr.randn(64, 512, 256), nnr.randn(256, 512)
out.einsum_bik_kj_ms = time_ms(function() return nnr.einsum("bik,kj->bij", x, w) end, 3, 11)
out.matmul_bik_kj_ms = time_ms(function() return x:matmul(w) end, 3, 11)

-- which path ran: oneDNN's version (or why not) and how many ops it took
out.onednn = nnr.backends.cpu.onednn_version
out.onednn_calls = tonumber(nnr.backends.cpu.onednn_calls) - onednn_before
timing.print_json(out)
