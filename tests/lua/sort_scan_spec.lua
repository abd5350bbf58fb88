-- sort, argsort, topk, cumsum, cumprod, floor/ceil/round/trunc, isnan/isinf/isfinite, any/all and
-- sampling (bernoulli, multinomial, randperm), against plain-Lua references
local nnr = require "nnr"
local H = require "helpers"
local gradcheck = nnr.autograd.gradcheck

local NAN = 0 / 0

-- a stable order of the list v: positions sorted by value (NaN above everything), ties by position
local function order_ref(v, descending)
  local pos = {}
  for i = 1, #v do pos[i] = i end
  local function rank(x) return x ~= x and math.huge or x end
  table.sort(pos, function(a, b)
    local x, y = v[a], v[b]
    local xn, yn = x ~= x, y ~= y
    if xn ~= yn then if descending then return xn else return yn end end
    if not xn and x ~= y then if descending then return rank(x) > rank(y) else return rank(x) < rank(y) end end
    return a < b
  end)
  return pos
end

-- the rows of a 3-d nested table along dim d, as lists with a setter for the results
local function rows_along(t, d)
  local s = H.shape_of(t)
  local rows = {}
  local other = {}
  for k = 1, 3 do if k ~= d then other[#other + 1] = k end end
  for a = 1, s[other[1]] do
    for b = 1, s[other[2]] do
      local idx, row = {}, {}
      for i = 1, s[d] do
        idx[other[1]], idx[other[2]], idx[d] = a, b, i
        row[i] = t[idx[1]][idx[2]][idx[3]]
      end
      rows[#rows + 1] = { row = row, at = function(i) idx[other[1]], idx[other[2]], idx[d] = a, b, i; return idx[1], idx[2], idx[3] end }
    end
  end
  return rows
end

local function same(x, y) return x == y or (x ~= x and y ~= y) end

local function check_sorted(x, dim, descending, values, indices)
  local tx, tv, ti = x:double():totable(), values:double():totable(), indices:totable()
  for _, r in ipairs(rows_along(tx, dim)) do
    local ord = order_ref(r.row, descending)
    for i = 1, #ord do
      local a, b, c = r.at(i)
      assert(ti[a][b][c] == ord[i], "index " .. i .. ": " .. tostring(ti[a][b][c]) .. " vs " .. ord[i])
      assert(same(tv[a][b][c], r.row[ord[i]]), "value " .. i)
    end
  end
end

describe("sort and argsort", function()
  before_each(function() H.reseed(31) end)

  it("values and 1-based indices along every dim, both directions, floats and integers, strided input", function()
    for _, dt in ipairs { "f64", "f32", "i64", "i32" } do
      local ref = H.rand_table({ 3, 4, 40 }, -5, 5, dt:sub(1, 1) == "i")    -- integers: many ties
      for _, x in ipairs { nnr.tensor(ref, { dtype = dt }), H.noncontiguous(ref, dt) } do
        for d = 1, 3 do
          for _, desc in ipairs { false, true } do
            local v, i = x:sort(d, desc)
            assert.are.equal(dt, v.dtype)
            assert.are.equal("i64", i.dtype)
            check_sorted(x, d, desc, v, i)
            H.assert_close(x:argsort(d, desc), i:totable(), 0)
          end
        end
      end
    end
  end)

  it("is stable with ties in short and long rows, ascending and descending", function()
    for _, n in ipairs { 7, 33, 1000, 70000 } do
      local x = nnr.randint(0, 5, { n }):double()
      for _, desc in ipairs { false, true } do
        local v, i = x:sort { descending = desc, stable = true }
        local vt, it_ = v:totable(), i:totable()
        for k = 2, n do
          if desc then assert(vt[k - 1] >= vt[k]) else assert(vt[k - 1] <= vt[k]) end
          if vt[k - 1] == vt[k] then assert(it_[k - 1] < it_[k], "ties keep their order") end
        end
      end
    end
  end)

  it("orders NaN above +inf (last ascending, first descending) and -0.0 with 0.0", function()
    local inf = math.huge
    for _, dt in ipairs { "f32", "f64", "f16", "bf16" } do
      local x = nnr.tensor({ 1, NAN, -inf, 0, inf, -0.0, NAN, -2 }, { dtype = dt })
      local v, i = x:sort()
      H.assert_close(i, { 3, 8, 4, 6, 1, 5, 2, 7 }, 0)
      v, i = x:sort(1, true)
      H.assert_close(i, { 2, 7, 5, 1, 4, 6, 8, 3 }, 0)
      local big = nnr.cat { nnr.randn(100):to(dt), nnr.tensor({ NAN }, { dtype = dt }), nnr.randn(100):to(dt) }
      local bv, bi = big:sort()
      assert.are.equal(101, bi[201])
      assert(bv:narrow(1, 1, 200):isnan():any():item() == false)
    end
  end)

  it("every dtype, compared with a plain-Lua order", function()
    for _, dt in ipairs { "f16", "bf16", "i8", "u8", "bool", "i32", "i64", "f32", "f64" } do
      local ref = H.rand_table({ 2, 3, 50 }, 0, dt == "bool" and 2 or 100, true)
      local x = nnr.tensor(ref, { dtype = dt })
      for _, desc in ipairs { false, true } do
        local v, i = x:sort(3, desc)
        check_sorted(x, 3, desc, v, i)
      end
    end
  end)

  it("a long f32 row (radix path) agrees with gather through its indices", function()
    local x = nnr.randn(200000)
    local v, i = x:sort()
    assert.are.equal(0, (x:gather(1, i) - v):abs():max():item())
    assert((v:narrow(1, 2, 199999) - v:narrow(1, 1, 199999)):min():item() >= 0)
  end)

  it("empty and 0-d tensors", function()
    local v, i = nnr.zeros(0):sort()
    assert.are.same({ 1, 0 }, { v:dim(), v:size(1) })
    assert.are.equal(0, i:numel())
    v, i = nnr.zeros(3, 0):sort(1)
    assert.are.same({ 3, 0 }, { v:size(1), v:size(2) })
    v, i = nnr.tensor(4.5):sort()
    assert.are.equal(0, v:dim())
    assert.are.equal(4.5, v:item())
    assert.are.equal(1, i:item())
    assert.has_error(function() nnr.tensor(4.5):sort(2) end, "sort: dimension 2 is out of range for a 0-dimensional tensor (expected 1 or -1)")
  end)

  it("refuses bad dims and options with messages naming them", function()
    local x = nnr.randn(3, 4)
    assert.has_error(function() x:sort(3) end, "sort: dimension 3 is out of range for a tensor of shape [3, 4] (expected 1..2 or -2..-1)")
    assert.has_error(function() x:sort { dim = 1, order = "up" } end, "sort: unknown option 'order' (known: descending, dim, stable)")
    assert.has_error(function() x:sort { stable = 1 } end, "sort: stable must be true or false, got 1")
    assert.has_error(function() x:sort(1, "yes") end, "sort: descending must be true or false, got 'yes'")
    assert.has_error(function() x:sort(1.5) end, "sort: dim must be an integer, got 1.5")
    assert.has_error(function() x:sort(0 / 0) end, "sort: dim must be an integer, got nan")
  end)
end)

describe("topk", function()
  before_each(function() H.reseed(41) end)

  it("the k largest and smallest along a dim match a stable order, for every k", function()
    for _, n in ipairs { 9, 300 } do
      local ref = H.rand_table({ 2, 3, n }, -5, 5)
      for _, x in ipairs { nnr.tensor(ref, { dtype = "f64" }), H.noncontiguous(ref, "f32") } do
        for _, k in ipairs { 0, 1, 5, n } do
          for _, largest in ipairs { true, false } do
            local v, i = x:topk(k, 3, largest)
            local sv, si = x:sort(3, largest)
            H.assert_close(v, sv:narrow(3, 1, k):double():totable(), 0)
            H.assert_close(i, si:narrow(3, 1, k):totable(), 0)
          end
        end
        local v, i = x:topk(2, { dim = 1, largest = false, sorted = true })
        local sv, si = x:sort(1)
        H.assert_close(i, si:narrow(1, 1, 2):totable(), 0)
      end
    end
  end)

  it("ties go to the lower index; NaN counts as the largest", function()
    local x = nnr.tensor { 1, 3, 3, NAN, 3, 2 }
    local v, i = x:topk(3)
    H.assert_close(i, { 4, 2, 3 }, 0)
    v, i = nnr.tensor({ 2, 1, 1, 1, 5 }):topk(2, 1, false)
    H.assert_close(i, { 2, 3 }, 0)
    for _, dt in ipairs { "f32", "i32", "f64", "i64" } do      -- long rows (the heap), packed and wide keys
      local t = nnr.randint(0, 4, { 2, 1000 }):to(dt)
      for _, largest in ipairs { true, false } do
        local tv, ti = t:topk(20, 2, largest)
        local sv, si = t:sort(2, largest)
        H.assert_close(ti, si:narrow(2, 1, 20):totable(), 0)
      end
    end
  end)

  it("a long row, against a full sort", function()
    for _, x in ipairs { nnr.rand(100000), nnr.randint(0, 50, { 100000 }):float(), nnr.randn(300, 1000):t():select(2, 7) } do
      for _, largest in ipairs { true, false } do       -- one long row: split among the threads, then merged
        local v, i = x:topk(50, 1, largest)
        local sv, si = x:sort(1, largest)
        H.assert_close(v, sv:narrow(1, 1, 50):double():totable(), 0)
        H.assert_close(i, si:narrow(1, 1, 50):totable(), 0)
      end
    end
  end)

  it("refuses k out of range and bad options", function()
    local x = nnr.randn(3, 4)
    assert.has_error(function() x:topk(5) end, "topk: k = 5 is out of range for dimension 2 of a tensor of shape [3, 4] (expected 0..4)")
    assert.has_error(function() x:topk(-1) end, "topk: k = -1 is out of range for dimension 2 of a tensor of shape [3, 4] (expected 0..4)")
    assert.has_error(function() x:topk(1.5) end, "topk: k must be an integer, got 1.5")
    assert.has_error(function() x:topk(2, { largest = "no" }) end, "topk: largest must be true or false, got 'no'")
    assert.has_error(function() x:topk(2, { k = 3 }) end, "topk: unknown option 'k' (known: dim, largest, sorted)")
  end)
end)

describe("cumsum and cumprod", function()
  before_each(function() H.reseed(51) end)

  local function scan_ref(row, prod)
    local out, acc = {}, prod and 1 or 0
    for i = 1, #row do acc = prod and acc * row[i] or acc + row[i]; out[i] = acc end
    return out
  end

  it("along every dim, contiguous and strided, against a plain-Lua scan", function()
    local ref = H.rand_table({ 3, 4, 5 }, 0.5, 1.5)
    for _, x in ipairs { nnr.tensor(ref, { dtype = "f64" }), H.noncontiguous(ref, "f64") } do
      for d = 1, 3 do
        for _, prod in ipairs { false, true } do
          local y = (prod and x:cumprod(d) or x:cumsum(d)):totable()
          for _, r in ipairs(rows_along(ref, d)) do
            local e = scan_ref(r.row, prod)
            for i = 1, #e do
              local a, b, c = r.at(i)
              assert(math.abs(y[a][b][c] - e[i]) < 1e-12, "scan value")
            end
          end
        end
      end
    end
    assert.are.equal("f32", nnr.tensor(ref):cumsum(-1).dtype)
  end)

  it("integers and bool give i64; half types keep theirs", function()
    local x = nnr.tensor({ 1, 2, 3, 4 }, { dtype = "i32" })
    assert.are.equal("i64", x:cumsum(1).dtype)
    H.assert_close(x:cumprod(1), { 1, 2, 6, 24 }, 0)
    H.assert_close(nnr.tensor({ true, false, true }):cumsum(1), { 1, 1, 2 }, 0)
    local h = nnr.tensor({ 1, 2, 3 }, { dtype = "bf16" }):cumsum(1)
    assert.are.equal("bf16", h.dtype)
    H.assert_close(h, { 1, 3, 6 }, 0)
    local f = x:cumsum(1, { dtype = "f64" })
    assert.are.equal("f64", f.dtype)
    H.assert_close(f, { 1, 3, 6, 10 }, 0)
    assert.has_error(function() x:cumsum(1, { dtype = "f99" }) end)
    assert.has_error(function() x:cumsum(1, { out = x }) end, "cumsum: unknown option 'out' (known: dtype)")
  end)

  it("a long row (the chunked parallel scan) matches a serial f64 scan", function()
    local x = nnr.rand(300001, { dtype = "f64" })
    local y = x:cumsum(1)
    local xs = x:totable()
    local acc, worst = 0, 0
    local yt = y:totable()
    for i = 1, #xs do acc = acc + xs[i]; worst = math.max(worst, math.abs(yt[i] - acc)) end
    assert(worst < 1e-8, "chunked scan off by " .. worst)
    local p = nnr.full({ 200000 }, 1.0000001, { dtype = "f64" }):cumprod(1)
    assert(math.abs(p[200000] - 1.0000001 ^ 200000) < 1e-9)
  end)

  it("empty, 0-d and errors", function()
    assert.are.equal(0, nnr.zeros(0):cumsum(1):numel())
    assert.are.equal(0, nnr.zeros(2, 0):cumprod(2):numel())
    assert.are.equal(3, nnr.tensor(3.0):cumsum(1):item())
    assert.has_error(function() nnr.randn(2, 3):cumsum() end, "cumsum: dim is required (cumulative ops take the dimension to run along)")
    assert.has_error(function() nnr.randn(2, 3):cumprod(3) end, "cumprod: dimension 3 is out of range for a tensor of shape [2, 3] (expected 1..2 or -2..-1)")
  end)
end)

describe("rounding and tests", function()
  it("floor, ceil, trunc, round (half to even) and round with decimals", function()
    local v = { 0.5, 1.5, 2.5, -0.5, -1.5, -2.7, 3.2, 1e10 + 0.5 }
    for _, dt in ipairs { "f32", "f64" } do
      local x = nnr.tensor(v, { dtype = dt })
      local function ref(f) local r = {} for i, a in ipairs(x:totable()) do r[i] = f(a) end return r end
      H.assert_close(x:floor(), ref(math.floor), 0)
      H.assert_close(x:ceil(), ref(math.ceil), 0)
      H.assert_close(x:trunc(), ref(function(a) return a < 0 and math.ceil(a) or math.floor(a) end), 0)
    end
    H.assert_close(nnr.tensor({ 0.5, 1.5, 2.5, -0.5, -2.5, 3.5 }, { dtype = "f64" }):round(), { 0, 2, 2, 0, -2, 4 }, 0)
    H.assert_close(nnr.tensor({ 1.2345, -2.5551, 125 }, { dtype = "f64" }):round(2), { 1.23, -2.56, 125 }, 1e-12)
    H.assert_close(nnr.tensor({ 1234, 1250, -1777 }, { dtype = "f64" }):round { decimals = -2 }, { 1200, 1200, -1800 }, 0)
    H.assert_close(nnr.tensor({ 3, -4 }, { dtype = "i64" }):floor(), { 3, -4 }, 0)
    local x = nnr.tensor { 1.5, 2.5 }
    x:round_()
    H.assert_close(x, { 2, 2 }, 0)
    assert.has_error(function() x:round(0 / 0) end, "round: decimals must be an integer in [-300, 300], got nan")
    assert.has_error(function() x:round { digits = 1 } end, "round: unknown option 'digits' (known: decimals)")
    assert.has_error(function() nnr.tensor({ true }):floor() end, "floor: not defined for bool tensors")
  end)

  it("isnan, isinf, isfinite give bool; integers are finite", function()
    local x = nnr.tensor { 1, NAN, math.huge, -math.huge, 0 }
    H.assert_close(x:isnan(), { false, true, false, false, false }, 0)
    H.assert_close(x:isinf(), { false, false, true, true, false }, 0)
    H.assert_close(x:isfinite(), { true, false, false, false, true }, 0)
    local i = nnr.tensor({ 1, 2 }, { dtype = "i32" })
    assert.are.equal("bool", i:isnan().dtype)
    H.assert_close(i:isfinite(), { true, true }, 0)
    H.assert_close(nnr.tensor({ NAN }, { dtype = "bf16" }):isnan(), { true }, 0)
  end)

  it("any and all over everything, dims and keepdim, any dtype, empty", function()
    local x = nnr.tensor { { 0, 0, 1 }, { 0, 0, 0 } }
    assert.are.equal(true, x:any():item())
    assert.are.equal(false, x:all():item())
    H.assert_close(x:any(2), { true, false }, 0)
    H.assert_close(x:any(1, true), { { false, false, true } }, 0)
    assert.are.equal(false, x:all({ 1, 2 }):item())
    for _, dt in ipairs { "f16", "i8", "u8", "i64", "bool", "f64" } do
      H.assert_close(x:to(dt):any(-1), { true, false }, 0)
    end
    assert.are.equal(true, nnr.tensor({ NAN, 1 }):all():item())
    assert.are.equal(false, nnr.zeros(0):any():item())
    assert.are.equal(true, nnr.zeros(0):all():item())
    assert.are.equal(true, nnr.tensor(2):any():item())
    assert.has_error(function() x:any(1, 1) end, "any: keepdim must be true or false, got 1")
  end)
end)

describe("sampling", function()
  it("bernoulli: frequencies, reproducible from manual_seed, p checked", function()
    nnr.manual_seed(5)
    local a = nnr.bernoulli(nnr.full({ 40000 }, 0.25, { dtype = "f64" }))
    nnr.manual_seed(5)
    local b = nnr.full({ 40000 }, 0.25):bernoulli()
    H.assert_close(a, b:double():totable(), 0)
    assert(math.abs(a:mean():item() - 0.25) < 0.01)
    local t = nnr.zeros(100, 4):t()                  -- in place on a transposed tensor, p broadcast
    t:bernoulli_(nnr.tensor { { 0 }, { 1 }, { 0 }, { 1 } })
    H.assert_close(t:sum(2), { 0, 100, 0, 100 }, 0)
    assert.are.equal(0, nnr.zeros(10):bernoulli(0):sum():item())
    assert.has_error(function() nnr.bernoulli(nnr.tensor { 0.5, 1.5 }) end, "bernoulli_: every probability must lie in [0, 1], got values in [0.5, 1.5]")
    assert.has_error(function() nnr.bernoulli(nnr.tensor { 0.5, NAN }) end)
    assert.has_error(function() nnr.zeros(3):bernoulli_(NAN) end, "bernoulli_: p must be a finite number in [0, 1], got nan")
    assert.has_error(function() nnr.bernoulli(nnr.tensor({ 1 }, { dtype = "i64" })) end)
  end)

  it("multinomial: 1-based categories, frequencies, no zero-probability draws, errors", function()
    nnr.manual_seed(7)
    local s = nnr.multinomial(nnr.tensor { 0.2, 0, 0.8 }, 20000, true)
    assert.are.equal(0, s:eq(2):sum():item())
    assert(math.abs(s:eq(3):double():mean():item() - 0.8) < 0.02)
    local w = nnr.multinomial(nnr.tensor { { 1, 2, 3, 4 }, { 0, 5, 0, 5 } }, 2)
    assert.are.same({ 2, 2 }, { w:size(1), w:size(2) })
    local row2 = w[2]
    assert(row2[1] ~= row2[2] and (row2[1] == 2 or row2[1] == 4) and (row2[2] == 2 or row2[2] == 4))
    local all4 = nnr.multinomial(nnr.tensor { 1, 2, 3, 4 }, 4):sort()
    H.assert_close(all4, { 1, 2, 3, 4 }, 0)
    -- up to 16 draws keep the smallest race keys by insertion, more sort them all: the same order
    local p = nnr.rand(4, 300):pow(3)
    p:select(1, 2):narrow(1, 1, 150):zero_()
    for _, n in ipairs { 1, 2, 5, 16 } do
      nnr.manual_seed(11); local few = nnr.multinomial(p, n)
      nnr.manual_seed(11); local many = nnr.multinomial(p, 17)
      H.assert_close(few, many:narrow(2, 1, n):totable(), 0)
    end
    nnr.manual_seed(9); local a = nnr.multinomial(nnr.rand(3, 10), 5)
    nnr.manual_seed(9); local b = nnr.multinomial(nnr.rand(3, 10), 5)
    H.assert_close(a, b:totable(), 0)
    assert.has_error(function() nnr.multinomial(nnr.tensor { 0.5, -0.1 }, 1) end,
      "multinomial: probs row 1 has the invalid entry -0.1 at 2 (entries must be finite and >= 0)")
    assert.has_error(function() nnr.multinomial(nnr.tensor { { 1, 1 }, { 0, 0 } }, 1) end,
      "multinomial: probs row 2 sums to 0 (at least one entry must be positive)")
    assert.has_error(function() nnr.multinomial(nnr.tensor { NAN, 1 }, 1) end)
    assert.has_error(function() nnr.multinomial(nnr.tensor { 1, 1 }, 3) end,
      "multinomial: cannot draw 3 samples without replacement from 2 categories (pass replacement = true)")
    assert.has_error(function() nnr.multinomial(nnr.tensor { 1, 0, 1 }, 3) end,
      "multinomial: probs row 1 has 2 positive entries, too few for 3 samples without replacement")
    assert.has_error(function() nnr.multinomial(nnr.tensor { 1, 1 }, 0) end, "multinomial: num_samples must be an integer >= 1, got 0")
    assert.has_error(function() nnr.multinomial(nnr.zeros(2, 2, 2), 1) end, "multinomial: probs must be 1-d or 2-d, got shape [2, 2, 2]")
  end)

  it("randperm: a permutation of 1..n, reproducible, dtype option", function()
    nnr.manual_seed(11)
    local p = nnr.randperm(1000)
    assert.are.equal("i64", p.dtype)
    H.assert_close(p:sort(), nnr.arange(1, 1001):totable(), 0)
    nnr.manual_seed(11)
    H.assert_close(nnr.randperm(1000), p:totable(), 0)
    assert.are.equal(0, nnr.randperm(0):numel())
    assert.are.equal("f32", nnr.randperm(5, { dtype = "f32" }).dtype)
    assert.has_error(function() nnr.randperm(-1) end, "randperm: n must be an integer >= 0, got -1")
    assert.has_error(function() nnr.randperm(4, { size = 2 }) end)
  end)
end)

describe("gradients (float64 gradcheck)", function()
  before_each(function() H.reseed(61) end)
  local function f64(shape, lo, hi) return nnr.tensor(H.rand_table(shape, lo or -2, hi or 2), { dtype = "f64", requires_grad = true }) end
  local function strided(shape, lo, hi)
    local t = H.noncontiguous(H.rand_table(shape, lo or -2, hi or 2), "f64")
    return t:requires_grad_()
  end
  local function check(fn, inputs) local ok, msg = gradcheck(fn, inputs); assert(ok, msg) end

  it("sort values, both directions, any dim, strided", function()
    check(function(x) return (x:sort(2)) end, { f64({ 3, 5 }) })
    check(function(x) return (x:sort(1, true)) end, { strided({ 4, 3 }) })
    check(function(x) return (x:sort { dim = -1, descending = true }) * 2 end, { f64({ 2, 3, 4 }) })
  end)

  it("topk values", function()
    check(function(x) return (x:topk(2, 2)) end, { f64({ 3, 6 }) })
    check(function(x) return (x:topk(3, 1, false)) end, { strided({ 5, 3 }) })
  end)

  it("cumsum and cumprod, with zeros in the input", function()
    check(function(x) return x:cumsum(2) end, { f64({ 3, 5 }) })
    check(function(x) return x:cumsum(1) end, { strided({ 4, 3 }) })
    check(function(x) return x:cumprod(2) end, { f64({ 3, 5 }, 0.5, 1.5) })
    check(function(x) return x:cumprod(1) end, { strided({ 4, 3 }) })
    for _, row in ipairs { { 2, 0, 3, 4 }, { 0, 1.5, 2, -1 }, { 2, 0, 3, 0, 5 }, { 1, 2, 3, 0 } } do
      check(function(x) return x:cumprod(1) end, { nnr.tensor(row, { dtype = "f64", requires_grad = true }) })
    end
  end)

  it("the gradients of sort and cumsum are differentiable ops (grad of grad through scatter_add)", function()
    local x = f64({ 6 })
    local v = x:sort()
    assert.are.equal("SortBackward", v.grad_fn)
    local w = nnr.randn(6, { dtype = "f64" })
    local loss = (v * w):sum()
    loss:backward()
    local _, i = x:sort()
    H.assert_close(x.grad:gather(1, i), w:totable(), 1e-15)
  end)

  it("second order (gradgradcheck): sort, topk, cumsum, cumprod with and without zeros", function()
    local gg = nnr.autograd.gradgradcheck
    local function ok(fn, inputs) local good, msg = gg(fn, inputs); assert(good, msg) end
    ok(function(x) return (x:sort(2, true)) end, { f64({ 3, 5 }) })
    ok(function(x) return (x:topk(2, 1)) end, { strided({ 5, 3 }) })
    ok(function(x) return x:cumsum(2) * x end, { f64({ 3, 4 }) })
    ok(function(x) return x:cumprod(2) end, { f64({ 3, 5 }, 0.5, 1.5) })
    ok(function(x) return x:cumprod(1) end, { nnr.tensor({ 2, 0, 3, 4, 0, 1.5 }, { dtype = "f64", requires_grad = true }) })
    local z = nnr.tensor({ { 2, 0, 3 }, { 0, 0, 1.5 }, { 1, 2, 0 } }, { dtype = "f64" }):t():detach():requires_grad_()
    ok(function(x) return x:cumprod(2) end, { z })          -- a non-contiguous leaf, zeros in every row
    ok(function(x) return x:cumprod(1) end, { z })
  end)

  it("floor, ceil, round, trunc have a zero gradient; indices and tests carry none", function()
    for _, name in ipairs { "floor", "ceil", "round", "trunc" } do
      local x = f64({ 5 })
      x[name](x):sum():backward()
      H.assert_close(x.grad, { 0, 0, 0, 0, 0 }, 0)
    end
    local x = f64({ 4 })
    local _, i = x:sort()
    assert.are.equal(false, i.requires_grad)
    assert.are.equal(false, x:isnan().requires_grad)
    assert.are.equal(false, x:argsort().requires_grad)
  end)
end)
