-- Run with NNR_CPU_DEVICES=2 (tests/dp_test.sh): DataParallel over the cpu devices "cpu" and
-- "cpu:1" gives the losses and parameters of one device with the same global batch, over 20
-- steps (1e-5 relative); the gathered output equals the model's; bad input is refused clearly.
local nnr = require "nnr"
local nn, F = nnr.nn, nnr.nn.functional

local function build(kind)
  nnr.manual_seed(11)
  if kind == "mlp" then return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)) end
  return nn.Sequential(nn.Conv2d(1, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5))
end

for _, kind in ipairs { "mlp", "cnn" } do
  local ref, model = build(kind), build(kind)
  local dp = nnr.parallel.DataParallel(model, { "cpu:0", "cpu:1" })
  local ropt = nnr.optim.SGD(ref:parameters(), { lr = 0.05, momentum = 0.9 })
  local opt = nnr.optim.SGD(model:parameters(), { lr = 0.05, momentum = 0.9 })
  nnr.manual_seed(12)
  local xs, ys = nnr.randn(20 * 18, 1, 8, 8), nnr.randint(1, 6, { 20 * 18 })
  for step = 1, 20 do
    local x, y = xs:narrow(1, (step - 1) * 18 + 1, 18), ys:narrow(1, (step - 1) * 18 + 1, 18)   -- 18 = 9 + 9
    local rl = F.cross_entropy(ref(x), y)
    ropt:zero_grad(); rl:backward(); ropt:step()
    opt:zero_grad()
    local loss = dp:backward(x, y)
    opt:step()
    local tol = 1e-5 * math.max(1, math.abs(rl:item()))
    if kind == "mlp" then   -- batch norm statistics differ by design (per replica), so only the mlp's loss is exact
      assert(math.abs(loss - rl:item()) <= tol, string.format("%s step %d: loss %.7f vs one device %.7f", kind, step, loss, rl:item()))
    end
  end
  if kind == "mlp" then
    local rp, mp = ref:parameters(), model:parameters()
    for i = 1, #rp do
      local d = (rp[i] - mp[i]):abs():max():item()
      assert(d <= 1e-5 * math.max(1, rp[i]:abs():max():item()), string.format("%s parameter %d differs by %.3g", kind, i, d))
    end
    -- the gathered forward equals the model's (an odd batch: shares of 4 and 3)
    model:eval()
    local x = nnr.randn(7, 1, 8, 8)
    local d = (dp(x) - model(x)):abs():max():item()
    assert(d < 1e-6, "forward differs by " .. d)
  end
  print(string.format("DataParallel %s over cpu:0 and cpu:1: 20 steps %s", kind,
    kind == "mlp" and "match one device" or "train (batch norm per replica)"))
end

-- memory stays flat over many steps (each replica state collects its step's garbage)
if not os.getenv("NNR_MEMCHECK") then
  local function rss() for l in io.lines("/proc/self/status") do local v = l:match("^VmRSS:%s+(%d+)") if v then return tonumber(v) / 1024 end end end
  local m2 = build("cnn")
  local dp2 = nnr.parallel.DataParallel(m2, { "cpu", "cpu:1" })
  local x, y = nnr.randn(64, 1, 8, 8), nnr.randint(1, 6, { 64 })
  local before
  for step = 1, 150 do
    m2:zero_grad()
    dp2:backward(x, y)
    if step == 30 then before = rss() end
  end
  local grew = rss() - before
  assert(grew < 20, string.format("resident memory grew by %.1f MiB over 120 DataParallel steps", grew))
  print(string.format("DataParallel memory flat (%+.1f MiB over 120 steps)", grew))
end

-- bad input
local m = nn.Linear(4, 2)
local ok, err = pcall(nnr.parallel.DataParallel, m, { "cpu:1", "cpu" })
assert(not ok and tostring(err):match("parameter 'weight' is on cpu; move the model to cpu:1"), tostring(err))
ok, err = pcall(nnr.parallel.DataParallel, m, { "cpu", "cpu:99" })
assert(not ok and tostring(err):match("cpu:99"), tostring(err))
local dp = nnr.parallel.DataParallel(m, { "cpu", "cpu:1" })
ok, err = pcall(dp.forward, dp, nnr.randn(1, 4))
assert(not ok and tostring(err):match("a batch of 1 for 2 devices"), tostring(err))
ok, err = pcall(dp.forward, dp, nnr.randn(6, 5))
assert(not ok and tostring(err):match("replica 1"), tostring(err))
print("DataParallel errors ok")
