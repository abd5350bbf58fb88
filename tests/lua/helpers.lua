-- Test helpers: random nested tables and independent float64 references
-- computed in plain Lua, compared against the runtime's results.
local nnr = require "nnr"
local H = {}

local seed = 12345
function H.reseed(s) seed = s or 12345; math.randomseed(seed); nnr.manual_seed(seed) end

-- uniform in [lo, hi), never exactly zero (so division and signs are exercised)
function H.rand_value(lo, hi)
  local v
  repeat v = lo + (hi - lo) * math.random() until math.abs(v) > 1e-3
  return v
end

function H.rand_table(shape, lo, hi, int)
  lo, hi = lo or -2, hi or 2
  local function build(d)
    if d > #shape then
      local v = H.rand_value(lo, hi)
      if int then v = math.floor(v) end
      return v
    end
    local r = {}
    for i = 1, shape[d] do r[i] = build(d + 1) end
    return r
  end
  return build(1)
end

function H.shape_of(t)
  local s = {}
  while type(t) == "table" do s[#s + 1] = #t; t = t[1] end
  return s
end

-- elementwise map over nested tables (any number of inputs, with broadcasting)
function H.map(f, ...)
  local args = { ... }
  local n = select("#", ...)
  local shapes, nd = {}, 0
  for i = 1, n do shapes[i] = type(args[i]) == "table" and H.shape_of(args[i]) or {}; nd = math.max(nd, #shapes[i]) end
  local out_shape = {}
  for d = 1, nd do
    local size = 1
    for i = 1, n do
      local s = shapes[i][#shapes[i] - nd + d]
      if s and s ~= 1 then size = s end
    end
    out_shape[d] = size
  end
  local function get(x, shape, idx)
    local off = nd - #shape
    for d = 1, #shape do
      local j = shape[d] == 1 and 1 or idx[off + d]
      x = x[j]
    end
    return x
  end
  local idx = {}
  local function build(d)
    if d > nd then
      local vals = {}
      for i = 1, n do vals[i] = get(args[i], shapes[i], idx) end
      return f(unpack(vals, 1, n))
    end
    local r = {}
    for i = 1, out_shape[d] do idx[d] = i; r[i] = build(d + 1) end
    return r
  end
  return build(1)
end

local function flatten(t, out)
  out = out or {}
  if type(t) ~= "table" then out[#out + 1] = t; return out end
  for i = 1, #t do flatten(t[i], out) end
  return out
end
H.flatten = flatten

-- asserts tensor x equals nested table ref to relative tolerance tol
function H.assert_close(x, ref, tol, what)
  tol = tol or 1e-5
  local got = nnr.is_tensor(x) and x:totable() or x
  local gs, rs = H.shape_of(got), H.shape_of(ref)
  assert(table.concat(gs, ",") == table.concat(rs, ","),
    (what or "") .. " shape [" .. table.concat(gs, ",") .. "] vs expected [" .. table.concat(rs, ",") .. "]")
  local a, b = flatten(got), flatten(ref)
  for i = 1, #b do
    local u, v = a[i], b[i]
    if type(v) == "boolean" or type(u) == "boolean" then
      assert(u == v, string.format("%s element %d: got %s expected %s", what or "", i, tostring(u), tostring(v)))
    elseif v ~= v then
      assert(u ~= u, string.format("%s element %d: got %s expected nan", what or "", i, tostring(u)))
    elseif math.abs(v) == math.huge then
      assert(u == v, string.format("%s element %d: got %s expected %s", what or "", i, tostring(u), tostring(v)))
    else
      local err = math.abs(u - v) / math.max(1, math.abs(v))
      assert(err <= tol, string.format("%s element %d: got %.9g expected %.9g (rel err %.3g > %.3g)", what or "", i, u, v, err, tol))
    end
  end
end

-- the same values as a non-contiguous tensor: stored transposed, then transposed back
function H.noncontiguous(tbl, dtype)
  local shape = H.shape_of(tbl)
  if #shape < 2 then
    -- every other element of a twice-as-long tensor
    local wide = {}
    for i = 1, #tbl do wide[2 * i - 1] = tbl[i]; wide[2 * i] = 0 end
    local t = nnr.tensor(#tbl > 0 and wide or {}, { dtype = dtype })
    if #tbl == 0 then return t end
    local v = t:view(#tbl, 2):select(2, 1)
    assert(not v:is_contiguous() or #tbl == 1)
    return v
  end
  local t = nnr.tensor(tbl, { dtype = dtype }):transpose(1, 2):contiguous():transpose(1, 2)
  assert(not t:is_contiguous())
  return t
end

function H.errmsg(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(err)
end

-- fn(...) must raise an error whose message holds the Lua pattern
function H.fails(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), "error '" .. tostring(err) .. "' does not match " .. pattern)
end

return H
