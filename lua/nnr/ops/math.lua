-- Math ops composed from differentiable elementwise ops, reductions and matmul: norm, logsumexp,
-- lerp, outer, cosine_similarity and cdist. Their gradients match PyTorch's, including the points
-- where a square root or a power has no derivative (a zero norm, a zero distance): there the
-- gradient is 0, as PyTorch defines it, never nan.
local T = require "nnr.tensor"
local V = require "nnr.check"
local U = require "nnr.ops.util"
local shape_str = U.shape_str
local type, huge = type, math.huge

local M = { methods = {}, functions = {}, functional = {} }
local methods = M.methods

local function shape(t) return shape_str(t:size()) end

-- s^(1/p) (p = 2: sqrt) with value and gradient 0 where s = 0 (the true derivative there is infinite,
-- and would turn 0 * inf into nan further down)
local function safe_root(s, p)
  local zero = s:eq(0)
  local safe = T.where(zero, 1, s)
  return T.where(zero, 0, p == 2 and safe:sqrt() or safe ^ (1 / p))
end

-- |x|^p with gradient 0 at x = 0 for p < 1 (where p |x|^(p-1) is infinite)
local function abs_pow(a, p)
  if p >= 1 then return a ^ p end
  local zero = a:eq(0)
  return T.where(zero, 0, T.where(zero, 1, a) ^ p)
end

-- the p-norm of the values along dims of x (nil: all); p a number > 0, inf or -inf
local function pnorm(x, p, dims, keepdim)
  if p == huge then return U.extreme(x:abs(), true, dims, keepdim) end
  if p == -huge then return U.extreme(x:abs(), false, dims, keepdim) end
  if p == 1 then return x:abs():sum(dims, keepdim) end
  if p == 2 then return safe_root((x * x):sum(dims, keepdim), 2) end
  return safe_root(abs_pow(x:abs(), p):sum(dims, keepdim), p)
end

local function norm_order(op, p)
  if p == nil or p == "fro" then return 2 end
  if type(p) == "string" then error(op .. ": p must be a number > 0, inf, -inf or 'fro', got '" .. p .. "' (the nuclear norm is not supported)", 0) end
  if type(p) ~= "number" or p ~= p or not (p > 0) then
    error(op .. ": p must be a number > 0, inf, -inf or 'fro', got " .. V.show(p) .. (type(p) == "number" and p == 0 and " (the 0-'norm' is not supported)" or ""), 0)
  end
  return p
end

-- norm(p, dim, keepdim): the vector p-norm over all elements or over dim (a number or a table);
-- p = "fro" (the default) is 2
function methods.norm(t, p, dim, keepdim)
  local op = "norm"
  U.tensor(op, t, "input")
  U.floating(op, t)
  if p == -huge then p = -huge else p = norm_order(op, p) end
  local dims = dim ~= nil and U.dims(op, t, dim) or nil
  return pnorm(t, p, dims, keepdim and true or false)
end

-- logsumexp(dim, keepdim): log(sum(exp(x))) over dim (a number or a table; nil: all), with the maximum
-- subtracted first; an infinite maximum is not subtracted (as PyTorch), so all -inf gives -inf and
-- any +inf gives +inf
function methods.logsumexp(t, dim, keepdim)
  local op = "logsumexp"
  U.tensor(op, t, "input")
  U.floating(op, t)
  local dims = dim ~= nil and U.dims(op, t, dim) or nil
  local m = 0
  local empty = false
  local s = t:size()
  if dims then for _, d in ipairs(dims) do if s[d] == 0 then empty = true end end elseif t:numel() == 0 then empty = true end
  if not empty then
    m = U.extreme(t:detach(), true, dims, true)
    m = T.where(m:abs():eq(huge), 0, m)
  end
  local r = (t - m):exp():sum(dims, keepdim and true or false):log()
  if empty then return r end
  return r + (keepdim and m or m:view(r:size()))
end

-- lerp(end, weight): self + weight (end - self), with weight a number or a tensor (PyTorch's formula:
-- from the nearer end, so weight 1 gives end exactly)
function methods.lerp(t, e, w)
  local op = "lerp"
  U.tensor(op, t, "input"); U.tensor(op, e, "end")
  U.floating(op, t); U.floating(op, e, "end")
  local d = e - t
  if type(w) == "number" then
    V.number(op, "weight", w)
    if w < 0.5 then return t + d * w end
    return e - d * (1 - w)
  end
  if not U.is_tensor(w) then error(op .. ": weight must be a number or a tensor, got " .. type(w), 0) end
  U.floating(op, w, "weight")
  local lo, hi = t + d * w, e - d * (1 - w)
  return T.where(w:lt(0.5):expand(lo:size()), lo, hi)
end

-- outer(v): the outer product of two 1-d tensors, [n] x [m] -> [n, m]
function methods.outer(a, b)
  local op = "outer"
  U.tensor(op, a, "input"); U.tensor(op, b, "vec2")
  if a:dim() ~= 1 or b:dim() ~= 1 then
    error(op .. ": expected two 1-d tensors, got shapes " .. shape(a) .. " and " .. shape(b), 0)
  end
  return a:unsqueeze(2) * b:unsqueeze(1)
end
methods.ger = methods.outer

-- nnr.nn.functional.cosine_similarity(x1, x2, dim = 2, eps = 1e-8): the cosine of the angle between
-- x1 and x2 along dim (they broadcast), each norm clamped at eps (as PyTorch 1.13: where a norm is
-- below eps, the gradient is that of x / eps)
function M.functional.cosine_similarity(x1, x2, dim, eps)
  local op = "cosine_similarity"
  U.tensor(op, x1, "x1"); U.tensor(op, x2, "x2")
  U.floating(op, x1, "x1"); U.floating(op, x2, "x2")
  eps = V.number(op, "eps", eps, { min = 0, default = 1e-8 })
  local s = U.broadcast_shape(op, x1:size(), x2:size())
  if #s == 0 then error(op .. ": expected tensors with at least 1 dimension, got two 0-d tensors", 0) end
  local a, b = x1:expand(s), x2:expand(s)
  local d = U.dim(op, a, dim == nil and 2 or dim)
  local na = pnorm(a, 2, { d }, true):clamp(eps)
  local nb = pnorm(b, 2, { d }, true):clamp(eps)
  return ((a / na) * (b / nb)):sum(d)
end

-- nnr.cdist(x1, x2, p = 2, compute_mode): the p-norm distances between the rows of x1 [..., P, M]
-- and of x2 [..., R, M] -> [..., P, R] (batch dims broadcast). For p = 2 and more than 25 rows on
-- either side, PyTorch's matrix-product form |a|^2 + |b|^2 - 2 a.b (one gemm); otherwise the
-- differences themselves. The gradient is 0 where a distance is 0.
local compute_modes = { "use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist" }
function M.functions.cdist(x1, x2, p, compute_mode)
  local op = "cdist"
  U.tensor(op, x1, "x1"); U.tensor(op, x2, "x2")
  U.floating(op, x1, "x1"); U.floating(op, x2, "x2")
  if p == nil then p = 2 end
  if type(p) ~= "number" or p ~= p or p < 0 then error(op .. ": p must be a number >= 0 (or inf), got " .. V.show(p), 0) end
  compute_mode = V.choice(op, "compute_mode", compute_mode or compute_modes[1], compute_modes)
  if x1:dim() < 2 or x2:dim() < 2 then
    error(op .. ": expected x1 [..., P, M] and x2 [..., R, M] with at least 2 dimensions, got shapes " .. shape(x1) .. " and " .. shape(x2), 0)
  end
  local m1, m2 = x1:size(-1), x2:size(-1)
  if m1 ~= m2 then
    error(op .. ": x1 and x2 must have the same number of columns, got shapes " .. shape(x1) .. " and " .. shape(x2), 0)
  end
  local s1, s2 = x1:size(), x2:size()
  local b1, b2 = {}, {}
  for i = 1, #s1 - 2 do b1[i] = s1[i] end
  for i = 1, #s2 - 2 do b2[i] = s2[i] end
  U.broadcast_shape(op .. " (batch dimensions)", b1, b2)
  local P, R = s1[#s1 - 1], s2[#s2 - 1]
  if p == 2 and (compute_mode == compute_modes[2] or (compute_mode == compute_modes[1] and (P > 25 or R > 25))) then
    local n1 = (x1 * x1):sum(-1, true)
    local n2 = (x2 * x2):sum(-1, true):transpose(-1, -2)
    local d2 = (x1:matmul(x2:transpose(-1, -2)) * -2 + n1 + n2):clamp(0)
    return safe_root(d2, 2)
  end
  local diff = x1:unsqueeze(-2) - x2:unsqueeze(-3)           -- [..., P, R, M]
  if p == 0 then
    local count = diff:ne(0):to(diff.dtype):sum(-1)
    return count + (diff * 0):sum(-1)                          -- gradient 0, as PyTorch's
  end
  if p == huge then
    -- the largest |difference|, with PyTorch's gradient: every element that attains it gets the full
    -- gradient (the max reduction shares it among them, so it is scaled back up by their count)
    local a = diff:abs()
    local m = U.extreme(a, true, { diff:dim() }, false)
    local count = a:detach():eq(m:detach():unsqueeze(-1)):to(diff.dtype):sum(-1)
    local extra = m * (count - 1)
    return T.where(count:gt(1):logical_and(m:abs():lt(huge)), m + (extra - extra:detach()), m)
  end
  return pnorm(diff, p, { diff:dim() }, false)
end

M.functions.norm, M.functions.logsumexp, M.functions.lerp, M.functions.outer = methods.norm, methods.logsumexp, methods.lerp, methods.outer
M.functions.cosine_similarity = M.functional.cosine_similarity
return M
