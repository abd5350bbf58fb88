-- Shared checks of the composed ops (lua/nnr/ops/*): dimensions, shapes and argument types, with
-- errors that name the op, as lua/nnr/tensor.lua does for the core ones.
local T = require "nnr.tensor"
local V = require "nnr.check"
local binding = require "nnr.binding"
local C, call = binding.C, binding.call
local type, floor = type, math.floor

local U = {}
U.shape_str, U.sizes_of, U.is_tensor = T.shape_str, T.sizes_of, T.is_tensor

-- the tensor argument of an op, or an error naming the op and the argument
function U.tensor(op, x, what)
  T.tp(op, x, what)
  return x
end

-- a 1-based dimension (negative from the end) -> the positive 1-based one; ndim_extra as T.cdim
function U.dim(op, t, d, extra) return T.cdim(op, t, d, extra) + 1 end

-- a list of dimensions (a number or a table) -> positive 1-based dims, refusing repeats
function U.dims(op, t, dims)
  if type(dims) == "number" then dims = { dims } end
  if type(dims) ~= "table" or U.is_tensor(dims) then error(op .. ": dims must be a number or a table of numbers, got " .. type(dims), 0) end
  local out, seen = {}, {}
  for i = 1, #dims do
    local d = U.dim(op, t, dims[i])
    if seen[d] then error(op .. ": dimension " .. d .. " is listed twice in dims", 0) end
    seen[d] = true
    out[i] = d
  end
  return out
end

-- refuses integer and bool tensors where the op needs real numbers
function U.floating(op, t, what)
  if not t:is_floating_point() then
    error(op .. ": " .. (what or "input") .. " must be a floating-point tensor, got " .. t.dtype .. " (convert it with :double() or :float())", 0)
  end
  return t
end

-- a whole number >= min (nil passes when optional)
function U.int(op, name, v, min, optional) return V.integer(op, name, v, min, nil, optional) end

-- max or min over a list of 0-based dims (nil: all), differentiable (ties share the gradient evenly)
local intbuf = require("ffi").new("int[8]")
function U.extreme(t, is_max, dims, keepdim)
  local n = 0
  if dims then for i = 1, #dims do intbuf[i - 1] = dims[i] - 1 end; n = #dims end
  return call(C.nnr_reduce, is_max and C.NNR_OP_MAX or C.NNR_OP_MIN, t.p, n, intbuf, keepdim and 1 or 0, 0)
end

-- the broadcast shape of two shapes, or an error naming the op and both shapes
function U.broadcast_shape(op, a, b)
  local n = math.max(#a, #b)
  local out = {}
  for i = 1, n do
    local x, y = a[#a - n + i] or 1, b[#b - n + i] or 1
    if x ~= y and x ~= 1 and y ~= 1 then
      error(op .. ": shapes " .. U.shape_str(a) .. " and " .. U.shape_str(b) .. " cannot broadcast (dimension " .. i ..
        " of the result: " .. x .. " against " .. y .. ")", 0)
    end
    out[i] = x == 1 and y or x
  end
  return out
end

-- a 1-based i64 index tensor (on device, default the cpu) from a Lua list of 0-based positions
function U.index(list, device)
  local ffi = binding.ffi
  local n = #list
  local t = T.empty(n, { dtype = "i64" })
  if n > 0 then
    local p = ffi.cast("int64_t *", t:data_ptr())
    for i = 1, n do p[i - 1] = list[i] + 1 end
  end
  if device ~= nil and device ~= "cpu" then return t:to(device) end
  return t
end

-- a window parameter: one whole number or a pair {h, w}, each >= min
function U.pair(op, name, v, min)
  if type(v) == "number" then V.integer(op, name, v, min, 2 ^ 31 - 1); return v, v end
  if type(v) == "table" and not U.is_tensor(v) and #v == 2 then
    V.integer(op, name .. "[1]", v[1], min, 2 ^ 31 - 1)
    V.integer(op, name .. "[2]", v[2], min, 2 ^ 31 - 1)
    return v[1], v[2]
  end
  error(op .. ": " .. name .. " must be a number or a pair {h, w}, got " .. (type(v) == "table" and #v .. " values" or tostring(v)), 0)
end

U.floor = floor
return U
