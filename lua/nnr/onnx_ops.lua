-- The ONNX operators nnr.onnx.load runs, each a function(node, inputs, graph) -> outputs over nnrun tensors.
-- ONNX counts axes from 0 (negative from the end) and indices from 0; nnrun from 1: the conversions are here.
-- Integer tensors are the shape arithmetic of exported graphs (Shape, Gather, Concat, Reshape): small, read
-- back into Lua where an op needs their values. A node's attributes: node.attrs (numbers, strings, lists;
-- a tensor attribute is already a tensor). graph.opset is the default domain's version.
local nnr = require "nnr"
local F = nnr.nn.functional

local M = {}

local DTYPES = { [1] = "f32", [2] = "u8", [3] = "i8", [6] = "i32", [7] = "i64", [9] = "bool", [10] = "f16", [11] = "f64", [16] = "bf16" }
M.DTYPES = DTYPES

local function fail(node, fmt, ...)
  error(string.format("onnx: node '%s' (%s): " .. fmt, node.name, node.op, ...), 0)
end
M.fail = fail

local function ints(t)                         -- an integer tensor's values as a Lua list
  local n, out = t:numel(), {}
  if n == 0 then return out end
  local flat = t:reshape(n):to("f64"):totable()
  for i = 1, n do out[i] = flat[i] end
  return out
end
M.ints = ints

-- a 0-based ONNX axis of a rank-r tensor as nnrun's 1-based dimension
local function dim(node, a, r)
  if a < -r or a >= math.max(r, 1) then fail(node, "axis %d is out of range for a tensor of %d dimensions", a, r) end
  return (a < 0 and a + r or a) + 1
end
M.dim = dim

local function i64(list) return nnr.tensor(list, { dtype = "i64" }) end
local function is_int(t) return t.dtype == "i64" or t.dtype == "i32" or t.dtype == "i8" or t.dtype == "u8" end
local function attr(node, k, default) local v = node.attrs[k]; if v == nil then return default end; return v end

-- the inputs' values given as an attribute before some opset and as an input after (axes, split, ...)
local function list_arg(node, x, k, default)
  if x ~= nil then return ints(x) end
  return attr(node, k, default)
end

local function unary(f) return function(_, x) return f(x[1]) end end
local function binary(f) return function(_, x) return f(x[1], x[2]) end end

-- numpy's broadcast of two shapes
local function broadcast(node, a, b)
  local out, na, nb = {}, #a, #b
  for i = 1, math.max(na, nb) do
    local x, y = a[na - math.max(na, nb) + i] or 1, b[nb - math.max(na, nb) + i] or 1
    if x ~= y and x ~= 1 and y ~= 1 then fail(node, "shapes %s and %s do not broadcast", nnr.shape_str(a), nnr.shape_str(b)) end
    out[i] = x == 1 and y or x
  end
  return out
end

-- integer division truncates toward zero (ONNX's Div on integers, as C's)
local function div(a, b)
  if is_int(a) and is_int(b) then
    local q = a:to("f64") / b:to("f64")
    return nnr.where(q:lt(0), q:ceil(), q:floor()):to(a.dtype)
  end
  return a / b
end

local function size_list(t) local s = t:size(); local out = {}; for i = 1, #s do out[i] = s[i] end; return out end

M.ops = {
  Identity = unary(function(x) return x end),
  Relu = unary(function(x) return x:relu() end),
  Sigmoid = unary(function(x) return x:sigmoid() end),
  Tanh = unary(function(x) return x:tanh() end),
  Erf = unary(function(x) return x:erf() end),
  Sqrt = unary(function(x) return x:sqrt() end),
  Exp = unary(function(x) return x:exp() end),
  Log = unary(function(x) return x:log() end),
  Abs = unary(function(x) return x:abs() end),
  Neg = unary(function(x) return -x end),
  Reciprocal = unary(function(x) return x:reciprocal() end),
  Floor = unary(function(x) return x:floor() end),
  Ceil = unary(function(x) return x:ceil() end),
  Sin = unary(function(x) return x:sin() end),
  Cos = unary(function(x) return x:cos() end),
  Not = unary(function(x) return x:logical_not() end),
  Add = binary(function(a, b) return a + b end),
  Sub = binary(function(a, b) return a - b end),
  Mul = binary(function(a, b) return a * b end),
  Div = binary(div),
  Pow = binary(function(a, b) return a:pow(b) end),
  Equal = binary(function(a, b) return a:eq(b) end),
  Less = binary(function(a, b) return a:lt(b) end),
  Greater = binary(function(a, b) return a:gt(b) end),
  LessOrEqual = binary(function(a, b) return a:le(b) end),
  GreaterOrEqual = binary(function(a, b) return a:ge(b) end),
  And = binary(function(a, b) return a:logical_and(b) end),
  MatMul = binary(function(a, b) return nnr.matmul(a, b) end),
  Where = function(_, x) return nnr.where(x[1], x[2], x[3]) end,
}
local ops = M.ops

function ops.Max(_, x) local y = x[1]; for i = 2, #x do y = nnr.maximum(y, x[i]) end; return y end
function ops.Min(_, x) local y = x[1]; for i = 2, #x do y = nnr.minimum(y, x[i]) end; return y end
function ops.Sum(_, x) local y = x[1]; for i = 2, #x do y = y + x[i] end; return y end
function ops.Dropout(_, x) return x[1] end      -- inference: the identity (a mask output is refused at load)
function ops.LeakyRelu(node, x) return F.leaky_relu(x[1], attr(node, "alpha", 0.01)) end
function ops.Elu(node, x) return F.elu(x[1], attr(node, "alpha", 1)) end
function ops.Softplus(_, x) return F.softplus(x[1]) end
function ops.HardSwish(_, x) return F.hardswish(x[1]) end
function ops.Gelu(node, x) return F.gelu(x[1], attr(node, "approximate", "none")) end
function ops.Softmax(node, x) return x[1]:softmax(dim(node, attr(node, "axis", -1), x[1]:dim())) end
function ops.LogSoftmax(node, x) return x[1]:log_softmax(dim(node, attr(node, "axis", -1), x[1]:dim())) end

function ops.Cast(node, x)
  local to = DTYPES[attr(node, "to", 0)] or fail(node, "cannot cast to ONNX type %s", tostring(attr(node, "to")))
  return x[1]:to(to)
end
function ops.CastLike(_, x) return x[1]:to(x[2].dtype) end

function ops.Constant(node)
  local a = node.attrs
  if a.value ~= nil then return a.value end
  if a.value_float ~= nil then return nnr.tensor(a.value_float) end
  if a.value_floats ~= nil then return nnr.tensor(a.value_floats) end
  if a.value_int ~= nil then return nnr.tensor(a.value_int, { dtype = "i64" }) end
  if a.value_ints ~= nil then return i64(a.value_ints) end
  fail(node, "has no value attribute nnrun reads (value, value_float(s), value_int(s))")
end

function ops.ConstantOfShape(node, x)
  local v = node.attrs.value
  local shape = ints(x[1])
  if v == nil then return nnr.zeros(shape) end
  return nnr.full(shape, v:reshape(1):to("f64"):totable()[1], { dtype = v.dtype })
end

function ops.Shape(node, x)
  local s = size_list(x[1])
  local r = #s
  local lo, hi = attr(node, "start", 0), attr(node, "end", r)
  lo, hi = math.max(0, math.min(r, lo < 0 and lo + r or lo)), math.max(0, math.min(r, hi < 0 and hi + r or hi))
  local out = {}
  for i = lo + 1, hi do out[#out + 1] = s[i] end
  return i64(out)
end
function ops.Size(_, x) return nnr.tensor(x[1]:numel(), { dtype = "i64" }) end

function ops.Gather(node, x)
  local data, idx = x[1], x[2]
  local d = dim(node, attr(node, "axis", 0), data:dim())
  local n = data:size(d)
  local flat = idx:reshape(math.max(idx:numel(), 0)):to("i64")
  flat = nnr.where(flat:lt(0), flat + n, flat)
  if flat:numel() > 0 and (flat:lt(0):any():item() or flat:ge(n):any():item()) then fail(node, "an index is out of range for a dimension of %d", n) end
  local picked = data:index_select(d, flat + 1)
  local shape, s, is = {}, size_list(data), size_list(idx)
  for i = 1, d - 1 do shape[#shape + 1] = s[i] end
  for i = 1, #is do shape[#shape + 1] = is[i] end
  for i = d + 1, #s do shape[#shape + 1] = s[i] end
  return picked:reshape(shape)
end

function ops.Unsqueeze(node, x)
  local axes = list_arg(node, x[2], "axes")
  if type(axes) ~= "table" then fail(node, "has no axes") end
  local r = x[1]:dim() + #axes
  local ds = {}
  for i, a in ipairs(axes) do ds[i] = dim(node, a, r) end
  table.sort(ds)
  local y = x[1]
  for _, d in ipairs(ds) do y = y:unsqueeze(d) end
  return y
end

function ops.Squeeze(node, x)
  local s, y = size_list(x[1]), {}
  local axes = list_arg(node, x[2], "axes")
  local drop = {}
  if axes then
    for _, a in ipairs(axes) do
      local d = dim(node, a, #s)
      if s[d] ~= 1 then fail(node, "cannot squeeze dimension %d of size %d", a, s[d]) end
      drop[d] = true
    end
  else
    for d = 1, #s do drop[d] = s[d] == 1 end
  end
  for d = 1, #s do if not drop[d] then y[#y + 1] = s[d] end end
  return x[1]:reshape(y)
end

function ops.Concat(node, x)
  local list = {}
  for _, t in ipairs(x) do if t:numel() > 0 or t:dim() > 1 then list[#list + 1] = t end end
  if #list == 0 then return x[1] end
  return nnr.cat(list, dim(node, attr(node, "axis", 0), list[1]:dim()))
end

function ops.Reshape(node, x)
  local shape, s = ints(x[2]), size_list(x[1])
  local allowzero = attr(node, "allowzero", 0) == 1
  for i, v in ipairs(shape) do
    if v == 0 and not allowzero then
      if s[i] == nil then fail(node, "shape %s copies dimension %d the input lacks", nnr.shape_str(shape), i - 1) end
      shape[i] = s[i]
    end
  end
  return x[1]:reshape(shape)
end

function ops.Flatten(node, x)
  local t = x[1]
  local r = t:dim()
  local a = attr(node, "axis", 1)
  a = a < 0 and a + r or a
  if a < 0 or a > r then fail(node, "axis %d is out of range", a) end
  local rows, cols = 1, 1          -- (size(i) one at a time: the size table costs more than the reshape)
  for i = 1, a do rows = rows * t:size(i) end
  for i = a + 1, r do cols = cols * t:size(i) end
  return t:reshape(rows, cols)
end

function ops.Transpose(node, x)
  local r = x[1]:dim()
  local perm = attr(node, "perm")
  if perm and #perm ~= r then fail(node, "perm %s does not name the %d dimensions", nnr.shape_str(perm), r) end
  local p = {}
  for i = 1, r do p[i] = perm and dim(node, perm[i], r) or r - i + 1 end
  return x[1]:permute(p)
end

-- ONNX's Slice: per axis, [start, end) by step, each clamped as ONNX says
function ops.Slice(node, x)
  local y = x[1]
  local starts, ends = ints(x[2]), ints(x[3])
  local axes = x[4] and ints(x[4]) or {}
  local steps = x[5] and ints(x[5]) or {}
  for i = 1, #starts do
    local d = dim(node, axes[i] or (i - 1), y:dim())
    local n, step = y:size(d), steps[i] or 1
    if step == 0 then fail(node, "a step of 0") end
    local s, e = starts[i], ends[i]
    s, e = s < 0 and s + n or s, e < 0 and e + n or e
    if step > 0 then
      s, e = math.max(0, math.min(n, s)), math.max(0, math.min(n, e))
      if step == 1 then y = y:narrow(d, s + 1, math.max(0, e - s))
      else y = y:index_select(d, nnr.arange(s, math.max(s, e), step, { dtype = "i64" }) + 1) end
    else                       -- (ONNX clamps a negative step's start to [0, n-1] and its end to [-1, n-1])
      s, e = math.max(0, math.min(n - 1, s)), math.max(-1, math.min(n - 1, e))
      y = y:index_select(d, nnr.arange(s, math.min(s, e), step, { dtype = "i64" }) + 1)
    end
  end
  return y
end

function ops.Split(node, x, graph)
  local t = x[1]
  local d = dim(node, attr(node, "axis", 0), t:dim())
  local n = t:size(d)
  local parts = list_arg(node, x[2], "split")
  if not parts then
    local k = attr(node, "num_outputs", #node.outputs)
    local each = math.ceil(n / k)
    parts = {}
    for i = 1, k do parts[i] = math.max(0, math.min(each, n - (i - 1) * each)) end
  end
  local out, at = {}, 1
  for i, len in ipairs(parts) do out[i] = t:narrow(d, at, len); at = at + len end
  if at - 1 ~= n then fail(node, "parts %s do not add up to the dimension's %d", nnr.shape_str(parts), n) end
  return unpack(out)
end

function ops.Expand(node, x)
  local shape = broadcast(node, size_list(x[1]), ints(x[2]))
  local y = x[1]
  while y:dim() < #shape do y = y:unsqueeze(1) end
  return y:expand(shape)
end

function ops.Range(_, x)
  local v = function(t) return t:to("f64"):reshape(1):totable()[1] end
  return nnr.arange(v(x[1]), v(x[2]), v(x[3]), { dtype = x[1].dtype })
end

function ops.Tile(_, x) return x[1]:tile(ints(x[2])) end

local function reduce(name)
  return function(node, x, graph)
    local t = x[1]
    local axes = (graph.opset >= 18 or name == "sum") and (x[2] and ints(x[2])) or attr(node, "axes")
    local keep = attr(node, "keepdims", 1) == 1
    if (axes == nil or #axes == 0) and attr(node, "noop_with_empty_axes", 0) == 1 then return t end
    local ds = {}
    if axes == nil or #axes == 0 then for i = 1, t:dim() do ds[i] = i end
    else for i, a in ipairs(axes) do ds[i] = dim(node, a, t:dim()) end end
    table.sort(ds, function(a, b) return a > b end)
    local y = t
    for _, d in ipairs(ds) do y = (y[name](y, d, true)) end      -- (max and min: the values, not the indices)
    if not keep then
      local s, out, dropped = size_list(y), {}, {}
      for _, d in ipairs(ds) do dropped[d] = true end
      for i = 1, #s do if not dropped[i] then out[#out + 1] = s[i] end end
      y = y:reshape(out)
    end
    return y
  end
end
ops.ReduceMean, ops.ReduceSum, ops.ReduceMax, ops.ReduceMin = reduce("mean"), reduce("sum"), reduce("max"), reduce("min")

return M
