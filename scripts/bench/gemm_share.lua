-- Issue 18's restated row for the f32 mlp at batch 256: "the step spends >= 90% of its time in gemm,
-- running at the best available gemm's rate for its shapes, measured in the same process, same run".
--
--   nnrun scripts/bench/gemm_share.lua [THREADS] [BATCH]
--
-- 1. The training step of the main job's mlp (784-512-256-10, SGD lr 0.01 momentum 0.9, cross-entropy)
--    under nnr.profiler: the share of the step's wall time in the gemm ops (linear, matmul) and what
--    else there is (the optimizer, relu's gradient, the bias gradients' sums, the loss, the rest:
--    Lua, autograd's bookkeeping).
-- 2. Each gemm of that step timed alone in the same process (the forward linears, the weight
--    gradients dW = dY^T X, the input gradients dX = dY W), on each library the cpu backend has (its
--    oneDNN pieces on and off; nnr.backends.cpu.onednn_gemm): the fastest per shape is the best
--    available rate, and the step's gemms at those rates give the time they would take.
-- Prints one JSON object: gemm_share (of the step), gemm_rate_share (best-rate time / in-step gemm
-- time), the step and gemm figures in ms and GFLOP/s, and the other ops' shares. No timing is asserted.
local nnr = require "nnr"
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)
local B = tonumber(arg and arg[2]) or 256
local nn = nnr.nn

nnr.manual_seed(1)
local sizes = { 784, 512, 256, 10 }
local model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
local opt = nnr.optim.SGD(model:parameters(), { lr = 0.01, momentum = 0.9 })
local crit = nn.CrossEntropyLoss()
local x, y = nnr.randn(B, 1, 28, 28), nnr.randint(1, 11, { B })
local function step()
  opt:zero_grad()
  crit(model(x), y):backward()
  opt:step()
end

local STEPS = 60
for _ = 1, 10 do step() end
local t0 = nnr.clock()
for _ = 1, STEPS do step() end
local step_s = (nnr.clock() - t0) / STEPS
local prof = nnr.profiler.profile(function() for _ = 1, STEPS do step() end end)
local per_step = prof.seconds / STEPS
local GEMM = { linear = true, matmul = true, mm = true, addmm = true, bmm = true }
local gemm_s, other = 0, {}
for _, r in ipairs(prof:ops()) do
  if GEMM[r.name] then gemm_s = gemm_s + r.self / STEPS
  else other[r.name] = r.self / STEPS end
end

-- the step's products: forward y = x W^T [B, out]; dW = dY^T x [out, in]; dX = dY W [B, in] (not the first layer's)
local shapes, flops = {}, 0
for l = 1, #sizes - 1 do
  local i, o = sizes[l], sizes[l + 1]
  shapes[#shapes + 1] = { "forward", l, function(a) return nn.functional.linear(a.x, a.w, a.b) end,
                          { x = nnr.randn(B, i), w = nnr.randn(o, i), b = nnr.randn(o) }, 2 * B * i * o }
  shapes[#shapes + 1] = { "dW", l, function(a) return a.dy:t():matmul(a.x) end, { dy = nnr.randn(B, o), x = nnr.randn(B, i) }, 2 * B * i * o }
  if l > 1 then
    shapes[#shapes + 1] = { "dX", l, function(a) return a.dy:matmul(a.w) end, { dy = nnr.randn(B, o), w = nnr.randn(o, i) }, 2 * B * i * o }
  end
end
local cpu = nnr.backends.cpu
local libraries = { { "oneDNN pieces", true }, { "OpenBLAS", false } }
local best_s, detail = 0, {}
nnr.no_grad(function()
  for _, s in ipairs(shapes) do
    local best, who = math.huge, nil
    for _, lib in ipairs(libraries) do
      if lib[2] == false or cpu.onednn_version ~= "not loaded" then
        cpu.onednn_gemm = lib[2]
        local ms = timing.time_ms(function() return s[3](s[4]) end, 5, 31)
        if ms < best then best, who = ms, lib[1] end
      end
    end
    cpu.onednn_gemm = true
    best_s = best_s + best / 1e3
    flops = flops + s[5]
    detail[#detail + 1] = string.format("%s %d: %.0f GFLOP/s (%s)", s[1], s[2], s[5] / best / 1e6, who)
  end
end)

local out = { threads = threads, batch = B, step_ms = step_s * 1e3, profiled_step_ms = per_step * 1e3, gemm_ms = gemm_s * 1e3,
              gemm_share = gemm_s / per_step, gemm_gflops_in_step = flops / gemm_s / 1e9, best_gemm_ms = best_s * 1e3,
              best_gemm_gflops = flops / best_s / 1e9, gemm_rate_share = best_s / gemm_s, shapes = table.concat(detail, "; ") }
for name, s in pairs(other) do if s / per_step >= 0.005 then out["share_" .. name] = s / per_step end end
timing.print_json(out)
