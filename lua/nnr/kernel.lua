-- nnr.kernel: custom elementwise ops and reductions written in LuaJIT, compiled by LuaJIT and run in
-- parallel over chunks of the tensors, with no C compiler.
--
--   local gelu = nnr.kernel.map("function(x) return 0.5 * x * (1 + math.tanh(0.7978845608 * (x + 0.044715 * x^3))) end")
--   local y = gelu(x)                          -- any strides; several inputs broadcast; numbers pass through
--   local axpy = nnr.kernel.map("function(x, y, a) return a * x + y end")
--   axpy(x, y, 2.5, {out = y})                 -- into an existing tensor
--   local sumsq = nnr.kernel.reduce("function(acc, x) return acc + x * x end", {init = 0, combine = "function(a, b) return a + b end"})
--   sumsq(x)                                   -- a 0-d tensor; sumsq(x, {dim = 2, keepdim = true}) along one dim
--
-- The source is a Lua function expression: it sees only its arguments, LuaJIT's libraries (math,
-- bit, ffi) and its own upvalues-free code, since it runs in the kernel pool's worker states
-- (core/host/kernels.c) as well as in the script's. Kernels record no gradient: an input that
-- requires grad is refused while recording is on; wrap forward and backward kernels in an
-- nnr.autograd.Function. Tensors must be in host memory (cpu); f16 and bf16 have no FFI type.
local ffi = require "ffi"
local binding = require "nnr.binding"
local T = require "nnr.tensor"
local V = require "nnr.check"
local W = require "nnr.kernel_worker"
local C = binding.C
local is_tensor = T.is_tensor

local M = {}

-- the pool of worker states: min(threads, 64) - 1 workers, remade only when the thread count changes
local shared = debug.getregistry()["nnr.kernel"]
if not shared then
  shared = {}
  debug.getregistry()["nnr.kernel"] = shared
end
local function bootstrap()
  local path = package.searchpath("nnr.kernel_worker", package.path)
  local f = path and io.open(path, "rb")
  if not f then error("kernel: cannot find nnr/kernel_worker.lua on package.path", 0) end
  local src = f:read("*a")
  f:close()
  return "local M = (function(...)\n" .. src .. "\nend)()\nreturn M.worker()"
end
local function pool(nworkers)
  if shared.n ~= nworkers then
    shared.pool = nil                        -- the old one is freed by its finalizer
    shared.n = nworkers
    if nworkers > 0 then
      local p = C.nnr_kernel_pool_new(nworkers, bootstrap())
      if p == nil then binding.raise() end
      shared.pool = ffi.gc(p, C.nnr_kernel_pool_free)
    end
  end
  return shared.pool
end

local GRAIN = 65536          -- elements per chunk below which threads cost more than they give
local SUPPORTED = { f32 = true, f64 = true, i8 = true, u8 = true, i32 = true, i64 = true, bool = true }
local FLOAT = { f32 = true, f64 = true }

local function shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end

-- the broadcast shape of the tensor operands, PyTorch's rules
local function broadcast(name, tensors)
  local out = {}
  for _, t in ipairs(tensors) do
    local s = t:size()
    local n = math.max(#out, #s)
    local r = {}
    for i = 1, n do
      local a = out[#out - n + i] or 1
      local b = s[#s - n + i] or 1
      if a ~= b and a ~= 1 and b ~= 1 then
        error(name .. ": shapes " .. shape_str(out) .. " and " .. shape_str(s) .. " cannot broadcast", 0)
      end
      r[i] = a == 1 and b or a
    end
    out = r
  end
  return out
end

-- t's strides as seen from shape (broadcast dims: 0)
local function strides_for(t, shape)
  local s, nd = t:size(), #shape
  local st = {}
  for i = 1, nd do
    local d = #s - nd + i
    st[i] = (d >= 1 and s[d] ~= 1) and tonumber(C.nnr_tensor_stride(t.p, d - 1)) or 0
  end
  return st
end

-- adjacent dims merged where every operand's strides allow it, dims of size 1 dropped
local function collapse(shape, strides)
  local sizes, ss = {}, {}
  for k = 1, #strides do ss[k] = {} end
  for d = 1, #shape do
    if shape[d] ~= 1 then
      local n = #sizes
      local merge = n > 0
      for k = 1, #strides do merge = merge and ss[k][n] == strides[k][d] * shape[d] end
      if merge then
        sizes[n] = sizes[n] * shape[d]
        for k = 1, #strides do ss[k][n] = strides[k][d] end
      else
        sizes[n + 1] = shape[d]
        for k = 1, #strides do ss[k][n + 1] = strides[k][d] end
      end
    end
  end
  if #sizes == 0 then
    sizes[1] = 1
    for k = 1, #strides do ss[k][1] = 0 end
  end
  return sizes, ss
end

local function check_source(name, src)
  if type(src) ~= "string" then error(name .. ": the kernel must be Lua source (a string), got " .. type(src), 0) end
  local f, err = loadstring("return " .. src, "=" .. name)
  if not f then error(name .. ": the source does not compile: " .. err, 0) end
  local ok, fn = pcall(f)
  if not ok or type(fn) ~= "function" then
    error(name .. ": the source must be a function expression, such as \"function(x) return x * 2 end\"", 0)
  end
end

-- splits call arguments into operands and a trailing options table
local function split_args(...)
  local n = select("#", ...)
  local last = select(n, ...)
  if n > 0 and type(last) == "table" and not is_tensor(last) then return { n = n - 1, ... }, last end
  return { n = n, ... }, nil
end

local function check_operand(name, i, a)
  if type(a) == "boolean" then return a and 1 or 0 end
  if type(a) == "number" then return a end
  if not is_tensor(a) then
    error(name .. ": argument " .. i .. " must be a tensor or a number, got " .. type(a), 0)
  end
  if not SUPPORTED[a.dtype] then
    error(name .. ": argument " .. i .. " is " .. a.dtype .. ", which kernels cannot read (f32, f64, i8, u8, i32, i64, bool); convert it with :float()", 0)
  end
  if C.nnr_tensor_data(a.p) == nil then
    error(name .. ": argument " .. i .. " is on " .. tostring(a.device) .. "; kernels run on host memory: move it with :cpu()", 0)
  end
  if a.requires_grad and C.nnr_is_grad_enabled() ~= 0 then
    error(name .. ": argument " .. i .. " requires grad, and a kernel records no gradient; run it inside an nnr.autograd.Function " ..
      "(with a backward kernel) or under nnr.no_grad", 0)
  end
  return a
end

-- the result dtype of the tensor operands: the highest of f64 > f32 > i64 > i32 > i8/u8 > bool
local RANK = { bool = 0, u8 = 1, i8 = 1, i32 = 2, i64 = 3, f32 = 4, f64 = 5 }
local function result_dtype(tensors)
  local best = nil
  for _, t in ipairs(tensors) do if not best or RANK[t.dtype] > RANK[best] then best = t.dtype end end
  if best == "bool" or best == "u8" or best == "i8" then best = "i64" end
  return best or "f64"
end

local MAX_CHUNKS = 64            -- the pool's 63 workers and the script's state

-- runs plan text over blob: chunks 2..n on the pool's workers, chunk 1 here. keep: what the blob
-- points into (the numbers array), held here until the workers are done with it
local function launch(name, text, blob, nchunks, keep)
  local p = nchunks > 1 and pool(math.min(C.nnr_get_num_threads(), MAX_CHUNKS) - 1) or nil
  if p then
    local st = C.nnr_kernel_pool_start(p, text, #text, blob, 1, nchunks - 1, nchunks)
    if st ~= 0 then binding.raise() end
  end
  local ok, err = pcall(W.run, text, blob, 0, nchunks)
  local st = p and C.nnr_kernel_pool_wait(p) or 0
  if keep and keep[0] ~= keep[0] then error("unreachable") end   -- keep stays reachable until here
  if not ok then error(name .. ": " .. tostring(err), 0) end
  if st ~= 0 then error(name .. ": " .. binding.last_error(), 0) end
end

local function nchunks_for(points, per_point)
  local threads = math.min(C.nnr_get_num_threads(), MAX_CHUNKS)
  return math.max(1, math.min(threads, math.floor(points * per_point / GRAIN)))
end

-- blob writer
local function blob_of(nd, sizes, points, operands, out, out_strides, doubles, rdim)
  local n = 3 + nd
  for _, o in ipairs(operands) do if o.t then n = n + 1 + nd + (rdim and 1 or 0) end end
  n = n + 1 + nd + (rdim and 1 or 0) + (rdim and 1 or 0)
  local B = ffi.new("int64_t[?]", n)
  B[0] = ffi.cast("intptr_t", doubles)
  B[1] = nd
  B[2] = points
  for d = 1, nd do B[2 + d] = sizes[d] end
  local at = 3 + nd
  local function put(ptr, strides, rstride)
    B[at] = ffi.cast("intptr_t", ptr)
    for d = 1, nd do B[at + d] = strides[d] end
    at = at + 1 + nd
    if rdim then B[at] = rstride or 0; at = at + 1 end
  end
  for _, o in ipairs(operands) do if o.t then put(C.nnr_tensor_data(o.t.p), o.strides, o.rstride) end end
  put(C.nnr_tensor_data(out.p), out_strides, 0)
  if rdim then B[at] = rdim end
  return B
end

-- the output: given (out=, checked) or new
local function output(name, opts, shape, dtype, inputs)
  local out = opts and opts.out
  if out == nil then return T.empty(shape, { dtype = dtype }) end
  if not is_tensor(out) then error(name .. ": out must be a tensor, got " .. type(out), 0) end
  if shape_str(out:size()) ~= shape_str(shape) then
    error(name .. ": out has shape " .. shape_str(out:size()) .. ", the result " .. shape_str(shape), 0)
  end
  check_operand(name, "out", out)
  binding.check(C.nnr_tensor_mark_written(out.p, name))   -- autograd's in-place rules, and the version bump
  for d = 1, #shape do
    if shape[d] > 1 and C.nnr_tensor_stride(out.p, d - 1) == 0 then
      error(name .. ": out is expanded along dimension " .. d .. " (one element would be written many times)", 0)
    end
  end
  -- an input sharing out's memory must be read at the very positions written (elementwise in place)
  for i, t in ipairs(inputs) do
    if C.nnr_tensor_same_storage(t.p, out.p) ~= 0 then
      local same = C.nnr_tensor_offset(t.p) == C.nnr_tensor_offset(out.p) and shape_str(t:size()) == shape_str(out:size())
      for d = 1, #shape do same = same and C.nnr_tensor_stride(t.p, d - 1) == C.nnr_tensor_stride(out.p, d - 1) end
      if not same then error(name .. ": out overlaps input " .. i .. " in another layout; write into a new tensor", 0) end
    end
  end
  return out
end

-- a call's arguments checked: the tensors, every operand ({t =} or {n =}), the numbers, the
-- broadcast shape and the result dtype (the kernel's own, or the tensors')
local function operands_of(kernel, args)
  local name = kernel.name
  local tensors, operands, numbers = {}, {}, {}
  for i = 1, args.n do
    local a = check_operand(name, i, args[i])
    if is_tensor(a) then tensors[#tensors + 1] = a; operands[i] = { t = a }
    else numbers[#numbers + 1] = a; operands[i] = { n = a } end
  end
  if #tensors == 0 then error(name .. ": at least one argument must be a tensor", 0) end
  return tensors, operands, numbers, broadcast(name, tensors), kernel.dtype or result_dtype(tensors)
end

-- a kernel's dtype option: nil, or one a kernel can write
local function check_dtype(name, dtype)
  if dtype ~= nil and not SUPPORTED[dtype] then
    error(name .. ": dtype must be one of f32, f64, i8, u8, i32, i64, bool, got " .. tostring(dtype), 0)
  end
end

-- ---------------------------------------------------------------- map
local Map = {}
Map.__index = Map

local map_options = { name = true, dtype = true }
function M.map(source, opts)
  opts = V.options("kernel.map", opts, map_options)
  local name = "kernel.map" .. (opts.name and (" " .. tostring(opts.name)) or "")
  check_source(name, source)
  check_dtype(name, opts.dtype)
  return setmetatable({ source = source, name = name, dtype = opts.dtype }, Map)
end

local call_options = { out = true }
function Map.__call(self, ...)
  local args, opts = split_args(...)
  if opts then V.options(self.name, opts, call_options) end
  local name = self.name
  local tensors, operands, numbers, shape, dtype = operands_of(self, args)
  local out = output(name, opts, shape, dtype, tensors)
  local numel = 1
  for _, s in ipairs(shape) do numel = numel * s end
  if numel == 0 then return out end
  local strides = {}
  for _, o in ipairs(operands) do if o.t then strides[#strides + 1] = strides_for(o.t, shape) end end
  strides[#strides + 1] = strides_for(out, shape)
  local sizes, ss = collapse(shape, strides)
  local k, kinds = 0, {}
  for i, o in ipairs(operands) do
    if o.t then k = k + 1; o.strides = ss[k]; kinds[i] = o.t.dtype else kinds[i] = "s" end
  end
  local doubles = ffi.new("double[?]", #numbers + 1)
  for i, v in ipairs(numbers) do doubles[i - 1] = v end
  local B = blob_of(#sizes, sizes, numel, operands, out, ss[#ss], doubles)
  local text = "map " .. #sizes .. " " .. table.concat(kinds, ",") .. " " .. out.dtype .. "\n" .. self.source
  launch(name, text, B, nchunks_for(numel, 1), doubles)
  return out
end

-- ---------------------------------------------------------------- reduce
local Reduce = {}
Reduce.__index = Reduce

local reduce_options = { name = true, dtype = true, init = true, combine = true }
function M.reduce(source, opts)
  opts = V.options("kernel.reduce", opts, reduce_options)
  local name = "kernel.reduce" .. (opts.name and (" " .. tostring(opts.name)) or "")
  check_source(name, source)
  local init = V.number(name, "init", opts.init, { default = 0, inf = true })
  if opts.combine ~= nil then check_source(name .. " (combine)", opts.combine) end
  check_dtype(name, opts.dtype)
  local combine
  if opts.combine then combine = loadstring("return " .. opts.combine)() end
  return setmetatable({ source = source, name = name, dtype = opts.dtype, init = init, combine = combine }, Reduce)
end

local reduce_call_options = { dim = true, keepdim = true, out = true }
function Reduce.__call(self, ...)
  local args, opts = split_args(...)
  opts = V.options(self.name, opts, reduce_call_options)
  local name = self.name
  local tensors, operands, numbers, shape, dtype = operands_of(self, args)
  local doubles = ffi.new("double[?]", #numbers + 2 + 64)
  for i, v in ipairs(numbers) do doubles[i - 1] = v end
  doubles[#numbers] = self.init
  local kinds = {}
  for i, o in ipairs(operands) do kinds[i] = o.t and o.t.dtype or "s" end
  if opts.dim == nil then                                  -- everything to one value
    if opts.keepdim then error(name .. ": keepdim needs dim", 0) end
    local out = output(name, opts, {}, dtype, tensors)
    local numel = 1
    for _, s in ipairs(shape) do numel = numel * s end
    local strides = {}
    for _, o in ipairs(operands) do if o.t then strides[#strides + 1] = strides_for(o.t, shape) end end
    strides[#strides + 1] = {}
    for d = 1, #shape do strides[#strides][d] = 0 end
    local sizes, ss = collapse(shape, strides)
    local k = 0
    for _, o in ipairs(operands) do if o.t then k = k + 1; o.strides = ss[k] end end
    -- without combine, partial results cannot be joined: one chunk
    local nchunks = self.combine and nchunks_for(numel, 1) or 1
    local B = blob_of(#sizes, sizes, numel, operands, out, ss[#ss], doubles)
    local text = "rall " .. #sizes .. " " .. table.concat(kinds, ",") .. " " .. out.dtype .. "\n" .. self.source
    if numel > 0 then launch(name, text, B, nchunks, doubles) end
    local acc = numel > 0 and doubles[#numbers + 1] or self.init
    for c = 1, numel > 0 and nchunks - 1 or 0 do
      local ok, r = pcall(self.combine, acc, doubles[#numbers + 1 + c])
      if not ok then error(name .. ": combine: " .. tostring(r), 0) end
      acc = r
    end
    if type(acc) ~= "number" then error(name .. ": the reduction gave " .. tostring(acc) .. ", not a number", 0) end
    require("nnr").no_grad(function() out:fill_(acc) end)
    return out
  end
  -- along one dim: each output element reduces its row
  local nd = #shape
  local d = T.cdim(name, T.empty(shape), opts.dim) + 1
  local R = shape[d]
  local oshape = {}
  for i = 1, nd do if i ~= d then oshape[#oshape + 1] = shape[i] end end
  local out = output(name, opts.out and opts or nil, oshape, dtype, tensors)
  local points = 1
  for _, s in ipairs(oshape) do points = points * s end
  if points == 0 then return opts.keepdim and out:unsqueeze(d) or out end
  local strides, rstrides = {}, {}
  for _, o in ipairs(operands) do
    if o.t then
      local full = strides_for(o.t, shape)
      local st = {}
      for i = 1, nd do if i ~= d then st[#st + 1] = full[i] end end
      strides[#strides + 1] = st
      rstrides[#rstrides + 1] = full[d]
    end
  end
  strides[#strides + 1] = strides_for(out, oshape)
  local sizes, ss = collapse(oshape, strides)
  local k = 0
  for _, o in ipairs(operands) do if o.t then k = k + 1; o.strides = ss[k]; o.rstride = rstrides[k] end end
  local B = blob_of(#sizes, sizes, points, operands, out, ss[#ss], doubles, R)
  local text = "rdim " .. #sizes .. " " .. table.concat(kinds, ",") .. " " .. out.dtype .. "\n" .. self.source
  launch(name, text, B, nchunks_for(points, math.max(R, 1)), doubles)
  if opts.keepdim then return out:unsqueeze(d) end
  return out
end

return M
