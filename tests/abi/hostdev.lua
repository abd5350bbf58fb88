-- A second backend of the cpu's kind (tests/c/plugins/hostdev.c, loaded alone through NNR_PLUGIN_PATH)
-- gets the fused paths the cpu plugin gets, by answering supports(): a Sequential's Linear+ReLU and
-- Conv2d+ReLU run as its LINEAR and CONV2D calls with the relu, and the optimizers' steps as its fused
-- steps, with no fallback for those ops. Training on it gives the cpu's losses.
local nnr = require "nnr"
local nn = nnr.nn
local ffi = require "ffi"
local C = require("nnr.binding").C

local function counter(key) return tonumber(nnr.backends.hostdev["calls." .. key]) end

local function model()
  nnr.manual_seed(7)
  return nn.Sequential(nn.Conv2d(1, 4, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 16), nn.ReLU(),
    nn.Linear(16, 3))
end

local function train(device, make_opt)
  local m = model():to(device)
  local opt = make_opt(m:parameters())
  nnr.manual_seed(3)
  local x, y = nnr.randn(8, 1, 8, 8), nnr.randint(1, 4, { 8 })
  local losses = {}
  for step = 1, 5 do
    local loss = nn.functional.cross_entropy(m(x:to(device)), y:to(device))
    opt:zero_grad()
    loss:backward()
    opt:step()
    losses[step] = loss:item()
  end
  return losses
end

local failures = 0
local function expect(ok, what)
  print((ok and "ok: " or "FAIL: ") .. what)
  if not ok then failures = failures + 1 end
end

local dev = nnr.device("hostdev")
expect(dev.host_memory == true, "hostdev declares host memory (device props)")
local before = {}
for i, op in ipairs { C.NNR_OP_LINEAR, C.NNR_OP_CONV2D, C.NNR_OP_SGD_STEP, C.NNR_OP_ADAM_STEP, C.NNR_OP_RMSPROP_STEP } do
  before[i] = tonumber(C.nnr_fallback_count(op))
end
local optimizers = {
  sgd = function(p) return nnr.optim.SGD(p, { lr = 0.1, momentum = 0.9 }) end,
  adam = function(p) return nnr.optim.Adam(p, { lr = 0.01 }) end,
  rmsprop = function(p) return nnr.optim.RMSprop(p, { lr = 0.01, momentum = 0.5 }) end,
}
for name, make in pairs(optimizers) do
  local on_cpu, on_dev = train("cpu", make), train("hostdev", make)
  local worst = 0
  for i = 1, #on_cpu do worst = math.max(worst, math.abs(on_cpu[i] - on_dev[i]) / math.abs(on_cpu[i])) end
  expect(worst < 1e-4, string.format("%s: 5 steps on hostdev give the cpu's losses (worst relative difference %.2g)", name, worst))
  expect(counter(name) > 0, string.format("%s: the steps ran as hostdev's fused %s (%d calls)", name, name, counter(name)))
end
expect(counter("linear_relu") > 0, "Linear+ReLU ran as hostdev's LINEAR with relu (" .. counter("linear_relu") .. " calls)")
expect(counter("linear") > 0, "the last Linear ran as hostdev's LINEAR (" .. counter("linear") .. " calls)")
expect(counter("conv2d_relu") > 0, "Conv2d+ReLU ran as hostdev's CONV2D with relu (" .. counter("conv2d_relu") .. " calls)")
for i, op in ipairs { C.NNR_OP_LINEAR, C.NNR_OP_CONV2D, C.NNR_OP_SGD_STEP, C.NNR_OP_ADAM_STEP, C.NNR_OP_RMSPROP_STEP } do
  expect(tonumber(C.nnr_fallback_count(op)) == before[i], string.format("%s never fell back", ffi.string(C.nnr_op_name(op))))
end
-- what fell back (the gradients, pooling, elementwise) ran on the cpu in place: host memory, no copies
expect(tonumber(C.nnr_fallback_count(C.NNR_OP_CONV2D_GRAD_WEIGHT)) > 0, "what hostdev lacks ran through the fallback")
print(string.format("%d failed", failures))
if failures > 0 then error(failures .. " checks failed", 0) end
