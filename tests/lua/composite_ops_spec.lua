-- The tensor ops composed in Lua (lua/nnr/ops/): values against plain-Lua references on small
-- cases, float64 gradient checks (contiguous, transposed and broadcast inputs) and their errors.
-- tests/torch_compare/composite_ops.py checks the same ops against PyTorch.
local nnr = require "nnr"
local H = require "helpers"
local F = nnr.nn.functional
local gradcheck = nnr.autograd.gradcheck
local inf = math.huge

local function f64(shape, lo, hi)
  return nnr.tensor(H.rand_table(shape, lo or -2, hi or 2), { dtype = "f64", requires_grad = true })
end
-- the same values stored transposed: a non-contiguous leaf
local function strided(shape, lo, hi)
  local t = H.noncontiguous(H.rand_table(shape, lo or -2, hi or 2), "f64")
  t:requires_grad_()
  return t
end
local function check(fn, inputs, opts)
  local ok, msg = gradcheck(fn, inputs, opts)
  assert(ok, msg)
end
local function err(pattern, f, ...)
  local msg = H.errmsg(f, ...)
  assert(msg:find(pattern, 1, true), "error '" .. msg .. "' does not mention '" .. pattern .. "'")
end
-- a 2-d reference table of size n x m from f(i, j)
local function table2(n, m, f)
  local r = {}
  for i = 1, n do r[i] = {}; for j = 1, m do r[i][j] = f(i, j) end end
  return r
end

describe("tril / triu", function()
  before_each(function() H.reseed(11) end)
  it("keep the triangle selected by the diagonal offset, batched", function()
    local ref = H.rand_table({ 2, 3, 4 })
    local x = nnr.tensor(ref, { dtype = "f64" })
    for _, k in ipairs { 0, 1, -1, 3, -4 } do
      for b = 1, 2 do
        H.assert_close(x:tril(k)[b], table2(3, 4, function(i, j) return j - i <= k and ref[b][i][j] or 0 end), 0, "tril " .. k)
        H.assert_close(x:triu(k)[b], table2(3, 4, function(i, j) return j - i >= k and ref[b][i][j] or 0 end), 0, "triu " .. k)
      end
    end
  end)
  it("gradients", function()
    check(function(x) return x:tril(1) end, { strided({ 4, 3 }) })
    check(function(x) return x:triu(-1) end, { f64({ 2, 3, 3 }) })
  end)
  it("errors", function()
    err("at least 2 dimensions", function() return nnr.ones(3):tril() end)
    err("diagonal must be an integer", function() return nnr.ones(3, 3):triu(0.5) end)
  end)
end)

describe("norm, logsumexp, lerp, outer", function()
  before_each(function() H.reseed(12) end)
  it("norm for each p over all elements and over dims", function()
    local ref = H.rand_table({ 3, 4 })
    local x = nnr.tensor(ref, { dtype = "f64" })
    local flat = H.flatten(ref)
    local function pn(list, p)
      if p == inf then local m = 0; for _, v in ipairs(list) do m = math.max(m, math.abs(v)) end; return m end
      if p == -inf then local m = inf; for _, v in ipairs(list) do m = math.min(m, math.abs(v)) end; return m end
      local s = 0
      for _, v in ipairs(list) do s = s + math.abs(v) ^ p end
      return s ^ (1 / p)
    end
    for _, p in ipairs { 1, 2, 3, 0.5, inf, -inf } do
      assert(math.abs(x:norm(p):item() - pn(flat, p)) < 1e-12, "norm p=" .. p)
      local rows = {}
      for i = 1, 3 do rows[i] = pn(ref[i], p) end
      H.assert_close(x:norm(p, 2), rows, 1e-12, "norm rows p=" .. p)
      H.assert_close(x:norm(p, -1, true), { { rows[1] }, { rows[2] }, { rows[3] } }, 1e-12)
    end
    assert(math.abs(x:norm():item() - pn(flat, 2)) < 1e-12)
    assert(math.abs(x:norm("fro", { 1, 2 }):item() - pn(flat, 2)) < 1e-12)
  end)
  it("norm gradients, and 0 (not nan) at a zero vector", function()
    for _, p in ipairs { 1, 2, 3, 1.5, 0.5, inf, -inf } do
      check(function(x) return x:norm(p, 2) end, { strided({ 3, 4 }) })
    end
    check(function(x) return x:norm(2, { 1, 3 }, true) end, { f64({ 2, 3, 2 }) })
    for _, p in ipairs { 2, 3, 0.5 } do
      local z = nnr.zeros(2, 3, { dtype = "f64", requires_grad = true })
      z:norm(p, 2):sum():backward()
      H.assert_close(z.grad, { { 0, 0, 0 }, { 0, 0, 0 } }, 0, "gradient at 0, p=" .. p)
    end
  end)
  it("norm errors", function()
    err("floating-point", function() return nnr.ones(3, { dtype = "i64" }):norm() end)
    err("p must be a number > 0", function() return nnr.ones(3):norm(0) end)
    err("nuclear norm", function() return nnr.ones(3, 3):norm("nuc") end)
    err("out of range", function() return nnr.ones(3, 3):norm(2, 3) end)
  end)
  it("logsumexp is stable and handles infinities", function()
    local x = nnr.tensor({ { 1000, 1001, 999 }, { -1000, -1002, -1001 } }, { dtype = "f64" })
    local function lse(a, b, c) local m = math.max(a, b, c); return m + math.log(math.exp(a - m) + math.exp(b - m) + math.exp(c - m)) end
    H.assert_close(x:logsumexp(2), { lse(1000, 1001, 999), lse(-1000, -1002, -1001) }, 1e-14)
    H.assert_close(nnr.tensor({ { -inf, -inf }, { inf, 1 }, { inf, -inf } }):logsumexp(2), { -inf, inf, inf }, 0)
    local y = nnr.tensor(H.rand_table({ 2, 3, 4 }), { dtype = "f64" })
    H.assert_close(y:logsumexp({ 1, 3 }), y:exp():sum({ 1, 3 }):log():totable(), 1e-12)
    assert.same({ 2, 1, 4 }, y:logsumexp(2, true):size())
    check(function(t) return t:logsumexp(2) end, { strided({ 3, 4 }) })
    check(function(t) return t:logsumexp({ 1, 2 }, true) end, { f64({ 2, 3 }) })
    err("floating-point", function() return nnr.ones(3, { dtype = "i32" }):logsumexp(1) end)
  end)
  it("lerp with a number or a tensor weight, broadcasting", function()
    local a, b = H.rand_table({ 2, 3 }), H.rand_table({ 3 })
    local x, y = nnr.tensor(a, { dtype = "f64" }), nnr.tensor(b, { dtype = "f64" })
    for _, w in ipairs { 0.25, 0.75 } do
      H.assert_close(x:lerp(y, w), table2(2, 3, function(i, j) return a[i][j] + w * (b[j] - a[i][j]) end), 1e-14)
    end
    check(function(s, e) return s:lerp(e, 0.3) end, { strided({ 3, 4 }), f64({ 4 }) })
    check(function(s, e, w) return s:lerp(e, w) end, { f64({ 2, 3 }), strided({ 2, 3 }), f64({ 3 }, -0.5, 1.5) })
    err("weight must be a finite number", function() return x:lerp(y, 0 / 0) end)
  end)
  it("outer", function()
    local a, b = H.rand_table({ 3 }), H.rand_table({ 4 })
    H.assert_close(nnr.outer(nnr.tensor(a, { dtype = "f64" }), nnr.tensor(b, { dtype = "f64" })), table2(3, 4, function(i, j) return a[i] * b[j] end), 1e-14)
    check(function(u, v) return u:outer(v) end, { f64({ 3 }), f64({ 4 }) })
    err("expected two 1-d tensors", function() return nnr.outer(nnr.ones(2, 2), nnr.ones(2)) end)
  end)
end)

describe("cosine_similarity, cdist", function()
  before_each(function() H.reseed(13) end)
  it("cosine_similarity along a dim, broadcasting", function()
    local a, b = H.rand_table({ 3, 4 }), H.rand_table({ 4 })
    local got = F.cosine_similarity(nnr.tensor(a, { dtype = "f64" }), nnr.tensor(b, { dtype = "f64" }))
    local want = {}
    for i = 1, 3 do
      local d, na, nb = 0, 0, 0
      for j = 1, 4 do d = d + a[i][j] * b[j]; na = na + a[i][j] ^ 2; nb = nb + b[j] ^ 2 end
      want[i] = d / math.sqrt(na) / math.sqrt(nb)
    end
    H.assert_close(got, want, 1e-13)
    check(function(u, v) return F.cosine_similarity(u, v) end, { strided({ 3, 4 }), f64({ 4 }) })
    check(function(u, v) return F.cosine_similarity(u, v, 1) end, { f64({ 3, 2 }), f64({ 3, 1 }) })
    err("cannot broadcast", function() return F.cosine_similarity(nnr.ones(3, 4), nnr.ones(3, 5)) end)
    err("eps must be a finite number >= 0", function() return F.cosine_similarity(nnr.ones(3), nnr.ones(3), 1, -1) end)
  end)
  it("cdist for each p, both p = 2 paths agree", function()
    local a, b = H.rand_table({ 4, 3 }), H.rand_table({ 5, 3 })
    local x, y = nnr.tensor(a, { dtype = "f64" }), nnr.tensor(b, { dtype = "f64" })
    for _, p in ipairs { 1, 2, 3, inf } do
      local want = table2(4, 5, function(i, j)
        local s, m = 0, 0
        for k = 1, 3 do local d = math.abs(a[i][k] - b[j][k]); s = s + d ^ (p == inf and 1 or p); m = math.max(m, d) end
        return p == inf and m or s ^ (1 / p)
      end)
      H.assert_close(nnr.cdist(x, y, p), want, 1e-12, "cdist p=" .. p)
    end
    H.assert_close(nnr.cdist(x, y, 2, "use_mm_for_euclid_dist"), nnr.cdist(x, y):totable(), 1e-10)
    check(function(u, v) return nnr.cdist(u, v) end, { f64({ 2, 3, 2 }), strided({ 4, 2 }) })
    check(function(u, v) return nnr.cdist(u, v, 1) end, { f64({ 3, 2 }), f64({ 4, 2 }) })
    check(function(u, v) return nnr.cdist(u, v, 3) end, { f64({ 3, 2 }), f64({ 4, 2 }) })
    check(function(u, v) return nnr.cdist(u, v, inf) end, { f64({ 3, 2 }), f64({ 4, 2 }) })
    check(function(u, v) return nnr.cdist(u, v, 2, "use_mm_for_euclid_dist") end, { f64({ 3, 2 }), strided({ 4, 2 }) })
  end)
  it("cdist has gradient 0 where a distance is 0", function()
    for _, mode in ipairs { "donot_use_mm_for_euclid_dist", "use_mm_for_euclid_dist" } do
      local x = nnr.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "f64", requires_grad = true })
      local y = nnr.tensor({ { 1, 2 } }, { dtype = "f64", requires_grad = true })
      local d = nnr.cdist(x, y, 2, mode)
      assert.equal(0, d[{ 1, 1 }])
      d:sum():backward()
      local g = x.grad:totable()
      assert(g[1][1] == 0 and g[1][2] == 0, mode .. ": gradient at the zero distance")
      assert(g[2][1] == g[2][1] and g[2][1] > 0, mode)
    end
  end)
  it("cdist errors", function()
    err("same number of columns", function() return nnr.cdist(nnr.ones(3, 4), nnr.ones(3, 5)) end)
    err("at least 2 dimensions", function() return nnr.cdist(nnr.ones(3), nnr.ones(3)) end)
    err("p must be a number >= 0", function() return nnr.cdist(nnr.ones(3, 2), nnr.ones(3, 2), -1) end)
    err("compute_mode must be one of", function() return nnr.cdist(nnr.ones(3, 2), nnr.ones(3, 2), 2, "fast") end)
  end)
end)

describe("one_hot, repeat, repeat_interleave, roll, flip", function()
  before_each(function() H.reseed(14) end)
  it("one_hot takes 1-based classes and gives i64", function()
    local t = nnr.one_hot(nnr.tensor({ { 1, 3 }, { 2, 3 } }, { dtype = "i64" }))
    assert.equal("i64", t.dtype)
    assert.same({ { { 1, 0, 0 }, { 0, 0, 1 } }, { { 0, 1, 0 }, { 0, 0, 1 } } }, t:totable())
    assert.same({ 3, 5 }, nnr.tensor({ 1, 2, 5 }, { dtype = "i64" }):one_hot(5):size())
    err("below 1", function() return nnr.one_hot(nnr.tensor({ 0, 1 }, { dtype = "i64" }), 2) end)
    err("out of range for num_classes 2", function() return nnr.one_hot(nnr.tensor({ 3, 1 }, { dtype = "i64" }), 2) end)
    err("integer tensor", function() return nnr.one_hot(nnr.tensor({ 1.0 }), 2) end)
    err("cannot infer", function() return nnr.one_hot(nnr.zeros(0, { dtype = "i64" })) end)
  end)
  it("repeat and tile", function()
    local ref = H.rand_table({ 2, 3 })
    local x = nnr.tensor(ref, { dtype = "f64" })
    local r = x:repeat_tensor(2, 1, 2)
    assert.same({ 2, 2, 6 }, r:size())
    for a = 1, 2 do H.assert_close(r[a], table2(2, 6, function(i, j) return ref[i][(j - 1) % 3 + 1] end), 0) end
    assert.same({ 4, 3 }, x["repeat"](x, 2, 1):size())
    assert.same({ 2, 6 }, x:tile(2):size())
    assert.same({ 0, 3 }, x:repeat_tensor(0, 1):size())
    check(function(t) return t:repeat_tensor(2, 1, 3) end, { strided({ 2, 3 }) })
    err("at least one per dimension", function() return x:repeat_tensor(2) end)
    err("repeats[2] must be an integer >= 0", function() return x:repeat_tensor(2, -1) end)
  end)
  it("repeat_interleave with a number, a tensor of counts, or over the flattened tensor", function()
    local ref = H.rand_table({ 2, 3 })
    local x = nnr.tensor(ref, { dtype = "f64" })
    H.assert_close(x:repeat_interleave(2, 1), { ref[1], ref[1], ref[2], ref[2] }, 0)
    H.assert_close(x:repeat_interleave(nnr.tensor({ 0, 2, 1 }, { dtype = "i64" }), 2),
      table2(2, 3, function(i, j) return ref[i][({ 2, 2, 3 })[j]] end), 0)
    H.assert_close(x:repeat_interleave(2), { ref[1][1], ref[1][1], ref[1][2], ref[1][2], ref[1][3], ref[1][3],
      ref[2][1], ref[2][1], ref[2][2], ref[2][2], ref[2][3], ref[2][3] }, 0)
    assert.same({ 1, 1, 3 }, nnr.repeat_interleave(nnr.tensor({ 2, 0, 1 }, { dtype = "i64" })):totable())
    check(function(t) return t:repeat_interleave(3, -1) end, { strided({ 2, 3 }) })
    check(function(t) return t:repeat_interleave(nnr.tensor({ 2, 1 }, { dtype = "i64" }), 1) end, { strided({ 2, 3 }) })
    err("repeats must be >= 0", function() return x:repeat_interleave(nnr.tensor({ 1, -1, 1 }, { dtype = "i64" }), 2) end)
    err("2 repeat counts for a dimension of size 3", function() return x:repeat_interleave(nnr.tensor({ 1, 1 }, { dtype = "i64" }), 2) end)
  end)
  it("roll and flip", function()
    local ref = H.rand_table({ 3, 4 })
    local x = nnr.tensor(ref, { dtype = "f64" })
    H.assert_close(x:roll(1, 2), table2(3, 4, function(i, j) return ref[i][(j - 2) % 4 + 1] end), 0)
    H.assert_close(x:roll({ -1, 5 }, { 1, 2 }), table2(3, 4, function(i, j) return ref[i % 3 + 1][(j - 2) % 4 + 1] end), 0)
    H.assert_close(x:roll(5), table2(3, 4, function(i, j) local k = ((i - 1) * 4 + j - 1 - 5) % 12; return ref[math.floor(k / 4) + 1][k % 4 + 1] end), 0)
    H.assert_close(x:flip(1, 2), table2(3, 4, function(i, j) return ref[4 - i][5 - j] end), 0)
    H.assert_close(x:flip({ -1 }), table2(3, 4, function(i, j) return ref[i][5 - j] end), 0)
    check(function(t) return t:roll({ 1, -2 }, { 1, 2 }) end, { strided({ 3, 4 }) })
    check(function(t) return t:flip(2) end, { strided({ 3, 4 }) })
    err("listed twice", function() return x:flip(1, -2) end)
    err("shifts and dims must pair up", function() return x:roll({ 1, 2 }, 1) end)
    err("out of range", function() return x:flip(3) end)
  end)
end)

describe("results own their memory", function()
  it("even when nothing moves (repeat 1, pad 0, roll 0, flip of size 1), as PyTorch's copies", function()
    local t = nnr.ones(2, 3)
    for name, r in pairs {
      repeat_tensor = t:repeat_tensor(1, 1), tile = t:tile(1), repeat_interleave = t:repeat_interleave(1, 2),
      pad = F.pad(t, { 0, 0 }), crop = F.pad(t, { -1, 0 }), reflect = F.pad(t:view(1, 2, 3), { 0, 0 }, "reflect"),
      roll = t:roll(3, 2), flip = nnr.ones(1, 3):flip(1), interpolate = F.interpolate(t:view(1, 2, 3), { size = 3 }),
    } do
      assert(not r:same_storage(t), name .. " shares the input's storage")
    end
  end)
end)

describe("nn.functional.pad", function()
  before_each(function() H.reseed(15) end)
  local function pad_ref(row, l, r, mode, value)
    local n, out = #row, {}
    for i = -l, n - 1 + r do
      local j
      if i >= 0 and i < n then j = i
      elseif mode == "reflect" then j = i < 0 and -i or 2 * (n - 1) - i
      elseif mode == "replicate" then j = i < 0 and 0 or n - 1
      elseif mode == "circular" then j = i % n end
      out[#out + 1] = j and row[j + 1] or value
    end
    return out
  end
  it("each mode pads the last dimension (left first)", function()
    local ref = H.rand_table({ 2, 5 })
    local x = nnr.tensor(ref, { dtype = "f64" })
    for _, mode in ipairs { "constant", "reflect", "replicate", "circular" } do
      local got = F.pad(x, { 2, 3 }, mode, mode == "constant" and 1.5 or nil)
      H.assert_close(got, { pad_ref(ref[1], 2, 3, mode, 1.5), pad_ref(ref[2], 2, 3, mode, 1.5) }, 0, mode)
    end
  end)
  it("constant padding of two dims, negative padding crops", function()
    local ref = H.rand_table({ 3, 4 })
    local x = nnr.tensor(ref, { dtype = "f64" })
    local got = F.pad(x, { -1, 1, 1, 0 })     -- last dim: crop 1 on the left, 1 zero on the right; 1 row on top
    H.assert_close(got, table2(4, 4, function(i, j)
      if i == 1 or j == 4 then return 0 end
      return ref[i - 1][j + 1]
    end), 0)
  end)
  it("gradients", function()
    check(function(t) return F.pad(t, { 1, 2, -1, 1 }) end, { strided({ 3, 4 }) })
    for _, mode in ipairs { "reflect", "replicate", "circular" } do
      check(function(t) return F.pad(t, { 2, 1, 1, 2 }, mode) end, { strided({ 2, 3, 4 }) })
    end
  end)
  it("errors", function()
    local x = nnr.ones(1, 3, 4)
    err("even number", function() return F.pad(x, { 1, 2, 3 }) end)
    err("must be less than its size", function() return F.pad(x, { 4, 0 }, "reflect") end)
    err("takes no value", function() return F.pad(x, { 1, 0 }, "reflect", 0) end)
    err("mode must be one of", function() return F.pad(x, { 1, 0 }, "mirror") end)
    err("value must be a number", function() return F.pad(x, { 1, 0 }, "constant", 0 / 0) end)
    err("expects a 3-d or 4-d input", function() return F.pad(nnr.ones(2, 3, 4, 5, 6), { 1, 1, 1, 1 }, "replicate") end)
    err("crops more than", function() return F.pad(x, { -3, -2 }) end)
  end)
end)

describe("einsum", function()
  before_each(function() H.reseed(16) end)
  it("matches loops for products, traces, diagonals and broadcasting", function()
    local a, b = H.rand_table({ 3, 4 }), H.rand_table({ 4, 2 })
    local x, y = nnr.tensor(a, { dtype = "f64" }), nnr.tensor(b, { dtype = "f64" })
    local mm = table2(3, 2, function(i, j) local s = 0; for k = 1, 4 do s = s + a[i][k] * b[k][j] end; return s end)
    H.assert_close(nnr.einsum("ij,jk->ik", x, y), mm, 1e-13)
    H.assert_close(nnr.einsum("ij,jk", x, y), mm, 1e-13)
    H.assert_close(nnr.einsum("ij,jk->ki", { x, y }), table2(2, 3, function(i, j) return mm[j][i] end), 1e-13)
    local sq = H.rand_table({ 3, 3 })
    local s = nnr.tensor(sq, { dtype = "f64" })
    assert(math.abs(nnr.einsum("ii", s):item() - (sq[1][1] + sq[2][2] + sq[3][3])) < 1e-14)
    H.assert_close(nnr.einsum("ii->i", s), { sq[1][1], sq[2][2], sq[3][3] }, 0)
    assert(math.abs(nnr.einsum("ij->", x):item() - x:sum():item()) < 1e-13)
    H.assert_close(nnr.einsum("i,j->ij", x[1], y:select(2, 1)), table2(4, 4, function(i, j) return a[1][i] * b[j][1] end), 1e-14)
    local bt = nnr.tensor(H.rand_table({ 2, 3, 4 }), { dtype = "f64" })
    H.assert_close(nnr.einsum("...ij,jk->...ik", bt, y), bt:matmul(y):totable(), 1e-13)
    H.assert_close(nnr.einsum("bij,bkj->bik", bt, bt), bt:matmul(bt:transpose(2, 3)):totable(), 1e-13)
    H.assert_close(nnr.einsum("ij,jk,kl->il", x, y, y:t()), x:matmul(y):matmul(y:t()):totable(), 1e-12)
  end)
  it("gradients, with transposed and broadcast operands", function()
    check(function(u, v) return nnr.einsum("bhqd,bhkd->bhqk", u, v) end, { f64({ 2, 1, 3, 2 }), f64({ 2, 2, 2, 2 }) })
    check(function(u, v) return nnr.einsum("ij,jk->ik", u, v) end, { strided({ 3, 4 }), strided({ 4, 2 }) })
    check(function(u) return nnr.einsum("iji->j", u) end, { f64({ 2, 3, 2 }) })
    check(function(u, v) return nnr.einsum("...ij,...jk", u, v) end, { f64({ 2, 1, 2, 3 }), f64({ 3, 3, 2 }) })
    check(function(u, v, w) return nnr.einsum("bn,anm,bm->ba", u, v, w) end, { f64({ 2, 3 }), f64({ 2, 3, 2 }), strided({ 2, 2 }) })
  end)
  it("errors name the equation and the problem", function()
    local x, y = nnr.ones(3, 4), nnr.ones(4, 5)
    err("2 operand terms for 1 operand", function() return nnr.einsum("ij,jk", x) end)
    err("operand 1 has shape [3, 4] (2 dimensions) but its subscripts 'ijk' name 3", function() return nnr.einsum("ijk,jk", x, y) end)
    err("output subscript 'z' does not appear", function() return nnr.einsum("ij,jk->iz", x, y) end)
    err("appears more than once", function() return nnr.einsum("ij,jk->iik", x, y) end)
    err("invalid subscript '$'", function() return nnr.einsum("i$,jk", x, y) end)
    err("subscript 'j' has size 4 in operand 1 and 3 in operand 2", function() return nnr.einsum("ij,jk", x, nnr.ones(3, 5)) end)
    err("more than one '...'", function() return nnr.einsum("......", x) end)
    err("must be the equation", function() return nnr.einsum(x, y) end)
    err("repeated in operand 1", function() return nnr.einsum("ii", x) end)
  end)
end)

describe("unfold, fold, interpolate", function()
  before_each(function() H.reseed(17) end)
  it("unfold matches the im2col loop; fold is its adjoint", function()
    local N, Cc, Hh, W, kh, kw, ph, pw, sh, sw, dh, dw = 2, 2, 5, 6, 2, 3, 1, 0, 2, 1, 1, 2
    local ref = H.rand_table({ N, Cc, Hh, W })
    local x = nnr.tensor(ref, { dtype = "f64" })
    local cols = F.unfold(x, { kh, kw }, { dh, dw }, { ph, pw }, { sh, sw })
    local oh = math.floor((Hh + 2 * ph - dh * (kh - 1) - 1) / sh) + 1
    local ow = math.floor((W + 2 * pw - dw * (kw - 1) - 1) / sw) + 1
    assert.same({ N, Cc * kh * kw, oh * ow }, cols:size())
    local got = cols:totable()
    for n = 1, N do for c = 1, Cc do for ki = 1, kh do for kj = 1, kw do
      for oi = 1, oh do for oj = 1, ow do
        local i = (oi - 1) * sh - ph + (ki - 1) * dh + 1
        local j = (oj - 1) * sw - pw + (kj - 1) * dw + 1
        local want = (i >= 1 and i <= Hh and j >= 1 and j <= W) and ref[n][c][i][j] or 0
        local row = ((c - 1) * kh + ki - 1) * kw + kj
        assert.equal(want, got[n][row][(oi - 1) * ow + oj])
      end end
    end end end end
    -- <unfold(x), y> = <x, fold(y)>
    local y = nnr.tensor(H.rand_table({ N, Cc * kh * kw, oh * ow }), { dtype = "f64" })
    local folded = F.fold(y, { Hh, W }, { kh, kw }, { dilation = { dh, dw }, padding = { ph, pw }, stride = { sh, sw } })
    assert(math.abs((cols * y):sum():item() - (x * folded):sum():item()) < 1e-11)
    check(function(t) return F.unfold(t, 2, 1, 1, 2) end, { strided({ 2, 2, 3, 4 }) })
    check(function(t) return F.fold(t, { 3, 4 }, 2, { padding = 1, stride = 2 }) end, { f64({ 1, 8, 6 }) })
  end)
  it("unfold / fold errors", function()
    err("does not fit the padded 4x4 image", function() return F.unfold(nnr.ones(1, 1, 4, 4), 5) end)
    err("expected a 3-d [C, H, W] or 4-d", function() return F.unfold(nnr.ones(4, 4), 2) end)
    err("has 5 blocks, but output_size 4x4", function() return F.fold(nnr.ones(1, 4, 5), { 4, 4 }, 2) end)
    err("divisible by kh * kw = 4", function() return F.fold(nnr.ones(1, 6, 9), { 4, 4 }, 2) end)
    err("unknown option 'strides'", function() return F.unfold(nnr.ones(1, 1, 4, 4), 2, { strides = 2 }) end)
  end)
  it("interpolate: nearest with the floor rule, linear and bilinear for both align_corners", function()
    local row = { 1, 4, 2, 8, 5 }
    local x = nnr.tensor({ { row } }, { dtype = "f64" })
    local near = {}
    for o = 0, 7 do near[o + 1] = row[math.min(math.floor(o * 5 / 8), 4) + 1] end
    H.assert_close(F.interpolate(x, { size = 8 })[1][1], near, 0)
    local function lin(n_out, align)
      local out = {}
      for o = 0, n_out - 1 do
        local src = align and o * 4 / (n_out - 1) or math.max(0, (o + 0.5) * 5 / n_out - 0.5)
        local i0 = math.min(math.floor(src), 4)
        local i1 = math.min(i0 + 1, 4)
        local l = src - i0
        out[o + 1] = row[i0 + 1] * (1 - l) + row[i1 + 1] * l
      end
      return out
    end
    H.assert_close(F.interpolate(x, { size = 7, mode = "linear" })[1][1], lin(7, false), 1e-14)
    H.assert_close(F.interpolate(x, { size = 7, mode = "linear", align_corners = true })[1][1], lin(7, true), 1e-14)
    local img = nnr.tensor(H.rand_table({ 1, 2, 3, 4 }), { dtype = "f64" })
    local bl = F.interpolate(img, { size = { 5, 7 }, mode = "bilinear", align_corners = true })
    assert.same({ 1, 2, 5, 7 }, bl:size())
    assert(math.abs(bl[{ 1, 2, 5, 7 }] - img[{ 1, 2, 3, 4 }]) < 1e-14)   -- the corners stay
    check(function(t) return F.interpolate(t, { scale_factor = 2 }) end, { strided({ 2, 2, 2, 3 }) })
    check(function(t) return F.interpolate(t, { size = { 4, 5 }, mode = "bilinear" }) end, { strided({ 2, 2, 3, 3 }) })
    check(function(t) return F.interpolate(t, { size = 5, mode = "linear", align_corners = true }) end, { f64({ 2, 1, 3 }) })
    local exact = {}
    for o = 0, 7 do exact[o + 1] = row[math.min(math.floor((o + 0.5) * 5 / 8), 4) + 1] end
    H.assert_close(F.interpolate(x, { size = 8, mode = "nearest-exact" })[1][1], exact, 0)
    H.assert_close(F.interpolate(x, { size = 2, mode = "area" })[1][1], { (1 + 4 + 2) / 3, (2 + 8 + 5) / 3 }, 1e-14)
    check(function(t) return F.interpolate(t, { size = { 2, 3 }, mode = "area" }) end, { strided({ 2, 2, 3, 5 }) })
  end)
  it("interpolate errors", function()
    local x = nnr.ones(1, 1, 4, 4)
    err("give exactly one of size and scale_factor", function() return F.interpolate(x, { size = 2, scale_factor = 2 }) end)
    err("give the output size or the scale", function() return F.interpolate(x) end)
    err("mode 'linear' needs a 3-d input", function() return F.interpolate(x, { size = 2, mode = "linear" }) end)
    err("align_corners can only be set", function() return F.interpolate(x, { size = 2, align_corners = true }) end)
    err("unknown option 'antialias'", function() return F.interpolate(x, { size = 2, antialias = true }) end)
    err("size[1] must be an integer >= 1", function() return F.interpolate(x, { size = 0 }) end)
    err("scale_factor[1] must be a finite number > 0", function() return F.interpolate(x, { scale_factor = 0 / 0 }) end)
    err("turns dimension 3 of size 4 into 0", function() return F.interpolate(x, { scale_factor = 0.1 }) end)
    err("table of 2", function() return F.interpolate(x, { size = { 1, 2, 3 } }) end)
  end)
end)
