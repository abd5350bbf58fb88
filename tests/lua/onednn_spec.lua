-- oneDNN in the cpu backend (plugins/cpu/onednn.c): batched f32 matmul, the transposed
-- convolution (conv2d's input gradient) and the inference convolution (a keyed CONV2D) give the numbers of the OpenBLAS + im2col path, over the
-- layouts and geometries each takes or leaves; the switch and its errors. Without libdnnl2 the
-- comparisons are pending, with the reason.
local nnr = require "nnr"
local H = require "helpers"
local F = nnr.nn.functional
local cpu = nnr.backends.cpu

local have = cpu.onednn
local function calls() return tonumber(cpu.onednn_calls) end

-- fn's results with oneDNN on and off, their largest difference relative to the largest value,
-- and how many ops oneDNN ran
local function both(fn)
  local before = calls()
  cpu.onednn = true
  local a = { fn() }
  local ran = calls() - before
  cpu.onednn = false
  local b = { fn() }
  cpu.onednn = true
  local worst = 0
  for k = 1, #a do
    local scale = math.max(b[k]:abs():max():item(), 1e-6)
    worst = math.max(worst, (a[k] - b[k]):abs():max():item() / scale)
  end
  return worst, ran
end

describe("oneDNN in the cpu backend", function()
  before_each(function() H.reseed(41) end)
  after_each(function() if have then cpu.onednn = true end end)

  it("reports itself and refuses a value that is not a boolean", function()
    assert.is_boolean(cpu.onednn)
    assert.is_string(cpu.onednn_version)
    H.fails("option onednn takes true or false, got 'maybe'", function() cpu.onednn = "maybe" end)
    if not have then pending("oneDNN is not available (libdnnl2 not installed, or NNR_ONEDNN=0): " .. cpu.onednn_version) end
    cpu.onednn = false
    assert.is_false(cpu.onednn)
    local before = calls()
    nnr.matmul(nnr.randn(4, 64, 64), nnr.randn(4, 64, 64))
    assert.are.equal(before, calls())
  end)

  it("gives OpenBLAS's batched products for every layout it takes", function()
    if not have then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    local q, k = nnr.randn(2, 4, 64, 32), nnr.randn(2, 4, 64, 32)
    local kt, a3, b3, wide, b40 = nnr.randn(2, 4, 48, 64):transpose(3, 4), nnr.randn(5, 37, 71), nnr.randn(5, 71, 29), nnr.randn(3, 50, 80), nnr.randn(3, 64, 40)
    local bcast, s1, s2 = nnr.randn(32, 48), nnr.randn(8, 8, 8), nnr.randn(8, 8, 8)
    local cases = {
      { "q k^T (attention scores)", function() return nnr.matmul(q, k:transpose(3, 4)) end, true },
      { "einsum bhqd,bhkd->bhqk", function() return nnr.einsum("bhqd,bhkd->bhqk", q, k) end, true },
      { "q^T k", function() return nnr.matmul(q:transpose(3, 4), k) end, true },
      { "both transposed", function() return nnr.matmul(q:transpose(3, 4), kt) end, true },
      { "3-d, odd sizes", function() return nnr.matmul(a3, b3) end, true },
      { "rows of a wider tensor", function() return nnr.matmul(wide:narrow(3, 5, 64), b40) end, true },
      { "batch dims that do not flatten", function() return nnr.matmul(q:transpose(1, 2), k:transpose(1, 2):transpose(3, 4)) end, nil },
      { "a broadcast batch", function() return nnr.matmul(q, bcast) end, false },
      { "f64", function() return nnr.matmul(q:double(), k:double():transpose(3, 4)) end, false },
      { "small products", function() return nnr.matmul(s1, s2) end, false },
    }
    for _, c in ipairs(cases) do
      local worst, ran = both(c[2])
      assert(worst < 1e-5, c[1] .. ": differs by " .. worst)
      if c[3] == true then assert(ran > 0, c[1] .. ": oneDNN did not run") end
      if c[3] == false then assert(ran == 0, c[1] .. ": oneDNN ran") end
    end
  end)

  it("gives the im2col path's transposed convolutions, forward and backward", function()
    if not have then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    local cases = {   -- input, weight, options, oneDNN expected to run
      { { 4, 32, 16, 16 }, { 32, 16, 4, 4 }, { stride = 2, padding = 1 }, true },
      { { 16, 32, 7, 7 }, { 32, 24, 3, 3 }, { stride = 2, padding = 1, output_padding = 1 }, true },
      { { 12, 16, 12, 9 }, { 16, 16, 3, 5 }, { stride = { 2, 3 }, padding = { 1, 2 }, dilation = { 2, 1 } }, true },
      { { 10, 24, 10, 10 }, { 24, 20, 3, 3 }, { stride = 1, padding = 1 }, true },
      { { 2, 16, 9, 9 }, { 16, 8, 4, 4 }, { stride = 3, padding = 0, output_padding = 2 }, false },  -- padding 0 < output_padding
      { { 4, 32, 8, 8 }, { 32, 8, 3, 3 }, { stride = 2, padding = 1, groups = 2 }, false },
      { { 2, 4, 5, 5 }, { 4, 3, 3, 3 }, { stride = 2 }, false },                                    -- too small to pay for reorders
    }
    for i, c in ipairs(cases) do
      local x, w, b = nnr.randn(c[1]), nnr.randn(c[2]):mul_(0.1), nnr.randn(c[2][2] * (c[3].groups or 1))
      local worst, ran = both(function() return F.conv_transpose2d(x, w, b, c[3]) end)
      assert(worst < 1e-5, "case " .. i .. " differs by " .. worst)
      assert(c[4] == (ran > 0), "case " .. i .. (c[4] and ": oneDNN did not run" or ": oneDNN ran"))
    end
    -- the 1-d form (H = 1), ahead of the tiled 1-d path
    local x1, w1 = nnr.randn(8, 64, 200), nnr.randn(64, 32, 8)
    local worst1, ran1 = both(function() return F.conv_transpose1d(x1, w1, nil, { stride = 4, padding = 2 }) end)
    assert(worst1 < 1e-5 and ran1 > 0, "conv_transpose1d differs by " .. worst1 .. ", oneDNN ran " .. ran1)
    -- conv2d's input gradient is the same op: odd sizes leave rows the stride skips
    local x, w = nnr.randn(4, 16, 21, 19), nnr.randn(24, 16, 3, 3)
    local worst = both(function()
      local xx = x:clone():requires_grad_()
      F.conv2d(xx, w, nil, { stride = 2, padding = 1 }):pow(2):sum():backward()
      return xx.grad
    end)
    assert(worst < 1e-5, "conv2d input gradient differs by " .. worst)
  end)

  it("runs a recurrent layer's step gemm on a weight packed once (a keyed LINEAR), forward and backward", function()
    if not have then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    local m = nnr.nn.LSTM(24, 40, { num_layers = 2 })
    local x = nnr.randn(9, 20, 24)     -- batch 20: 16 rows or fewer take the small-batch kernel (gemv.c)
    local worst, ran = both(function()
      local xx = x:clone():requires_grad_()
      for _, p in ipairs(m:parameters()) do p.grad = nil end
      local y, st = m(xx)
      ;(y:pow(2):sum() + st[2]:sum()):backward()
      return y, st[1], st[2], xx.grad, m.weight_hh_l0.grad, m.bias_hh_l1.grad
    end)
    assert(worst < 1e-5, "differs by " .. worst)
    assert(ran >= 2 * 9 * 2, "the step gemms did not run on oneDNN (" .. ran .. " calls)")
    -- a weight changed in place between calls gets a new key, never the stale packed copy
    local h0 = nnr.zeros(2, 20, 40)
    local y1 = m(x, { h0, h0 })
    nnr.no_grad(function() m.weight_hh_l0:mul_(0.5) end)
    local y2 = m(x, { h0, h0 })
    cpu.onednn = false
    local y3 = m(x, { h0, h0 })
    cpu.onednn = true
    assert((y2 - y3):abs():max():item() < 1e-5 and (y1 - y2):abs():max():item() > 1e-3, "a stale packed weight was used")
  end)

  it("declines a wide keyed product below AVX-512 (oneDNN's jit sgemm lost to OpenBLAS there) and gives the same result", function()
    if not have then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    -- 48 x 96 -> 1200 at 1 thread: one slice of 1200 columns, past the 256 oneDNN's sgemm is kept for
    local threads = nnr.get_num_threads()
    nnr.set_num_threads(1)
    nnr.manual_seed(21)
    local x, w, b = nnr.randn(48, 96), nnr.randn(1200, 96), nnr.randn(1200)
    local before = tonumber(cpu.onednn_calls)
    local y = nnr.no_grad(function() return F.linear(x, w, b) end)
    local ran = tonumber(cpu.onednn_calls) - before
    nnr.set_num_threads(threads)
    local brgemm = cpu.isa ~= "c" and cpu.isa ~= "avx2"      -- oneDNN 2.6's brgemm needs AVX-512
    -- (unless the user capped oneDNN's dispatch: then the class does not say which kernels it has)
    if not os.getenv("ONEDNN_MAX_CPU_ISA") and not os.getenv("DNNL_MAX_CPU_ISA") then
      assert.are.equal(brgemm and 1 or 0, ran, "oneDNN calls at class " .. cpu.isa)
    end
    local want = nnr.matmul(x:double(), w:double():t()) + b:double()
    assert((y:double() - want):abs():max():item() < 1e-3, "a declined product gave a wrong result")
    -- a narrow one (64 columns) stays on oneDNN at every class it runs
    local w2, b2 = nnr.randn(64, 96), nnr.randn(64)
    before = tonumber(cpu.onednn_calls)
    local y2 = nnr.no_grad(function() return F.linear(x, w2, b2) end)
    assert.is_true(tonumber(cpu.onednn_calls) > before, "a narrow keyed product left oneDNN")
    assert((y2:double() - (nnr.matmul(x:double(), w2:double():t()) + b2:double())):abs():max():item() < 1e-3)
  end)

  it("gives the im2col path's inference convolutions, split by images, rows or channels, at 1 and 2 threads", function()
    if not have then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    local threads = nnr.get_num_threads()
    -- batch, in, out, size, kernel, stride, padding, dilation: the first layers' shapes (C = 1 and 3),
    -- odd channel counts (padded blocks), more weight than activations (channel slices at batch 1),
    -- row bands with padding on one side only, 1x1, strided and dilated, and a batch split in runs
    local cases = {
      { 1, 3, 64, 40, 7, 2, 3, 1 }, { 1, 1, 32, 28, 3, 1, 1, 1 }, { 3, 5, 10, 9, 3, 2, 1, 1 }, { 1, 16, 40, 12, 1, 1, 0, 1 },
      { 4, 8, 33, 11, 3, 1, 2, 2 }, { 1, 256, 64, 7, 3, 1, 1, 1 }, { 1, 200, 70, 5, 3, 1, 1, 1 }, { 1, 96, 40, 6, 3, 2, 2, 2 },
      { 5, 7, 100, 13, 5, 3, 2, 1 }, { 9, 32, 64, 14, 3, 1, 1, 1 }, { 1, 24, 24, 3, 3, 1, 1, 1 },
    }
    for _, t in ipairs { 1, 2 } do
      nnr.set_num_threads(t)
      for _, c in ipairs(cases) do
        local N, C, O, H, K, S, P, D = unpack(c)
        local x, w, b = nnr.randn(N, C, H, H + 1), nnr.randn(O, C, K, K), nnr.randn(O)
        for _, relu in ipairs { false, true } do
          local f = relu and F.conv2d_relu or F.conv2d
          local opts = { stride = S, padding = P, dilation = D }
          local worst, ran = both(function() return nnr.no_grad(function() return f(x, w, b, opts), f(x, w, nil, opts) end) end)
          local name = table.concat(c, ",") .. (relu and ", relu" or "") .. ", " .. t .. " threads"
          assert(worst < 1e-5, name .. ": differs by " .. worst)
          -- oneDNN's direct kernels from the avx2 class up; below it (NNR_CPU_ISA=c caps oneDNN at SSE4.1)
          -- a shape it serves only by its gemm or reference kernels is left to im2col
          if cpu.isa ~= "c" then assert(ran == 2, name .. ": oneDNN ran " .. ran .. " of 2") end
        end
      end
    end
    nnr.set_num_threads(threads)
  end)

  it("convolves in inference only, keeps NaN through the relu, and never uses a stale packed weight", function()
    if not have then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    local conv = nnr.nn.Conv2d(16, 32, 3, { padding = 1 })
    local x = nnr.randn(2, 16, 10, 10)
    -- training: the weight changes every step, so nothing is keyed or packed
    local before = calls()
    conv(x):sum():backward()
    assert.are.equal(before, calls(), "a training forward ran on the packed path")
    x[1][3][4][5] = 0 / 0
    local y = nnr.no_grad(function() return F.conv2d_relu(x, conv.weight, conv.bias, { padding = 1 }) end)
    assert.is_true(calls() > before, "the inference convolution did not run on oneDNN")
    assert.is_true(y[1][1][4][5] ~= y[1][1][4][5], "a NaN input gives NaN through the relu")
    x[1][3][4][5] = 0
    -- the same weight changed in place: a new version, so a new packed copy
    local y1 = nnr.no_grad(function() return conv(x) end)
    nnr.no_grad(function() conv.weight:mul_(-0.5) end)
    local worst = both(function() return nnr.no_grad(function() return conv(x) end) end)
    local y2 = nnr.no_grad(function() return conv(x) end)
    assert(worst < 1e-5, "a stale packed weight was used (differs by " .. worst .. ")")
    assert((y1 - y2):abs():max():item() > 1e-2, "the changed weight changed nothing")
    -- another batch size and a view of a larger weight (another address) give the other path's numbers too
    local big = nnr.randn(64, 16, 3, 3)
    local w2, x7 = big:narrow(1, 33, 32), nnr.randn(7, 16, 10, 10)
    local worst2 = both(function() return nnr.no_grad(function() return F.conv2d(x7, w2, nil, { padding = 1 }) end) end)
    assert(worst2 < 1e-5, "a weight view differs by " .. worst2)
    -- onednn_conv = false keeps inference convolutions on im2col, with the same numbers
    cpu.onednn_conv = false
    assert.is_false(cpu.onednn_conv)
    local before2 = calls()
    local y3 = nnr.no_grad(function() return conv(x) end)
    assert.are.equal(before2, calls(), "oneDNN ran with onednn_conv = false")
    cpu.onednn_conv = true
    assert.is_true(cpu.onednn_conv)
    assert((y3 - y2):abs():max():item() < 1e-4)
    H.fails("option onednn_conv takes true or false, got 'sometimes'", function() cpu.onednn_conv = "sometimes" end)
  end)

  it("takes a batch smaller than the threads through the other path", function()
    if not have then pending("oneDNN is not available: " .. cpu.onednn_version) return end
    local threads = nnr.get_num_threads()
    nnr.set_num_threads(2)
    local x, w = nnr.randn(1, 32, 16, 16), nnr.randn(32, 16, 4, 4)
    local worst, ran = both(function() return F.conv_transpose2d(x, w, nil, { stride = 2, padding = 1 }) end)
    nnr.set_num_threads(threads)
    assert(worst < 1e-5 and ran == 0, "differs by " .. worst .. ", oneDNN ran " .. ran)
  end)
end)
