local nnr = require "nnr"
local H = require "helpers"

describe("creation", function()
  before_each(function() H.reseed() end)

  it("builds tensors from nested tables and back", function()
    local ref = H.rand_table({ 3, 4, 2 })
    local t = nnr.tensor(ref, { dtype = "f64" })
    assert.same({ 3, 4, 2 }, t:size())
    assert.equal("f64", t.dtype)
    assert.equal("cpu", t.device)
    H.assert_close(t, ref, 0)
    assert.equal("f32", nnr.tensor({ 1.5, 2 }).dtype)
    assert.equal("bool", nnr.tensor({ true, false }).dtype)
    assert.same({ true, false }, nnr.tensor({ true, false }):totable())
    assert.equal(3.5, nnr.tensor(3.5):item())
    assert.equal(0, nnr.tensor(3.5):dim())
  end)

  it("converts between every pair of dtypes", function()
    local values = { -3.7, -1, 0, 0.5, 2.25, 100 }
    local function expect(dt, v)
      if dt == "bool" then return v ~= 0 end
      if dt == "u8" then local i = v < 0 and math.ceil(v) or math.floor(v); return i % 256 end
      if dt == "i8" then local i = v < 0 and math.ceil(v) or math.floor(v); return (i + 128) % 256 - 128 end
      if dt == "i32" or dt == "i64" then return v < 0 and math.ceil(v) or math.floor(v) end
      return v
    end
    for _, from in ipairs { "f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool" } do
      local src = nnr.tensor(values, { dtype = "f64" }):to(from)
      local src_vals = src:totable()
      for _, to in ipairs { "f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool" } do
        local dst = src:to(to)
        assert.equal(to, dst.dtype)
        local got = dst:totable()
        for i, v in ipairs(src_vals) do
          if type(v) == "boolean" then v = v and 1 or 0 end
          local want = expect(to, v)
          if to == "f16" or to == "bf16" or to == "f32" then
            assert.is_true(math.abs(got[i] - want) <= math.abs(want) * (to == "bf16" and 0.008 or to == "f16" and 0.001 or 1e-7), from .. "->" .. to)
          else
            assert.equal(want, got[i], from .. "->" .. to .. " of " .. tostring(v))
          end
        end
      end
    end
  end)

  it("rounds to f16 and bf16 as IEEE does", function()
    assert.equal(1 + 2 ^ -10, nnr.tensor({ 1 + 2 ^ -10 }, { dtype = "f16" })[1])
    assert.equal(1, nnr.tensor({ 1 + 2 ^ -12 }, { dtype = "f16" })[1])        -- below half precision
    assert.equal(65504, nnr.tensor({ 65504 }, { dtype = "f16" })[1])
    assert.equal(math.huge, nnr.tensor({ 1e6 }, { dtype = "f16" })[1])
    assert.equal(1 + 2 ^ -7, nnr.tensor({ 1 + 2 ^ -7 }, { dtype = "bf16" })[1])
    assert.equal(1, nnr.tensor({ 1 + 2 ^ -9 }, { dtype = "bf16" })[1])       -- ties to even
  end)

  it("makes zeros, ones, full, empty, eye", function()
    H.assert_close(nnr.zeros(2, 3), { { 0, 0, 0 }, { 0, 0, 0 } }, 0)
    H.assert_close(nnr.ones({ 2 }, { dtype = "i32" }), { 1, 1 }, 0)
    assert.equal("i32", nnr.ones({ 2 }, { dtype = "i32" }).dtype)
    H.assert_close(nnr.full({ 2, 2 }, 7.5), { { 7.5, 7.5 }, { 7.5, 7.5 } }, 0)
    assert.same({ 4, 5 }, nnr.empty(4, 5):size())
    H.assert_close(nnr.eye(3), { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } }, 0)
    H.assert_close(nnr.eye(2, 3), { { 1, 0, 0 }, { 0, 1, 0 } }, 0)
    local z = nnr.zeros(0, 3)
    assert.equal(0, z:numel())
    H.assert_close(nnr.zeros_like(nnr.ones(2)), { 0, 0 }, 0)
    H.assert_close(nnr.full_like(nnr.ones(2), 3), { 3, 3 }, 0)
  end)

  it("makes tensors shaped as another: zeros/ones/empty/full_like and rand/randn/randint_like", function()
    local t = nnr.ones(3, 4, { dtype = "f64" })
    for _, name in ipairs { "zeros_like", "ones_like", "empty_like", "rand_like", "randn_like" } do
      local r = nnr[name](t)
      assert.same({ 3, 4 }, r:size())
      assert.equal("f64", r.dtype, name)
      assert.equal("f32", nnr[name](t, { dtype = "f32" }).dtype, name)
      assert.is_true(nnr[name](t, { requires_grad = true }).requires_grad, name)
      assert.matches(name .. ": unknown option 'dtyp'", H.errmsg(nnr[name], t, { dtyp = "f32" }))
      assert.matches(name .. ": expected a tensor to take the shape of, got number", H.errmsg(nnr[name], 3))
    end
    assert.is_true(nnr.full_like(t, 2, { requires_grad = true }).requires_grad)
    assert.matches("full_like: value must be a number or a boolean, got string", H.errmsg(nnr.full_like, t, "x"))
    H.assert_close(nnr.full_like(nnr.ones(2), true), { 1, 1 }, 0)
    -- random values: in range, not all equal, from the generator (the seed repeats them)
    nnr.manual_seed(7)
    local u = nnr.rand_like(t)
    assert(u:min():item() >= 0 and u:max():item() < 1 and u:std():item() > 0.1)
    nnr.manual_seed(7)
    assert.same(u:totable(), nnr.rand_like(t):totable())
    local n = nnr.randn_like(nnr.empty(1000))
    assert(math.abs(n:mean():item()) < 0.2 and math.abs(n:std():item() - 1) < 0.2)
    local i = nnr.randint_like(nnr.empty(200, { dtype = "i64" }), 3, 6)
    assert.equal("i64", i.dtype)
    assert.same({ 3, 5 }, { i:min():item(), i:max():item() })
    local h = nnr.randint_like(nnr.empty(200), 4)
    assert.equal("f32", h.dtype)
    assert.same({ 0, 3 }, { h:min():item(), h:max():item() })
    assert.matches("empty range", H.errmsg(nnr.randint_like, t, 6, 3))
    assert.matches("randint_like: expected %(t, high%) or %(t, low, high%)", H.errmsg(nnr.randint_like, t, "6"))
    assert.matches("not a floating%-point type", H.errmsg(nnr.randn_like, nnr.empty(2, { dtype = "i64" })))
  end)

  it("makes arange and linspace", function()
    H.assert_close(nnr.arange(5), { 0, 1, 2, 3, 4 }, 0)
    H.assert_close(nnr.arange(1, 2, 0.25), { 1, 1.25, 1.5, 1.75 }, 0)
    H.assert_close(nnr.arange(5, 0, -2), { 5, 3, 1 }, 0)
    assert.equal("i64", nnr.arange(3, { dtype = "i64" }).dtype)
    H.assert_close(nnr.linspace(0, 1, 5), { 0, 0.25, 0.5, 0.75, 1 }, 1e-7)
    assert.equal(0, nnr.linspace(0, 1, 0):numel())
  end)

  it("draws seeded random numbers", function()
    nnr.manual_seed(7)
    local a = nnr.rand(1000)
    nnr.manual_seed(7)
    local b = nnr.rand(1000)
    H.assert_close(a, b:totable(), 0)
    local c = nnr.rand(1000)
    assert.is_true((a - c):abs():sum():item() > 1)
    assert.is_true(a:min():item() >= 0 and a:max():item() < 1)
    local m = a:mean():item()
    assert.is_true(math.abs(m - 0.5) < 0.05, "uniform mean " .. m)
    local n = nnr.randn(20000, { dtype = "f64" })
    assert.is_true(math.abs(n:mean():item()) < 0.03)
    assert.is_true(math.abs(n:std():item() - 1) < 0.03)
    local r = nnr.randint(3, 7, { 1000 })
    assert.equal("i64", r.dtype)
    assert.equal(3, r:min():item())
    assert.equal(6, r:max():item())
    local u = nnr.empty(100):uniform_(-2, -1)
    assert.is_true(u:min():item() >= -2 and u:max():item() < -1)
    -- the generator state can be saved and restored
    local state = nnr.get_rng_state()
    local x = nnr.randn(5)
    nnr.set_rng_state(state)
    H.assert_close(nnr.randn(5), x:totable(), 0)
  end)
end)
