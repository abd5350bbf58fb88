-- Issue 16's layers and losses: shapes, state-dict names and shapes (PyTorch's), float64 gradient
-- checks of every layer and loss including parameters, and the errors. Values against PyTorch are
-- in tests/torch_compare/nn_layers.py.
local nnr = require "nnr"
local H = require "helpers"
local nn, F = nnr.nn, nnr.nn.functional
local gradcheck = nnr.autograd.gradcheck

local function f64(shape, lo, hi)
  return nnr.tensor(H.rand_table(shape, lo or -1, hi or 1), { dtype = "f64", requires_grad = true })
end
local function check(fn, inputs, opts)
  local ok, msg = gradcheck(fn, inputs, opts)
  assert(ok, msg)
end
-- a module's gradcheck: its input x (transposed inside when transpose is given, so the module sees a
-- non-contiguous tensor) and each of its parameters as inputs
local function check_module(m, x, transpose)
  m:double()
  local names, inputs = {}, { x }
  for _, np in ipairs(m:named_parameters()) do
    names[#names + 1] = np[1]
    inputs[#inputs + 1] = np[2]:detach():clone():requires_grad_(true)
  end
  check(function(xs, ...)
    local ps = { ... }
    for i, n in ipairs(names) do rawset(m, n, ps[i]) end
    if transpose then xs = xs:transpose(transpose[1], transpose[2]) end
    return m(xs)
  end, inputs)
end
-- the state dict as "name [shape]" lines, sorted
local function sd_shapes(m)
  local out = {}
  for k, v in pairs(m:state_dict()) do out[#out + 1] = k .. " " .. nnr.shape_str(v:size()) end
  table.sort(out)
  return table.concat(out, "; ")
end
local function shape(t) return nnr.shape_str(t:size()) end

describe("issue 16 layers: shapes and state dicts as PyTorch's", function()
  before_each(function() H.reseed(16) end)

  it("convolutions", function()
    local c1 = nn.Conv1d(4, 6, 3, { stride = 2, padding = 1, groups = 2 })
    assert.equal("bias [6]; weight [6, 2, 3]", sd_shapes(c1))
    assert.equal("[5, 6, 5]", shape(c1(nnr.randn(5, 4, 10))))
    assert.equal("[6, 8]", shape(c1(nnr.randn(4, 16))))        -- unbatched [C, L]
    local t1 = nn.ConvTranspose1d(4, 6, 3, { stride = 2, padding = 1, output_padding = 1, groups = 2 })
    assert.equal("bias [6]; weight [4, 3, 3]", sd_shapes(t1))
    assert.equal("[2, 6, 10]", shape(t1(nnr.randn(2, 4, 5))))  -- (5 - 1) * 2 - 2 + 2 + 1 + 1
    local t2 = nn.ConvTranspose2d(3, 8, { 4, 3 }, { stride = 2, padding = { 1, 0 }, bias = false })
    assert.equal("weight [3, 8, 4, 3]", sd_shapes(t2))
    assert.equal("[2, 8, 10, 11]", shape(t2(nnr.randn(2, 3, 5, 5))))
    assert.equal("[8, 10, 11]", shape(t2(nnr.randn(3, 5, 5))))
    -- PyTorch's initialisation bound 1 / sqrt(weight:size(2) * kernel elements)
    local big = nn.ConvTranspose2d(2, 16, 3)
    local bound = 1 / math.sqrt(16 * 9)
    assert.is_true(big.weight:abs():max():item() <= bound)
    assert.is_true(big.weight:abs():max():item() > bound * 0.8)
  end)

  it("a transposed convolution is the adjoint of the convolution", function()
    -- <conv_transpose(x, w), y> = <x, conv(y, w)> for every x, y
    local w = nnr.randn(3, 2, 3, 3, { dtype = "f64" })
    local x, y = nnr.randn(2, 3, 4, 4, { dtype = "f64" }), nnr.randn(2, 2, 7, 7, { dtype = "f64" })
    local opts = { stride = 2, padding = 1, output_padding = 0 }
    local lhs = (F.conv_transpose2d(x, w, nil, opts) * y):sum():item()
    local rhs = (x * F.conv2d(y, w, nil, { stride = 2, padding = 1 })):sum():item()
    assert.is_true(math.abs(lhs - rhs) < 1e-9 * math.max(1, math.abs(lhs)))
  end)

  it("normalization, pooling, resampling", function()
    assert.equal("bias [6]; weight [6]", sd_shapes(nn.GroupNorm(3, 6)))
    assert.equal("", sd_shapes(nn.GroupNorm(3, 6, { affine = false })))
    assert.equal("", sd_shapes(nn.InstanceNorm2d(4)))
    assert.equal("bias [4]; num_batches_tracked []; running_mean [4]; running_var [4]; weight [4]",
      sd_shapes(nn.InstanceNorm2d(4, { affine = true, track_running_stats = true })))
    assert.equal("[2, 3, 5]", shape(nn.MaxPool1d(2)(nnr.randn(2, 3, 11))))
    assert.equal("[3, 6]", shape(nn.AvgPool1d(3, { stride = 2, padding = 1 })(nnr.randn(3, 11))))
    assert.equal("[2, 3, 3, 2]", shape(nn.AdaptiveMaxPool2d({ 3, 2 })(nnr.randn(2, 3, 7, 5))))
    assert.equal("[2, 4, 6]", shape(nn.PixelShuffle(2)(nnr.randn(8, 2, 3))))
    assert.equal("[8, 2, 3]", shape(nn.PixelUnshuffle(2)(nnr.randn(2, 4, 6))))
    assert.equal("[1, 2, 6, 8]", shape(nn.Upsample { scale_factor = 2 }(nnr.randn(1, 2, 3, 4))))
    assert.equal("[1, 2, 5, 7]", shape(nn.Upsample { size = { 5, 7 }, mode = "bilinear" }(nnr.randn(1, 2, 3, 4))))
    assert.equal("weight [1]", sd_shapes(nn.PReLU()))
    H.assert_close(nn.PReLU(3, 0.1).weight, { 0.1, 0.1, 0.1 }, 1e-7)
  end)

  it("ModuleDict and ParameterList", function()
    local md = nn.ModuleDict { { "enc", nn.Linear(3, 4) }, { "dec", nn.Linear(4, 2) } }
    assert.equal("dec.bias [2]; dec.weight [2, 4]; enc.bias [4]; enc.weight [4, 3]", sd_shapes(md))
    assert.same({ "enc", "dec" }, md:keys())
    assert.equal(2, md:len())
    assert.is_true(md:contains("enc"))
    md:set("act", nn.SiLU())
    assert.equal("[5, 2]", shape(md.dec(md.act(md.enc(nnr.randn(5, 3))))))
    local popped = md:pop("act")
    assert.equal("SiLU", popped.__name)
    assert.same({ "enc", "dec" }, md:keys())
    local sorted = nn.ModuleDict { b = nn.ReLU(), a = nn.Tanh() }
    assert.same({ "a", "b" }, sorted:keys())             -- a plain table's keys in sorted order
    local pl = nn.ParameterList { nnr.randn(2), nnr.randn(3, 3) }
    pl:append(nnr.randn(1))
    assert.equal("1 [2]; 2 [3, 3]; 3 [1]", sd_shapes(pl))
    assert.equal(3, pl:len())
    assert.equal(pl:get(3), pl:get(-1))
    assert.is_true(pl:get(1).requires_grad)
    local n = 0
    for i, p in pl:ipairs() do n = n + 1; assert.equal(pl:get(i), p) end
    assert.equal(3, n)
    -- ParameterList:extend("Name") still subclasses
    local Sub = nn.ParameterList:extend("MyParams")
    assert.equal("MyParams", Sub { nnr.randn(2) }.__name)
    -- a state dict round trip
    local other = nn.ModuleDict { { "enc", nn.Linear(3, 4) }, { "dec", nn.Linear(4, 2) } }
    other:load_state_dict(md:state_dict())
    assert.same(md.enc.weight:totable(), other.enc.weight:totable())
  end)

  it("Dropout2d zeroes whole channels and scales the rest", function()
    local m = nn.Dropout2d(0.5)
    local y = m(nnr.ones(8, 16, 3, 3))
    local per_channel = y:sum({ 3, 4 })
    local zeros = per_channel:eq(0):sum():item()
    assert.equal(8 * 16 - zeros, per_channel:eq(18):sum():item())  -- kept: 9 ones * 2
    assert.is_true(zeros > 20 and zeros < 108)
    m:eval()
    assert.same(nnr.ones(2, 3, 2, 2):totable(), m(nnr.ones(2, 3, 2, 2)):totable())
    assert.equal("[3, 2, 2]", shape(nn.Dropout2d()(nnr.ones(3, 2, 2))))
  end)

  it("InstanceNorm2d with running stats: training updates them, eval uses them", function()
    local m = nn.InstanceNorm2d(3, { track_running_stats = true, momentum = 0.5 })
    local x = nnr.randn(4, 3, 5, 5, { dtype = "f64" }) * 2 + 1
    m:double()
    m(x)
    local mean = x:mean({ 1, 3, 4 })
    H.assert_close(m.running_mean, (mean * 0.5):totable(), 1e-12)
    m:eval()
    local y = m(x)
    local ref = (x - m.running_mean:view(1, 3, 1, 1)) / (m.running_var:view(1, 3, 1, 1) + 1e-5):sqrt()
    H.assert_close(y, ref:totable(), 1e-12)
  end)

  it("Upsample calls nnr.nn.functional.interpolate when there is one", function()
    local saved = F.interpolate
    local seen
    F.interpolate = function(x, opts) seen = opts; return x end
    local ok, err = pcall(function()
      local m = nn.Upsample { scale_factor = 3, mode = "bicubic" }
      m(nnr.randn(1, 1, 2, 2))
    end)
    F.interpolate = saved
    assert(ok, err)
    assert.equal("bicubic", seen.mode)
    assert.same({ 3, 3 }, seen.scale_factor)
  end)
end)

describe("issue 16 layers: gradients (float64 finite differences)", function()
  before_each(function() H.reseed(1616) end)

  it("Conv1d, ConvTranspose1d, ConvTranspose2d with their parameters", function()
    check_module(nn.Conv1d(4, 6, 3, { stride = 2, padding = 1, dilation = 2, groups = 2 }), f64({ 2, 9, 4 }), { 2, 3 })
    check_module(nn.ConvTranspose1d(4, 2, 3, { stride = 2, padding = 1, output_padding = 1 }), f64({ 2, 4, 4 }))
    check_module(nn.ConvTranspose2d(4, 6, { 3, 2 }, { stride = { 2, 1 }, padding = { 1, 0 }, output_padding = { 1, 0 }, groups = 2,
      dilation = { 1, 2 } }), f64({ 2, 4, 4, 3 }), { 3, 4 })
    check_module(nn.ConvTranspose2d(3, 2, 2, { dilation = 2, output_padding = 1, bias = false }), f64({ 1, 3, 3, 3 }))
  end)
  it("F.conv_transpose2d, F.conv_transpose1d, F.conv1d with a broadcast (expanded) input", function()
    check(function(x, w, b) return F.conv_transpose2d(x:expand(3, 2, 3, 3), w, b, { stride = 2, padding = 1 }) end,
      { f64({ 1, 2, 3, 3 }), f64({ 2, 3, 3, 3 }), f64({ 3 }) })
    check(function(x, w) return F.conv_transpose1d(x, w, nil, { stride = 3, groups = 2 }) end, { f64({ 2, 4, 3 }), f64({ 4, 1, 2 }) })
    check(function(x, w, b) return F.conv1d(x:expand(2, 3, 5), w, b, { padding = 1 }) end, { f64({ 1, 3, 5 }), f64({ 2, 3, 2 }), f64({ 2 }) })
  end)
  it("GroupNorm, InstanceNorm1d/2d (training and eval)", function()
    local g = nn.GroupNorm(2, 4)
    g.weight, g.bias = nnr.randn(4), nnr.randn(4)
    check_module(g, f64({ 3, 4, 2, 3 }), { 3, 4 })
    check_module(nn.GroupNorm(3, 3, { affine = false }), f64({ 2, 3, 5 }))
    check_module(nn.InstanceNorm2d(3, { affine = true }), f64({ 2, 3, 3, 4 }), { 3, 4 })
    check_module(nn.InstanceNorm1d(2, { affine = true }), f64({ 2, 2, 5 }))
    local ev = nn.InstanceNorm2d(2, { affine = true, track_running_stats = true }):double()
    ev.running_mean:copy_(nnr.randn(2)); ev.running_var:copy_(nnr.rand(2) + 0.5)
    ev:eval()
    check_module(ev, f64({ 2, 2, 3, 3 }))
  end)
  it("MaxPool1d, AvgPool1d, AdaptiveMaxPool2d", function()
    check_module(nn.MaxPool1d(3, { stride = 2, padding = 1 }), f64({ 2, 7, 3 }), { 2, 3 })
    check_module(nn.AvgPool1d(3, { stride = 2, padding = 1, count_include_pad = false, ceil_mode = true }), f64({ 2, 3, 8 }))
    check_module(nn.AdaptiveMaxPool2d({ 3, 2 }), f64({ 2, 2, 5, 7 }), { 3, 4 })
    check_module(nn.AdaptiveMaxPool2d(2), f64({ 1, 2, 4, 6 }))
  end)
  it("Upsample (nearest, bilinear), PixelShuffle, PixelUnshuffle", function()
    check_module(nn.Upsample { scale_factor = 2 }, f64({ 1, 2, 3, 2 }), { 3, 4 })
    check_module(nn.Upsample { size = { 4, 5 }, mode = "bilinear" }, f64({ 1, 2, 3, 2 }))
    check_module(nn.Upsample { scale_factor = 1.5, mode = "bilinear", align_corners = true }, f64({ 2, 1, 3, 3 }))
    check_module(nn.PixelShuffle(2), f64({ 2, 8, 2, 3 }), { 3, 4 })
    check_module(nn.PixelUnshuffle(2), f64({ 1, 2, 4, 4 }), { 3, 4 })
  end)
  it("SiLU, Mish, Softplus, Hardswish, PReLU (per channel, with its weight), Dropout2d with a fixed mask", function()
    for _, m in ipairs { nn.SiLU(), nn.Mish(), nn.Softplus(), nn.Softplus(2, 1), nn.Hardswish(), nn.Identity() } do
      check_module(m, f64({ 3, 4 }, -2.9, 2.9), { 1, 2 })
    end
    local p = nn.PReLU(3)
    check_module(p, f64({ 2, 3, 4 }), nil)
    check_module(nn.PReLU(), f64({ 4, 3 }), { 1, 2 })
    check(function(x) nnr.manual_seed(5); return F.dropout2d(x, 0.4) end, { f64({ 2, 3, 2, 2 }) })
  end)
  it("losses: Huber, SmoothL1, KLDiv, BCE, CosineEmbedding (both arguments, broadcast weight)", function()
    for _, red in ipairs { "mean", "sum", "none" } do
      check(function(x, y) return F.huber_loss(x:t(), y, { delta = 0.4, reduction = red }) end, { f64({ 4, 3 }), f64({ 3, 4 }) })
      check(function(x, y) return F.smooth_l1_loss(x, y:t(), { beta = 0.6, reduction = red }) end, { f64({ 3, 4 }), f64({ 4, 3 }) })
      check(function(x, y) return F.kl_div(x:log_softmax(2), y, { reduction = red }) end, { f64({ 3, 4 }), f64({ 3, 4 }, 0.05, 1) })
      check(function(x, y) return F.kl_div(x, y, { reduction = red, log_target = true }) end, { f64({ 3, 4 }), f64({ 3, 4 }) })
      check(function(p, y, w) return F.binary_cross_entropy(p:t(), y, { weight = w, reduction = red }) end,
        { f64({ 4, 3 }, 0.05, 0.95), f64({ 3, 4 }, 0, 1), f64({ 4 }, 0.5, 2) })
      local target = nnr.tensor({ 1, -1, -1, 1, -1 }, { dtype = "i64" })
      check(function(a, b) return F.cosine_embedding_loss(a, b, target, { margin = -0.3, reduction = red }) end,
        { f64({ 5, 3 }), f64({ 5, 3 }) })
    end
    check(function(x, y) return F.kl_div(x, y, { reduction = "batchmean" }) end, { f64({ 3, 4 }), f64({ 3, 4 }, 0.05, 1) })
  end)
  it("cross-entropy and NLL with class weights, ignore_index and label smoothing", function()
    local target = nnr.tensor({ 2, -100, 1, 3, 3, -100 }, { dtype = "i64" })
    for _, red in ipairs { "mean", "sum", "none" } do
      check(function(x, w) return F.cross_entropy(x, target, { weight = w, reduction = red }) end, { f64({ 6, 3 }), f64({ 3 }, 0.2, 2) })
      local t3 = nnr.tensor({ 2, 3, 1, 3, 1, 2 }, { dtype = "i64" })
      check(function(x) return F.cross_entropy(x:t(), t3, { ignore_index = 3, label_smoothing = 0.2, reduction = red }) end, { f64({ 3, 6 }) })
      check(function(x, w) return F.nll_loss(x, target, { weight = w, reduction = red }) end, { f64({ 6, 3 }), f64({ 3 }, 0.2, 2) })
    end
    local kd = nnr.tensor({ { 1, -100, 2 }, { 3, 3, 1 } }, { dtype = "i64" })
    check(function(x) return F.cross_entropy(x, kd, { weight = nnr.tensor({ 0.5, 1, 2 }, { dtype = "f64" }), label_smoothing = 0.1 }) end,
      { f64({ 2, 3, 3 }) })
  end)

  -- [N, C] scores without weight or smoothing take the fused CROSS_ENTROPY op (core/ops/loss.c): its
  -- first and second derivatives, ignored rows present or not, ignore_index a class, strided scores
  it("the fused cross-entropy: gradients and second derivatives in f64", function()
    local gradgradcheck = nnr.autograd.gradgradcheck
    local with_ignored = nnr.tensor({ 2, -100, 1, 3, 3, -100 }, { dtype = "i64" })
    local plain = nnr.tensor({ 2, 1, 1, 3, 3, 2 }, { dtype = "i64" })
    for _, red in ipairs { "mean", "sum", "none" } do
      for _, tg in ipairs { with_ignored, plain } do
        check(function(x) return F.cross_entropy(x, tg, { reduction = red }) end, { f64({ 6, 3 }, -3, 3) })
        local ok, msg = gradgradcheck(function(x) return F.cross_entropy(x, tg, { reduction = red }) end, { f64({ 6, 3 }, -3, 3) })
        assert(ok, msg)
      end
      local none = nnr.tensor({ -100, -100, -100 }, { dtype = "i64" })      -- no row counts
      check(function(x) return F.cross_entropy(x, none, { reduction = red }) end, { f64({ 3, 4 }) })
      local okn, msgn = gradgradcheck(function(x) return F.cross_entropy(x, none, { reduction = red }) end, { f64({ 3, 4 }) })
      assert(okn, msgn)
      check(function(x) return F.cross_entropy(x:t(), plain, { ignore_index = 3, reduction = red }) end, { f64({ 3, 6 }) })
      local ok, msg = gradgradcheck(function(x) return F.cross_entropy(x:t(), plain, { ignore_index = 3, reduction = red }) end,
        { f64({ 3, 6 }) })
      assert(ok, msg)
    end
  end)

  it("the fused cross-entropy matches log_softmax and nll_loss in f32 and f64, specials and edge sizes included", function()
    for _, dt in ipairs { "f32", "f64" } do
      for _, size in ipairs { { 131, 10 }, { 5, 1 }, { 7, 16 }, { 9, 200 }, { 0, 4 } } do
        local N, Cn = size[1], size[2]
        local x = (nnr.randn(N, Cn) * 3):to(dt)
        local labels = {}
        for n = 1, N do labels[n] = (n * 7) % Cn + 1 end
        if N >= 9 then
          labels[4] = -100                       -- an ignored row
          x[2][1] = 0 / 0                        -- a row with a NaN
          x[3][Cn] = -1 / 0                      -- a row with one -inf
          for c = 1, Cn do x[5][c] = -1 / 0 end  -- a row of -inf: NaN (0 / 0 in log_softmax)
          x[6][1] = 1 / 0                        -- a row with +inf: NaN, as PyTorch's
          labels[3] = Cn == 1 and 1 or (Cn - 1)  -- not the -inf class
        end
        local t = N > 0 and nnr.tensor(labels, { dtype = "i64" }) or nnr.zeros(0, { dtype = "i64" })
        for _, red in ipairs { "mean", "sum", "none" } do
          local xa, xb = x:clone():requires_grad_(), x:clone():requires_grad_()
          local a = F.cross_entropy(xa, t, { reduction = red })
          local b = F.nll_loss(xb:log_softmax(2), t, { reduction = red })
          local what = string.format("%s [%d, %d] %s", dt, N, Cn, red)
          assert.equal(b.dtype, a.dtype, what)
          assert.same(b:size(), a:size(), what)
          local tol = dt == "f32" and 1e-5 or 1e-12
          local function same(u, v, label)
            local fu, fv = u:double():reshape(-1):totable(), v:double():reshape(-1):totable()
            for i = 1, #fu do
              local p, q = fu[i], fv[i]
              assert((p ~= p and q ~= q) or p == q or math.abs(p - q) <= tol * math.max(1, math.abs(q)),
                     string.format("%s %s [%d]: %s vs %s", what, label, i, tostring(p), tostring(q)))
            end
          end
          same(a, b, "loss")
          if N > 0 then
            local g = red == "none" and nnr.rand(N):to(dt) or nil
            if g then a:backward(g); b:backward(g) else a:backward(); b:backward() end
            same(xa.grad, xb.grad, "grad")
          end
        end
      end
    end
  end)

  it("the fused cross-entropy with no row counted: the mean NaN, the gradient 0 (with create_graph too)", function()
    local x = nnr.randn(3, 4, { dtype = "f64" }):requires_grad_()
    local none = nnr.tensor({ -100, -100, -100 }, { dtype = "i64" })
    local l = F.cross_entropy(x, none)
    assert(l:item() ~= l:item(), "the mean over no rows is NaN")
    assert.equal(0, F.cross_entropy(x, none, { reduction = "sum" }):item())
    local g = nnr.autograd.grad(F.cross_entropy(x, none), { x })
    assert.same({ 0, 0, 0, 0 }, g[1]:totable())
    local gc = nnr.autograd.grad(F.cross_entropy(x, none), { x }, { create_graph = true })
    assert.same(g:totable(), gc:detach():totable())
    -- an ignored row's gradient is 0 even where its scores are NaN, both ways
    local y = nnr.randn(2, 3, { dtype = "f64" })
    y[2][1] = 0 / 0
    y:requires_grad_()
    local t = nnr.tensor({ 2, -100 }, { dtype = "i64" })
    local g1 = nnr.autograd.grad(F.cross_entropy(y, t), { y })
    local g2 = nnr.autograd.grad(F.cross_entropy(y, t), { y }, { create_graph = true })
    assert.same({ 0, 0, 0 }, g1[2]:totable())
    H.assert_close(g2:detach(), g1:totable(), 1e-12)
  end)

  it("the fused cross-entropy's errors", function()
    local x = nnr.randn(3, 4)
    assert.matches("^cross_entropy: target label 5 is outside the class range 1..4$",
      H.errmsg(F.cross_entropy, x, nnr.tensor({ 1, 5, 2 }, { dtype = "i64" })))
    assert.matches("^cross_entropy: target label %-7 is outside the class range 1..4 %(ignore_index is 2%)$",
      H.errmsg(F.cross_entropy, x, nnr.tensor({ 1, -7, 2 }, { dtype = "i64" }), { ignore_index = 2 }))
    assert.matches("target label %-9223372036854775808 is outside",
      H.errmsg(F.cross_entropy, x, nnr.tensor({ 1, 2, 3 }, { dtype = "i64" }):fill_(-2 ^ 63)))
    assert.matches("does not fit input of shape %[3, 4%]", H.errmsg(F.cross_entropy, x, nnr.tensor({ 1, 2 }, { dtype = "i64" })))
    assert.matches("must hold class indices", H.errmsg(F.cross_entropy, x, nnr.tensor({ 1, 2, 3 })))
    -- i32 labels are taken as they are
    H.assert_close(F.cross_entropy(x, nnr.tensor({ 1, 2, 3 }, { dtype = "i32" })):item(),
      F.cross_entropy(x, nnr.tensor({ 1, 2, 3 }, { dtype = "i64" })):item(), 0)
  end)
end)

describe("issue 16 layers and losses: values of note", function()
  it("cross-entropy's default ignore_index is -100 and label 0 stays an error", function()
    assert.equal(-100, F.DEFAULT_IGNORE_INDEX)
    local x = nnr.tensor({ { 1, 2, 3 }, { 3, 1, 0 } }, { dtype = "f64" })
    local full = F.cross_entropy(x:narrow(1, 1, 1), nnr.tensor({ 2 }, { dtype = "i64" })):item()
    H.assert_close(F.cross_entropy(x, nnr.tensor({ 2, -100 }, { dtype = "i64" })):item(), full, 1e-12)
    assert.matches("target label 0 is outside the class range 1..3", H.errmsg(F.cross_entropy, x, nnr.tensor({ 0, 1 }, { dtype = "i64" })))
    -- ignore_index outside the targets' range masks nothing, and a label below it is still out of range
    assert.matches("target label %-100 is outside the class range 1..3 %(ignore_index is %-5%)",
      H.errmsg(F.cross_entropy, x, nnr.tensor({ 2, -100 }, { dtype = "i64" }), { ignore_index = -5 }))
    H.assert_close(F.cross_entropy(x, nnr.tensor({ 2, 2 }, { dtype = "i64" }), { ignore_index = 7 }):item(),
      F.cross_entropy(x, nnr.tensor({ 2, 2 }, { dtype = "i64" })):item(), 1e-12)
    -- weighted mean: sum of w[y] * loss over sum of w[y]
    local w = nnr.tensor({ 1, 2, 4 }, { dtype = "f64" })
    local t = nnr.tensor({ 3, 1 }, { dtype = "i64" })
    local each = F.cross_entropy(x, t, { reduction = "none" }):totable()
    local ref = (each[1] * 4 + each[2] * 1) / 5
    H.assert_close(F.cross_entropy(x, t, { weight = w }):item(), ref, 1e-12)
    H.assert_close(nn.CrossEntropyLoss { weight = w }(x, t):item(), ref, 1e-12)
    assert.equal("weight [3]", sd_shapes(nn.CrossEntropyLoss { weight = w }))   -- a buffer, as PyTorch's
  end)
  it("softplus and mish stay finite far out; BCE's logs are clamped at -100", function()
    local x = nnr.tensor({ -1000, -50, 0, 50, 1000 }, { dtype = "f64" })
    local sp = F.softplus(x):totable()
    H.assert_close(sp, { 0, math.exp(-50), math.log(2), 50, 1000 }, 1e-12)
    for _, v in ipairs(F.mish(x):totable()) do assert.is_true(v == v and v > -1 and v < 1001) end
    local p, y = nnr.tensor({ 0, 1 }, { dtype = "f64" }), nnr.tensor({ 1, 0 }, { dtype = "f64" })
    assert.same({ 100, 100 }, F.binary_cross_entropy(p, y, { reduction = "none" }):totable())
  end)
  -- the fused activations against PyTorch 2.15 (the same f64 inputs, its F.* of each); f32 and the half
  -- types within a few ulp of the f64 result, on every CPU class (cpu_classes runs this per class)
  it("silu, mish, elu, selu, leaky_relu, hardswish and softplus give PyTorch's values, f32 within 4 ulp", function()
    local inf, nan = 1 / 0, 0 / 0
    local xs = { -200, -30, -17, -1, -1e-8, 0, 1e-8, 0.5, 1, 17, 30, 200, inf, -inf, nan }
    local torch = {
      softplus = { 1.3838965267367e-87, 9.3576229688397e-14, 4.1399376330897e-08, 0.31326168751822, 0.69314717555995, 0.69314718055995,
                   0.69314718555995, 0.97407698418011, 1.3132616875182, 17.000000041399, 30, 200, inf, 0, nan },
      mish = { -2.7677930534735e-85, -2.8072868906519e-12, -7.0378939762526e-07, -0.30340146137411, -5.999999968e-09, 0, 6.000000032e-09,
               0.3752452113049, 0.86509838826731, 17, 30, 200, inf, nan, nan },
      silu = { -2.7677930534735e-85, -2.8072868906518e-12, -7.0378938305704e-07, -0.26894142137, -4.999999975e-09, 0, 5.000000025e-09,
               0.31122966560093, 0.73105857863, 16.999999296211, 29.999999999997, 200, inf, nan, nan },
      elu = { -1, -0.99999999999991, -0.99999995860062, -0.63212055882856, -9.99999995e-09, 0, 1e-08, 0.5, 1, 17, 30, 200, inf, -1, nan },
      leaky_relu = { -2, -0.3, -0.17, -0.01, -1e-10, 0, 1e-08, 0.5, 1, 17, 30, 200, inf, -inf, nan },
      hardswish = { 0, 0, 0, -0.33333333333333, -4.9999999833333e-09, 0, 5.0000000166667e-09, 0.29166666666667, 0.66666666666667, 17, 30,
                    200, inf, nan, nan },
      selu = { -1.7580993408474, -1.7580993408472, -1.7580992680632, -1.1113307378126, -1.7580993320569e-08, 0, 1.0507009873555e-08,
               0.52535049367774, 1.0507009873555, 17.861916785043, 31.521029620664, 210.1401974711, inf, -1.7580993408474, nan },
    }
    local function near(got, want, rel, what)
      for i = 1, #want do
        local g, w = got[i], want[i]
        local ok = (w ~= w and g ~= g) or g == w or math.abs(g - w) <= rel * math.abs(w) + 1e-300
        assert(ok, string.format("%s(%s) = %s, PyTorch %s", what, tostring(xs[i]), tostring(g), tostring(w)))
      end
    end
    local x64 = nnr.tensor(xs, { dtype = "f64" })
    for name, want in pairs(torch) do
      near(F[name](x64):totable(), want, 1e-12, name .. " f64")
      -- f32 against the f64 values rounded: 4 ulp (2^-21 relative), except where the result is denormal
      local f32 = F[name](x64:float()):totable()
      for i = 1, #want do if math.abs(want[i]) < 1e-37 then f32[i], want[i] = 0, 0 end end
      near(f32, want, 2 ^ -21, name .. " f32")
      -- strided and in the half types: the same path through f32 chunks
      local wide = nnr.stack({ x64:float(), x64:float() }, 2)
      near(F[name](wide:select(2, 2)):totable(), want, 2 ^ -21, name .. " f32 strided")
      local half = F[name](x64:bfloat16()):float():totable()
      assert.are.equal(#want, #half)
    end
  end)
  it("the activations' parameters are checked: NaN, infinities and a zero beta are errors", function()
    local x = nnr.randn(4)
    local function fails(pat, f)
      local ok, err = pcall(f)
      assert(not ok and tostring(err):match(pat), tostring(err))
    end
    fails("leaky_relu: .*finite", function() F.leaky_relu(x, 0 / 0) end)
    fails("elu: .*finite", function() F.elu(x, 1 / 0) end)
    fails("softplus: beta must not be 0", function() F.softplus(x, 0) end)
    fails("softplus: .*finite", function() F.softplus(x, 1, 0 / 0) end)
    fails("silu: .*bool", function() F.silu(nnr.tensor({ true, false })) end)
    fails("softplus: .*do not fit a float", function() F.softplus(x, 1e-50) end)
    fails("elu: .*do not fit a float", function() F.elu(x, 1e39) end)
    assert(F.softplus(x:double(), 1e-50):sum():item() > 0)      -- f64 computes with the double
    -- the backward of a sum: an expanded (stride 0) gradient reaches the fused derivative
    local xr = nnr.randn(5, 7):requires_grad_(true)
    F.silu(xr):sum():backward()
    local s = xr:detach():sigmoid()
    assert((xr.grad - s * (xr:detach() * (1 - s) + 1)):abs():max():item() < 1e-6)
    -- integers compute in f32, as exp does
    assert.are.equal("f32", F.silu(nnr.tensor({ 1, 2 }, { dtype = "i64" })).dtype)
  end)
  it("softplus is PyTorch's at the infinities and between, with the gradient sigmoid(x) at 0 too", function()
    local inf = 1 / 0
    local x = nnr.tensor({ -inf, -17, -1, 0, 0.5, 1, 17, 30, inf }, { dtype = "f64" })
    -- PyTorch 2.15's F.softplus of the same f64 values
    H.assert_close(F.softplus(x):totable(), { 0, 4.139937633089748e-08, 0.31326168751822286, 0.6931471805599453, 0.9740769841801067,
                                              1.3132616875182228, 17.000000041399375, 30, inf }, 1e-9)
    local f32 = F.softplus(x:float()):totable()
    assert.are.equal(0, f32[1]); assert.are.equal(inf, f32[9])
    local xr = nnr.tensor({ 0, 0.5, -2, 2, 40 }, { dtype = "f64" }):requires_grad_(true)
    F.softplus(xr):sum():backward()
    H.assert_close(xr.grad:totable(), { 0.5, 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(2)), 1 / (1 + math.exp(-2)), 1 }, 1e-12)
  end)
end)

describe("issue 16 layers and losses: errors name the op, the values and the fix", function()
  local function err(pat, f, ...) assert.matches(pat, H.errmsg(f, ...)) end
  it("constructors", function()
    err("ConvTranspose2d: output_padding %(2x2%) must be smaller than either stride %(2x2%) or dilation %(1x1%)",
      nn.ConvTranspose2d, 2, 2, 3, { stride = 2, output_padding = 2 })
    err("Conv1d: in_channels %(3%) and out_channels %(4%) must be divisible by groups %(2%)", nn.Conv1d, 3, 4, 3, { groups = 2 })
    err("Conv1d: unknown option 'output_padding'", nn.Conv1d, 3, 4, 3, { output_padding = 1 })
    err("Conv1d: stride must be an integer in %[1, 2147483647%], got 0", nn.Conv1d, 3, 4, 3, { stride = 0 })
    err("ConvTranspose1d: padding must be an integer in %[0, 2147483647%], got nan", nn.ConvTranspose1d, 3, 4, 3, { padding = 0 / 0 })
    err("GroupNorm: num_channels %(6%) must be divisible by num_groups %(4%)", nn.GroupNorm, 4, 6)
    err("GroupNorm: eps must be a finite number > 0, got nan", nn.GroupNorm, 2, 6, { eps = 0 / 0 })
    err("InstanceNorm2d: unknown option 'eps2'", nn.InstanceNorm2d, 3, { eps2 = 1 })
    err("InstanceNorm2d: affine must be true or false, got 1", nn.InstanceNorm2d, 3, { affine = 1 })
    err("max_pool1d: unknown option 'return_indices'", nn.MaxPool1d, 2, { return_indices = true })
    err("max_pool1d: padding %(2%) must be at most half the kernel size %(3%)", nn.MaxPool1d, 3, { padding = 2 })
    err("AdaptiveMaxPool2d: output_size must be an integer in %[1, 2147483647%], got 0", nn.AdaptiveMaxPool2d, 0)
    err("Upsample: give exactly one of size and scale_factor", nn.Upsample, {})
    err("Upsample: scale_factor%[1%] must be a finite number > 0, got nan", nn.Upsample, { scale_factor = 0 / 0 })
    err("Upsample: align_corners can only be set with the interpolating modes", nn.Upsample, { size = 2, align_corners = false })
    err("PixelShuffle: upscale_factor must be an integer in %[1, 2147483647%], got 1.5", nn.PixelShuffle, 1.5)
    err("Softplus: beta must not be 0", nn.Softplus, 0)
    err("Softplus: threshold must be a finite number, got nan", nn.Softplus, 1, 0 / 0)
    err("PReLU: num_parameters must be an integer >= 1, got 0", nn.PReLU, 0)
    err("PReLU: init must be a finite number, got inf", nn.PReLU, 1, 1 / 0)
    err("Dropout2d: p must be a finite number in %[0, 1%), got 1", nn.Dropout2d, 1)
    err("ModuleDict: key 'forward' is the name of an attribute or method", nn.ModuleDict, { forward = nn.ReLU() })
    err("ModuleDict: child 'a' must be a module, got number", nn.ModuleDict, { a = 3 })
    err("ParameterList: a parameter must be a tensor, got number", nn.ParameterList, { 1 })
    err("HuberLoss: delta must be a finite number > 0, got 0", nn.HuberLoss, { delta = 0 })
    err("SmoothL1Loss: beta must be a finite number >= 0, got %-1", nn.SmoothL1Loss, { beta = -1 })
    err("KLDivLoss: reduction must be 'mean', 'sum', 'none' or 'batchmean', got 'avg'", nn.KLDivLoss, { reduction = "avg" })
    err("KLDivLoss: log_target must be true or false", nn.KLDivLoss, { log_target = 1 })
    err("BCELoss: weight must be a tensor", nn.BCELoss, { weight = 2 })
    err("CosineEmbeddingLoss: margin must be a finite number in %[%-1, 1%], got 2", nn.CosineEmbeddingLoss, { margin = 2 })
    err("CrossEntropyLoss: ignore_index must be an integer", nn.CrossEntropyLoss, { ignore_index = 1.5 })
    err("CrossEntropyLoss: label_smoothing must be a finite number in %[0, 1%], got nan", nn.CrossEntropyLoss, { label_smoothing = 0 / 0 })
    err("NLLLoss: unknown option 'label_smoothing'", nn.NLLLoss, { label_smoothing = 0.1 })
    err("CrossEntropyLoss: weight must be a floating%-point tensor %[C%]", nn.CrossEntropyLoss, { weight = nnr.tensor({ 1, 2 }, { dtype = "i64" }) })
  end)
  it("forward", function()
    err("Conv1d%(2 %-> 3, kernel 3%): input of shape %[1, 4, 5%], expected %[N, 2, L%]", nn.Conv1d(2, 3, 3), nnr.randn(1, 4, 5))
    err("ConvTranspose2d%(2 %-> 3, kernel 3x3%): input of shape %[4, 5%], expected %[N, 2, H, W%]", nn.ConvTranspose2d(2, 3, 3), nnr.randn(4, 5))
    err("conv_transpose2d: input of shape %[1, 3, 4, 4%] has 3 channels, weight of shape %[2, 2, 3, 3%] expects 2",
      F.conv_transpose2d, nnr.randn(1, 3, 4, 4), nnr.randn(2, 2, 3, 3))
    err("conv_transpose2d: bias of shape %[3%], expected %[2%]", F.conv_transpose2d, nnr.randn(1, 2, 4, 4), nnr.randn(2, 2, 3, 3), nnr.randn(3))
    err("conv_transpose2d: input of shape %[1, 2, 1, 1%] with a 3x3 kernel and padding 2x2 gives an empty output",
      F.conv_transpose2d, nnr.randn(1, 2, 1, 1), nnr.randn(2, 2, 3, 3), nil, { padding = 2 })
    err("conv_transpose2d: dtype i64 is not supported", F.conv_transpose2d, nnr.zeros(1, 2, 2, 2, { dtype = "i64" }), nnr.zeros(2, 1, 1, 1, { dtype = "i64" }))
    err("conv_transpose2d: unknown option 'output_size'", F.conv_transpose2d, nnr.randn(1, 2, 2, 2), nnr.randn(2, 1, 1, 1), nil, { output_size = 3 })
    err("GroupNorm%(2, 4%): input of shape %[3, 6%], expected %[N, 4, ...%]", nn.GroupNorm(2, 4), nnr.randn(3, 6))
    err("InstanceNorm2d%(3%): input of shape %[2, 3%], expected %[N, 3, H, W%] or %[3, H, W%]", nn.InstanceNorm2d(3), nnr.randn(2, 3))
    err("instance_norm: use_input_stats = false needs running_mean and running_var", F.instance_norm, nnr.randn(1, 2, 3), { use_input_stats = false })
    err("MaxPool1d: input of shape %[2, 3, 4, 5%], expected %[N, C, L%] or %[C, L%]", nn.MaxPool1d(2), nnr.randn(2, 3, 4, 5))
    err("adaptive_max_pool2d: expected a 4%-d input", F.adaptive_max_pool2d, nnr.randn(3, 4), 2)
    err("pixel_shuffle: input of shape %[1, 6, 2, 2%], expected %[..., C %* 4, H, W%]", nn.PixelShuffle(2), nnr.randn(1, 6, 2, 2))
    err("pixel_unshuffle: input of shape %[1, 1, 3, 4%], expected %[..., C, H, W%] with H and W divisible by downscale_factor 2",
      nn.PixelUnshuffle(2), nnr.randn(1, 1, 3, 4))
    err("prelu: 4 weights need an input with 4 channels along dim 2, got %[2, 3%]", nn.PReLU(4), nnr.randn(2, 3))
    err("dropout2d: expected an input %[N, C, H, W%] or %[C, H, W%], got %[4%]", nn.Dropout2d(), nnr.randn(4))
    err("ParameterList: a container has no forward", nn.ParameterList {}, nnr.randn(2))
    err("ModuleDict: no key 'x'", function() return nn.ModuleDict {}:pop("x") end)
    err("huber_loss: input of shape %[2, 3%] and target of shape %[3, 2%] differ", nn.HuberLoss(), nnr.randn(2, 3), nnr.randn(3, 2))
    err("binary_cross_entropy: input values must be probabilities in %[0, 1%], got 1.5", nn.BCELoss(), nnr.tensor({ 0.5, 1.5 }), nnr.tensor({ 0, 1 }))
    err("binary_cross_entropy: input values must be probabilities in %[0, 1%], got nan", nn.BCELoss(), nnr.tensor({ 0 / 0, 0.5 }), nnr.tensor({ 0, 1 }))
    err("cosine_embedding_loss: target values must be 1 or %-1", nn.CosineEmbeddingLoss(), nnr.randn(2, 3), nnr.randn(2, 3), nnr.tensor({ 1, 0 }))
    err("cosine_embedding_loss: inputs of shapes %[2, 3%] and %[2, 3%] with target %[3%]", nn.CosineEmbeddingLoss(), nnr.randn(2, 3), nnr.randn(2, 3),
      nnr.tensor({ 1, 1, 1 }))
    err("cross_entropy: target label 5 is outside the class range 1..3$", nn.CrossEntropyLoss(), nnr.randn(2, 3),
      nnr.tensor({ 1, 5 }, { dtype = "i64" }))
    err("nll_loss: target label %-100 is outside the class range 1..3 %(ignore_index is 2%)", F.nll_loss, nnr.randn(2, 3),
      nnr.tensor({ 1, -100 }, { dtype = "i64" }), { ignore_index = 2 })
    err("cross_entropy: weight must be a floating%-point tensor %[3%]", F.cross_entropy, nnr.randn(2, 3), nnr.tensor({ 1, 2 }, { dtype = "i64" }),
      { weight = nnr.ones(4) })
    err("nll_loss: target of shape %[2, 2%] does not fit input of shape %[2, 3, 4%]", F.nll_loss, nnr.randn(2, 3, 4),
      nnr.ones(2, 2, { dtype = "i64" }))
  end)
end)
