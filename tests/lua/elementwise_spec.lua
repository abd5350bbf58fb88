local nnr = require "nnr"
local H = require "helpers"

local function sigmoid(x) return 1 / (1 + math.exp(-x)) end
local function sign(x) return x > 0 and 1 or x < 0 and -1 or 0 end
local unary = {
  neg = { function(x) return -x end },
  abs = { math.abs },
  exp = { math.exp },
  log = { math.log, 0.1, 5 },
  sqrt = { math.sqrt, 0.1, 5 },
  tanh = { function(x) return (math.exp(x) - math.exp(-x)) / (math.exp(x) + math.exp(-x)) end },
  sigmoid = { sigmoid },
  relu = { function(x) return x > 0 and x or 0 end },
  sin = { math.sin }, cos = { math.cos },
  sign = { sign },
  reciprocal = { function(x) return 1 / x end },
}

local binary = {
  add = function(a, b) return a + b end,
  sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end,
  div = function(a, b) return a / b end,
  maximum = math.max, minimum = math.min,
}
local compare = {
  eq = function(a, b) return a == b end, ne = function(a, b) return a ~= b end,
  lt = function(a, b) return a < b end, le = function(a, b) return a <= b end,
  gt = function(a, b) return a > b end, ge = function(a, b) return a >= b end,
}

describe("elementwise", function()
  before_each(function() H.reseed() end)

  for name, spec in pairs(unary) do
    it(name .. " matches a float64 reference (f64, f32, f16, bf16; contiguous and strided)", function()
      local ref_in = H.rand_table({ 7, 5 }, spec[2] or -3, spec[3] or 3)
      local want = H.map(spec[1], ref_in)
      for _, case in ipairs { { "f64", 1e-12 }, { "f32", 2e-6 }, { "f16", 2e-3 }, { "bf16", 1.6e-2 } } do
        local dt, tol = case[1], case[2]
        local x = nnr.tensor(ref_in, { dtype = dt })
        local input = nnr.tensor(x:totable(), { dtype = "f64" })   -- the values after rounding to dt
        local want_dt = H.map(spec[1], input:totable())
        H.assert_close(x[name](x), want_dt, tol, name .. " " .. dt)
        H.assert_close(H.noncontiguous(ref_in, dt)[name](H.noncontiguous(ref_in, dt)), want_dt, tol, name .. " strided " .. dt)
      end
      -- in place
      local y = nnr.tensor(ref_in, { dtype = "f64" })
      y[name .. "_"](y)
      H.assert_close(y, want, 1e-12, name .. "_")
    end)
  end

  it("promotes integers to f32 for float math, keeps them for neg/abs/relu", function()
    local i = nnr.tensor({ -2, 3, 4 }, { dtype = "i32" })
    assert.equal("f32", i:exp().dtype)
    assert.equal("i32", i:abs().dtype)
    H.assert_close(i:abs(), { 2, 3, 4 }, 0)
    H.assert_close(i:relu(), { 0, 3, 4 }, 0)
    H.assert_close(i:sqrt(), { 0 / 0, math.sqrt(3), 2 }, 1e-6)
    assert.matches("neg: not defined for bool", H.errmsg(function() return nnr.tensor({ true }):neg() end))
    H.assert_close(nnr.tensor({ true, false }):logical_not(), { false, true })
  end)

  for name, f in pairs(binary) do
    it(name .. " broadcasts and matches the reference", function()
      local a_ref, b_ref = H.rand_table({ 3, 1, 4 }), H.rand_table({ 5, 4 })
      local want = H.map(f, a_ref, b_ref)
      for _, case in ipairs { { "f64", 1e-12 }, { "f32", 2e-6 } } do
        local a, b = nnr.tensor(a_ref, { dtype = case[1] }), nnr.tensor(b_ref, { dtype = case[1] })
        local want_dt = H.map(f, nnr.tensor(a:totable(), { dtype = "f64" }):totable(), nnr.tensor(b:totable(), { dtype = "f64" }):totable())
        local r = a[name](a, b)
        assert.same({ 3, 5, 4 }, r:size())
        H.assert_close(r, want_dt, case[2], name .. " " .. case[1])
        -- strided operands
        local bs = H.noncontiguous(b_ref, case[1])
        H.assert_close(a[name](a, bs), want_dt, case[2], name .. " strided " .. case[1])
      end
      -- scalars on either side
      local a = nnr.tensor(a_ref, { dtype = "f64" })
      H.assert_close(a[name](a, 1.5), H.map(function(x) return f(x, 1.5) end, a_ref), 1e-12)
      H.assert_close(nnr[name](2.5, a), H.map(function(x) return f(2.5, x) end, a_ref), 1e-12)
      -- integers stay exact
      local ia, ib = H.rand_table({ 6 }, -50, 50, true), H.rand_table({ 6 }, 1, 9, true)
      if name ~= "div" then
        local r = nnr.tensor(ia, { dtype = "i64" })[name](nnr.tensor(ia, { dtype = "i64" }), nnr.tensor(ib, { dtype = "i64" }))
        assert.equal("i64", r.dtype)
        H.assert_close(r, H.map(f, ia, ib), 0)
      end
    end)
  end

  it("uses Lua operators", function()
    local a_ref, b_ref = H.rand_table({ 4, 3 }), H.rand_table({ 3 })
    local a, b = nnr.tensor(a_ref, { dtype = "f64" }), nnr.tensor(b_ref, { dtype = "f64" })
    H.assert_close(a + b, H.map(function(x, y) return x + y end, a_ref, b_ref), 1e-12)
    H.assert_close(a - b, H.map(function(x, y) return x - y end, a_ref, b_ref), 1e-12)
    H.assert_close(a * b, H.map(function(x, y) return x * y end, a_ref, b_ref), 1e-12)
    H.assert_close(a / b, H.map(function(x, y) return x / y end, a_ref, b_ref), 1e-12)
    H.assert_close(a:abs() ^ b, H.map(function(x, y) return math.abs(x) ^ y end, a_ref, b_ref), 1e-12)
    H.assert_close(-a, H.map(function(x) return -x end, a_ref), 0)
    H.assert_close(2 - a, H.map(function(x) return 2 - x end, a_ref), 1e-12)
    H.assert_close(1 / a, H.map(function(x) return 1 / x end, a_ref), 1e-12)
    H.assert_close(a ^ 2, H.map(function(x) return x * x end, a_ref), 1e-12)
  end)

  for name, f in pairs(compare) do
    it(name .. " returns bool", function()
      local a_ref = H.rand_table({ 4, 5 }, -2, 2, true)
      local b_ref = H.rand_table({ 5 }, -2, 2, true)
      local a, b = nnr.tensor(a_ref), nnr.tensor(b_ref)
      local r = a[name](a, b)
      assert.equal("bool", r.dtype)
      H.assert_close(r, H.map(f, a_ref, b_ref))
      H.assert_close(a[name](a, 0), H.map(function(x) return f(x, 0) end, a_ref))
      local ia = nnr.tensor(a_ref, { dtype = "i64" })
      H.assert_close(ia[name](ia, nnr.tensor(b_ref, { dtype = "i32" })), H.map(f, a_ref, b_ref))
    end)
  end

  it("promotes dtypes like PyTorch", function()
    local i = nnr.tensor({ 1, 2, 3 }, { dtype = "i32" })
    assert.equal("f32", (i + nnr.tensor({ 0.5 })).dtype)
    assert.equal("i64", (i + nnr.tensor({ 1 }, { dtype = "i64" })).dtype)
    assert.equal("i32", (i + 1).dtype)
    assert.equal("f32", (i + 0.5).dtype)
    assert.equal("f32", (i / 2).dtype)
    H.assert_close(i / 2, { 0.5, 1, 1.5 }, 0)
    assert.equal("f64", (nnr.ones(2, { dtype = "f16" }) + nnr.ones(2, { dtype = "f64" })).dtype)
    assert.equal("f32", (nnr.ones(2, { dtype = "f16" }) + nnr.ones(2, { dtype = "bf16" })).dtype)
    assert.equal("i32", (nnr.ones(2, { dtype = "u8" }) + nnr.ones(2, { dtype = "i8" })).dtype)
    H.assert_close(nnr.tensor({ 2 }, { dtype = "i64" }) ^ 10, { 1024 }, 0)
  end)

  it("where, clamp and masked_fill", function()
    local x_ref, y_ref = H.rand_table({ 3, 4 }), H.rand_table({ 4 })
    local x, y = nnr.tensor(x_ref, { dtype = "f64" }), nnr.tensor(y_ref, { dtype = "f64" })
    local cond = x:gt(0)
    H.assert_close(nnr.where(cond, x, y), H.map(function(a, b) return a > 0 and a or b end, x_ref, y_ref), 0)
    H.assert_close(nnr.where(cond, x, 0), H.map(function(a) return a > 0 and a or 0 end, x_ref), 0)
    H.assert_close(nnr.where(cond, 1, -1), H.map(function(a) return a > 0 and 1 or -1 end, x_ref), 0)
    H.assert_close(x:clamp(-0.5, 0.5), H.map(function(a) return math.min(0.5, math.max(-0.5, a)) end, x_ref), 0)
    H.assert_close(x:clamp(nil, 0), H.map(function(a) return math.min(0, a) end, x_ref), 0)
    H.assert_close(x:clamp(0), H.map(function(a) return math.max(0, a) end, x_ref), 0)
    local xi = nnr.tensor({ -5, 0, 5 }, { dtype = "i64" })
    H.assert_close(xi:clamp(-2, 2), { -2, 0, 2 }, 0)
    H.assert_close(x:masked_fill(cond, -9), H.map(function(a) return a > 0 and -9 or a end, x_ref), 0)
    local m = x:clone()
    m:masked_fill_(x:lt(0), 0)
    H.assert_close(m, H.map(function(a) return a < 0 and 0 or a end, x_ref), 0)
    m:clamp_(0, 0.25)
    assert.is_true(m:max():item() <= 0.25)
  end)

  it("in-place ops broadcast the right operand and keep the dtype", function()
    local a = nnr.ones(2, 3, { dtype = "f64" })
    a:add_(nnr.tensor({ 1, 2, 3 }, { dtype = "f64" }))
    H.assert_close(a, { { 2, 3, 4 }, { 2, 3, 4 } }, 0)
    a:mul_(2):sub_(1):div_(nnr.tensor({ { 1 }, { 2 } }, { dtype = "f64" }))
    H.assert_close(a, { { 3, 5, 7 }, { 1.5, 2.5, 3.5 } }, 0)
    local i = nnr.ones(3, { dtype = "i64" })
    assert.matches("add_: result type f32 cannot be stored in place in a i64 tensor", H.errmsg(function() i:add_(0.5) end))
    assert.matches("cannot be broadcast to the in%-place target's shape", H.errmsg(function() nnr.ones(3):add_(nnr.ones(2, 3)) end))
    -- in place through a strided view
    local base = nnr.zeros(3, 3)
    base:t():add_(nnr.tensor({ 1, 2, 3 }))
    H.assert_close(base, { { 1, 1, 1 }, { 2, 2, 2 }, { 3, 3, 3 } }, 0)
  end)

  it("handles large tensors across threads", function()
    local n = 1000003
    local a, b = nnr.rand(n, { dtype = "f64" }), nnr.rand(n, { dtype = "f64" })
    local c = a + b
    for _, i in ipairs { 1, 2, 500000, n } do
      assert.is_true(math.abs(c[i] - (a[i] + b[i])) < 1e-15)
    end
    local s = (a:float() * 2):sum():item()
    assert.is_true(math.abs(s - 2 * a:sum():item()) / s < 1e-5)
  end)

  -- the f32 transcendentals run on SLEEF's vector functions (plugins/cpu/vmath.c), at the running
  -- class's width (tests/cpu_classes.sh runs this under each class): within 2 ulp of f64 (sigmoid 3),
  -- over each function's whole range, on lengths that leave tails and on strided views
  it("f32 exp, log, tanh, sigmoid, sin, cos and erf stay within 2-3 ulp of f64 over their ranges", function()
    local frexp, huge = math.frexp, math.huge
    local function ulps(got, ref)        -- distance in ulp of the f32 binade of ref (denormals: 2^-149)
      if ref ~= ref then return got ~= got and 0 or huge end
      if math.abs(ref) >= 3.4028235677973366e38 + 2 ^ 103 then ref = ref > 0 and huge or -huge end   -- rounds to inf in f32
      if ref == huge or ref == -huge or ref == 0 then return got == ref and 0 or huge end
      local _, e = frexp(ref)
      return math.abs(got - ref) / math.max(2 ^ (e - 24), 2 ^ -149)
    end
    local function cat(...) return nnr.cat({ ... }) end
    local inf, nan = 1 / 0, 0 / 0
    local special = nnr.tensor({ 0, -0.0, inf, -inf, nan, 1e-30, -1e-30, 1e-40, -1e-40, 3e38, -3e38 })
    local cases = {
      exp = { cat(nnr.linspace(-104, 89, 20001), nnr.randn(5000) * 10, nnr.tensor({ 88.72, 88.73, -87.3, -103.9 })), 2 },
      log = { cat(nnr.linspace(-100, 88, 20001):exp(), nnr.rand(5000), nnr.tensor({ 1, 2, 1e-45, 1e-38, -1 })), 2 },
      tanh = { cat(nnr.linspace(-12, 12, 20001), nnr.randn(5000) * 3), 2 },
      sigmoid = { cat(nnr.linspace(-105, 105, 20001), nnr.randn(5000) * 5), 3 },
      sin = { cat(nnr.linspace(-200, 200, 20001), nnr.randn(5000) * 1e6, nnr.tensor({ 3.1415927, 1e10, 1e20 })), 2 },
      cos = { cat(nnr.linspace(-200, 200, 20001), nnr.randn(5000) * 1e6, nnr.tensor({ 1.5707964, 1e10, 1e20 })), 2 },
      erf = { cat(nnr.linspace(-6, 6, 20001), nnr.randn(5000)), 2 },
    }
    for name, case in pairs(cases) do
      local x = cat(case[1], special)
      local ref = x:double()[name](x:double()):totable()
      local function check(got, xs, what)
        for i = 1, #got do
          local u = ulps(got[i], ref[xs[i]])
          if u > case[2] then
            error(string.format("%s%s(%s) = %s, f64 %s: %s ulp", name, what, tostring(x[xs[i]]), tostring(got[i]), tostring(ref[xs[i]]), tostring(u)))
          end
        end
      end
      local idx = {}
      for i = 1, x:numel() do idx[i] = i end
      check(x[name](x):totable(), idx, "")
      -- every tail length of a vector (1..33 elements), and a strided view (every third element)
      for n = 1, 33 do
        local sub = {}
        for i = 1, n do sub[i] = i + 100 end
        check(x:narrow(1, 101, n)[name](x:narrow(1, 101, n)):totable(), sub, " tail " .. n)
      end
      local m = math.floor(x:numel() / 3)
      local strided = x:narrow(1, 1, 3 * m):view(m, 3):select(2, 2)
      local sub = {}
      for i = 1, m do sub[i] = 3 * i - 1 end
      check(strided[name](strided):totable(), sub, " strided")
    end
  end)

  -- pow in f32: the common exponents computed as PyTorch does (x * x, sqrt, 1 / x), the others on
  -- SLEEF's powf; a scalar exponent, a scalar base, or two tensors; within 2 ulp of f64, C99's specials
  it("f32 pow stays within 2 ulp of f64: scalar exponents, a scalar base, two tensors, specials", function()
    local frexp = math.frexp
    local function check(got, ref, what)
      for i = 1, #ref do
        local g, r = got[i], ref[i]
        local ok
        if r ~= r then ok = g ~= g
        elseif r == 0 or math.abs(r) == 1 / 0 or math.abs(r) >= 3.4028235677973366e38 + 2 ^ 103 then ok = g == r or (math.abs(r) > 3.4e38 and math.abs(g) == 1 / 0)
        else local _, e = frexp(r); ok = math.abs(g - r) <= 2 * math.max(2 ^ (e - 24), 2 ^ -149) end
        assert(ok, string.format("%s: element %d = %s, f64 %s", what, i, tostring(g), tostring(r)))
      end
    end
    local x = nnr.cat({ nnr.rand(5000) * 10, nnr.randn(2000) * 3, nnr.tensor({ 0, -0.0, 1, -1, 1 / 0, -1 / 0, 0 / 0, 1e-30, 1e30, 2 }) })
    local xd = x:double()
    for _, e in ipairs { 2, 3, 0.5, -1, 1, 0, 2.5, -1.5, 7, 0.3 } do
      local ref = xd:pow(e):totable()
      if e == 0.5 then ref[x:numel() - 4] = 0 / 0 end     -- (-inf) ^ 0.5: sqrt's NaN, as PyTorch (C99's pow says inf)
      check(x:pow(e):totable(), ref, "x ^ " .. e)
      check(x:narrow(1, 3, 29):pow(e):totable(), xd:narrow(1, 3, 29):pow(e):totable(), "tail x ^ " .. e)
    end
    local y = nnr.rand(x:numel()) * 4 - 2
    check(x:abs():pow(y):totable(), xd:abs():pow(y:double()):totable(), "x ^ y")
    check(nnr.pow(2.5, y):totable(), nnr.pow(2.5, y:double()):totable(), "2.5 ^ y")
    assert.are.equal(1, nnr.tensor({ 0 / 0 }):pow(0):item())       -- C99: pow(NaN, 0) = 1, as PyTorch
    -- an operand expanded along the last dim (stride 0) beside a scalar or another expanded one
    local e = nnr.tensor({ { 1 }, { 2 } }):expand(2, 1000)
    local f = nnr.tensor({ { 3 }, { 0.5 } }):expand(2, 1000)
    for _, case in ipairs { { e:pow(2), 1, 4 }, { e:pow(0.3), 1, 2 ^ 0.3 }, { nnr.pow(2.5, e), 2.5, 6.25 }, { e:pow(f), 1, math.sqrt(2) },
                            { f:pow(e), 3, 0.25 } } do
      local t = case[1]:totable()
      for j = 1, 1000, 333 do
        assert(math.abs(t[1][j] - case[2]) <= 1e-6 * case[2] and math.abs(t[2][j] - case[3]) <= 1e-6 * case[3], tostring(t[1][j]) .. " " .. tostring(t[2][j]))
      end
    end
  end)

  it("f32 GELU and its gradient (vectorized, without libm) stay within a few ulp of f64, tails and NaN included", function()
    local F = nnr.nn.functional
    local x = nnr.linspace(-15, 15, 60001)
    local ref, got = F.gelu(x:double()), F.gelu(x):double()
    local big = ref:abs():gt(1e-6)
    local rel = ((got - ref):abs() / ref:abs():clamp(1e-30)):masked_fill(big:logical_not(), 0):max():item()
    assert(rel < 2e-6, "gelu relative error " .. rel)
    assert((got - ref):abs():max():item() < 1e-6)
    local g = nnr.randn(60001):double()
    local xr = x:double():requires_grad_(true)
    F.gelu(xr):backward(g)
    local xf = x:clone():requires_grad_(true)
    F.gelu(xf):backward(g:float())
    assert((xf.grad:double() - xr.grad):abs():max():item() < 2e-6)
    -- the far lower tail is exactly zero (no denormals), NaN stays NaN, +inf stays +inf
    local t = F.gelu(nnr.tensor({ -30, -14, 0 / 0, 1 / 0, 30 })):totable()
    assert.are.equal(0, t[1]); assert.are.equal(0, t[2]); assert(t[3] ~= t[3]); assert.are.equal(math.huge, t[4]); assert.are.equal(30, t[5])
  end)
end)
