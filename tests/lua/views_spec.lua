local nnr = require "nnr"
local H = require "helpers"

describe("views", function()
  before_each(function() H.reseed() end)

  it("view and reshape share storage where strides allow", function()
    local t = nnr.arange(24, { dtype = "f64" })
    local v = t:view(2, 3, 4)
    assert.is_true(v:same_storage(t))
    assert.same({ 12, 4, 1 }, v:stride())
    v[{ 1, 1, 1 }] = 100
    assert.equal(100, t[1])
    assert.same({ 6, 4 }, t:view(-1, 4):size())
    local tr = v:transpose(1, 3)                 -- [4, 3, 2], not contiguous
    local r = tr:reshape(24)
    assert.is_false(r:same_storage(t))          -- needed a copy
    assert.is_true(v:reshape(6, 4):same_storage(t))
    assert.matches("view: shape %[24%] is incompatible", H.errmsg(function() return tr:view(24) end))
  end)

  it("permute, transpose and t", function()
    local ref = H.rand_table({ 2, 3, 4 })
    local t = nnr.tensor(ref, { dtype = "f64" })
    local p = t:permute(3, 1, 2)
    assert.same({ 4, 2, 3 }, p:size())
    for i = 1, 2 do for j = 1, 3 do for k = 1, 4 do
      assert.equal(ref[i][j][k], p[{ k, i, j }])
    end end end
    assert.same({ 4, 3, 2 }, t:transpose(1, -1):size())
    local m = nnr.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
    H.assert_close(m:t(), { { 1, 4 }, { 2, 5 }, { 3, 6 } }, 0)
  end)

  it("narrow, select and indexing with 1-based and negative indices", function()
    local t = nnr.tensor({ { 1, 2, 3, 4 }, { 5, 6, 7, 8 }, { 9, 10, 11, 12 } })
    H.assert_close(t:narrow(2, 2, 2), { { 2, 3 }, { 6, 7 }, { 10, 11 } }, 0)
    H.assert_close(t:select(1, 2), { 5, 6, 7, 8 }, 0)
    H.assert_close(t[-1], { 9, 10, 11, 12 }, 0)
    assert.equal(7, t[2][3])
    assert.equal(12, t[{ -1, -1 }])
    H.assert_close(t[{ { 2, 3 }, 2 }], { 6, 10 }, 0)
    H.assert_close(t[{ {}, { -2, -1 } }], { { 3, 4 }, { 7, 8 }, { 11, 12 } }, 0)
    assert.equal(3, #t)
    t[{ 1, 1 }] = -1
    t[3] = 0
    t[{ {}, 4 }] = nnr.tensor({ 40, 80, 120 })
    H.assert_close(t, { { -1, 2, 3, 40 }, { 5, 6, 7, 80 }, { 0, 0, 0, 120 } }, 0)
  end)

  it("expand, squeeze, unsqueeze, flatten", function()
    local t = nnr.tensor({ { 1 }, { 2 } })
    local e = t:expand(2, 3)
    assert.same({ 1, 0 }, e:stride())
    H.assert_close(e, { { 1, 1, 1 }, { 2, 2, 2 } }, 0)
    H.assert_close(t:expand(-1, 2), { { 1, 1 }, { 2, 2 } }, 0)
    assert.same({ 2 }, t:squeeze():size())
    assert.same({ 2 }, t:squeeze(2):size())
    assert.same({ 2, 1 }, t:squeeze(1):size())
    assert.same({ 1, 2, 1 }, t:unsqueeze(1):size())
    assert.same({ 2, 1, 1 }, t:unsqueeze(-1):size())
    local x = nnr.zeros(2, 3, 4, 5)
    assert.same({ 120 }, x:flatten():size())
    assert.same({ 2, 60 }, x:flatten(2):size())
    assert.same({ 2, 12, 5 }, x:flatten(2, 3):size())
  end)

  it("a transposed matrix made contiguous (the tiled copy) holds every element, batched, of 4 and 8 bytes", function()
    -- plugins/cpu/elementwise.c copies the last two dims of such a view in tiles of 32 x 32: sizes around
    -- the tile and batch dims; the reference is each element read through the view, one at a time
    for _, dt in ipairs { "f32", "f64", "i32", "i64" } do
      for _, sh in ipairs { { 32, 32 }, { 33, 70 }, { 100, 40 }, { 31, 100 }, { 2, 3, 40, 65 } } do
        local n, numel, rev = #sh, 1, {}
        for i = 1, n do rev[i] = sh[i]; numel = numel * sh[i] end
        rev[n - 1], rev[n] = sh[n], sh[n - 1]
        local v = nnr.randperm(numel):to(dt):view(rev):transpose(n - 1, n)
        local flat = v:contiguous():view(-1)
        local k = 0
        local function walk(d, t)
          if d > n then
            k = k + 1
            if flat[k] ~= t:item() then error(string.format("%s %s: element %d", dt, table.concat(sh, "x"), k), 0) end
            return
          end
          for i = 1, sh[d] do walk(d + 1, t:select(1, i)) end
        end
        walk(1, v)
        assert.are.equal(numel, k)
      end
    end
  end)

  it("contiguous and clone copy; contiguous of a contiguous tensor does not", function()
    local t = nnr.rand(3, 4)
    assert.is_true(t:contiguous():same_storage(t))
    local tr = t:t()
    local c = tr:contiguous()
    assert.is_true(c:is_contiguous())
    assert.is_false(c:same_storage(t))
    H.assert_close(c, tr:totable(), 0)
    local k = t:clone()
    k:fill_(0)
    assert.is_true(t:abs():sum():item() > 0)
  end)

  it("writes through views reach the base tensor", function()
    local t = nnr.zeros(4, 4)
    t:narrow(1, 2, 2):narrow(2, 2, 2):fill_(1)
    assert.equal(4, t:sum():item())
    t:t()[1]:fill_(5)            -- first column
    H.assert_close(t:select(2, 1), { 5, 5, 5, 5 }, 0)
  end)
end)
