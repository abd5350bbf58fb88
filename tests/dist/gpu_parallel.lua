-- On a GPU machine (scripts/gpu-check.sh), a world of one process: the NCCL path of the
-- collectives on cuda tensors, DistributedDataParallel on cuda:0 and DataParallel over {cuda:0}
-- against plain training. Exits 77 (skip) without a GPU.
local nnr = require "nnr"
local nn, F = nnr.nn, nnr.nn.functional
if not nnr.cuda.is_available() then print("skip: " .. tostring(nnr.cuda.status())) os.exit(77) end
local D = nnr.parallel.Distributed
local rank, size = D.init()
local t = nnr.arange(0, 10):to("cuda")
D.all_reduce(t)                                   -- NCCL (or through the host if NCCL is missing)
assert((t:cpu() - nnr.arange(0, 10)):abs():max():item() == 0, "all_reduce over one rank changed the tensor")
D.broadcast(t, 0)
print(string.format("collectives on cuda:0 over %d rank(s): ok", size))

local function build()
  nnr.manual_seed(21)
  return nn.Sequential(nn.Conv2d(1, 8, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
end
nnr.manual_seed(22)
local x, y = nnr.randn(32, 1, 28, 28):to("cuda"), nnr.randint(1, 11, { 32 }):to("cuda")
local ref, a, b = build():to("cuda"), build():to("cuda"), build():to("cuda")
local ddp = nnr.parallel.DistributedDataParallel(a)
local dp = nnr.parallel.DataParallel(b, { "cuda:0" })
local o1, o2, o3 = nnr.optim.SGD(ref:parameters(), { lr = 0.05 }), nnr.optim.SGD(a:parameters(), { lr = 0.05 }),
  nnr.optim.SGD(b:parameters(), { lr = 0.05 })
for _ = 1, 5 do
  o1:zero_grad(); F.cross_entropy(ref(x), y):backward(); o1:step()
  o2:zero_grad(); ddp:backward(F.cross_entropy(ddp(x), y)); o2:step()
  o3:zero_grad(); dp:backward(x, y); o3:step()
end
for i, p in ipairs(ref:parameters()) do
  for name, m in pairs { ddp = a, dataparallel = b } do
    local d = (m:parameters()[i] - p):abs():max():item()
    assert(d < 1e-5, string.format("%s parameter %d differs by %.3g", name, i, d))
  end
end
print("DistributedDataParallel and DataParallel on cuda:0 train as plain training does: ok")
