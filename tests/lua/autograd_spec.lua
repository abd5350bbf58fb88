local nnr = require "nnr"
local H = require "helpers"
local gradcheck = nnr.autograd.gradcheck

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

describe("autograd gradcheck (float64, random inputs)", function()
  before_each(function() H.reseed(77) end)

  local unary = { "neg", "abs", "exp", "tanh", "sigmoid", "relu", "sin", "cos", "reciprocal" }
  for _, name in ipairs(unary) do
    it(name, function()
      check(function(x) return x[name](x) end, { f64({ 3, 4 }) })
      check(function(x) return x[name](x) end, { strided({ 3, 4 }) })
    end)
  end
  for _, name in ipairs { "log", "sqrt" } do
    it(name, function()
      check(function(x) return x[name](x) end, { f64({ 3, 4 }, 0.5, 3) })
      check(function(x) return x[name](x) end, { strided({ 4, 3 }, 0.5, 3) })
    end)
  end
  it("sign has a zero gradient", function()
    local x = f64({ 5 })
    x:sign():sum():backward()
    H.assert_close(x.grad, { 0, 0, 0, 0, 0 }, 0)
  end)

  for _, name in ipairs { "add", "sub", "mul", "div", "maximum", "minimum" } do
    it(name .. " with broadcasting, strided operands and scalars", function()
      check(function(a, b) return a[name](a, b) end, { f64({ 3, 1, 4 }), f64({ 2, 4 }, 0.5, 2) })
      check(function(a, b) return a[name](a, b) end, { strided({ 3, 4 }), f64({ 4 }, 0.5, 2) })
      check(function(a) return a[name](a, 1.5) end, { f64({ 3, 2 }, 0.5, 2) })
      check(function(a) return nnr[name](1.5, a) end, { f64({ 3, 2 }, 0.5, 2) })
    end)
  end
  it("pow", function()
    check(function(a, b) return a:pow(b) end, { f64({ 3, 4 }, 0.5, 2), f64({ 4 }, -1, 2) })
    check(function(a) return a ^ 3 end, { f64({ 5 }) })
    check(function(a) return nnr.pow(2, a) end, { f64({ 5 }) })
  end)
  it("where, clamp, masked_fill", function()
    local c = nnr.tensor({ { true, false, true }, { false, true, false } })
    check(function(a, b) return nnr.where(c, a, b) end, { f64({ 2, 3 }), f64({ 3 }) })
    check(function(a) return nnr.where(c, a, 0) end, { f64({ 2, 3 }) })
    check(function(a) return a:clamp(-0.5, 0.7) end, { f64({ 4, 5 }) })
    check(function(a) return a:clamp(nil, 0.1) end, { strided({ 4, 5 }) })
    check(function(a) return a:masked_fill(c, 3) end, { f64({ 2, 3 }) })
  end)
  it("reductions over all, one and several dims", function()
    for _, name in ipairs { "sum", "mean", "prod", "var", "std", "max", "min" } do
      local lo = name == "prod" and 0.5 or -2
      check(function(x) return x[name](x) end, { f64({ 2, 3, 4 }, lo, 2) })
      check(function(x) return x[name](x, 2) end, { f64({ 2, 3, 4 }, lo, 2) })
      check(function(x) return x[name](x, -1, true) end, { strided({ 3, 4 }, lo, 2) })
      if name ~= "max" and name ~= "min" then
        check(function(x) return x[name](x, { 1, 3 }) end, { f64({ 2, 3, 4 }, lo, 2) })
      end
    end
  end)
  it("softmax and log_softmax", function()
    check(function(x) return x:softmax(2) end, { f64({ 3, 5 }) })
    check(function(x) return x:log_softmax(1) end, { strided({ 4, 3 }) })
    check(function(x) return x:log_softmax(-1) end, { f64({ 2, 3, 4 }) })
  end)
  it("matmul, mm, bmm and their broadcasting and 1-d forms", function()
    check(function(a, b) return a:mm(b) end, { f64({ 3, 4 }), f64({ 4, 2 }) })
    check(function(a, b) return a:mm(b) end, { strided({ 3, 4 }), strided({ 4, 5 }) })
    check(function(a, b) return a:bmm(b) end, { f64({ 2, 3, 4 }), f64({ 2, 4, 2 }) })
    check(function(a, b) return a:matmul(b) end, { f64({ 2, 1, 3, 4 }), f64({ 3, 4, 2 }) })
    check(function(a, b) return a:matmul(b) end, { f64({ 3, 4 }), f64({ 4 }) })
    check(function(a, b) return a:matmul(b) end, { f64({ 4 }), f64({ 2, 4, 3 }) })
    check(function(a, b) return a:dot(b) end, { f64({ 4 }), f64({ 4 }) })
  end)
  it("views: view, reshape, permute, transpose, narrow, select, expand, squeeze, unsqueeze, flatten", function()
    check(function(x) return x:view(6, 2) * 2 end, { f64({ 3, 4 }) })
    check(function(x) return x:reshape(12) end, { strided({ 3, 4 }) })
    check(function(x) return x:permute(3, 1, 2) end, { f64({ 2, 3, 4 }) })
    check(function(x) return x:transpose(1, 3) end, { f64({ 2, 3, 4 }) })
    check(function(x) return x:narrow(2, 2, 2) end, { f64({ 3, 4 }) })
    check(function(x) return x:select(1, -1) end, { strided({ 3, 4 }) })
    check(function(x) return x:expand(3, 2, 4) end, { f64({ 2, 1 }) })
    check(function(x) return x:unsqueeze(2):squeeze() end, { f64({ 3, 4 }) })
    check(function(x) return x:flatten() end, { f64({ 2, 3, 4 }) })
    check(function(x) return x[{ { 2, 3 }, -1 }] end, { f64({ 3, 4 }) })
    check(function(x) return x:t():contiguous() end, { f64({ 3, 4 }) })
    check(function(x) return x:clone() end, { f64({ 3 }) })
  end)
  it("casts, cat, stack, split, gather, index_select, scatter_add, index_add", function()
    check(function(x) return x:float():double() end, { f64({ 4 }) }, { eps = 1e-3, atol = 1e-3 })
    check(function(a, b) return nnr.cat({ a, b }, 2) end, { f64({ 2, 3 }), strided({ 2, 2 }) })
    check(function(a, b) return nnr.stack({ a, b }) end, { f64({ 3 }), f64({ 3 }) })
    check(function(x) return x:split(2, 2)[2] end, { f64({ 3, 5 }) })
    local idx = nnr.tensor({ { 3, 1 }, { 2, 3 } }, { dtype = "i64" })
    check(function(x) return x:gather(2, idx) end, { f64({ 2, 3 }) })
    check(function(x) return x:index_select(1, { 2, 2, 1 }) end, { f64({ 3, 4 }) })
    check(function(a, s) return a:scatter_add(2, idx, s) end, { f64({ 2, 3 }), f64({ 2, 2 }) })
    check(function(a, s) return a:index_add(1, { 3, 1 }, s) end, { f64({ 3, 2 }), f64({ 2, 2 }) })
  end)
  it("a composite expression", function()
    check(function(w, x, b) return ((x:matmul(w) + b):tanh() * 2):log_softmax(2):sum(1) end,
      { f64({ 4, 3 }), f64({ 5, 4 }), f64({ 3 }) })
  end)
end)

describe("autograd semantics", function()
  it("accumulates into leaves, frees the graph, and can retain it", function()
    local x = nnr.tensor({ 1, 2 }, { dtype = "f64", requires_grad = true })
    local y = (x * x):sum()
    y:backward({ retain_graph = true })
    H.assert_close(x.grad, { 2, 4 }, 0)
    y:backward()
    H.assert_close(x.grad, { 4, 8 }, 0)
    assert.matches("backward through the graph a second time", H.errmsg(function() y:backward() end))
    x.grad = nil
    assert.is_nil(x.grad)
  end)

  it("leaf and non-leaf tensors", function()
    local x = nnr.ones(3, { requires_grad = true })
    local y = x * 2
    assert.is_true(x.is_leaf)
    assert.is_false(y.is_leaf)
    assert.equal("MulBackward", y.grad_fn)
    assert.is_nil(x.grad_fn)
    y:retain_grad()
    y:sum():backward()
    H.assert_close(y.grad, { 1, 1, 1 }, 0)
    H.assert_close(x.grad, { 2, 2, 2 }, 0)
    local z = nnr.ones(3)
    assert.is_false(z.requires_grad)
    assert.is_false((z * 2).requires_grad)
    assert.matches("only floating%-point tensors can require grad", H.errmsg(function() nnr.ones(2, { dtype = "i64" }):requires_grad_() end))
  end)

  it("a parameter used twice gets both gradients", function()
    local w = nnr.tensor({ 3 }, { dtype = "f64", requires_grad = true })
    local y = w * 2 + w * w
    y:backward(nnr.ones(1, { dtype = "f64" }))
    H.assert_close(w.grad, { 2 + 6 }, 0)
  end)

  it("no_grad and detach stop recording", function()
    local x = nnr.ones(2, { requires_grad = true })
    local y = nnr.no_grad(function() return x * 2 end)
    assert.is_false(y.requires_grad)
    assert.is_true(nnr.is_grad_enabled())
    local d = (x * 3):detach()
    assert.is_false(d.requires_grad)
    assert.is_true(d.is_leaf)
    assert.has_error(function() nnr.no_grad(function() error("inside") end) end)
    assert.is_true(nnr.is_grad_enabled())          -- restored after an error
  end)

  it("in-place ops: leaves refuse, non-leaves rebase, saved values are guarded", function()
    local x = nnr.ones(3, { dtype = "f64", requires_grad = true })
    assert.matches("a leaf tensor that requires grad cannot be modified in place", H.errmsg(function() x:add_(1) end))
    nnr.no_grad(function() x:mul_(2) end)           -- optimizers do this
    H.assert_close(x, { 2, 2, 2 }, 0)
    local y = x * 3
    y:add_(1):mul_(2)                               -- y = (3x + 1) * 2
    assert.equal("MulBackward", y.grad_fn)
    y:sum():backward()
    H.assert_close(x.grad, { 6, 6, 6 }, 0)
    local a = nnr.ones(2, { dtype = "f64", requires_grad = true })
    local b = a * 1
    local c = b:exp()                               -- saves b's output value
    local e = b * b                                 -- saves b
    b:add_(1)
    assert.matches("modified by an in%-place operation", H.errmsg(function() e:sum():backward() end))
    local v = (a * 1):view(2)
    assert.matches("view of a tensor that requires grad", H.errmsg(function() v:add_(1) end))
  end)

  it("copy_ and fill_ restart a tensor's history", function()
    local src = nnr.tensor({ 1, 2 }, { dtype = "f64", requires_grad = true })
    local dst = nnr.zeros(2, { dtype = "f64" })
    dst:copy_(src * 3)
    assert.equal("CopyBackward", dst.grad_fn)
    local sq = dst * dst
    sq:sum():backward()
    H.assert_close(src.grad, { 18, 36 }, 0)
  end)

  it("needs a gradient for non-scalar outputs and checks its shape", function()
    local x = nnr.ones(2, 2, { requires_grad = true })
    assert.matches("single%-element output", H.errmsg(function() (x * 2):backward() end))
    assert.matches("gradient of shape %[3%] given for an output of shape %[2, 2%]",
      H.errmsg(function() (x * 2):backward(nnr.ones(3)) end))
    assert.matches("does not require grad", H.errmsg(function() nnr.ones(1):backward() end))
  end)

  it("gradients of f32 leaves stay f32 through a mixed-precision graph", function()
    local w = nnr.ones(3, { requires_grad = true })
    local y = (w * nnr.ones(3, { dtype = "f64" })):sum()
    y:backward()
    assert.equal("f32", w.grad.dtype)
  end)

  it("keeps memory flat over many backward passes", function()
    local w = nnr.randn(256, 256, { requires_grad = true })
    local x = nnr.randn(64, 256)
    collectgarbage(); collectgarbage()
    local base
    for i = 1, 60 do
      local loss = x:matmul(w):relu():sum()
      loss:backward()
      w.grad = nil
      if i == 10 then collectgarbage(); collectgarbage(); base = nnr.memory_stats().live_bytes end
    end
    collectgarbage(); collectgarbage()
    assert.is_true(nnr.memory_stats().live_bytes <= base + 1024 * 1024)
  end)
end)
