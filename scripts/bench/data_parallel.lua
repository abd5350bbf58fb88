-- nnr.parallel.DataParallel over cpu devices against one device, on the cnn of the main job:
-- training samples/s at a global batch (median of windows after a warm-up). Run with
-- NNR_CPU_DEVICES=2 NNR_NUM_THREADS=1: each device's replica then runs on its own core.
--   nnrun scripts/bench/data_parallel.lua DEVICES BATCH STEPS   (DEVICES: 1 or 2)
local nnr = require "nnr"
local fm = dofile((arg[0]:match("^(.*)/bench/[^/]*$") or "scripts") .. "/fashion_mnist.lua")
local ndev, batch, steps = tonumber(arg[1] or 2), tonumber(arg[2] or 64), tonumber(arg[3] or 40)
nnr.manual_seed(0)
local model = fm.build_model("cnn")
local opt = nnr.optim.SGD(model:parameters(), { lr = 0.01, momentum = 0.9 })
local devices = {}
for k = 1, ndev do devices[k] = k == 1 and "cpu" or ("cpu:" .. (k - 1)) end
local dp = ndev > 1 and nnr.parallel.DataParallel(model, devices) or nil
local x, y = nnr.randn(batch, 1, 28, 28), nnr.randint(1, 11, { batch })
local times = {}
for s = 1, steps do
  local t0 = nnr.clock()
  opt:zero_grad()
  if dp then dp:backward(x, y)
  else nnr.nn.functional.cross_entropy(model(x), y):backward() end
  opt:step()
  times[s] = nnr.clock() - t0
end
local rates = {}
for s = math.floor(steps / 4) + 1, steps do rates[#rates + 1] = batch / times[s] end
table.sort(rates)
print(string.format('{"devices": %d, "batch": %d, "samples_per_s": %.1f}', ndev, batch, rates[math.floor(#rates / 2) + 1]))
