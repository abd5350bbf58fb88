-- nnrun side of the training benchmark (scripts/bench/run_train.py runs it
-- next to PyTorch's train_torch.py): the models of the training script,
-- SGD lr 0.01 momentum 0.9, batches drawn from a 60000-sample tensor.
--   nnrun scripts/bench/train.lua MODEL BATCH STEPS  -> {"samples_per_s": ...}
local nnr = require "nnr"
local fm = dofile((arg[0]:match("^(.*)/bench/[^/]*$") or "scripts") .. "/fashion_mnist.lua")
local kind, batch, steps = arg[1] or "mlp", tonumber(arg[2] or 64), tonumber(arg[3] or 200)
nnr.manual_seed(0)
local model = fm.build_model(kind)
local opt = nnr.optim.SGD(model:parameters(), { lr = 0.01, momentum = 0.9 })
local data = nnr.randn(60000, 1, 28, 28)
local labels = nnr.randint(1, 11, { 60000 })
local perm = nnr.tensor(fm.permutation(60000, 0, 1), { dtype = "i64" })
local times = {}
for s = 1, steps do
  local i = ((s - 1) * batch) % (60000 - batch) + 1
  local idx = perm:narrow(1, i, batch)
  local t0 = nnr.clock()
  local x, y = data:index_select(1, idx), labels:index_select(1, idx)
  local loss = nnr.nn.functional.cross_entropy(model(x), y)
  opt:zero_grad()
  loss:backward()
  opt:step()
  loss:item()
  times[s] = nnr.clock() - t0
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
