-- The cpu backend's small-batch linear (plugins/cpu/gemv.c): up to 16 rows of x read the weight once, in
-- place, with the bias and the relu in the same pass; and inference linears of more rows on oneDNN with the
-- weight packed once (a keyed LINEAR). Checked against float64 on odd shapes (K not a multiple of 16, N not
-- a multiple of 4), for NaN through the relu, for results that do not depend on the thread count or on the
-- other rows of the batch. tests/cpu_classes.sh runs this file under every CPU class the machine has.
local nnr = require "nnr"
local F = nnr.nn.functional
local cpu = nnr.backends.cpu

-- the largest difference from the f64 product, relative to the sum of |x_k w_k| (the scale of rounding)
local function worst_error(y, x, w, b, relu)
  local xd, wd = x:double(), w:double()
  local ref = xd:matmul(wd:t())
  if b then ref = ref + b:double() end
  if relu then ref = ref:relu() end
  local scale = xd:abs():matmul(wd:abs():t()) + (b and b:double():abs() or 0) + 1e-30
  return ((y:double() - ref):abs() / scale):max():item()
end

describe("small-batch linear", function()
  local threads
  before_each(function() threads = nnr.get_num_threads() end)
  after_each(function() nnr.set_num_threads(threads); cpu.gemv = true end)

  it("matches float64 on odd shapes, with and without bias and relu", function()
    nnr.manual_seed(11)
    local before = tonumber(cpu.gemv_calls)
    local calls = 0
    for _, M in ipairs { 1, 2, 3, 4, 5, 7, 16 } do
      for _, K in ipairs { 1, 5, 16, 17, 33, 256 } do
        for _, N in ipairs { 1, 3, 4, 5, 17, 64 } do
          local x, w, b = nnr.randn(M, K), nnr.randn(N, K), nnr.randn(N)
          for _, case in ipairs { { b, false }, { nil, false }, { b, true } } do
            local bias, relu = case[1], case[2]
            local y = nnr.no_grad(function() return relu and F.linear_relu(x, w, bias) or F.linear(x, w, bias) end)
            calls = calls + 1
            assert.are.same({ M, N }, { y:size(1), y:size(2) })
            local e = worst_error(y, x, w, bias, relu)
            assert(e < 1e-6, string.format("M %d K %d N %d bias %s relu %s: relative error %.3g", M, K, N, tostring(bias ~= nil), tostring(relu), e))
          end
        end
      end
    end
    assert.are.equal(calls, tonumber(cpu.gemv_calls) - before, "every product ran on the small-batch kernel")
  end)

  it("keeps NaN through the relu and zeroes negatives", function()
    local x = nnr.tensor { { 1, 0 }, { 0 / 0, 1 } }
    local w = nnr.tensor { { 1, 0 }, { -1, 0 }, { 0, 1 } }
    local y = F.linear_relu(x, w)
    assert.are.equal(1, y[1][1]); assert.are.equal(0, y[1][2]); assert.are.equal(0, y[1][3])
    for n = 1, 3 do assert.is_true(y[2][n] ~= y[2][n], "a NaN input gives NaN through the relu, column " .. n) end
  end)

  it("gives the same bits on 1 and 2 threads and whatever the other rows", function()
    nnr.manual_seed(12)
    local x, w, b = nnr.randn(13, 256), nnr.randn(1024, 256), nnr.randn(1024)     -- 1 MiB of weight: split over the pool
    nnr.set_num_threads(1)
    local y1 = nnr.no_grad(function() return F.linear(x, w, b) end)
    nnr.set_num_threads(2)
    local y2 = nnr.no_grad(function() return F.linear(x, w, b) end)
    assert.are.equal(0, (y1 - y2):abs():max():item())
    for _, r in ipairs { 1, 6, 13 } do
      local one = nnr.no_grad(function() return F.linear(x:narrow(1, r, 1), w, b) end)
      assert.are.equal(0, (one[1] - y2[r]):abs():max():item(), "row " .. r .. " alone")
    end
  end)

  it("gives the gemm path's values within rounding when turned off, and trains through autograd", function()
    nnr.manual_seed(13)
    local lin = nnr.nn.Linear(40, 24)
    local x = nnr.randn(3, 40)
    local y = nnr.no_grad(function() return lin(x) end)
    cpu.gemv = false
    local before = tonumber(cpu.gemv_calls)
    local y_off = nnr.no_grad(function() return lin(x) end)
    assert.are.equal(before, tonumber(cpu.gemv_calls))
    cpu.gemv = true
    assert((y - y_off):abs():max():item() < 1e-5)
    -- with gradients: the forward on the small-batch kernel, the backward as before
    local xx = x:clone():requires_grad_()
    lin(xx):pow(2):sum():backward()
    local ref_gx = (2 * (x:double():matmul(lin.weight:double():t()) + lin.bias:double())):matmul(lin.weight:double())
    assert((xx.grad:double() - ref_gx):abs():max():item() < 1e-4)
  end)

  it("runs gemm pieces of 17 to 512 rows on oneDNN, bias accumulation and transposes included", function()
    if not cpu.onednn then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    nnr.manual_seed(15)
    local lin = nnr.nn.Linear(100, 48)
    local x = nnr.randn(64, 100)
    local a, b = nnr.randn(100, 40), nnr.randn(100, 72)
    local function run()
      local xx = x:clone():requires_grad_()
      for _, p in ipairs(lin:parameters()) do p.grad = nil end
      local y = lin(xx)                                  -- training: C = bias rows, then C += x W^T (beta 1)
      y:pow(2):sum():backward()
      return y, xx.grad, lin.weight.grad, a:t():matmul(b)  -- the weight gradient and a^T b read A transposed
    end
    local before = tonumber(cpu.onednn_gemm_calls)
    local on = { run() }
    assert.is_true(tonumber(cpu.onednn_gemm_calls) > before, "oneDNN ran the pieces")
    cpu.onednn_gemm = false
    before = tonumber(cpu.onednn_gemm_calls)
    local off = { run() }
    assert.are.equal(before, tonumber(cpu.onednn_gemm_calls))
    cpu.onednn_gemm = true
    for k = 1, #on do
      local scale = off[k]:abs():max():item()
      assert((on[k] - off[k]):abs():max():item() <= 1e-5 * scale, "result " .. k .. " differs from OpenBLAS's")
    end
    assert(worst_error(on[1], x, lin.weight, lin.bias, false) < 1e-6)
  end)

  it("packs an inference weight once for batches past 16 rows (oneDNN), fused relu included", function()
    if not cpu.onednn then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    nnr.manual_seed(14)
    local x, w, b = nnr.randn(64, 100), nnr.randn(48, 100), nnr.randn(48)
    x[3][7] = 0 / 0
    local before = tonumber(cpu.onednn_calls)
    local y = nnr.no_grad(function() return F.linear_relu(x, w, b) end)
    assert.is_true(tonumber(cpu.onednn_calls) > before, "oneDNN ran it")
    assert.is_true(y[3][1] ~= y[3][1], "a NaN input row gives NaN through the relu")
    x[3][7] = 0
    y = nnr.no_grad(function() return F.linear_relu(x, w, b) end)
    assert(worst_error(y, x, w, b, true) < 1e-6)
    -- a weight being trained changes every step: with gradients the product is not keyed (no packing per step)
    local lin = nnr.nn.Linear(100, 48)
    before = tonumber(cpu.onednn_calls)
    lin(x):sum():backward()
    assert.are.equal(before, tonumber(cpu.onednn_calls), "a training forward was packed")
    -- the weight changed in place: a new version, a new packed copy
    nnr.no_grad(function() w:mul_(-1) end)
    local y2 = nnr.no_grad(function() return F.linear(x, w, b) end)
    assert(worst_error(y2, x, w, b, false) < 1e-6, "a stale packed weight was used")
  end)
end)
