-- One case per disagreement the differential fuzzer (tests/difffuzz) found against PyTorch, each the
-- minimal program it printed, with PyTorch's answer written in (so this runs without torch).
local nnr = require "nnr"
local F = nnr.nn.functional
local H = require "helpers"

local function f64(v, rg) return nnr.tensor(v, { dtype = "f64", requires_grad = rg }) end

describe("differential fuzzer regressions", function()
  it("index_select over rows of no elements (was SIGFPE)", function()
    assert.same({ 1, 0, 2 }, nnr.zeros(1, 0, 2):index_select(1, { 1 }):size())
  end)

  it("where and masked_fill broadcast like PyTorch when the rank grows", function()
    assert.same({ 2, 5, 3 }, nnr.where(nnr.ones(5, 1):gt(0), nnr.ones(3), nnr.zeros(2, 1, 1)):size())
    assert.same({ 2, 1 }, nnr.zeros(2, 1):masked_fill(nnr.tensor({ true }), 0.5):size())
    assert.equal("bool", nnr.where(nnr.tensor({ true, false }), true, false).dtype)
  end)

  it("y:mul_(y) differentiates the old y twice", function()
    local x = f64({ 1.5 }, true)
    local y = x * 1
    y:mul_(y)
    y:sum():backward()
    assert.equal(3, x.grad[1])
  end)

  it("prod's gradient with zeros is the product of the others", function()
    local x = f64({ 0, 2, 3 }, true)
    x:prod():backward()
    assert.same({ 6, 0, 0 }, x.grad:totable())
    local y = f64({ { 0, 2, 3 }, { 1, 2, 3 }, { 0, 0, 1 } }, true)
    y:prod(2):sum():backward()
    assert.same({ { 6, 0, 0 }, { 6, 3, 2 }, { 0, 0, 0 } }, y.grad:totable())
  end)

  it("binary_cross_entropy_with_logits has gradient sigmoid(x) - y at x = 0", function()
    local x = f64({ 0 }, true)
    F.binary_cross_entropy_with_logits(x, f64({ 0.25 })):backward()
    assert.equal(0.25, x.grad[1])
    H.assert_close(F.binary_cross_entropy_with_logits(nnr.tensor({ -100, 0, 3, 100 }), nnr.tensor({ 0.5, 0.25, 1, 0 }), { reduction = "none" }),
      { 50, 0.69314718, 0.04858735, 100 }, 1e-5)
  end)

  it("a 0-d tensor joins type promotion as a number does", function()
    assert.equal("f32", (nnr.ones(2) + nnr.tensor(1.5, { dtype = "f64" })).dtype)
    assert.equal("f64", (nnr.ones(2, { dtype = "i32" }) + nnr.tensor(1.5, { dtype = "f64" })).dtype)
    assert.is_false(nnr.tensor(-10, { dtype = "i32" }):lt(nnr.tensor({ 4 }, { dtype = "u8" }))[1])   -- 246 < 4 in u8
  end)

  it("empty tensors: t(), linear with no inputs, split and chunk, contiguity", function()
    local v = nnr.arange(4)
    local _ = nnr.zeros(7)
    assert.same({ 4 }, v:t():size())
    H.assert_close(F.linear(nnr.zeros(3, 0), nnr.zeros(2, 0), nnr.tensor({ 1, 2 })), { { 1, 2 }, { 1, 2 }, { 1, 2 } }, 0)
    local x, w, b = nnr.zeros(4, 0, { dtype = "f64", requires_grad = true }), nnr.zeros(1, 0, { dtype = "f64", requires_grad = true }),
      f64({ 0.8 }, true)
    F.linear(x, w, b):sum():backward()
    assert.equal(4, b.grad[1])
    assert.equal(1, #nnr.zeros(0, 3):split(2, 1))
    assert.equal(2, #nnr.zeros(0, 3):chunk(2, 1))
    assert.is_true(nnr.zeros(3, 0):is_contiguous())
  end)

  it("ceil_mode pools count a window that starts inside the input", function()
    assert.same({ 1, 1, 1, 4 }, F.max_pool2d(nnr.ones(1, 1, 1, 4), { 2, 1 }, { ceil_mode = true }):size())
    assert.same({ 1, 1, 2, 1 }, F.avg_pool2d(nnr.ones(1, 1, 4, 1), 2, { ceil_mode = true }):size())
  end)

  it("a matmul with a 1-d operand can be written in place", function()
    local w = nnr.ones(2, 3, { requires_grad = true })
    local y = nnr.tensor({ 3, 4 }):matmul(w)
    y:mul_(2)
    y:sum():backward()
    assert.same({ { 6, 6, 6 }, { 8, 8, 8 } }, w.grad:totable())
  end)

  it("var with correction >= N, sign(nan)", function()
    assert.equal(math.huge, nnr.tensor({ 1, 3 }):std(1, false, 2):item())
    assert.equal(0, nnr.tensor({ 0 / 0 }):sign()[1])
  end)

  it("refuses what PyTorch refuses", function()
    assert.matches("arange: the step 1 goes away from the end", H.errmsg(function() return nnr.arange(5, 2, 1) end))
    assert.matches("sub: subtraction with a bool tensor", H.errmsg(function() return nnr.ones(2):gt(0) - nnr.ones(2):gt(1) end))
    assert.matches("clamp: at least one of min and max", H.errmsg(function() return nnr.ones(2):clamp() end))
    assert.matches("clamp_: result type float cannot be stored in place in a i32 tensor",
      H.errmsg(function() return nnr.ones(2, { dtype = "i32" }):clamp_(0.5) end))
    assert.matches("index_add: the source is f64 and the tensor f32",
      H.errmsg(function() return nnr.zeros(3):index_add(1, { 1 }, nnr.ones(1, { dtype = "f64" })) end))
    assert.matches("pow: integers to negative integer powers", H.errmsg(function() return nnr.tensor({ 0, 2 }, { dtype = "i32" }):pow(-1) end))
  end)

  it("allows what PyTorch allows: fill_ into an expanded view, empty writes, copy_ onto itself", function()
    local b = nnr.zeros(1)
    b:expand(4):fill_(3)
    assert.equal(3, b[1])
    nnr.ones(3, 1):expand(1, 3, 3, 0):erf_()
    local e = nnr.ones(1):expand(3)
    e:copy_(e)
  end)

  it("refuses a view made before an in-place op on its base, instead of the old history's gradient (seed 3475)", function()
    local x = nnr.tensor({ { 0.23 }, { 1.51 }, { -0.83 }, { -1.31 } }, { dtype = "f64", requires_grad = true })
    local y = nnr.nn.functional.leaky_relu(x[{ 3 }], 0.2)
    local v = y:reshape(1)
    y:abs_()
    assert.matches("a view whose base was changed in place", H.errmsg(function() return v:flatten(1, 1) * 2 end))
    local w = y:reshape(1)                      -- made after: fine, and its gradient goes through the abs
    local loss = (w * 2):sum()
    loss:backward()
    assert.equal(-0.4, x.grad[{ 3, 1 }])
  end)

  it("writes a 0-d tensor into an expanded view through indexing, as a fill (seed 2574)", function()
    local b = nnr.tensor({ { { false, true } } })
    local v = b:expand(2, 1, 4, 2)
    v[{ 2 }] = nnr.tensor(true)
    assert.same({ true, true }, b:view(2):totable())
  end)
end)
