-- Run under mpirun -np N (tests/dist_test.sh): collectives against reference values, and
-- DistributedDataParallel against a single-process run of the same global batch computed here.
local nnr = require "nnr"
local nn, F = nnr.nn, nnr.nn.functional
local D = nnr.parallel.Distributed
local rank, size = D.init()
assert(D.world_size() == size and D.rank() == rank)

local function check(cond, msg) if not cond then error(string.format("rank %d: %s", rank, msg), 0) end end
local function close(a, b, tol, what)
  local d = (a:double() - b:double()):abs():max():item()
  check(d <= tol, string.format("%s: max difference %.3g > %.3g", what, d, tol))
end

-- collectives: rank r contributes r + 1 + k at element k
local t = nnr.arange(0, 5):add(rank + 1)
D.all_reduce(t)
local sum_ranks = size * (size + 1) / 2
close(t, nnr.arange(0, 5):mul(size):add(sum_ranks), 0, "all_reduce sum")
t = nnr.full({ 3 }, rank + 1, { dtype = "f64" })
D.all_reduce(t, "max"); close(t, nnr.full({ 3 }, size), 0, "all_reduce max")
t = nnr.full({ 3 }, rank + 1, { dtype = "i64" })
D.all_reduce(t, "min"); check(t:sum():item() == 3, "all_reduce min")
t = nnr.full({ 2, 2 }, rank + 1)
D.all_reduce(t, "avg"); close(t, nnr.full({ 2, 2 }, sum_ranks / size), 1e-6, "all_reduce avg")
local strided = nnr.full({ 4, 3 }, rank + 1):t()            -- non-contiguous goes through a copy
D.all_reduce(strided); close(strided, nnr.full({ 3, 4 }, sum_ranks), 0, "all_reduce strided")
t = nnr.full({ 4 }, rank == 1 and 7 or -1)
D.broadcast(t, size > 1 and 1 or 0); close(t, nnr.full({ 4 }, size > 1 and 7 or -1), 0, "broadcast")
local g = D.all_gather(nnr.full({ 2 }, rank))
check(g:size(1) == size and g:size(2) == 2, "all_gather shape")
for r = 1, size do check(g[r][1] == r - 1, "all_gather rank " .. r) end
D.barrier()

-- DDP with a global batch of 24 split over the ranks == one process on all 24 samples
local function model_and_data()
  nnr.manual_seed(5)
  local m = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))
  local x, y = nnr.randn(480, 10), nnr.randint(1, 5, { 480 })
  return m, x, y
end
local ref, x, y = model_and_data()
local ropt = nnr.optim.SGD(ref:parameters(), { lr = 0.1, momentum = 0.9 })
local model = model_and_data()
if rank > 0 then nnr.no_grad(function() for _, p in ipairs(model:parameters()) do p:normal_() end end) end   -- DDP must fix this
local ddp = nnr.parallel.DistributedDataParallel(model, { bucket_mb = 0.0005 })   -- tiny buckets: several in flight
local opt = nnr.optim.SGD(ddp:parameters(), { lr = 0.1, momentum = 0.9 })
local B = 24
assert(B % size == 0)
local sampler = nnr.data.DistributedSampler(480, { seed = 3 })
local whole = nnr.data.DistributedSampler(480, { seed = 3, num_replicas = 1, rank = 0 })
local mine, all = sampler:indices(0), whole:indices(0)
for step = 1, 20 do
  local lo = (step - 1) * B
  -- one process: samples lo+1..lo+B of the permutation
  local idx = {}
  for k = 1, B do idx[k] = all[lo + k] end
  local it = nnr.tensor(idx, { dtype = "i64" })
  local loss = F.cross_entropy(ref(x:index_select(1, it)), y:index_select(1, it))
  ropt:zero_grad(); loss:backward(); ropt:step()
  -- this rank: its B / size of them
  local mi = {}
  for k = 1, B / size do mi[k] = mine[lo / size + k] end
  local im = nnr.tensor(mi, { dtype = "i64" })
  local l2 = F.cross_entropy(ddp(x:index_select(1, im)), y:index_select(1, im))
  opt:zero_grad(); ddp:backward(l2); opt:step()
end
local rp, dp = ref:parameters(), model:parameters()
for i = 1, #rp do close(dp[i], rp[i], 1e-5 * math.max(1, rp[i]:abs():max():item()), "DDP parameter " .. i) end
-- and every rank holds the same parameters
for i = 1, #dp do
  local gathered = D.all_gather(dp[i])
  for r = 2, size do close(gathered[r], gathered[1], 0, "rank " .. (r - 1) .. " parameter " .. i) end
end
if D.is_main() then print(string.format("distributed ok: %d ranks, collectives and 20 DDP steps match one process", size)) end
