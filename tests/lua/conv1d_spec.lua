-- The cpu backend's 1-d convolution path (plugins/cpu/conv1d.c: conv2d with H = KH = 1 and at
-- least 64 outputs, any stride; the transposed convolution through its input gradient): gradients
-- in float64, and the same numbers as the 2-d path.
local nnr = require "nnr"
local H = require "helpers"
local F = nnr.nn.functional

local function f64(shape) return nnr.randn(shape, { dtype = "f64" }):requires_grad_() end
local function ok(fn, inputs) local r, msg = nnr.autograd.gradcheck(fn, inputs); assert(r, msg) end

describe("conv1d on the tiled implicit path", function()
  before_each(function() H.reseed(31) end)

  it("passes gradcheck with padding, dilation, groups, bias and a fused relu", function()
    ok(function(x, w, b) return F.conv1d(x, w, b, { padding = 2 }) end, { f64({ 2, 2, 70 }), f64({ 3, 2, 5 }), f64({ 3 }) })
    ok(function(x, w, b) return F.conv1d(x, w, b, { padding = 3, dilation = 2, groups = 2 }) end, { f64({ 2, 4, 70 }), f64({ 4, 2, 3 }), f64({ 4 }) })
    ok(function(x, w, b) return F.conv1d(x, w, b, { stride = 3, padding = 1 }) end, { f64({ 2, 2, 200 }), f64({ 3, 2, 4 }), f64({ 3 }) })
    ok(function(x, w, b) return F.conv_transpose1d(x, w, b, { stride = 4, padding = 2, output_padding = 1 }) end,
      { f64({ 1, 2, 70 }), f64({ 2, 3, 6 }), f64({ 3 }) })
    ok(function(x, w) return F.conv1d(x, w):relu() end, { nnr.randn({ 1, 2, 600 }, { dtype = "f64" }):narrow(3, 1, 580):requires_grad_(), f64({ 2, 2, 3 }) })   -- a strided input, more than one tile
  end)

  it("gives the 2-d path's values and gradients (the same op laid out along H)", function()
    local x, w, b = nnr.randn(3, 8, 1100), nnr.randn(16, 8, 7), nnr.randn(16)
    local g = nnr.randn(3, 16, 1100)
    local function run(one_d)
      local xx, ww, bb = x:clone():requires_grad_(), w:clone():requires_grad_(), b:clone():requires_grad_()
      local y = one_d and F.conv1d(xx, ww, bb, { padding = 3 }) or F.conv2d(xx:unsqueeze(4), ww:unsqueeze(4), bb, { padding = { 3, 0 } }):squeeze(4)
      local loss = (y * g):sum()
      loss:backward()
      return y, xx.grad, ww.grad, bb.grad
    end
    local a = { run(true) }
    local b2 = { run(false) }
    for k = 1, 4 do
      local d = (a[k] - b2[k]):abs():max():item()
      assert(d < 1e-3, "result " .. k .. " differs by " .. d)
    end
  end)
end)
