local nnr = require "nnr"
local H = require "helpers"

-- reference reductions over nested tables of shape {a, b, c}
local function reduce_ref(t, dims, f, init)
  local s = H.shape_of(t)
  local keep = {}
  for d = 1, #s do keep[d] = true end
  for _, d in ipairs(dims) do keep[d] = false end
  local groups, order = {}, {}
  local idx = {}
  local function walk(x, d)
    if d > #s then
      local key = {}
      for k = 1, #s do if keep[k] then key[#key + 1] = idx[k] end end
      local kk = table.concat(key, ",")
      if not groups[kk] then groups[kk] = {}; order[#order + 1] = kk end
      table.insert(groups[kk], x)
      return
    end
    for i = 1, s[d] do idx[d] = i; walk(x[i], d + 1) end
  end
  walk(t, 1)
  local out_shape = {}
  for d = 1, #s do if keep[d] then out_shape[#out_shape + 1] = s[d] end end
  local flat = {}
  for i, k in ipairs(order) do flat[i] = f(groups[k]) end
  local pos = 0
  local function build(d)
    if d > #out_shape then pos = pos + 1; return flat[pos] end
    local r = {}
    for i = 1, out_shape[d] do r[i] = build(d + 1) end
    return r
  end
  return build(1)
end

local function sum(v) local s = 0 for _, x in ipairs(v) do s = s + x end return s end
local function mean(v) return sum(v) / #v end
local function var(v) local m = mean(v); local s = 0 for _, x in ipairs(v) do s = s + (x - m) ^ 2 end return s / (#v - 1) end
local function prod(v) local s = 1 for _, x in ipairs(v) do s = s * x end return s end
local function vmax(v) return math.max(unpack(v)) end
local function vmin(v) return math.min(unpack(v)) end
local function argmax(v) local b = 1 for i = 2, #v do if v[i] > v[b] then b = i end end return b end
local function argmin(v) local b = 1 for i = 2, #v do if v[i] < v[b] then b = i end end return b end

local refs = {
  sum = sum, mean = mean, var = var, prod = prod, max = vmax, min = vmin, argmax = argmax, argmin = argmin,
  std = function(v) return math.sqrt(var(v)) end,
}

describe("reductions", function()
  before_each(function() H.reseed() end)

  for name, f in pairs(refs) do
    it(name .. " over all, one and several dims, keepdim, strided input", function()
      local ref = H.rand_table({ 3, 4, 5 }, 0.5, 1.5)
      for _, dt in ipairs { "f64", "f32" } do
        local tol = dt == "f64" and 1e-12 or 2e-6
        local x = nnr.tensor(ref, { dtype = dt })
        local exact = nnr.tensor(x:totable(), { dtype = "f64" }):totable()
        local all = x[name](x)
        assert.equal(0, all:dim())
        H.assert_close(all:item(), reduce_ref(exact, { 1, 2, 3 }, f), tol, name .. " all")
        for _, dims in ipairs { { 1 }, { 2 }, { 3 }, { 1, 3 } } do
          local want = reduce_ref(exact, dims, f)
          local arg = #dims == 1 and dims[1] or dims
          if (name == "argmax" or name == "argmin" or name == "max" or name == "min") and #dims > 1 then goto continue end
          local got = x[name](x, arg)
          H.assert_close(got, want, tol, name .. " dims " .. table.concat(dims, ","))
          local kept = x[name](x, arg, true)
          assert.equal(3, kept:dim())
          for _, d in ipairs(dims) do assert.equal(1, kept:size(d)) end
          local strided = H.noncontiguous(exact, dt)
          H.assert_close(strided[name](strided, arg), want, tol, name .. " strided")
          ::continue::
        end
      end
    end)
  end

  it("max and min with a dim return values and 1-based indices", function()
    local x = nnr.tensor({ { 1, 9, 3 }, { 7, 2, 8 } })
    local v, i = x:max(2)
    H.assert_close(v, { 9, 8 }, 0)
    H.assert_close(i, { 2, 3 }, 0)
    assert.equal("i64", i.dtype)
    v, i = x:min(1)
    H.assert_close(v, { 1, 2, 3 }, 0)
    H.assert_close(i, { 1, 2, 1 }, 0)
    assert.equal(2, x:argmax():item())        -- flat index over all elements
    assert.equal(1, x:argmin():item())
    H.assert_close(x:max(nnr.tensor({ 5, 5, 5 })), { { 5, 9, 5 }, { 7, 5, 8 } }, 0)
  end)

  it("integer sums are exact and widen to i64", function()
    local x = nnr.tensor({ 2 ^ 40, 1, 2 ^ 40 }, { dtype = "i64" })
    assert.equal("i64", x:sum().dtype)
    assert.equal(2 ^ 41 + 1, x:sum():item())
    assert.equal("i64", nnr.tensor({ true, true, false }):sum().dtype)
    assert.equal(2, nnr.tensor({ true, true, false }):sum():item())
    assert.matches("mean: input dtype must be floating point, got i64", H.errmsg(function() return x:mean() end))
  end)

  it("propagates NaN through max, and sums of empty tensors are zero", function()
    local x = nnr.tensor({ 1, 0 / 0, 3 }, { dtype = "f64" })
    assert.is_true(x:max():item() ~= x:max():item())
    assert.equal(2, x:argmax():item())
    assert.equal(0, nnr.zeros(0):sum():item())
    assert.equal(1, nnr.zeros(0):prod():item())
    assert.matches("max: cannot reduce over an empty dimension", H.errmsg(function() return nnr.zeros(0):max() end))
  end)

  -- the f32 fast paths: a long run split over the threads (pieces of 32768, partials combined in
  -- order), whole contiguous rows, and columns; against f64, NaN and infinities in any piece
  it("f32 sums, means, max and min over long runs, rows and columns match f64; NaN anywhere wins", function()
    local n = 300001                                        -- ten pieces and a tail
    local x = nnr.randn(n)
    local xd = x:double()
    local function close(a, b, tol) assert(math.abs(a - b) <= tol * math.max(1, math.abs(b)), a .. " vs " .. b) end
    close(x:sum():item(), xd:sum():item(), 1e-6)
    close(x:mean():item(), xd:mean():item(), 1e-6)
    assert.are.equal(xd:max():item(), x:max():item())
    assert.are.equal(xd:min():item(), x:min():item())
    -- the same bits whatever the thread count
    local t = nnr.get_num_threads()
    nnr.set_num_threads(1)
    local one = { x:sum():item(), x:max():item() }
    nnr.set_num_threads(t)
    assert.same(one, { x:sum():item(), x:max():item() })
    -- NaN in the first piece, a middle one and the tail; infinities
    for _, at in ipairs { 1, 150000, n } do
      local y = x:clone()
      y[at] = 0 / 0
      for _, op in ipairs { "sum", "mean", "max", "min" } do local v = y[op](y):item(); assert(v ~= v, op .. " with NaN at " .. at) end
    end
    local y = x:clone()
    y[200000] = 1 / 0
    assert.are.equal(1 / 0, y:max():item())
    assert.are.equal(1 / 0, y:sum():item())
    y[3] = -1 / 0
    assert(y:sum():item() ~= y:sum():item())               -- inf - inf
    assert.are.equal(-1 / 0, y:min():item())
    -- rows (the last dim, contiguous) and columns (the first), lengths with tails
    local m = nnr.randn(37, 1003)
    local md = m:double()
    for _, d in ipairs { 1, 2 } do
      local got, ref = m:sum(d):totable(), md:sum(d):totable()
      for i = 1, #ref do close(got[i], ref[i], 1e-5) end
      got, ref = m:mean(d):totable(), md:mean(d):totable()
      for i = 1, #ref do close(got[i], ref[i], 1e-5) end
      assert.same(md:max(d):totable(), m:max(d):double():totable())
      assert.same(md:min(d):totable(), m:min(d):double():totable())
    end
    m[5][700] = 0 / 0
    local rows = m:max(2):totable()
    assert(rows[5] ~= rows[5]); assert(rows[4] == rows[4])
    -- argmax and argmin: the first of equal extremes, the first NaN, over one run and over several
    local t = nnr.tensor({ { 1, 5, 5, 2 }, { 0 / 0, 3, 0 / 0, 1 }, { -1 / 0, -1 / 0, -1 / 0, -1 / 0 }, { 2, 1, 0 / 0, 7 } })
    assert.same({ 2, 1, 1, 3 }, t:argmax(2):totable())
    assert.same({ 1, 1, 1, 3 }, t:argmin(2):totable())
    assert.same(5, t:argmax():item())
    local w = nnr.randn(6, 50, 40)
    local wd = w:double()
    for _, d in ipairs { 1, 2, 3 } do
      assert.same(wd:argmax(d):totable(), w:argmax(d):totable())
      assert.same(wd:argmin(d):totable(), w:argmin(d):totable())
    end
    assert.same(wd:argmax():item(), w:argmax():item())
  end)

  -- f32 softmax over a dim that is not the last runs down whole contiguous rows, a block of 256
  -- columns at a time (reduce.c); blocks with a tail, NaN and -inf columns, and every dim of a 4-d one
  it("f32 softmax and log_softmax over a leading dim match f64, NaN and -inf columns included", function()
    local x = nnr.randn(37, 600) * 4
    x[3][10] = 0 / 0
    for i = 1, 37 do x[i][20] = -1 / 0 end
    x[5][30] = -1 / 0
    for _, f in ipairs { "softmax", "log_softmax" } do
      local got, ref = x[f](x, 1):double(), x:double()[f](x:double(), 1)
      local g, r = got:totable(), ref:totable()
      for i = 1, 37 do
        for j = 1, 600 do
          local a, b = g[i][j], r[i][j]
          assert((a ~= a and b ~= b) or a == b or math.abs(a - b) <= 1e-5 * math.max(1, math.abs(b)),
                 string.format("%s [%d][%d]: %s vs %s", f, i, j, tostring(a), tostring(b)))
        end
      end
    end
    local y = nnr.randn(3, 5, 7, 300)
    for d = 1, 4 do
      assert((y:softmax(d):double() - y:double():softmax(d)):abs():max():item() < 1e-6)
      assert((y:log_softmax(d):double() - y:double():log_softmax(d)):abs():max():item() < 1e-5)
    end
  end)

  -- f32 softmax over the last dim (reduce.c): rows shorter than 16 go in blocks of 64 rows, longer ones
  -- a row at a time; widths around both lane counts, row counts across the block size, and rows with a
  -- NaN, with -inf entries and all -inf
  it("f32 softmax and log_softmax over the last dim match f64 for short and long rows, NaN and -inf rows included", function()
    for _, n in ipairs { 1, 3, 10, 15, 16, 17, 33, 200 } do
      local x = nnr.randn(131, n) * 4
      x[7][n] = 0 / 0
      x[65][1] = -1 / 0
      for j = 1, n do x[100][j] = -1 / 0 end
      for _, f in ipairs { "softmax", "log_softmax" } do
        local g, r = x[f](x, 2):double():totable(), x:double()[f](x:double(), 2):totable()
        for i = 1, 131 do
          for j = 1, n do
            local a, b = g[i][j], r[i][j]
            assert((a ~= a and b ~= b) or a == b or math.abs(a - b) <= 1e-5 * math.max(1, math.abs(b)),
                   string.format("%s n=%d [%d][%d]: %s vs %s", f, n, i, j, tostring(a), tostring(b)))
          end
        end
        local nan_row = g[7]
        for j = 1, n do assert(nan_row[j] ~= nan_row[j], f .. ": a row with a NaN is all NaN") end
      end
    end
  end)

  it("softmax and log_softmax match the reference along any dim", function()
    local ref = H.rand_table({ 3, 4, 5 }, -4, 4)
    local x = nnr.tensor(ref, { dtype = "f64" })
    for _, d in ipairs { 1, 2, 3, -1 } do
      local dd = d < 0 and d + 4 or d
      local sums = reduce_ref(H.map(math.exp, ref), { dd }, sum)
      local s = x:softmax(d)
      local ls = x:log_softmax(d)
      -- softmax sums to one along d, and matches exp(x)/sum(exp(x))
      H.assert_close(s:sum(d), H.map(function() return 1 end, sums), 1e-12)
      local want = {}
      local sd = nnr.tensor(sums, { dtype = "f64" }):unsqueeze(d < 0 and d or dd)
      H.assert_close(s, (x:exp() / sd):totable(), 1e-12)
      H.assert_close(ls, (x - sd:log()):totable(), 1e-12)
    end
    -- stable for large inputs
    local big = nnr.tensor({ 1000, 1001, 1002 }, { dtype = "f32" }):softmax(1)
    H.assert_close(big, { 0.09003057, 0.24472847, 0.66524096 }, 1e-6)
    H.assert_close(nnr.tensor({ 1000, 1000 }):log_softmax(1), { -math.log(2), -math.log(2) }, 1e-6)
  end)
end)
