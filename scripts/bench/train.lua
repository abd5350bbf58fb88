-- nnrun side of the CPU benchmark (scripts/bench/run_cpu.py runs it
-- next to PyTorch's train_torch.py): the models of the training script,
-- SGD lr 0.01 momentum 0.9, batches drawn from a 60000-sample tensor.
--   nnrun scripts/bench/train.lua MODEL BATCH STEPS  -> {"samples_per_s": ...}
-- NNR_BENCH_AUTOCAST=bf16: forward passes under nnr.autocast("bf16").
-- Inference (eval mode, no gradients), the median over ITERS forward passes:
--   nnrun scripts/bench/train.lua infer MODEL BATCH ITERS -> {"us_per_batch": ..., "samples_per_s": ...}
-- The profile's top ops of a training run (for docs/perf.md):
--   nnrun scripts/bench/train.lua profile MODEL BATCH STEPS -> {"ops": [[name, share], ...]}
local nnr = require "nnr"
local fm = dofile((arg[0]:match("^(.*)/bench/[^/]*$") or "scripts") .. "/fashion_mnist.lua")
local mode = "train"
if arg[1] == "infer" or arg[1] == "profile" then mode = table.remove(arg, 1) end
local kind, batch, steps = arg[1] or "mlp", tonumber(arg[2] or 64), tonumber(arg[3] or 200)
-- NNR_BENCH_DEVICE=cuda runs the same on a GPU (scripts/bench/run_gpu.py); loss:item() waits for each step
local device = os.getenv("NNR_BENCH_DEVICE") or "cpu"
-- NNR_BENCH_CPU="onednn_gemm=false,gemv=false": cpu backend options for A/B comparisons of its paths
for k, v in (os.getenv("NNR_BENCH_CPU") or ""):gmatch("([%w_]+)=([%w_]+)") do
  nnr.backends.cpu[k] = v == "true" and true or v == "false" and false or v
end
-- NNR_BENCH_AUTOCAST=bf16 runs the forward passes under nnr.autocast (mixed precision; AMX on cpus that have it)
local autocast = os.getenv("NNR_BENCH_AUTOCAST")
-- NNR_BENCH_ALLOW_BF16=1: f32 gemms with bf16 products (nnr.backends.cpu.allow_bf16, AMX)
if os.getenv("NNR_BENCH_ALLOW_BF16") == "1" then nnr.backends.cpu.allow_bf16 = true end
local function forward(model, x)
  if autocast then return nnr.autocast(autocast, function() return model(x) end) end
  return model(x)
end
if mode == "infer" then
  nnr.manual_seed(0)
  local model = fm.build_model(kind):to(device)
  model:eval()
  local x = nnr.randn(batch, 1, 28, 28):to(device)
  local times = {}
  nnr.no_grad(function()
    for _ = 1, math.max(5, math.floor(steps / 10)) do forward(model, x):sum():item() end
    for s = 1, steps do
      local t0 = nnr.clock()
      forward(model, x):sum():item()
      times[s] = nnr.clock() - t0
    end
  end)
  table.sort(times)
  local med = times[math.floor(#times / 2) + 1]
  print(string.format('{"us_per_batch": %.2f, "samples_per_s": %.1f}', med * 1e6, batch / med))
  return
end
nnr.manual_seed(0)
local model = fm.build_model(kind):to(device)
local opt = nnr.optim.SGD(model:parameters(), { lr = 0.01, momentum = 0.9 })
local data = nnr.randn(60000, 1, 28, 28):to(device)
local labels = nnr.randint(1, 11, { 60000 }):to(device)
local perm = nnr.tensor(fm.permutation(60000, 0, 1), { dtype = "i64" }):to(device)
local times = {}
if mode == "profile" then nnr.profiler.start({ model = model }) end
for s = 1, steps do
  local i = ((s - 1) * batch) % (60000 - batch) + 1
  local idx = perm:narrow(1, i, batch)
  local t0 = nnr.clock()
  local x, y = data:index_select(1, idx), labels:index_select(1, idx)
  local loss = nnr.nn.functional.cross_entropy(forward(model, x), y)
  opt:zero_grad()
  loss:backward()
  opt:step()
  loss:item()
  times[s] = nnr.clock() - t0
end
if mode == "profile" then
  local prof = nnr.profiler.stop()
  local parts = {}
  local total = 0
  for _, r in ipairs(prof:ops()) do total = total + r.total end
  for i, r in ipairs(prof:ops()) do
    if i > 6 then break end
    parts[#parts + 1] = string.format('["%s", %.4f]', r.name, r.total / total)
  end
  print('{"ops": [' .. table.concat(parts, ", ") .. ']}')
  return
end
-- median of the rates of 5 windows, after dropping the first fifth (warm-up)
local start = math.floor(steps / 5) + 1
local window = math.max(1, math.floor((steps - start + 1) / 5))
local rates = {}
for k = start, steps - window + 1, window do
  local sum = 0
  for j = k, k + window - 1 do sum = sum + times[j] end
  rates[#rates + 1] = batch * window / sum
end
table.sort(rates)
print(string.format('{"samples_per_s": %.1f}', rates[math.floor(#rates / 2) + 1]))
