-- nnr.parallel: training across processes and machines (docs/parallel.md).
--
--   mpirun -np 2 nnrun train.lua
--   local D = nnr.parallel.Distributed
--   D.init()                                    -- MPI (Open MPI); also done by the first collective
--   local ddp = nnr.parallel.DistributedDataParallel(model)   -- rank 0's parameters everywhere
--   ...
--   local loss = F.cross_entropy(ddp(x), y)
--   opt:zero_grad(); ddp:backward(loss); opt:step()            -- gradients averaged over the ranks
--
-- Ranks are 0-based, as MPI numbers them. Collectives work on tensors of any device (tensors
-- off the cpu go through host memory) of dtypes f32, f64, i64, i32, i8, u8 and bool.
local nnr = require "nnr"
local core = require "nnr.core"
local ffi, C = core.ffi, core.C
local Module = nnr.nn.Module

local P = {}
local D = {}
P.Distributed = D

local state = { rank = 0, size = 1, inited = false }

function D.available() return C.nnr_dist_available() ~= 0 end

function D.init()
  if not state.inited then
    local r, s = ffi.new("int[1]"), ffi.new("int[1]")
    core.check(C.nnr_dist_init(r, s))
    state.rank, state.size, state.inited = r[0], s[0], true
  end
  return state.rank, state.size
end

function D.is_initialized() return state.inited end
function D.rank() return state.inited and state.rank or 0 end
function D.world_size() return state.inited and state.size or 1 end
-- the rank that writes checkpoints, metrics and progress
function D.is_main() return D.rank() == 0 end

local OPS = { sum = 0, max = 1, min = 2, prod = 3, avg = 0 }

-- runs fn(c) on t itself when it is a contiguous cpu tensor, else on a contiguous cpu copy written back
local function through_host(t, fn)
  if t.device == "cpu" and t:is_contiguous() then fn(t) return t end
  local c = t:detach():to("cpu"):contiguous()
  fn(c)
  nnr.no_grad(function() t:copy_(c) end)
  return t
end

-- in place: "sum" (default), "avg", "max", "min", "prod"
function D.all_reduce(t, op)
  op = op or "sum"
  local code = OPS[op] or error("all_reduce: op '" .. tostring(op) .. "', expected sum, avg, max, min or prod", 2)
  D.init()
  through_host(t, function(c)
    core.check(C.nnr_dist_all_reduce(c.p, code))
    if op == "avg" then nnr.no_grad(function() c:div_(state.size) end) end
  end)
  return t
end

-- in place: rank root's values everywhere
function D.broadcast(t, root)
  D.init()
  through_host(t, function(c) core.check(C.nnr_dist_broadcast(c.p, root or 0)) end)
  return t
end

-- a new tensor [world_size, ...t's shape] of every rank's t, in rank order
function D.all_gather(t)
  D.init()
  local src = t:detach():to("cpu"):contiguous()
  local shape = { state.size }
  for _, s in ipairs(src:size()) do shape[#shape + 1] = s end
  local out = nnr.empty(shape, { dtype = src.dtype })
  core.check(C.nnr_dist_all_gather(out.p, src.p))
  return out
end

function D.barrier()
  D.init()
  core.check(C.nnr_dist_barrier())
end

-- the time of one bare MPI_Allreduce of n floats (median of reps), the benchmark's reference
function D._bench_raw_allreduce(n, reps)
  D.init()
  return C.nnr_dist_bench_raw_allreduce(n, reps or 10)
end

-- DistributedDataParallel ----------------------------------------------------------------

local DDP = Module:extend("DistributedDataParallel")
P.DistributedDataParallel = DDP

-- DistributedDataParallel(module[, {bucket_mb = 25}])
function DDP:__init(module, opts)
  Module.__init(self)
  opts = opts or {}
  self:add_module("module", module)
  rawset(self, "bucket_bytes", (opts.bucket_mb or 25) * 2 ^ 20)
  D.init()
  -- every rank must hold the same model: parameter count, total size and shapes checked against rank 0
  local named = module:named_parameters()
  local numel, shapes = 0, 0
  for i, np in ipairs(named) do
    numel = numel + np[2]:numel()
    for d, s in ipairs(np[2]:size()) do shapes = (shapes * 31 + s * (i + d)) % 2147483647 end
  end
  local sig = D.all_gather(nnr.tensor({ #named, numel, shapes }, { dtype = "i64" }))
  for r = 2, state.size do
    if sig[r][1] ~= sig[1][1] or sig[r][2] ~= sig[1][2] or sig[r][3] ~= sig[1][3] then
      error(string.format("DistributedDataParallel: rank %d's model has %d parameters (%d elements), rank 0's %d (%d elements)%s; "
        .. "every rank must build the same model", r - 1, sig[r][1], sig[r][2], sig[1][1], sig[1][2],
        (sig[r][1] == sig[1][1] and sig[r][2] == sig[1][2]) and " with other shapes" or ""), 0)
    end
  end
  -- rank 0's parameters and buffers everywhere
  nnr.no_grad(function()
    for _, np in ipairs(named) do D.broadcast(np[2], 0) end
    for _, nb in ipairs(module:named_buffers()) do D.broadcast(nb[2], 0) end
  end)
end

function DDP:forward(...) return self.module(...) end

-- loss:backward() and the averaged gradients
function DDP:backward(loss)
  loss:backward()
  self:reduce_gradients()
end

-- averages every parameter's gradient over the ranks: parameters grouped into buckets of
-- bucket_mb, last layers first (their gradients are ready first), each bucket's reduction
-- started as soon as it is packed so that the network works while the next one is packed
function DDP:reduce_gradients()
  local world = D.world_size()
  if world == 1 then return end
  local params = self.module:parameters()
  local buckets, current, bytes = {}, nil, 0
  for i = #params, 1, -1 do
    local p = params[i]
    if p.requires_grad then
      local size = p:numel() * nnr.dtype_size(p.dtype)
      if not current or current.dtype ~= p.dtype or bytes + size > self.bucket_bytes then
        current = { dtype = p.dtype, params = {} }
        buckets[#buckets + 1] = current
        bytes = 0
      end
      current.params[#current.params + 1] = p
      bytes = bytes + size
    end
  end
  nnr.no_grad(function()
    for _, b in ipairs(buckets) do
      local flats = {}
      for k, p in ipairs(b.params) do
        -- a parameter without a gradient this step contributes zeros: every rank reduces the same layout
        local g = p.grad or nnr.zeros_like(p)
        flats[k] = g:to("cpu"):reshape(-1)
      end
      b.flat = nnr.cat(flats):contiguous()
      core.check(C.nnr_dist_all_reduce_start(b.flat.p, 0))
    end
    core.check(C.nnr_dist_wait_all())
    for _, b in ipairs(buckets) do
      b.flat:div_(world)
      local at = 1
      for _, p in ipairs(b.params) do
        local n = p:numel()
        local avg = b.flat:narrow(1, at, n):view(p:size()):to(p.device)
        if p.grad then p.grad:copy_(avg) else p.grad = avg:clone() end
        at = at + n
      end
    end
  end)
end

function DDP:extra_repr() return string.format("world_size=%d, rank=%d", D.world_size(), D.rank()) end

return P
