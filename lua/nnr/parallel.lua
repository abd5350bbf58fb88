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
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C
local Module = nnr.nn.Module

local P = {}
local D = {}
P.Distributed = D

local state = { rank = 0, size = 1, inited = false }

function D.available() return C.nnr_dist_available() ~= 0 end

function D.init()
  if not state.inited then
    local r, s = ffi.new("int[1]"), ffi.new("int[1]")
    binding.check(C.nnr_dist_init(r, s))
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

-- runs fn(c) on t itself when it is contiguous (the core sends a tensor off the cpu through its
-- backend's collectives, NCCL for cuda, or through host memory), else on a contiguous cpu copy
local function on_contiguous(t, fn)
  if t:is_contiguous() then fn(t) return t end
  local c = t:detach():to("cpu"):contiguous()
  fn(c)
  nnr.no_grad(function() t:copy_(c) end)
  return t
end

-- in place: "sum" (default), "avg", "max", "min", "prod"
function D.all_reduce(t, op)
  op = op or "sum"
  local code = OPS[op] or error("all_reduce: op '" .. tostring(op) .. "', expected sum, avg, max, min or prod", 0)
  D.init()
  on_contiguous(t, function(c)
    binding.check(C.nnr_dist_all_reduce(c.p, code))
    if op == "avg" then nnr.no_grad(function() c:div_(state.size) end) end
  end)
  return t
end

-- in place: rank root's values everywhere
function D.broadcast(t, root)
  D.init()
  on_contiguous(t, function(c) binding.check(C.nnr_dist_broadcast(c.p, root or 0)) end)
  return t
end

-- a new tensor [world_size, ...t's shape] of every rank's t, in rank order
function D.all_gather(t)
  D.init()
  local src = t:detach():to("cpu"):contiguous()
  local shape = { state.size }
  for _, s in ipairs(src:size()) do shape[#shape + 1] = s end
  local out = nnr.empty(shape, { dtype = src.dtype })
  binding.check(C.nnr_dist_all_gather(out.p, src.p))
  return out
end

function D.barrier()
  D.init()
  binding.check(C.nnr_dist_barrier())
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
        flats[k] = g:reshape(-1)
      end
      b.flat = nnr.cat(flats):contiguous()
      if b.flat.device == "cpu" then binding.check(C.nnr_dist_all_reduce_start(b.flat.p, 0))
      else binding.check(C.nnr_dist_all_reduce(b.flat.p, 0)) end      -- on the device: NCCL, in stream order
    end
    binding.check(C.nnr_dist_wait_all())
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

-- DataParallel ----------------------------------------------------------------------------

local DP = Module:extend("DataParallel")
P.DataParallel = DP

-- DataParallel(module, devices[, {criterion = F.cross_entropy}]): a replica of module on each device
-- (module itself on devices[1], where its parameters must be), run concurrently, one thread per
-- device. dp(x) scatters x along dim 1, runs the replicas and gathers their outputs on devices[1];
-- dp:backward(x, y) also computes criterion(output, y) per replica, weighted by its share of the
-- batch, backward in every replica at once, and sums the replicas' gradients into module's: the
-- gradient of criterion over the whole batch. Replicas take module's parameters and buffers
-- before every call, so they stay identical; batch norm statistics are those of the first
-- replica's share, as with PyTorch's DataParallel.
function DP:__init(module, devices, opts)
  Module.__init(self)
  opts = opts or {}
  if type(devices) ~= "table" or #devices < 1 then error("DataParallel: expected a list of devices, e.g. {\"cpu\", \"cpu:1\"}", 0) end
  self:add_module("module", module)
  local names = {}
  for k, d in ipairs(devices) do
    local ok, dev = pcall(nnr.device, d)
    if not ok then error("DataParallel: " .. tostring(dev), 0) end
    names[k] = dev.name
  end
  for _, np in ipairs(module:named_parameters()) do
    if np[2].device ~= names[1] then
      error(string.format("DataParallel: parameter '%s' is on %s; move the model to %s (the first device) first", np[1], np[2].device,
        names[1]), 0)
    end
  end
  rawset(self, "devices", names)
  local criterion = opts.criterion or nnr.nn.functional.cross_entropy
  local serial = require "nnr.data.serial"
  local replicas, payloads, tensor_lists = { module }, {}, {}
  -- cpu devices share the host's memory: their replicas use the module's parameters themselves
  -- (new leaf tensors on the same storage, with gradients of their own), so nothing is copied
  -- before a step; other devices get copies, refreshed before every call
  local shared = {}
  local first_type = nnr.device(names[1]).type
  for k = 2, #names do
    shared[k] = first_type == "cpu" and nnr.device(names[k]).type == "cpu"
    replicas[k] = nnr.nn.utils.deep_copy(module, shared[k] and names[1] or names[k])
    if shared[k] then
      -- one leaf per parameter: a weight tied between two modules stays one parameter in the replica
      local mine, theirs, leaf = module:modules(), replicas[k]:modules(), {}
      for i, m in ipairs(mine) do
        for _, n in ipairs(m._params) do
          local p = m[n]
          if p then
            leaf[p] = leaf[p] or p:detach():requires_grad_(p.requires_grad)
            rawset(theirs[i], n, leaf[p])
          end
        end
      end
    end
  end
  rawset(self, "_shared", shared)
  for k = 1, #names do
    payloads[k], tensor_lists[k] = serial.encode({ model = replicas[k], criterion = criterion, own_grads = k > 1 }, nnr.is_tensor,
      function() return nil end)
  end
  local states = require("nnr.data")._lua_states(#names, "nnr.parallel_replica", payloads, tensor_lists, {})
  local set = C.nnr_replicas_new(states)      -- owns the states from here, also when it fails
  if set == nil then binding.raise() end
  rawset(self, "_set", ffi.gc(set, C.nnr_replicas_free))
  rawset(self, "_replicas", replicas)
end

-- module's parameters and buffers into the other replicas
function DP:_sync()
  local src_p, src_b = self.module:parameters(), self.module:named_buffers()
  nnr.no_grad(function()
    for k = 2, #self.devices do
      local r = self._replicas[k]
      if not self._shared[k] then
        local dp = r:parameters()
        for i, p in ipairs(src_p) do dp[i]:copy_(p) end
      end
      local db = r:named_buffers()
      for i, b in ipairs(src_b) do db[i][2]:copy_(b[2]) end
    end
  end)
end

-- the batch split along dim 1 into one share per device (the first ones one larger when it does not divide)
function DP:_scatter(t)
  local n, d = t:size(1), #self.devices
  if n < d then error(string.format("DataParallel: a batch of %d for %d devices", n, d), 3) end
  local parts, weights, at = {}, {}, 1
  for k = 1, d do
    local m = math.floor(n / d) + (k <= n % d and 1 or 0)
    parts[k] = t:narrow(1, at, m):contiguous():to(self._shared[k] and self.devices[1] or self.devices[k])
    weights[k] = m / n
    at = at + m
  end
  return parts, weights
end

function DP:_run(mode, x, y)
  self:_sync()
  local d = #self.devices
  local xs, weights = self:_scatter(x)
  local ys = y and self:_scatter(y) or nil
  local cx, cy = ffi.new("nnr_tensor *[?]", d), ffi.new("nnr_tensor *[?]", d)
  local cw, out, losses = ffi.new("double[?]", d), ffi.new("nnr_tensor *[?]", d), ffi.new("double[?]", d)
  for k = 1, d do
    cx[k - 1] = xs[k].p
    cy[k - 1] = ys and ys[k].p or nil
    cw[k - 1] = weights[k]
  end
  binding.check(C.nnr_replicas_run(self._set, mode, cx, cy, cw, out, losses))
  local outs, total = {}, 0
  for k = 1, d do
    outs[k] = binding.own(out[k - 1]):to(self.devices[1])
    total = total + losses[k - 1]
  end
  return nnr.cat(outs, 1), total
end

-- concurrent forward (no gradient): the gathered output
function DP:forward(x) return (self:_run(0, x)) end

-- forward, loss and backward on every replica at once; module's gradients hold the whole batch's.
-- Returns the loss over the batch (a number) and the gathered output.
function DP:backward(x, y)
  local out, loss = self:_run(1, x, y)
  local master = self.module:parameters()
  nnr.no_grad(function()
    for k = 2, #self.devices do
      for i, p in ipairs(self._replicas[k]:parameters()) do
        local g = p.grad
        if g then
          g = g:to(self.devices[1])
          if master[i].grad then master[i].grad:add_(g) else master[i].grad = g end
        end
      end
    end
  end)
  return loss, out
end

function DP:extra_repr() return "devices=" .. table.concat(self.devices, ", ") end

return P
