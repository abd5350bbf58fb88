-- Tensors on the Lua side: an ffi.metatype over the core's opaque
-- nnr_tensor*, with 1-based indices and dimensions (negative ones count from
-- the end), PyTorch's method names and Lua operators.
local binding = require "nnr.binding"
local V = require "nnr.check"
local ffi, C = binding.ffi, binding.C
local own, check, raise, call = binding.own, binding.check, binding.raise, binding.call
local dtype_id, device_id, dtype_names = binding.dtype_id, binding.device_id, binding.dtype_names
local type, select, floor, tostring = type, select, math.floor, tostring

local T = {}          -- the public functions (nnr.zeros, ...)
local methods = {}    -- tensor methods
local mt = {}

local sizebuf = ffi.new("int64_t[8]")
local sizebuf2 = ffi.new("int64_t[8]")
local intbuf = ffi.new("int[8]")
local dbl = ffi.new("double[1]")
local tensor_ct = binding.handle_ct

local function is_tensor(x) return type(x) == "cdata" and ffi.istype(tensor_ct, x) end
T.is_tensor = is_tensor

-- the handle of a tensor argument, or an error naming the op and the argument (a string or a
-- table in its place would otherwise reach C as NULL)
local function tp(op, x, what)
  if type(x) == "cdata" and ffi.istype(tensor_ct, x) then return x.p end
  error(op .. ": " .. (what or "argument") .. " must be a tensor, got " .. (type(x) == "string" and "a string" or type(x)), 0)
end
T.tp = tp

local function shape_str(sizes)
  return "[" .. table.concat(sizes, ", ") .. "]"
end

local function sizes_of(t)
  local n = C.nnr_tensor_ndim(t.p)
  local s = {}
  for i = 1, n do s[i] = tonumber(C.nnr_tensor_size(t.p, i - 1)) end
  return s
end

-- 1-based (negative from the end) -> 0-based, with a clear error
local function cdim(op, t, d, extra)
  local n = C.nnr_tensor_ndim(t.p) + (extra or 0)
  if type(d) ~= "number" or d ~= floor(d) then
    error(op .. ": dimension must be an integer, got " .. tostring(d), 0)
  end
  local w = d < 0 and d + n + 1 or d
  if w < 1 or w > n then
    if n == 0 then error(op .. ": dimension " .. d .. " given for a 0-dimensional tensor", 0) end
    error(op .. ": dimension " .. d .. " is out of range for a tensor of shape " .. shape_str(sizes_of(t)) ..
      " (expected 1.." .. n .. " or -" .. n .. "..-1)", 0)
  end
  return w - 1
end

-- 1-based element index (negative from the end) -> 0-based
local function cindex(op, i, size, dim)
  if type(i) ~= "number" or i ~= floor(i) then error(op .. ": index must be an integer, got " .. tostring(i), 0) end
  local w = i < 0 and i + size + 1 or i
  if i == 0 or w < 1 or w > size then
    error(op .. ": index " .. i .. " is out of range for dimension " .. dim .. " of size " .. size ..
      (i == 0 and " (indices are 1-based)" or ""), 0)
  end
  return w - 1
end

-- a Lua number headed for an int64_t argument (a size, a count, a position): whole and exactly
-- representable, never truncated or wrapped by the FFI's conversion
local MAX_INT = 2 ^ 53
local function int_arg(op, what, v)
  if type(v) ~= "number" or v ~= floor(v) then
    error(op .. ": " .. what .. " must be an integer, got " .. (type(v) == "number" and V.show(v) or type(v)), 0)
  end
  if v > MAX_INT or v < -MAX_INT then
    error(op .. ": " .. what .. " must be an integer of magnitude at most 2^53 (too large for any memory), got " .. V.show(v), 0)
  end
  return v
end
T.int_arg = int_arg

-- sizes given as numbers or one table; fills buf, returns count
local function fill_sizes(op, buf, first, ...)
  if type(first) == "table" and not is_tensor(first) then
    local n = #first
    if n > 8 then error(op .. ": at most 8 dimensions, got " .. n, 0) end
    for i = 1, n do buf[i - 1] = int_arg(op, "sizes", first[i]) end
    return n
  end
  local n = first == nil and 0 or select("#", ...) + 1
  if n > 8 then error(op .. ": at most 8 dimensions, got " .. n, 0) end
  if n > 0 then
    buf[0] = int_arg(op, "sizes", first)
    for i = 2, n do buf[i - 1] = int_arg(op, "sizes", (select(i - 1, ...))) end
  end
  return n
end

-- splits trailing options ({dtype=, device=}) from size arguments
local function split_opts(...)
  local n = select("#", ...)
  local last = select(n, ...)
  if n > 0 and type(last) == "table" and not is_tensor(last) and
     (last.dtype or last.device or last.requires_grad ~= nil or (next(last) ~= nil and #last == 0) or (n > 1 and next(last) == nil)) then
    return last, n - 1
  end
  return nil, n
end

local creation_options = { dtype = true, device = true, requires_grad = true }
-- a creation's options checked, and its dtype and device: the options', else the defaults given, else
-- the global ones
local function opts_dtype_device(op, opts, default_dtype, default_device)
  if opts ~= nil then V.options(op, opts, creation_options) end
  local dt = opts and opts.dtype and dtype_id(opts.dtype, op) or default_dtype or binding.default_dtype
  local dev = opts and opts.device
  if dev == nil and default_device then return dt, default_device end
  return dt, device_id(dev, op)
end
local function fill_value(op, v)
  if type(v) == "boolean" then return v and 1 or 0 end
  if type(v) ~= "number" then error(op .. ": value must be a number or a boolean, got " .. type(v), 0) end
  return v
end

-- applies {requires_grad = true} of a creation call
local function created(t, opts)
  if opts and opts.requires_grad then check(C.nnr_requires_grad_(t.p, 1)) end
  return t
end

-- creation ---------------------------------------------------------------------
local function sized(op, ...)
  local opts, n = split_opts(...)
  local first = ...
  if type(first) == "table" and not is_tensor(first) and first ~= opts then
    return opts, fill_sizes(op, sizebuf, first)
  end
  if n > 8 then error(op .. ": at most 8 dimensions, got " .. n, 0) end
  for i = 1, n do sizebuf[i - 1] = int_arg(op, "sizes", (select(i, ...))) end
  return opts, n
end

function T.empty(...)
  local opts, nd = sized("empty", ...)
  local dt, dev = opts_dtype_device("empty", opts)
  return created(own(C.nnr_empty(dt, nd, sizebuf, dev), C.nnr_empty, dt, nd, sizebuf, dev), opts)
end

function T.full(size, value, opts)
  local nd = fill_sizes("full", sizebuf, size)
  value = fill_value("full", value)
  local dt, dev = opts_dtype_device("full", opts)
  return created(own(C.nnr_full(dt, nd, sizebuf, value, dev), C.nnr_full, dt, nd, sizebuf, value, dev), opts)
end

function T.zeros(...)
  local opts, nd = sized("zeros", ...)
  local dt, dev = opts_dtype_device("zeros", opts)
  return created(own(C.nnr_full(dt, nd, sizebuf, 0, dev), C.nnr_full, dt, nd, sizebuf, 0, dev), opts)
end

function T.ones(...)
  local opts, nd = sized("ones", ...)
  local dt, dev = opts_dtype_device("ones", opts)
  return created(own(C.nnr_full(dt, nd, sizebuf, 1, dev), C.nnr_full, dt, nd, sizebuf, 1, dev), opts)
end

-- the *_like creations: t's sizes into sizebuf, and t's dtype and device unless opts give them (options
-- checked as the other creations check theirs: a misspelt or unknown one is an error, requires_grad
-- applies)
local function like(op, t, opts)
  if not is_tensor(t) then error(op .. ": expected a tensor to take the shape of, got " .. type(t), 0) end
  local dt, dev = opts_dtype_device(op, opts, C.nnr_tensor_dtype(t.p), C.nnr_tensor_device(t.p))
  local nd = C.nnr_tensor_ndim(t.p)
  for i = 0, nd - 1 do sizebuf[i] = C.nnr_tensor_size(t.p, i) end
  return dt, nd, dev
end
function T.zeros_like(t, opts)
  local dt, nd, dev = like("zeros_like", t, opts)
  return created(call(C.nnr_full, dt, nd, sizebuf, 0, dev), opts)
end
function T.ones_like(t, opts)
  local dt, nd, dev = like("ones_like", t, opts)
  return created(call(C.nnr_full, dt, nd, sizebuf, 1, dev), opts)
end
function T.empty_like(t, opts)
  local dt, nd, dev = like("empty_like", t, opts)
  return created(call(C.nnr_empty, dt, nd, sizebuf, dev), opts)
end
function T.full_like(t, v, opts)
  v = fill_value("full_like", v)
  local dt, nd, dev = like("full_like", t, opts)
  return created(call(C.nnr_full, dt, nd, sizebuf, v, dev), opts)
end

function T.arange(a, b, c, d)
  local opts
  if type(b) == "table" then opts, b = b, nil elseif type(c) == "table" then opts, c = c, nil elseif type(d) == "table" then opts = d end
  local start, stop, step = a, b, c or 1
  if stop == nil then start, stop = 0, a end
  local dt, dev = opts_dtype_device("arange", opts)
  return created(call(C.nnr_arange, start, stop, step, dt, dev), opts)
end

function T.linspace(a, b, steps, opts)
  local dt, dev = opts_dtype_device("linspace", opts)
  return created(call(C.nnr_linspace, a, b, int_arg("linspace", "steps", steps or 100), dt, dev), opts)
end

function T.eye(n, m, opts)
  if type(m) == "table" then opts, m = m, nil end
  local dt, dev = opts_dtype_device("eye", opts)
  int_arg("eye", "n", n)
  if n < 0 or (m ~= nil and int_arg("eye", "m", m) < 0) then
    error("eye: negative size (n " .. tostring(n) .. (m ~= nil and ", m " .. tostring(m) or "") .. "; sizes must be >= 0)", 0)
  end
  return created(call(C.nnr_eye, n, m or -1, dt, dev), opts)
end

local function random(kind, op, a, b, ...)
  local opts, nd = sized(op, ...)
  local dt, dev = opts_dtype_device(op, opts, kind == C.NNR_OP_RAND_INT and C.NNR_I64 or nil)
  return created(call(C.nnr_random, kind, dt, nd, sizebuf, a, b, dev), opts)
end
function T.rand(...) return random(C.NNR_OP_RAND_UNIFORM, "rand", 0, 1, ...) end
function T.randn(...) return random(C.NNR_OP_RAND_NORMAL, "randn", 0, 1, ...) end
function T.randint(low, high, ...)
  if type(high) ~= "number" then -- randint(high, size)
    return random(C.NNR_OP_RAND_INT, "randint", 0, low, high, ...)
  end
  return random(C.NNR_OP_RAND_INT, "randint", low, high, ...)
end
-- random tensors shaped as t (its dtype and device unless opts give them): PyTorch's rand_like,
-- randn_like and randint_like(t[, low], high[, opts])
function T.rand_like(t, opts)
  local dt, nd, dev = like("rand_like", t, opts)
  return created(call(C.nnr_random, C.NNR_OP_RAND_UNIFORM, dt, nd, sizebuf, 0, 1, dev), opts)
end
function T.randn_like(t, opts)
  local dt, nd, dev = like("randn_like", t, opts)
  return created(call(C.nnr_random, C.NNR_OP_RAND_NORMAL, dt, nd, sizebuf, 0, 1, dev), opts)
end
function T.randint_like(t, low, high, opts)
  if type(high) ~= "number" then low, high, opts = 0, low, high end
  if type(low) ~= "number" or type(high) ~= "number" then
    error("randint_like: expected (t, high) or (t, low, high), got " .. type(low) .. " and " .. type(high), 0)
  end
  local dt, nd, dev = like("randint_like", t, opts)
  return created(call(C.nnr_random, C.NNR_OP_RAND_INT, dt, nd, sizebuf, low, high, dev), opts)
end
-- a seed is a whole number in [0, 2^53] (a Lua number holds those exactly)
function T.manual_seed(seed) C.nnr_manual_seed(V.integer("manual_seed", "seed", seed, 0)) end
function T.get_rng_state() return { seed = tonumber(C.nnr_rng_seed()), offset = tonumber(C.nnr_rng_offset()) } end
function T.set_rng_state(s)
  if type(s) ~= "table" then error("set_rng_state: expected the table get_rng_state() returns", 0) end
  C.nnr_rng_set_state(V.integer("set_rng_state", "seed", s.seed, 0), V.integer("set_rng_state", "offset", s.offset, 0))
end

-- a copy cut from the graph (nnr.tensor(t) makes new data, as torch.tensor does)
local function nnr_no_grad_clone(t)
  local prev = C.nnr_set_grad_enabled(0)
  local ok, r = pcall(methods.clone, t)
  C.nnr_set_grad_enabled(prev)
  if not ok then error(r, 0) end
  return r
end

-- nnr.tensor{...}: nested tables of numbers or booleans
function T.tensor(data, opts)
  if is_tensor(data) then
    local dt, dev = opts_dtype_device("tensor", opts, C.nnr_tensor_dtype(data.p))
    local copy = nnr_no_grad_clone(call(C.nnr_to, data.p, dt, opts and opts.device and dev or C.nnr_tensor_device(data.p)))
    return created(copy, opts)
  end
  local shape, flat, n, allbool = {}, {}, 0, true
  local leaf       -- the depth numbers live at: every number there, every table above it
  local function walk(x, depth)
    if type(x) == "table" and not is_tensor(x) then
      if leaf and depth >= leaf then
        error("tensor: ragged nested table: a table where a number was expected at depth " .. depth, 0)
      end
      local len = #x
      local keys = 0
      for _ in pairs(x) do keys = keys + 1 end
      if keys ~= len then
        error("tensor: a nested table must be a list (keys 1..n without holes); one at depth " .. depth .. " has " .. keys ..
          " keys and length " .. len, 0)
      end
      if shape[depth] == nil then
        if depth > 8 then error("tensor: more than 8 levels of nesting", 0) end
        shape[depth] = len
      elseif shape[depth] ~= len then
        error("tensor: ragged nested table: a row at depth " .. depth .. " has " .. len .. " elements, expected " .. shape[depth], 0)
      end
      for i = 1, len do walk(x[i], depth + 1) end
      if len == 0 then
        for d = depth + 1, #shape do if shape[d] ~= 0 then error("tensor: ragged nested table", 0) end end
      end
    elseif type(x) == "number" or type(x) == "boolean" then
      if shape[depth] ~= nil or (depth <= #shape) or (leaf and depth ~= leaf) then
        error("tensor: ragged nested table: a number where a table was expected at depth " .. depth, 0)
      end
      leaf = depth
      n = n + 1
      if type(x) == "boolean" then flat[n] = x and 1 or 0 else flat[n] = x; allbool = false end
    else
      error("tensor: expected numbers, booleans or nested tables, got " .. type(x), 0)
    end
  end
  walk(data, 1)
  local values = ffi.new("double[?]", n > 0 and n or 1)
  for i = 1, n do values[i - 1] = flat[i] end
  for i = 1, #shape do sizebuf[i - 1] = shape[i] end
  local default = (allbool and n > 0) and C.NNR_BOOL or nil
  local dt, dev = opts_dtype_device("tensor", opts, default)
  return created(call(C.nnr_from_doubles, values, n, dt, #shape, sizebuf, dev), opts)
end

-- metadata -----------------------------------------------------------------------
function methods.dim(t) return C.nnr_tensor_ndim(t.p) end
methods.ndimension = methods.dim
function methods.numel(t) return tonumber(C.nnr_tensor_numel(t.p)) end
methods.nelement = methods.numel
function methods.size(t, d)
  if d == nil then return setmetatable(sizes_of(t), { __tostring = shape_str }) end
  return tonumber(C.nnr_tensor_size(t.p, cdim("size", t, d)))
end
function methods.stride(t, d)
  if d == nil then
    local s = {}
    for i = 1, C.nnr_tensor_ndim(t.p) do s[i] = tonumber(C.nnr_tensor_stride(t.p, i - 1)) end
    return s
  end
  return tonumber(C.nnr_tensor_stride(t.p, cdim("stride", t, d)))
end
function methods.storage_offset(t) return tonumber(C.nnr_tensor_offset(t.p)) end
function methods.is_contiguous(t) return C.nnr_tensor_is_contiguous(t.p) ~= 0 end
function methods.type(t) return dtype_names[C.nnr_tensor_dtype(t.p)] end
-- page-locked host memory (from the cuda plugin when present) for asynchronous copies to a device
function methods.pin_memory(t) return call(C.nnr_pin_memory, t.p) end
function methods.is_pinned(t) return C.nnr_tensor_is_pinned(t.p) ~= 0 end
function methods.data_ptr(t) return C.nnr_tensor_data(t.p) end
function methods.is_floating_point(t) return C.nnr_tensor_dtype(t.p) <= C.NNR_BF16 end
function methods.same_storage(t, o) return C.nnr_tensor_same_storage(tp("same_storage", t, "self"), tp("same_storage", o, "other")) ~= 0 end

local props = {
  grad = function(t)
    local g = C.nnr_grad(t.p)
    if g == nil then return nil end
    return own(g)
  end,
  requires_grad = function(t) return C.nnr_requires_grad(t.p) ~= 0 end,
  is_leaf = function(t) return C.nnr_is_leaf(t.p) ~= 0 end,
  grad_fn = function(t)
    local name = C.nnr_grad_fn_name(t.p)
    if name == nil then return nil end
    return ffi.string(name)
  end,
  shape = function(t) return methods.size(t) end,
  dtype = function(t) return dtype_names[C.nnr_tensor_dtype(t.p)] end,
  device = function(t) return ffi.string(C.nnr_device_name(C.nnr_tensor_device(t.p))) end,
  ndim = function(t) return C.nnr_tensor_ndim(t.p) end,
}

-- conversions ---------------------------------------------------------------------
-- t:to("f64"), t:to("cuda:0"), t:to("cuda", "f16"), t:to{dtype=, device=}
function methods.to(t, a, b)
  local dt, dev = C.nnr_tensor_dtype(t.p), C.nnr_tensor_device(t.p)
  local function take(x)
    if x == nil then return end
    if type(x) == "table" and not x.id then
      if x.dtype then dt = dtype_id(x.dtype, "to") end
      if x.device then dev = device_id(x.device, "to") end
    elseif binding.is_dtype(x) then dt = dtype_id(x, "to")
    else dev = device_id(x, "to") end
  end
  take(a); take(b)
  return call(C.nnr_to, t.p, dt, dev)
end
local function caster(name) return function(t) return call(C.nnr_to, t.p, dtype_id(name), C.nnr_tensor_device(t.p)) end end
methods.float, methods.double, methods.half, methods.bfloat16 = caster("f32"), caster("f64"), caster("f16"), caster("bf16")
methods.long, methods.int, methods.byte, methods.char, methods.bool = caster("i64"), caster("i32"), caster("u8"), caster("i8"), caster("bool")
function methods.cpu(t) return call(C.nnr_to, t.p, C.nnr_tensor_dtype(t.p), 0) end
function methods.cuda(t, i) return methods.to(t, "cuda:" .. (i or 0)) end

function methods.item(t)
  check(C.nnr_item(t.p, dbl))
  local v = dbl[0]
  if C.nnr_tensor_dtype(t.p) == C.NNR_BOOL then return v ~= 0 end
  return v
end

function methods.totable(t)
  local n = tonumber(C.nnr_tensor_numel(t.p))
  if n > 2 ^ 31 then error("totable: " .. n .. " elements are too many for Lua tables (at most 2^31)", 0) end
  local buf = ffi.new("double[?]", n > 0 and n or 1)
  check(C.nnr_to_doubles(t.p, buf, n))
  local sizes = sizes_of(t)
  local isbool = C.nnr_tensor_dtype(t.p) == C.NNR_BOOL
  local pos = 0
  local function build(d)
    if d > #sizes then
      local v = buf[pos]; pos = pos + 1
      if isbool then return v ~= 0 end
      return v
    end
    local r = {}
    for i = 1, sizes[d] do r[i] = build(d + 1) end
    return r
  end
  if #sizes == 0 then return build(1) end
  return build(1)
end

-- views ------------------------------------------------------------------------------
function methods.view(t, ...)
  local nd = fill_sizes("view", sizebuf, ...)
  return call(C.nnr_view, t.p, nd, sizebuf)
end
function methods.reshape(t, ...)
  local nd = fill_sizes("reshape", sizebuf, ...)
  return call(C.nnr_reshape, t.p, nd, sizebuf)
end
function methods.view_as(t, o) tp("view_as", o, "other"); return methods.view(t, sizes_of(o)) end
function methods.permute(t, ...)
  local dims = type((...)) == "table" and (...) or { ... }
  local nd = C.nnr_tensor_ndim(t.p)
  if #dims ~= nd then error("permute: " .. #dims .. " dimensions given for a tensor of shape " .. shape_str(sizes_of(t)), 0) end
  for i = 1, #dims do intbuf[i - 1] = cdim("permute", t, dims[i]) end
  return call(C.nnr_permute, t.p, #dims, intbuf)
end
function methods.transpose(t, a, b)
  return call(C.nnr_transpose, t.p, cdim("transpose", t, a), cdim("transpose", t, b))
end
function methods.t(t)
  local nd = C.nnr_tensor_ndim(t.p)
  if nd > 2 then error("t: expects a tensor with at most 2 dimensions, got shape " .. shape_str(sizes_of(t)), 0) end
  if nd < 2 then
    for i = 0, nd - 1 do sizebuf[i] = C.nnr_tensor_size(t.p, i) end     -- the tensor's own shape, as a view
    return call(C.nnr_view, t.p, nd, sizebuf)
  end
  return call(C.nnr_transpose, t.p, 0, 1)
end
-- narrow(dim, start, length): start is 1-based
function methods.narrow(t, d, start, length)
  local cd = cdim("narrow", t, d)
  local size = tonumber(C.nnr_tensor_size(t.p, cd))
  int_arg("narrow", "start", start); int_arg("narrow", "length", length)
  local s = start < 0 and start + size + 1 or start
  if start == 0 then error("narrow: start 0 is invalid (indices are 1-based)", 0) end
  return call(C.nnr_narrow, t.p, cd, s - 1, length)
end
function methods.select(t, d, i)
  local cd = cdim("select", t, d)
  return call(C.nnr_select, t.p, cd, cindex("select", i, tonumber(C.nnr_tensor_size(t.p, cd)), cd + 1))
end
function methods.expand(t, ...)
  local nd = fill_sizes("expand", sizebuf, ...)
  return call(C.nnr_expand, t.p, nd, sizebuf)
end
function methods.expand_as(t, o) tp("expand_as", o, "other"); return methods.expand(t, sizes_of(o)) end
function methods.squeeze(t, d)
  if d == nil then return call(C.nnr_squeeze, t.p, -1) end
  return call(C.nnr_squeeze, t.p, cdim("squeeze", t, d))
end
function methods.unsqueeze(t, d) return call(C.nnr_unsqueeze, t.p, cdim("unsqueeze", t, d, 1)) end
function methods.flatten(t, a, b)
  if C.nnr_tensor_ndim(t.p) == 0 then return call(C.nnr_flatten, t.p, 0, 0) end
  return call(C.nnr_flatten, t.p, cdim("flatten", t, a or 1), cdim("flatten", t, b or -1))
end
function methods.contiguous(t) return call(C.nnr_contiguous, t.p) end
function methods.clone(t) return call(C.nnr_clone, t.p) end

-- autograd ---------------------------------------------------------------------------------
function methods.requires_grad_(t, flag)
  if flag == nil then flag = true end
  check(C.nnr_requires_grad_(t.p, flag and 1 or 0))
  return t
end
-- t:backward([grad][, retain_graph]) or t:backward{grad = g, retain_graph = true}
function methods.backward(t, grad, retain_graph)
  if type(grad) == "table" and not is_tensor(grad) then grad, retain_graph = grad.grad, grad.retain_graph end
  if type(grad) == "boolean" then grad, retain_graph = nil, grad end
  check(C.nnr_backward(tp("backward", t, "self"), grad ~= nil and tp("backward", grad, "gradient") or nil, retain_graph and 1 or 0))
end
function methods.detach(t) return call(C.nnr_detach, t.p) end
-- t takes src's data, shape, dtype and device, in place: every reference to
-- t sees the new data (what module:to() uses, as PyTorch's param.data = src)
function methods.set_data_(t, src)
  local d = C.nnr_detach(tp("set_data_", src, "source"))
  if d == nil then binding.raise() end
  if C.nnr_requires_grad(t.p) ~= 0 and C.nnr_requires_grad_(d, 1) ~= 0 then
    C.nnr_tensor_release(d); binding.raise()
  end
  local old = t.p
  t.p = d
  C.nnr_tensor_release(old)
  return t
end
function methods.retain_grad(t) check(C.nnr_retain_grad(t.p)); return t end

-- in-place writes ----------------------------------------------------------------------
function methods.copy_(t, src)
  if type(src) == "number" or type(src) == "boolean" or (type(src) == "table" and not is_tensor(src)) then
    src = T.tensor(src, { dtype = dtype_names[C.nnr_tensor_dtype(t.p)] })
  end
  check(C.nnr_copy_(t.p, tp("copy_", src, "source"))); return t
end
function methods.fill_(t, v)
  if type(v) == "boolean" then v = v and 1 or 0 end
  if is_tensor(v) then v = methods.item(v) end
  if type(v) ~= "number" then error("fill_: value must be a number, a boolean or a one-element tensor, got " .. type(v), 0) end
  check(C.nnr_fill_(t.p, v)); return t
end
function methods.zero_(t) check(C.nnr_fill_(t.p, 0)); return t end
function methods.uniform_(t, a, b) check(C.nnr_random_(t.p, C.NNR_OP_RAND_UNIFORM, a or 0, b or 1)); return t end
function methods.normal_(t, mean, std) check(C.nnr_random_(t.p, C.NNR_OP_RAND_NORMAL, mean or 0, std or 1)); return t end

-- elementwise ---------------------------------------------------------------------------
local OP = {
  neg = C.NNR_OP_NEG, abs = C.NNR_OP_ABS, exp = C.NNR_OP_EXP, log = C.NNR_OP_LOG, sqrt = C.NNR_OP_SQRT,
  tanh = C.NNR_OP_TANH, sigmoid = C.NNR_OP_SIGMOID, relu = C.NNR_OP_RELU, sin = C.NNR_OP_SIN, cos = C.NNR_OP_COS,
  sign = C.NNR_OP_SIGN, reciprocal = C.NNR_OP_RECIPROCAL, logical_not = C.NNR_OP_LOGICAL_NOT, erf = C.NNR_OP_ERF, gelu = C.NNR_OP_GELU,
  add = C.NNR_OP_ADD, sub = C.NNR_OP_SUB, mul = C.NNR_OP_MUL, div = C.NNR_OP_DIV, pow = C.NNR_OP_POW,
  maximum = C.NNR_OP_MAXIMUM, minimum = C.NNR_OP_MINIMUM, eq = C.NNR_OP_EQ, ne = C.NNR_OP_NE,
  lt = C.NNR_OP_LT, le = C.NNR_OP_LE, gt = C.NNR_OP_GT, ge = C.NNR_OP_GE,
  logical_and = C.NNR_OP_LOGICAL_AND, logical_or = C.NNR_OP_LOGICAL_OR,
}
T.ops = OP

local binary, binary_scalar, binary_ = C.nnr_binary, C.nnr_binary_scalar, C.nnr_binary_
local function opname(op) return ffi.string(C.nnr_op_name(op)) end
local function arith(op, a, b)
  -- the common cases first, with nothing but type tests (the op's name is looked up for errors only)
  local ta, tb = is_tensor(a), is_tensor(b)
  if ta and tb then return call(binary, op, a.p, b.p) end
  if ta and type(b) == "number" then return call(binary_scalar, op, a.p, b, 0) end
  if tb and type(a) == "number" then return call(binary_scalar, op, b.p, a, 1) end
  if type(b) == "boolean" then b = b and 1 or 0 end
  if type(a) == "boolean" then a = a and 1 or 0 end
  if type(b) == "number" then return call(binary_scalar, op, tp(opname(op), a, "input (a tensor or a number)"), b, 0) end
  if type(a) == "number" then return call(binary_scalar, op, tp(opname(op), b, "other (a tensor or a number)"), a, 1) end
  return call(binary, op, tp(opname(op), a, "input (a tensor or a number)"), tp(opname(op), b, "other (a tensor or a number)"))
end
T.arith = arith

for name, op in pairs(OP) do
  if C.nnr_op_category(op) == C.NNR_OPCAT_UNARY then
    methods[name] = function(t) return call(C.nnr_unary, op, t.p) end
    methods[name .. "_"] = function(t) check(C.nnr_unary_(op, t.p)); return t end
  else
    methods[name] = function(a, b) return arith(op, a, b) end
    local iname = name .. "_"
    methods[iname] = function(a, b)
      if type(b) == "boolean" then b = b and 1 or 0 end
      local ap = tp(iname, a, "self")
      if type(b) == "number" then check(C.nnr_binary_scalar_(op, ap, b)) else check(binary_(op, ap, tp(iname, b, "other (a tensor or a number)"))) end
      return a
    end
  end
  T[name] = methods[name]
end
methods.negative = methods.neg
methods.subtract, methods.multiply, methods.divide = methods.sub, methods.mul, methods.div
T.mul, T.div = methods.mul, methods.div

-- out-variant for benchmarks and fused loops: nnr.add(a, b, {out=c}) style
function T.binary_out(op, a, b, out)
  local name = type(op) == "string" and op or "binary_out"
  check(C.nnr_binary_out(OP[op] or op, tp(name, a, "input"), tp(name, b, "other"), tp(name, out, "out")))
  return out
end

mt.__add = function(a, b) return arith(OP.add, a, b) end
mt.__sub = function(a, b) return arith(OP.sub, a, b) end
mt.__mul = function(a, b) return arith(OP.mul, a, b) end
mt.__div = function(a, b) return arith(OP.div, a, b) end
mt.__pow = function(a, b) return arith(OP.pow, a, b) end
mt.__unm = function(a) return call(C.nnr_unary, OP.neg, a.p) end

local function bound(op, v, what)
  if v ~= nil and (type(v) ~= "number" or v ~= v) then
    error(op .. ": " .. what .. " must be a number or nil, got " .. (v ~= v and "nan" or type(v)), 0)
  end
  return v
end
function methods.clamp(t, lo, hi)
  bound("clamp", lo, "min"); bound("clamp", hi, "max")
  if lo == nil and hi == nil then error("clamp: at least one of min and max must be given", 0) end
  local flags = (lo and 1 or 0) + (hi and 2 or 0)
  return call(C.nnr_clamp, t.p, lo or 0, hi or 0, flags)
end
function methods.clamp_(t, lo, hi)
  bound("clamp_", lo, "min"); bound("clamp_", hi, "max")
  if lo == nil and hi == nil then error("clamp_: at least one of min and max must be given", 0) end
  check(C.nnr_clamp_(t.p, lo or 0, hi or 0, (lo and 1 or 0) + (hi and 2 or 0))); return t
end
methods.clip = methods.clamp

function T.where(cond, a, b)
  local ta, tb = is_tensor(a), is_tensor(b)
  tp("where", cond, "condition")
  if ta and tb then return call(C.nnr_where, cond.p, a.p, b.p) end
  if type(a) == "boolean" and type(b) == "boolean" then      -- two booleans give a bool tensor, as PyTorch
    return methods.bool(T.where(cond, a and 1 or 0, b and 1 or 0))
  end
  local function num(x, what)
    if type(x) == "boolean" then return x and 1 or 0 end
    if type(x) ~= "number" then error("where: " .. what .. " must be a tensor or a number, got " .. type(x), 0) end
    return x
  end
  return call(C.nnr_where_scalar, cond.p, ta and a.p or nil, ta and 0 or num(a, "a"), tb and b.p or nil, tb and 0 or num(b, "b"))
end
function methods.where(t, cond, other) return T.where(cond, t, other) end

function methods.masked_fill(t, mask, v)
  if type(v) == "boolean" then v = v and 1 or 0 end
  return call(C.nnr_masked_fill, t.p, tp("masked_fill", mask, "mask"), v)
end
function methods.masked_fill_(t, mask, v)
  if type(v) == "boolean" then v = v and 1 or 0 end
  check(C.nnr_masked_fill_(t.p, tp("masked_fill_", mask, "mask"), v)); return t
end

-- reductions -------------------------------------------------------------------------------
local function dims_of(op, t, dim)
  if dim == nil then return 0 end
  if type(dim) == "table" then
    if #dim > 8 then error(op .. ": " .. #dim .. " dimensions listed, a tensor has at most 8", 0) end
    for i = 1, #dim do intbuf[i - 1] = cdim(op, t, dim[i]) end
    return #dim
  end
  intbuf[0] = cdim(op, t, dim)
  return 1
end

local function reducer(name, op)
  return function(t, dim, keepdim)
    local n = dims_of(name, t, dim)
    return call(C.nnr_reduce, op, t.p, n, intbuf, keepdim and 1 or 0, 0)
  end
end
methods.sum = reducer("sum", C.NNR_OP_SUM)
methods.prod = reducer("prod", C.NNR_OP_PROD)
methods.mean = reducer("mean", C.NNR_OP_MEAN)

-- argmax/argmin give 1-based indices
local function arg_reducer(name, op)
  return function(t, dim, keepdim)
    local n = dims_of(name, t, dim)
    local r = call(C.nnr_reduce, op, t.p, n, intbuf, keepdim and 1 or 0, 0)
    check(C.nnr_binary_scalar_(OP.add, r.p, 1))
    return r
  end
end
methods.argmax = arg_reducer("argmax", C.NNR_OP_ARGMAX)
methods.argmin = arg_reducer("argmin", C.NNR_OP_ARGMIN)

-- max(): the maximum; max(dim[, keepdim]): values and 1-based indices; max(tensor): elementwise
local function extreme(name, vop, aop, eop)
  local amax = arg_reducer("arg" .. name, aop)
  return function(t, dim, keepdim)
    if is_tensor(dim) or type(dim) == "number" and dim ~= floor(dim) then return arith(eop, t, dim) end
    local n = dims_of(name, t, dim)
    local v = call(C.nnr_reduce, vop, t.p, n, intbuf, keepdim and 1 or 0, 0)
    if dim == nil then return v end
    return v, amax(t, dim, keepdim)
  end
end
methods.max = extreme("max", C.NNR_OP_MAX, C.NNR_OP_ARGMAX, OP.maximum)
methods.min = extreme("min", C.NNR_OP_MIN, C.NNR_OP_ARGMIN, OP.minimum)

-- var/std: correction 1 (unbiased) unless given
function methods.var(t, dim, keepdim, correction)
  if correction ~= nil then V.integer("var", "correction", correction, 0) end
  local n = dims_of("var", t, dim)
  return call(C.nnr_reduce, C.NNR_OP_VAR, t.p, n, intbuf, keepdim and 1 or 0, correction or 1)
end
function methods.std(t, dim, keepdim, correction)
  return own(C.nnr_unary(OP.sqrt, methods.var(t, dim, keepdim, correction).p))
end

function methods.softmax(t, dim) return call(C.nnr_softmax, t.p, cdim("softmax", t, dim or -1), 0) end
function methods.log_softmax(t, dim) return call(C.nnr_softmax, t.p, cdim("log_softmax", t, dim or -1), 1) end
for _, k in ipairs { "sum", "prod", "mean", "argmax", "argmin", "max", "min", "var", "std", "softmax", "log_softmax" } do
  T[k] = methods[k]
end

-- sorting, scans, rounding, tests and sampling (core/ops/sort.c, scan.c, unary.c, reduce.c, random.c) ------------
-- indices in and out are 1-based; every option is checked (nnr.check), none is ignored
local ixbuf = ffi.new("nnr_tensor *[1]")

-- values and indices from a C call that returns the values and writes the indices to ixbuf[0]
local function with_indices(v)
  if v == nil then binding.raise() end
  local values, indices = own(v), own(ixbuf[0])
  -- out of place: the 0-based indices may be saved for the backward
  return values, call(C.nnr_binary_scalar, OP.add, indices.p, 1, 0)
end

-- the dim of a sort-like op: 1-based or negative; a 0-d tensor takes 1 or -1 (its one element)
local function sort_dim(op, t, d)
  if d == nil then d = -1 end
  if C.nnr_tensor_ndim(t.p) == 0 then
    if d ~= 1 and d ~= -1 then error(op .. ": dimension " .. tostring(d) .. " is out of range for a 0-dimensional tensor (expected 1 or -1)", 0) end
    return 0
  end
  return cdim(op, t, d)
end

local sort_options = { dim = true, descending = true, stable = true }
-- t:sort([dim[, descending]]) or t:sort{dim =, descending =, stable =}: values and 1-based indices.
-- Always stable (stable = false allows any order of equal elements; the stable one is among them).
local function sort_args(op, t, dim, descending)
  if type(dim) == "table" then
    if descending ~= nil then error(op .. ": give the options table alone, or dim and descending", 0) end
    local o = V.options(op, dim, sort_options)
    V.boolean(op, "stable", o.stable)
    dim, descending = o.dim, o.descending
  end
  if dim ~= nil then int_arg(op, "dim", dim) end
  return sort_dim(op, t, dim), V.boolean(op, "descending", descending) and 1 or 0
end
function methods.sort(t, dim, descending)
  local d, desc = sort_args("sort", t, dim, descending)
  return with_indices(C.nnr_sort(tp("sort", t, "self"), d, desc, ixbuf))
end
function methods.argsort(t, dim, descending)
  local d, desc = sort_args("argsort", t, dim, descending)
  local _, indices = with_indices(C.nnr_sort(tp("argsort", t, "self"), d, desc, ixbuf))
  return indices
end

local topk_options = { dim = true, largest = true, sorted = true }
-- t:topk(k[, dim[, largest[, sorted]]]) or t:topk(k, {dim =, largest =, sorted =}): the k largest (or
-- smallest) along dim (default the last) and their 1-based indices, always in sorted order (sorted =
-- false allows any order; this one is among them); equal values: the lower index first
function methods.topk(t, k, dim, largest, sorted)
  int_arg("topk", "k", k)
  if type(dim) == "table" then
    if largest ~= nil or sorted ~= nil then error("topk: give k and the options table alone, or k, dim, largest and sorted", 0) end
    local o = V.options("topk", dim, topk_options)
    dim, largest, sorted = o.dim, o.largest, o.sorted
  end
  if largest == nil then largest = true end
  V.boolean("topk", "largest", largest)
  V.boolean("topk", "sorted", sorted)
  if dim ~= nil then int_arg("topk", "dim", dim) end
  return with_indices(C.nnr_topk(tp("topk", t, "self"), k, sort_dim("topk", t, dim), largest and 1 or 0, ixbuf))
end

-- cumsum(dim[, {dtype =}]), cumprod(dim[, {dtype =}]): integers and bool give i64, as PyTorch;
-- dtype casts the input first (as PyTorch's dtype argument)
local scan_options = { dtype = true }
local function scan_args(op, t, dim, opts)
  tp(op, t, "self")
  if dim == nil then error(op .. ": dim is required (cumulative ops take the dimension to run along)", 0) end
  int_arg(op, "dim", dim)
  local d = sort_dim(op, t, dim)
  if opts ~= nil and V.options(op, opts, scan_options).dtype ~= nil then
    t = call(C.nnr_to, t.p, dtype_id(opts.dtype, op), C.nnr_tensor_device(t.p))
  end
  return t, d
end
function methods.cumsum(t, dim, opts)
  local x, d = scan_args("cumsum", t, dim, opts)
  return call(C.nnr_cumsum, x.p, d)
end
function methods.cumprod(t, dim, opts)
  local x, d = scan_args("cumprod", t, dim, opts)
  return call(C.nnr_cumprod, x.p, d)
end

-- floor, ceil, round, trunc (and their in-place forms): the dtype kept, integers unchanged, gradient 0
for _, name in ipairs { "floor", "ceil", "round", "trunc" } do
  local op = C["NNR_OP_" .. name:upper()]
  OP[name] = op
  methods[name] = function(t) return call(C.nnr_unary, op, tp(name, t, "self")) end
  methods[name .. "_"] = function(t) check(C.nnr_unary_(op, tp(name .. "_", t, "self"))); return t end
end
-- round(decimals) or round{decimals =}: half to even, as PyTorch (x * 10^d rounded, divided back)
local round0, round0_ = methods.round, methods.round_
local round_options = { decimals = true }
local function decimals_of(op, d)
  if type(d) == "table" then d = V.options(op, d, round_options).decimals end
  if d == nil then return 0 end
  return V.integer(op, "decimals", d, -300, 300)
end
function methods.round(t, decimals)
  local d = decimals_of("round", decimals)
  if d == 0 then return round0(t) end
  if not methods.is_floating_point(t) then error("round: decimals needs a floating-point tensor, got " .. dtype_names[C.nnr_tensor_dtype(t.p)], 0) end
  if d > 0 then return arith(OP.div, round0(arith(OP.mul, t, 10 ^ d)), 10 ^ d) end
  return arith(OP.mul, round0(arith(OP.div, t, 10 ^ -d)), 10 ^ -d)
end
function methods.round_(t, decimals)
  if decimals_of("round_", decimals) == 0 then return round0_(t) end
  return methods.copy_(t, methods.round(t, decimals))
end

-- isnan, isinf, isfinite: bool tensors (integers are never NaN or infinite)
for _, name in ipairs { "isnan", "isinf", "isfinite" } do
  local op = C["NNR_OP_" .. name:upper()]
  methods[name] = function(t) return call(C.nnr_unary, op, tp(name, t, "self")) end
end

-- any(), all(): over everything; any(dim[, keepdim]), all(dim[, keepdim]) with dim a number or a list; bool out
local function logical_reducer(name, op)
  return function(t, dim, keepdim)
    tp(name, t, "self")
    if C.nnr_tensor_ndim(t.p) == 0 and dim ~= nil then sort_dim(name, t, dim); dim = nil end
    local n = dims_of(name, t, dim)
    return call(C.nnr_reduce, op, t.p, n, intbuf, V.boolean(name, "keepdim", keepdim) and 1 or 0, 0)
  end
end
methods.any = logical_reducer("any", C.NNR_OP_ANY)
methods.all = logical_reducer("all", C.NNR_OP_ALL)

-- sampling from the one generator (nnr.manual_seed): the same numbers on every backend
-- nnr.bernoulli(p): 1 with probability p (a float tensor of probabilities), else 0, p's shape and dtype;
-- t:bernoulli([p]): with a number p, t's shape and dtype; t:bernoulli_([p]) in place (p a number or a
-- tensor broadcast to t, default 0.5)
function methods.bernoulli(t, p)
  tp("bernoulli", t, "input")
  if p == nil then return call(C.nnr_bernoulli, t.p) end
  V.probability("bernoulli", "p", p, true)
  local r = T.empty_like(t)
  check(C.nnr_bernoulli_(r.p, nil, p))
  return r
end
function methods.bernoulli_(t, p)
  tp("bernoulli_", t, "self")
  if p == nil then p = 0.5 end
  if is_tensor(p) then check(C.nnr_bernoulli_(t.p, p.p, 0)); return t end
  V.probability("bernoulli_", "p", p, true)
  check(C.nnr_bernoulli_(t.p, nil, p))
  return t
end
-- nnr.multinomial(probs, n[, replacement]): n 1-based category indices per row of probs (1-d or 2-d
-- non-negative weights, each row with a positive sum), i64
function methods.multinomial(probs, n, replacement)
  tp("multinomial", probs, "probs")
  V.integer("multinomial", "num_samples", n, 1)
  local r = call(C.nnr_multinomial, probs.p, n, V.boolean("multinomial", "replacement", replacement) and 1 or 0)
  check(C.nnr_binary_scalar_(OP.add, r.p, 1))
  return r
end
-- nnr.randperm(n[, {dtype =, device =, requires_grad =}]): a random permutation of 1..n (i64 unless asked)
function T.randperm(n, opts)
  V.integer("randperm", "n", n, 0)
  local dt, dev = opts_dtype_device("randperm", opts, C.NNR_I64)
  local r = call(C.nnr_randperm, n, dev)
  check(C.nnr_binary_scalar_(OP.add, r.p, 1))
  if dt ~= C.NNR_I64 then r = call(C.nnr_to, r.p, dt, dev) end
  return created(r, opts)
end

for _, k in ipairs { "sort", "argsort", "topk", "cumsum", "cumprod", "floor", "ceil", "round", "trunc", "isnan", "isinf", "isfinite",
                     "any", "all", "bernoulli", "multinomial" } do
  T[k] = methods[k]
end

-- linear algebra and indexing ------------------------------------------------------------------
function methods.matmul(a, b) return call(C.nnr_matmul, tp("matmul", a, "input"), tp("matmul", b, "other")) end
function methods.mm(a, b) return call(C.nnr_mm, tp("mm", a, "input"), tp("mm", b, "other")) end
function methods.bmm(a, b) return call(C.nnr_bmm, tp("bmm", a, "input"), tp("bmm", b, "other")) end
function methods.dot(a, b)
  tp("dot", a, "input"); tp("dot", b, "other")
  if C.nnr_tensor_ndim(a.p) ~= 1 or C.nnr_tensor_ndim(b.p) ~= 1 then
    error("dot: expected two 1-d tensors, got shapes " .. shape_str(sizes_of(a)) .. " and " .. shape_str(sizes_of(b)), 0)
  end
  return call(C.nnr_matmul, a.p, b.p)
end
T.matmul, T.mm, T.bmm, T.dot = methods.matmul, methods.mm, methods.bmm, methods.dot

local ptrs = ffi.new("nnr_tensor *[?]", 1024)
function T.cat(list, dim)
  if type(list) ~= "table" then error("cat: expected a non-empty list of tensors", 0) end
  local n = #list
  if n == 0 then error("cat: expected a non-empty list of tensors", 0) end
  if n > 1024 then error("cat: at most 1024 tensors", 0) end
  for i = 1, n do
    if not is_tensor(list[i]) then error("cat: element " .. i .. " is a " .. type(list[i]) .. ", expected a tensor", 0) end
    ptrs[i - 1] = list[i].p
  end
  local d = cdim("cat", list[1], dim or 1)
  return own(C.nnr_cat(n, ptrs, d))   -- not call(): a retry would need the list's tensors held
end
function T.stack(list, dim)
  if type(list) ~= "table" or #list == 0 then error("stack: expected a non-empty list of tensors", 0) end
  for i = 1, #list do tp("stack", list[i], "element " .. i) end
  local first = sizes_of(list[1])
  local d = cdim("stack", list[1], dim or 1, 1)
  local parts = {}
  for i = 1, #list do
    local s = sizes_of(list[i])
    if shape_str(s) ~= shape_str(first) then
      error("stack: tensor " .. i .. " has shape " .. shape_str(s) .. ", expected " .. shape_str(first), 0)
    end
    parts[i] = call(C.nnr_unsqueeze, list[i].p, d)
  end
  return T.cat(parts, d + 1)
end
-- split(size or {sizes}, dim): views
function methods.split(t, size, dim)
  local d = cdim("split", t, dim or 1)
  local total = tonumber(C.nnr_tensor_size(t.p, d))
  local parts, at = {}, 0
  if type(size) == "table" then
    local sum = 0
    for i = 1, #size do sum = sum + int_arg("split", "sizes", size[i]) end
    if sum ~= total then error("split: sizes add up to " .. sum .. ", dimension " .. (d + 1) .. " has " .. total, 0) end
    for i = 1, #size do parts[i] = call(C.nnr_narrow, t.p, d, at, size[i]); at = at + size[i] end
    return parts
  end
  if type(size) ~= "number" or not (size >= 1) or size ~= floor(size) or size > MAX_INT then
    error("split: size must be a positive integer, got " .. tostring(size), 0)
  end
  if total == 0 then return { call(C.nnr_narrow, t.p, d, 0, 0) } end     -- one empty piece, as PyTorch
  while at < total do
    local len = math.min(size, total - at)
    parts[#parts + 1] = call(C.nnr_narrow, t.p, d, at, len)
    at = at + len
  end
  return parts
end
function methods.chunk(t, n, dim)
  local d = cdim("chunk", t, dim or 1)
  local total = tonumber(C.nnr_tensor_size(t.p, d))
  if type(n) ~= "number" or not (n >= 1) or n ~= floor(n) or n > MAX_INT then
    error("chunk: number of chunks must be a positive integer, got " .. tostring(n), 0)
  end
  if total == 0 then          -- n empty pieces, as PyTorch
    local parts = {}
    for i = 1, n do parts[i] = call(C.nnr_narrow, t.p, d, 0, 0) end
    return parts
  end
  return methods.split(t, math.max(1, math.ceil(total / n)), d + 1)
end
T.split, T.chunk = methods.split, methods.chunk

-- index tensors are 1-based on the Lua side
local function zero_based(index, op)
  return call(C.nnr_binary_scalar, OP.sub, tp(op, index, "index"), 1, 0)
end
-- a list of 1-based indices as an i64 tensor (whole numbers only: 1.5 is not an index)
local function index_list(op, index)
  if type(index) ~= "table" or is_tensor(index) then return index end
  for k, i in ipairs(index) do int_arg(op, "index", i) end
  return T.tensor(index, { dtype = "i64" })
end
function methods.gather(t, dim, index)
  return own(C.nnr_gather(t.p, cdim("gather", t, dim), zero_based(index, "gather").p))
end
function methods.index_select(t, dim, index)
  index = index_list("index_select", index)
  return own(C.nnr_index_select(t.p, cdim("index_select", t, dim), zero_based(index, "index_select").p))
end
function methods.scatter_add(t, dim, index, src)
  return own(C.nnr_scatter_add(t.p, cdim("scatter_add", t, dim), zero_based(index, "scatter_add").p, tp("scatter_add", src, "source")))
end
function methods.index_add(t, dim, index, src)
  index = index_list("index_add", index)
  return own(C.nnr_index_add(t.p, cdim("index_add", t, dim), zero_based(index, "index_add").p, tp("index_add", src, "source")))
end
T.gather, T.index_select, T.scatter_add, T.index_add = methods.gather, methods.index_select, methods.scatter_add, methods.index_add

-- indexing: t[i], t[{i, j}], t[{{a, b}, j}] ------------------------------------------------------
-- A number selects (1-d tensors give a Lua number); {a, b} narrows to a..b inclusive; {} keeps a dim.
local function index_view(t, key, op)
  if type(key) == "number" then
    if C.nnr_tensor_ndim(t.p) == 0 then error(op .. ": cannot index a 0-dimensional tensor (use :item())", 0) end
    local i = cindex(op, key, tonumber(C.nnr_tensor_size(t.p, 0)), 1)
    return call(C.nnr_select, t.p, 0, i)
  end
  local nd = C.nnr_tensor_ndim(t.p)
  if #key > nd then error(op .. ": " .. #key .. " indices for a tensor of shape " .. shape_str(sizes_of(t)), 0) end
  local v, d = t, 0
  for k = 1, #key do
    local e = key[k]
    local size = tonumber(C.nnr_tensor_size(v.p, d))
    if type(e) == "number" then
      v = call(C.nnr_select, v.p, d, cindex(op, e, size, k))
    elseif type(e) == "table" then
      local a, b = e[1] or 1, e[2] or e[1] or -1
      if e[1] == nil then b = -1 end
      int_arg(op, "range bounds", a); int_arg(op, "range bounds", b)
      local s = a < 0 and a + size + 1 or a
      local f = b < 0 and b + size + 1 or b
      if a == 0 or b == 0 or s < 1 or f > size or f < s - 1 then
        error(op .. ": range {" .. tostring(e[1]) .. ", " .. tostring(e[2]) .. "} is out of range for dimension " .. k .. " of size " .. size, 0)
      end
      v = call(C.nnr_narrow, v.p, d, s - 1, f - s + 1)
      d = d + 1
    else
      error(op .. ": index entries must be numbers or {first, last} ranges, got " .. type(e), 0)
    end
  end
  return v
end

mt.__index = function(t, k)
  local m = methods[k]
  if m ~= nil then return m end
  local kind = type(k)
  if kind == "number" then
    if C.nnr_tensor_ndim(t.p) == 1 then
      sizebuf2[0] = cindex("index", k, tonumber(C.nnr_tensor_size(t.p, 0)), 1)
      check(C.nnr_get(t.p, sizebuf2, dbl))
      if C.nnr_tensor_dtype(t.p) == C.NNR_BOOL then return dbl[0] ~= 0 end
      return dbl[0]
    end
    return index_view(t, k, "index")
  elseif kind == "table" then
    local v = index_view(t, k, "index")
    if C.nnr_tensor_ndim(v.p) == 0 and #k == C.nnr_tensor_ndim(t.p) then return methods.item(v) end
    return v
  end
  local p = props[k]
  if p then return p(t) end
  if kind == "string" then        -- a misspelt method: name the closest ones
    local names = require("nnr.names")
    local known = {}
    for n in pairs(methods) do known[n] = true end
    for n in pairs(props) do known[n] = true end
    names.unknown("tensor", k, known)
  end
  return nil
end

local setters = {
  grad = function(t, g)
    if g ~= nil and not is_tensor(g) then error("grad: expected a tensor or nil, got " .. type(g), 0) end
    check(C.nnr_set_grad(t.p, g and g.p or nil))
  end,
  requires_grad = function(t, flag) check(C.nnr_requires_grad_(t.p, flag and 1 or 0)) end,
}

mt.__newindex = function(t, k, value)
  local setter = setters[k]
  if setter then return setter(t, value) end
  if type(k) ~= "number" and type(k) ~= "table" then
    error("tensor: cannot set field '" .. tostring(k) .. "'", 0)
  end
  local v = index_view(t, k, "index")
  if type(value) == "number" or type(value) == "boolean" then methods.fill_(v, value)
  elseif is_tensor(value) and C.nnr_tensor_ndim(value.p) == 0 and not value.requires_grad then
    methods.fill_(v, methods.item(value))          -- one value, as PyTorch: even into an expanded view
  elseif is_tensor(value) then check(C.nnr_copy_(v.p, value.p))
  elseif type(value) == "table" then methods.copy_(v, value)
  else error("index: the value written must be a number, a boolean, a tensor or a nested table of numbers; expected numbers, got " .. type(value), 0) end
end

mt.__len = function(t)
  if C.nnr_tensor_ndim(t.p) == 0 then error("len: a 0-dimensional tensor has no length", 0) end
  return tonumber(C.nnr_tensor_size(t.p, 0))
end

mt.__tostring = function(t) return require("nnr.format").tensor(t) end
mt.__concat = function(a, b) return tostring(a) .. tostring(b) end

T.methods = methods
T.props = props        -- read-only names (shape, dtype, ...): the REPL completes them
T.shape_str = shape_str
T.sizes_of = sizes_of
T.cdim = cdim
binding.set_handle_metatable(mt)
return T
