local nnr = require "nnr"
local H = require "helpers"

local function matmul_ref(a, b)
  local m, k, n = #a, #b, #b[1]
  local c = {}
  for i = 1, m do
    c[i] = {}
    for j = 1, n do
      local s = 0
      for p = 1, k do s = s + a[i][p] * b[p][j] end
      c[i][j] = s
    end
  end
  return c
end

describe("matmul", function()
  before_each(function() H.reseed() end)

  it("mm of f32 and f64 matches the triple loop, for every layout", function()
    for _, shape in ipairs { { 1, 1, 1 }, { 5, 7, 3 }, { 16, 9, 33 }, { 1, 64, 1 } } do
      local m, k, n = shape[1], shape[2], shape[3]
      local a_ref, b_ref = H.rand_table({ m, k }), H.rand_table({ k, n })
      local want = matmul_ref(a_ref, b_ref)
      for _, case in ipairs { { "f64", 1e-12 }, { "f32", 1e-5 } } do
        local a, b = nnr.tensor(a_ref, { dtype = case[1] }), nnr.tensor(b_ref, { dtype = case[1] })
        H.assert_close(a:mm(b), want, case[2], "mm " .. table.concat(shape, "x"))
        if m > 1 and k > 1 then
          H.assert_close(H.noncontiguous(a_ref, case[1]):mm(b), want, case[2], "mm transposed a")
        end
        if k > 1 and n > 1 then
          H.assert_close(a:mm(H.noncontiguous(b_ref, case[1])), want, case[2], "mm transposed b")
        end
        -- a view whose rows are not unit-stride in either direction gets packed
        local wide = nnr.zeros(m, 2 * k, { dtype = case[1] })
        local view = wide:view(m, k, 2):select(3, 1)
        view:copy_(a)
        H.assert_close(view:mm(b), want, case[2], "mm packed")
      end
    end
  end)

  it("matmul broadcasts batch dims and handles 1-d operands", function()
    local a_ref, b_ref = H.rand_table({ 2, 1, 3, 4 }), H.rand_table({ 5, 4, 2 })
    local a, b = nnr.tensor(a_ref, { dtype = "f64" }), nnr.tensor(b_ref, { dtype = "f64" })
    local c = a:matmul(b)
    assert.same({ 2, 5, 3, 2 }, c:size())
    for i = 1, 2 do for j = 1, 5 do
      H.assert_close(c[{ i, j }], matmul_ref(a_ref[i][1], b_ref[j]), 1e-12)
    end end
    local v_ref = H.rand_table({ 4 })
    local v = nnr.tensor(v_ref, { dtype = "f64" })
    local m = nnr.tensor(a_ref[1][1], { dtype = "f64" })
    local mv = m:matmul(v)
    assert.same({ 3 }, mv:size())
    H.assert_close(mv, H.map(function(x) return x end, (function()
      local r = {}
      for i = 1, 3 do local s = 0 for p = 1, 4 do s = s + a_ref[1][1][i][p] * v_ref[p] end r[i] = s end
      return r end)()), 1e-12)
    local dot = v:dot(v):item()
    local want = 0
    for p = 1, 4 do want = want + v_ref[p] ^ 2 end
    assert.is_true(math.abs(dot - want) < 1e-12)
    assert.same({ 2 }, v:matmul(nnr.rand(4, 2, { dtype = "f64" })):size())
    local bm = nnr.rand(3, 2, 4):bmm(nnr.rand(3, 4, 5))
    assert.same({ 3, 2, 5 }, bm:size())
  end)

  it("refuses mismatched shapes and unsupported dtypes", function()
    assert.equal("matmul: inner dimensions differ: [2, 3] @ [4, 5] (3 vs 4)",
      H.errmsg(function() return nnr.rand(2, 3):matmul(nnr.rand(4, 5)) end))
    assert.matches("mm: expected two 2%-d tensors", H.errmsg(function() return nnr.rand(2, 3, 4):mm(nnr.rand(4, 5)) end))
    assert.matches("bmm: expected two 3%-d tensors with equal batch sizes", H.errmsg(function() return nnr.rand(2, 3, 4):bmm(nnr.rand(3, 4, 5)) end))
    assert.equal("matmul: dtype i64 is not supported (expected f32, f64, f16 or bf16)",
      H.errmsg(function() return nnr.ones(2, 2, { dtype = "i64" }):matmul(nnr.ones(2, 2, { dtype = "i64" })) end))
    -- f16 and bf16 multiply with f32 sums (as cuBLAS does), rounded once
    local a, b = nnr.rand(3, 5):to("bf16"), nnr.rand(5, 2):to("bf16")
    local got = a:matmul(b)
    assert.equal("bf16", got.dtype)
    assert.is_true((got:float() - a:float():matmul(b:float())):abs():max():item() < 1e-2)
  end)
end)

describe("joining and indexing", function()
  it("cat, stack, split, chunk", function()
    local a, b = nnr.tensor({ { 1, 2 }, { 3, 4 } }), nnr.tensor({ { 5, 6 } })
    H.assert_close(nnr.cat({ a, b }), { { 1, 2 }, { 3, 4 }, { 5, 6 } }, 0)
    H.assert_close(nnr.cat({ a, a:t() }, 2), { { 1, 2, 1, 3 }, { 3, 4, 2, 4 } }, 0)
    assert.equal("f64", nnr.cat({ a, nnr.ones(1, 2, { dtype = "f64" }) }).dtype)
    assert.matches("cat: tensor 2 has shape %[1, 3%], expected %[2, 2%] except in dimension 1",
      H.errmsg(function() return nnr.cat({ a, nnr.ones(1, 3) }) end))
    local s = nnr.stack({ a, a * 2 })
    assert.same({ 2, 2, 2 }, s:size())
    H.assert_close(nnr.stack({ a, a * 2 }, 3)[{ 1, 2 }], { 2, 4 }, 0)
    assert.matches("stack: tensor 2 has shape", H.errmsg(function() return nnr.stack({ a, b }) end))
    local x = nnr.arange(10)
    local parts = x:split(4)
    assert.equal(3, #parts)
    H.assert_close(parts[3], { 8, 9 }, 0)
    assert.is_true(parts[2]:same_storage(x))
    local p2 = x:split({ 3, 7 })
    H.assert_close(p2[1], { 0, 1, 2 }, 0)
    assert.equal(3, #x:chunk(3))
    H.assert_close(x:chunk(3)[3], { 8, 9 }, 0)
  end)

  -- the contiguous fast paths (index.c: [outer, N, inner] slices) against the general walk on a
  -- transposed (non-contiguous) copy of the same values, every dim, 4- and 8-byte and odd dtypes
  it("gather and index_select over every dim of contiguous tensors match the general path", function()
    for _, dt in ipairs { "f32", "f64", "i64", "bf16", "u8" } do
      local x = (nnr.rand(4, 5, 6, 3) * 100):to(dt)
      local xt = x:permute(4, 3, 2, 1):contiguous():permute(4, 3, 2, 1)      -- same values, other strides
      assert.is_false(xt:is_contiguous())
      for d = 1, 4 do
        local n = x:size(d)
        local idx = nnr.tensor({ n, 1, n, 2, 1 }, { dtype = "i64" })
        assert.same(xt:index_select(d, idx):totable(), x:index_select(d, idx):totable())
        local shape = x:size()
        shape[d] = 3
        local gi = nnr.randint(1, n + 1, shape)
        assert.same(xt:gather(d, gi):totable(), x:gather(d, gi):totable())
      end
    end
    local x = nnr.randn(3, 4)
    assert.equal("gather: index 5 is out of range [1, 4] for dimension 2",
      H.errmsg(function() return x:gather(2, nnr.tensor({ { 1 }, { 5 }, { 2 } }, { dtype = "i64" })) end))
    assert.equal("index_select: index 5 is out of range [1, 4] for dimension 2",
      H.errmsg(function() return x:index_select(2, { 1, 5 }) end))
  end)
  it("gather and index_select take 1-based indices", function()
    local x = nnr.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
    local idx = nnr.tensor({ { 3, 1 }, { 2, 2 } }, { dtype = "i64" })
    H.assert_close(x:gather(2, idx), { { 3, 1 }, { 5, 5 } }, 0)
    H.assert_close(x:gather(1, nnr.tensor({ { 2, 1, 2 } }, { dtype = "i64" })), { { 4, 2, 6 } }, 0)
    H.assert_close(x:index_select(2, nnr.tensor({ 3, 1 }, { dtype = "i64" })), { { 3, 1 }, { 6, 4 } }, 0)
    H.assert_close(x:index_select(1, { 2, 2, 1 }), { { 4, 5, 6 }, { 4, 5, 6 }, { 1, 2, 3 } }, 0)
    H.assert_close(x:t():index_select(1, { 3 }), { { 3, 6 } }, 0)
    assert.equal("gather: index 4 is out of range [1, 3] for dimension 2",
      H.errmsg(function() return x:gather(2, nnr.tensor({ { 4 } }, { dtype = "i64" })) end))
    assert.equal("index_select: index 0 is out of range [1, 2] for dimension 1",
      H.errmsg(function() return x:index_select(1, { 0 }) end))
    assert.matches("index must be an integer tensor", H.errmsg(function() return x:gather(1, nnr.ones(1, 1)) end))
  end)
end)
