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

describe("nn ops: gradients (float64 finite differences)", function()
  before_each(function() H.reseed(99) end)

  it("linear", function()
    check(function(x, w, b) return F.linear(x, w, b) end, { f64({ 3, 4 }), f64({ 5, 4 }), f64({ 5 }) })
    check(function(x, w) return F.linear(x, w) end, { f64({ 2, 3, 4 }), f64({ 2, 4 }) })
  end)
  it("linear_relu (fused) and Sequential's fusion of Linear then ReLU", function()
    check(function(x, w, b) return F.linear_relu(x, w, b) end, { f64({ 3, 4 }), f64({ 5, 4 }), f64({ 5 }) })
    check(function(x, w) return F.linear_relu(x, w) end, { f64({ 2, 3, 4 }), f64({ 2, 4 }) })
    nnr.manual_seed(3)
    local m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2), nn.ReLU())
    local x = nnr.randn(5, 4)
    local l1, l2 = m:get(1), m:get(3)
    local ref = F.relu(F.linear(F.relu(F.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias))
    assert.same(ref:totable(), m(x):totable())
    m(x):sum():backward()
    local g1 = l1.weight.grad:clone()
    l1.weight.grad, l2.weight.grad, l1.bias.grad, l2.bias.grad = nil, nil, nil, nil
    ref:sum():backward()
    H.assert_close(g1:totable(), l1.weight.grad:totable(), 1e-6)
    assert.matches("Sequential%[1%] Linear%(4 %-> 6%): input of shape %[5, 3%]", H.errmsg(function() return m(nnr.randn(5, 3)) end))
  end)
  it("conv2d_relu (fused) and Sequential's fusion of Conv2d then ReLU", function()
    check(function(x, w, b) return F.conv2d_relu(x, w, b, { padding = 1 }) end, { f64({ 2, 2, 5, 5 }), f64({ 3, 2, 3, 3 }), f64({ 3 }) })
    check(function(x, w) return F.conv2d_relu(x, w, nil, { groups = 2, stride = 2 }) end, { f64({ 1, 4, 5, 5 }), f64({ 2, 2, 2, 2 }) })
    nnr.manual_seed(4)
    local m = nn.Sequential(nn.Conv2d(2, 4, 3, { padding = 1 }), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    local x = nnr.randn(3, 2, 5, 5)
    local conv, lin = m:get(1), m:get(4)
    local ref = F.linear(F.relu(F.conv2d(x, conv.weight, conv.bias, { padding = 1 })):flatten(2), lin.weight, lin.bias)
    assert.same(ref:totable(), m(x):totable())
    m(x):sum():backward()
    local g = conv.weight.grad:clone()
    conv.weight.grad, conv.bias.grad, lin.weight.grad, lin.bias.grad = nil, nil, nil, nil
    ref:sum():backward()
    H.assert_close(g:totable(), conv.weight.grad:totable(), 1e-5)
    -- an unbatched image [C, H, W] goes through the fused path too
    local seq = nn.Sequential(nn.Conv2d(2, 4, 3, { padding = 1 }), nn.ReLU())
    local one = nnr.randn(2, 5, 5)
    local c1 = seq:get(1)
    assert.same(F.relu(F.conv2d(one:unsqueeze(1), c1.weight, c1.bias, { padding = 1 })):squeeze(1):totable(), seq(one):totable())
  end)
  it("conv2d with stride, padding, dilation and groups", function()
    check(function(x, w, b) return F.conv2d(x, w, b, { padding = 1 }) end, { f64({ 2, 2, 5, 5 }), f64({ 3, 2, 3, 3 }), f64({ 3 }) })
    check(function(x, w) return F.conv2d(x, w, nil, { stride = 2, dilation = { 1, 2 } }) end, { f64({ 1, 2, 7, 7 }), f64({ 2, 2, 3, 2 }) })
    check(function(x, w) return F.conv2d(x, w, nil, { groups = 2, padding = { 1, 0 } }) end, { f64({ 2, 4, 4, 4 }), f64({ 4, 2, 2, 2 }) })
  end)
  it("max, average and adaptive average pooling", function()
    check(function(x) return F.max_pool2d(x, 2) end, { f64({ 2, 2, 4, 6 }) })
    check(function(x) return F.max_pool2d(x, 3, { stride = 2, padding = 1 }) end, { f64({ 1, 2, 5, 5 }) })
    check(function(x) return F.avg_pool2d(x, 2, { stride = 1, padding = 1, count_include_pad = false }) end, { f64({ 1, 2, 3, 4 }) })
    check(function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1 }) end, { f64({ 1, 1, 5, 5 }) })
    check(function(x) return F.adaptive_avg_pool2d(x, { 2, 3 }) end, { f64({ 2, 2, 5, 7 }) })
  end)
  it("activations", function()
    for _, f in ipairs { F.gelu, F.elu, function(x) return F.leaky_relu(x, 0.1) end, function(x) return x:erf() end } do
      check(f, { f64({ 3, 4 }, -2, 2) })
    end
  end)
  -- the fused activations (ACTIVATION / ACTIVATION_GRAD), first and second derivatives (the second
  -- through the derivative's recorded form), away from the kinks (leaky ReLU's and ELU's 0,
  -- hardswish's -3 and 3, softplus's threshold) where finite differences straddle two sides
  it("fused activations: gradcheck and gradgradcheck", function()
    local fs = {
      silu = F.silu, mish = F.mish, selu = F.selu, hardswish = F.hardswish,
      softplus = F.softplus, softplus_beta = function(x) return F.softplus(x, 2, 3) end,
      elu = function(x) return F.elu(x, 0.7) end, leaky_relu = function(x) return F.leaky_relu(x, 0.2) end,
    }
    local x = nnr.tensor({ { -4.1, -2.5, -1.3, -0.4, 0.35, 1.1 }, { 2.2, 2.9, 3.4, 5, -7, 0.8 } }, { dtype = "f64", requires_grad = true })
    for name, f in pairs(fs) do
      local ok, msg = gradcheck(f, { x })
      assert(ok, name .. ": " .. tostring(msg))
      ok, msg = nnr.autograd.gradgradcheck(f, { x })
      assert(ok, name .. ": " .. tostring(msg))
    end
    -- the derivative at the kinks is PyTorch's: the x <= 0 side, hardswish's (x / 3 + 1/2) on [-3, 3]
    local k = nnr.tensor({ 0, -3, 3 }, { dtype = "f64", requires_grad = true })
    F.leaky_relu(k, 0.2):sum():backward()
    assert.same({ 0.2, 0.2, 1 }, k.grad:totable())
    k.grad = nil
    F.hardswish(k):sum():backward()
    assert.same({ 0.5, -0.5, 1.5 }, k.grad:totable())
    k.grad = nil
    F.elu(k, 0.5):sum():backward()
    assert.same({ 0.5, 0.5 * math.exp(-3), 1 }, k.grad:totable())
  end)
  it("fused batch norm equals the composed reference, running statistics included", function()
    local x, w, b = f64({ 5, 3, 2, 3 }), f64({ 3 }), f64({ 3 })
    local rm1, rv1, rm2, rv2 = nnr.zeros(3, { dtype = "f64" }), nnr.ones(3, { dtype = "f64" }), nnr.zeros(3, { dtype = "f64" }), nnr.ones(3, { dtype = "f64" })
    H.assert_close(F.batch_norm(x, rm1, rv1, w, b, true, 0.1, 1e-5), F.batch_norm_reference(x, rm2, rv2, w, b, true, 0.1, 1e-5):totable(), 1e-12)
    H.assert_close(rm1, rm2:totable(), 1e-12)
    H.assert_close(rv1, rv2:totable(), 1e-12)
    H.assert_close(F.batch_norm(x, rm1, rv1, w, b, false, 0.1, 1e-5), F.batch_norm_reference(x, rm1, rv1, w, b, false, 0.1, 1e-5):totable(), 1e-12)
  end)
  it("batch norm and layer norm", function()
    local rm, rv = nnr.zeros(3, { dtype = "f64" }), nnr.ones(3, { dtype = "f64" })
    check(function(x, w, b) return F.batch_norm(x, nil, nil, w, b, true, 0.1, 1e-5) end, { f64({ 4, 3, 2, 2 }), f64({ 3 }), f64({ 3 }) })
    check(function(x, w, b) return F.batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5) end, { f64({ 4, 3 }), f64({ 3 }), f64({ 3 }) })
    check(function(x, w, b) return F.layer_norm(x, 1, w, b) end, { f64({ 3, 5 }), f64({ 5 }), f64({ 5 }) })
    check(function(x, w, b) return F.layer_norm(x, 1, w, b) end, { f64({ 2, 37 }), f64({ 37 }), f64({ 37 }) })
  end)
  it("layer norm forward and backward against the composed ops, rows of every length around the kernels' 16 lanes", function()
    -- the cpu kernel sums a row in 16 double lanes (plugins/cpu/layernorm.c); the composed ops in f64 are the reference
    for _, dt in ipairs { "f32", "f64" } do
      for _, N in ipairs { 1, 5, 16, 17, 37, 300 } do
        local x = (nnr.randn(6, N) * 3 + 1):to(dt):requires_grad_(true)
        local w, b = nnr.randn(N):to(dt):requires_grad_(true), nnr.randn(N):to(dt):requires_grad_(true)
        local g = nnr.randn(6, N):to(dt)
        F.layer_norm(x, 1, w, b, 1e-5):backward(g)
        local xr = x:detach():double():requires_grad_(true)
        local wr, br = w:detach():double():requires_grad_(true), b:detach():double():requires_grad_(true)
        local m = xr:mean(2, true)
        local v = ((xr - m) ^ 2):mean(2, true)
        local y = (xr - m) / (v + 1e-5):sqrt() * wr + br
        y:backward(g:double())
        local tol = dt == "f32" and 2e-5 or 1e-12
        H.assert_close(F.layer_norm(x:detach(), 1, w:detach(), b:detach(), 1e-5):double(), y:detach():totable(), tol)
        H.assert_close(x.grad:double(), xr.grad:totable(), tol * 10)
        H.assert_close(w.grad:double(), wr.grad:totable(), tol * 10)
        H.assert_close(b.grad:double(), br.grad:totable(), tol * 10)
      end
    end
  end)
  it("embedding and the losses", function()
    local idx = nnr.tensor({ { 1, 3 }, { 4, 1 } }, { dtype = "i64" })
    check(function(w) return F.embedding(idx, w) end, { f64({ 4, 3 }) })
    local t = nnr.tensor({ 2, 1, 3 }, { dtype = "i64" })
    check(function(x) return F.cross_entropy(x, t) end, { f64({ 3, 4 }, -2, 2) })
    check(function(x) return F.cross_entropy(x, t, { label_smoothing = 0.1, reduction = "sum" }) end, { f64({ 3, 4 }, -2, 2) })
    check(function(x) return F.nll_loss(x:log_softmax(2), t, { reduction = "none" }) end, { f64({ 3, 4 }, -2, 2) })
    local y = nnr.tensor(H.rand_table({ 3, 4 }), { dtype = "f64" })
    check(function(x) return F.mse_loss(x, y) end, { f64({ 3, 4 }) })
    check(function(x) return F.l1_loss(x, y) end, { f64({ 3, 4 }) })
    local b = nnr.tensor(H.rand_table({ 3, 4 }, 0, 1), { dtype = "f64" })
    check(function(x) return F.binary_cross_entropy_with_logits(x, b) end, { f64({ 3, 4 }, -3, 3) })
  end)
end)

describe("nn ops: values", function()
  it("conv2d matches a direct loop", function()
    H.reseed(5)
    local x, w, b = nnr.randn(2, 3, 6, 5, { dtype = "f64" }), nnr.randn(4, 3, 3, 2, { dtype = "f64" }), nnr.randn(4, { dtype = "f64" })
    local y = F.conv2d(x, w, b, { stride = { 2, 1 }, padding = { 1, 0 } })
    assert.same({ 2, 4, 3, 4 }, y:size())
    local X, W, B = x:totable(), w:totable(), b:totable()
    for n = 1, 2 do for o = 1, 4 do for i = 1, 3 do for j = 1, 4 do
      local s = B[o]
      for c = 1, 3 do for kh = 1, 3 do for kw = 1, 2 do
        local h, ww = (i - 1) * 2 - 1 + kh, j - 1 + kw
        if h >= 1 and h <= 6 then s = s + X[n][c][h][ww] * W[o][c][kh][kw] end
      end end end
      assert.is_true(math.abs(y[{ n, o, i, j }] - s) < 1e-12)
    end end end end
  end)
  it("conv2d over a batch larger than one chunk equals image by image, gradients included", function()
    H.reseed(8)
    local x = nnr.randn(40, 16, 28, 28, { requires_grad = true })     -- 3 chunks of columns
    local w = nnr.randn(8, 16, 3, 3, { requires_grad = true })
    local y = F.conv2d(x, w, nil, { padding = 1 })
    local g = nnr.randn(y:size())
    y:backward(g)
    local gw = nnr.zeros(8, 16, 3, 3)
    for n = 1, 40 do
      local xn = x[{ { n, n } }]:detach():requires_grad_()
      local wn = w:detach():requires_grad_()
      local yn = F.conv2d(xn, wn, nil, { padding = 1 })
      yn:backward(g[{ { n, n } }])
      if n % 13 == 1 then
        assert.is_true((yn - y[{ { n, n } }]):abs():max():item() < 1e-4)
        assert.is_true((xn.grad - x.grad[{ { n, n } }]):abs():max():item() < 1e-4)
      end
      gw = gw + wn.grad
    end
    assert.is_true((gw - w.grad):abs():max():item() < 1e-3 * w.grad:abs():max():item())
  end)
  it("cross entropy matches log-sum-exp by hand, and label smoothing and reductions", function()
    local x = nnr.tensor({ { 1, 2, 3 }, { 1, 1, 1 } }, { dtype = "f64" })
    local t = nnr.tensor({ 3, 1 }, { dtype = "i64" })
    local l1 = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 3
    local l2 = math.log(3)
    assert.is_true(math.abs(F.cross_entropy(x, t):item() - (l1 + l2) / 2) < 1e-12)
    H.assert_close(F.cross_entropy(x, t, { reduction = "none" }), { l1, l2 }, 1e-12)
    local smooth = F.cross_entropy(x, t, { label_smoothing = 0.3, reduction = "sum" }):item()
    local lse = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    local expect = 0.7 * (l1 + l2) + 0.3 * ((lse - 2) + l2)
    assert.is_true(math.abs(smooth - expect) < 1e-12, smooth .. " vs " .. expect)
  end)
  it("errors name the op, the label and the shapes", function()
    local x = nnr.randn(2, 3)
    assert.equal("cross_entropy: target label 4 is outside the class range 1..3",
      H.errmsg(function() return F.cross_entropy(x, nnr.tensor({ 1, 4 }, { dtype = "i64" })) end))
    assert.equal("cross_entropy: target label 0 is outside the class range 1..3",
      H.errmsg(function() return F.cross_entropy(x, nnr.tensor({ 0, 1 }, { dtype = "i64" })) end))
    assert.matches("cross_entropy: target must hold class indices", H.errmsg(function() return F.cross_entropy(x, nnr.ones(2)) end))
    assert.matches("conv2d: input of shape %[1, 3, 5, 5%] has 3 channels, weight of shape %[2, 1, 3, 3%] expects 1",
      H.errmsg(function() return F.conv2d(nnr.randn(1, 3, 5, 5), nnr.randn(2, 1, 3, 3)) end))
    assert.matches("conv2d: input of shape %[1, 1, 2, 2%] is too small for a 3x3 kernel",
      H.errmsg(function() return F.conv2d(nnr.randn(1, 1, 2, 2), nnr.randn(2, 1, 3, 3)) end))
    assert.matches("max_pool2d: expected a 4%-d input", H.errmsg(function() return F.max_pool2d(nnr.randn(3, 3), 2) end))
    assert.matches("mse_loss: input of shape %[2, 3%] and target of shape %[3%] differ",
      H.errmsg(function() return F.mse_loss(x, nnr.ones(3)) end))
  end)
end)

describe("modules", function()
  it("a user module needs only forward; parameters, sharing, state_dict", function()
    local Scale = nn.Module:extend("Scale")
    function Scale:__init(n) nn.Module.__init(self); self:register_parameter("w", nnr.ones(n)) end
    function Scale:forward(x) return x * self.w end
    local shared = nn.Linear(3, 3)
    local m = nn.Sequential(shared, Scale(3), nn.ReLU(), shared)
    assert.equal(3, #m:parameters())                 -- weight, bias once, and w
    local names = {}
    for _, np in ipairs(m:named_parameters()) do names[#names + 1] = np[1] end
    assert.same({ "1.weight", "1.bias", "2.w" }, names)
    local y = m(nnr.randn(2, 3)):sum()
    y:backward()
    assert.is_not_nil(shared.weight.grad)
    -- gradients of a shared parameter accumulate over both uses
    local a = nn.Linear(2, 2, { bias = false })
    a.weight:requires_grad_(false)
    nnr.no_grad(function() a.weight:copy_(nnr.tensor({ { 1, 0 }, { 0, 1 } })) end)
    a.weight:requires_grad_(true)
    local two = nn.Sequential(a, a)
    two(nnr.ones(1, 2)):sum():backward()
    H.assert_close(a.weight.grad, { { 2, 2 }, { 2, 2 } }, 1e-6)
    -- the state dict names a shared module's tensors under each of its names, as PyTorch's does
    local sd = m:state_dict()
    assert(rawequal(sd["1.weight"], sd["4.weight"]) and rawequal(sd["1.bias"], sd["4.bias"]), "a shared module listed once")
    local m2 = nn.Sequential(nn.Linear(3, 3), Scale(3), nn.ReLU(), nn.Linear(3, 3))
    m2:load_state_dict(sd)
    H.assert_close(m2:get(1).weight, shared.weight:totable(), 0)
    H.assert_close(m2:get(4).weight, shared.weight:totable(), 0)
    sd["4.bias"] = nil
    assert.matches("missing keys {4.bias}", H.errmsg(function() m2:load_state_dict(sd) end))
    local bad = { ["1.weight"] = nnr.ones(2, 2), ["1.bias"] = nnr.ones(3), ["2.w"] = nnr.ones(3), ["4.weight"] = nnr.ones(3, 3),
                  ["4.bias"] = nnr.ones(3) }
    assert.matches("'1.weight' has shape %[2, 2%] in the checkpoint, %[3, 3%] in the model",
      H.errmsg(function() m:load_state_dict(bad) end))
  end)

  it("PyTorch's default initialisation bounds", function()
    local l = nn.Linear(100, 10)
    assert.is_true(l.weight:abs():max():item() <= 0.1 + 1e-6)
    assert.is_true(l.weight:abs():max():item() > 0.09)
    local c = nn.Conv2d(4, 8, 3)
    assert.is_true(c.weight:abs():max():item() <= 1 / 6 + 1e-6)
  end)

  it("wrong input shapes name the module and both shapes", function()
    local m = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert.equal("Sequential[2] Linear(784 -> 10): input of shape [4, 100], expected [..., 784]",
      H.errmsg(function() return m(nnr.randn(4, 10, 10)) end))
    assert.matches("BatchNorm2d%(3%): input of shape %[2, 4, 5, 5%], expected %[N, 3, H, W%]",
      H.errmsg(function() return nn.BatchNorm2d(3)(nnr.randn(2, 4, 5, 5)) end))
    assert.matches("Embedding%(5, 2%): index 6 is outside 1..5",
      H.errmsg(function() return nn.Embedding(5, 2)(nnr.tensor({ 1, 6 }, { dtype = "i64" })) end))
  end)

  it("batch norm uses batch statistics in training and running ones in eval", function()
    local bn = nn.BatchNorm1d(2)
    local x = nnr.tensor({ { 1, 10 }, { 3, 20 } })
    local y = bn(x)
    H.assert_close(y, { { -1, -1 }, { 1, 1 } }, 1e-4)
    H.assert_close(bn.running_mean, { 0.2, 1.5 }, 1e-6)
    H.assert_close(bn.running_var, { 0.9 + 0.1 * 2, 0.9 + 0.1 * 50 }, 1e-5)
    assert.equal(1, bn.num_batches_tracked:item())
    bn:eval()
    local z = bn(x)
    H.assert_close(z, { { (1 - 0.2) / math.sqrt(1.1 + 1e-5), (10 - 1.5) / math.sqrt(5.9 + 1e-5) },
                        { (3 - 0.2) / math.sqrt(1.1 + 1e-5), (20 - 1.5) / math.sqrt(5.9 + 1e-5) } }, 1e-5)
  end)

  it("dropout zeroes in training only, and scales what it keeps", function()
    local d = nn.Dropout(0.5)
    local y = d(nnr.ones(1000))
    local kept = y:gt(0):sum():item()
    assert.is_true(kept > 400 and kept < 600)
    assert.equal(2, y:max():item())
    d:eval()
    H.assert_close(d(nnr.ones(3)), { 1, 1, 1 }, 0)
  end)

  it("to(dtype) keeps parameter references valid; summary and printing", function()
    local m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    local p = m:parameters()[1]
    m:to("f64")
    assert.equal("f64", p.dtype)
    assert.is_true(p.requires_grad)
    assert.equal("f64", m:get(1).weight.dtype)
    local s = m:summary({ 5, 4 }, { dtype = "f64" })
    assert.matches("Linear%s+%[5, 3%]%s+15", s)
    assert.matches("total parameters: 23", s)
    assert.matches("%(1%): Linear%(in_features=4, out_features=3, bias=true%)", tostring(m))
  end)
end)

describe("optimizers", function()
  local function quadratic(opt_ctor, opts, steps)
    local x = nnr.tensor({ 3, -2 }, { dtype = "f64", requires_grad = true })
    local target = nnr.tensor({ 1, 1 }, { dtype = "f64" })
    local opt = opt_ctor({ x }, opts)
    for _ = 1, steps do
      opt:zero_grad()
      local d = x - target
      local f = (d * d):sum()
      f:backward()
      opt:step()
    end
    return x
  end

  it("each reaches the minimum of a quadratic and of Rosenbrock", function()
    local o = nnr.optim
    for _, case in ipairs { { o.SGD, { lr = 0.1 } }, { o.SGD, { lr = 0.05, momentum = 0.9, nesterov = true } },
                            { o.Adam, { lr = 0.1 } }, { o.AdamW, { lr = 0.1, weight_decay = 0 } }, { o.RMSprop, { lr = 0.01 } } } do
      H.assert_close(quadratic(case[1], case[2], 2000), { 1, 1 }, 1e-3)
    end
    local p = nnr.tensor({ -1.5, 2 }, { dtype = "f64", requires_grad = true })
    local opt = o.Adam({ p }, { lr = 0.02 })
    for _ = 1, 4000 do
      opt:zero_grad()
      local x, y = p[{ { 1, 1 } }], p[{ { 2, 2 } }]
      local f = (((1 - x) ^ 2) + ((y - x * x) ^ 2) * 100):sum()
      f:backward()
      opt:step()
    end
    H.assert_close(p, { 1, 1 }, 1e-3)
  end)

  it("match update values computed by hand", function()
    -- SGD with momentum, dampening and weight decay, two steps
    local p = nnr.tensor({ 1.0 }, { dtype = "f64", requires_grad = true })
    local opt = nnr.optim.SGD({ p }, { lr = 0.1, momentum = 0.9, dampening = 0.5, weight_decay = 0.1 })
    p.grad = nnr.tensor({ 2.0 }, { dtype = "f64" }); opt:step()
    -- d = 2 + 0.1 = 2.1; b = 2.1; p = 1 - 0.21 = 0.79
    H.assert_close(p, { 0.79 }, 1e-12)
    p.grad = nnr.tensor({ 2.0 }, { dtype = "f64" }); opt:step()
    -- d = 2 + 0.079 = 2.079; b = 0.9*2.1 + 0.5*2.079 = 2.9295; p = 0.79 - 0.29295
    H.assert_close(p, { 0.79 - 0.29295 }, 1e-12)
    -- Adam, one step: m = 0.1 g, v = 0.001 g^2, p -= lr * (m/0.1) / (sqrt(v/0.001) + eps) = lr * sign
    local q = nnr.tensor({ 1.0, -1.0 }, { dtype = "f64", requires_grad = true })
    local adam = nnr.optim.Adam({ q }, { lr = 0.01 })
    q.grad = nnr.tensor({ 3, -0.5 }, { dtype = "f64" }); adam:step()
    H.assert_close(q, { 1 - 0.01 * 3 / (3 + 1e-8), -1 + 0.01 * 0.5 / (0.5 + 1e-8) }, 1e-12)
    -- AdamW decays the weight first: p (1 - lr wd)
    local r = nnr.tensor({ 2.0 }, { dtype = "f64", requires_grad = true })
    local adamw = nnr.optim.AdamW({ r }, { lr = 0.1, weight_decay = 0.5 })
    r.grad = nnr.tensor({ 0 }, { dtype = "f64" }); adamw:step()
    H.assert_close(r, { 2 * (1 - 0.05) }, 1e-12)
    -- RMSprop: s = 0.01 g^2; p -= lr g / (sqrt(s) + eps)
    local s = nnr.tensor({ 1.0 }, { dtype = "f64", requires_grad = true })
    local rms = nnr.optim.RMSprop({ s }, { lr = 0.01 })
    s.grad = nnr.tensor({ 4 }, { dtype = "f64" }); rms:step()
    H.assert_close(s, { 1 - 0.01 * 4 / (0.4 + 1e-8) }, 1e-12)
  end)

  it("parameter groups, state_dict round trip and schedulers", function()
    local a, b = nnr.ones(2, { requires_grad = true }), nnr.ones(3, { requires_grad = true })
    local opt = nnr.optim.SGD({ { params = { a }, lr = 0.5 }, { params = { b } } }, { lr = 0.1, momentum = 0.9 })
    assert.equal(0.5, opt.param_groups[1].lr)
    assert.equal(0.1, opt.param_groups[2].lr)
    a.grad, b.grad = nnr.ones(2), nnr.ones(3)
    opt:step()
    local sd = opt:state_dict()
    assert.is_not_nil(sd.state[1].momentum_buffer)
    local opt2 = nnr.optim.SGD({ { params = { a }, lr = 0.5 }, { params = { b } } }, { lr = 0.1, momentum = 0.9 })
    opt2:load_state_dict(sd)
    H.assert_close(opt2.state[a].momentum_buffer, { 1, 1 }, 0)
    assert.matches("unknown option 'betas'", H.errmsg(function() nnr.optim.SGD({ a }, { betas = 1 }) end))
    local sched = nnr.optim.StepLR(opt, { step_size = 2, gamma = 0.1 })
    sched:step(); sched:step()
    assert.is_true(math.abs(opt.param_groups[1].lr - 0.05) < 1e-12)
    local cos = nnr.optim.CosineAnnealingLR(nnr.optim.SGD({ a }, { lr = 1 }), { T_max = 4 })
    cos:step(); cos:step()
    assert.is_true(math.abs(cos:get_last_lr()[1] - 0.5) < 1e-12)
    local warm = nnr.optim.LinearLR(nnr.optim.SGD({ a }, { lr = 1 }), { start_factor = 0.25, total_iters = 3 })
    assert.is_true(math.abs(warm:get_last_lr()[1] - 0.25) < 1e-12)
    for _ = 1, 5 do warm:step() end
    assert.is_true(math.abs(warm:get_last_lr()[1] - 1) < 1e-12)
  end)

  it("clip_grad_norm scales gradients to the norm", function()
    local p = nnr.ones(4, { requires_grad = true })
    p.grad = nnr.tensor({ 3, 4, 0, 0 })
    local norm = nn.utils.clip_grad_norm({ p }, 1)
    assert.is_true(math.abs(norm - 5) < 1e-5)
    H.assert_close(p.grad, { 0.6, 0.8, 0, 0 }, 1e-5)
  end)
end)

describe("checkpoints", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)

  -- LuaJIT keeps nil, booleans and object pointers in the payloads of negative NaNs: a file's NaN with
  -- such a payload must reach the script as a NaN number (item, indexing, totable), never as nil or a
  -- pointer; and the math the file's values go through keeps them NaN
  it("reads NaNs with any payload from a file as NaN numbers", function()
    local path = dir .. "/nans.safetensors"
    -- f32 NaNs: all ones (nil's tag widened), ~4 (a string), ~11 (a table), the quiet NaN, and 1.5
    local words = { 0xffffffff, 0xfffffff6, 0xffffffe8, 0x7fc00000, 0x3fc00000 }
    local data = {}
    for _, w in ipairs(words) do
      data[#data + 1] = string.char(w % 256, math.floor(w / 256) % 256, math.floor(w / 65536) % 256, math.floor(w / 16777216) % 256)
    end
    local header = '{"x":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}}'
    local n = #header
    local f = assert(io.open(path, "wb"))
    f:write(string.char(n % 256, math.floor(n / 256) % 256, 0, 0, 0, 0, 0, 0), header, table.concat(data))
    f:close()
    local x = nnr.load(path).x
    local t = x:totable()
    for i = 1, 4 do
      assert.are.equal("number", type(t[i]))
      assert(t[i] ~= t[i], "element " .. i .. " is not NaN")
      assert.are.equal("number", type(x[i]))
      assert(x[i] ~= x[i])
      assert(x:narrow(1, i, 1):item() ~= x:narrow(1, i, 1):item())
    end
    assert.are.equal(1.5, t[5])
    for _, op in ipairs { "exp", "sin", "tanh", "sigmoid", "abs" } do
      local y = x[op](x):totable()
      for i = 1, 4 do assert(type(y[i]) == "number" and y[i] ~= y[i], op .. " of NaN " .. i) end
    end
    assert(x:double():sum():item() ~= x:double():sum():item())
  end)

  it("round-trips every dtype through safetensors", function()
    local t = {}
    for _, dt in ipairs { "f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool" } do
      t[dt] = nnr.tensor({ { 1, 0 }, { 1, 1 } }, { dtype = dt })
    end
    t.empty = nnr.zeros(0, 3)
    t.strided = nnr.arange(6):view(2, 3):t()
    nnr.save(dir .. "/all.safetensors", t, { note = "hi" })
    local back, meta = nnr.load(dir .. "/all.safetensors")
    for k, v in pairs(t) do
      assert.equal(v.dtype, back[k].dtype)
      H.assert_close(back[k], v:totable(), 0, k)
    end
    assert.equal("hi", meta.note)
  end)

  it("saves atomically and refuses truncated, oversized-header and wrong-shape files", function()
    local path = dir .. "/m.safetensors"
    nnr.save(path, { w = nnr.ones(4) })
    local f = io.open(path, "rb"); local bytes = f:read("*a"); f:close()
    local function write(name, data) local g = io.open(dir .. "/" .. name, "wb"); g:write(data); g:close(); return dir .. "/" .. name end
    assert.matches("data_offsets outside the 8 data bytes %(truncated file%?%)",
      H.errmsg(function() return nnr.load(write("trunc.safetensors", bytes:sub(1, #bytes - 8))) end))
    local huge = string.char(0, 0, 0, 0, 0, 0, 0, 64) .. "{}"
    assert.matches("over the 100 MiB limit", H.errmsg(function() return nnr.load(write("huge.safetensors", huge)) end))
    assert.matches("too short", H.errmsg(function() return nnr.load(write("short.safetensors", "abc")) end))
    local bad_json = string.char(2, 0, 0, 0, 0, 0, 0, 0) .. "{x"
    assert.matches("not a JSON object", H.errmsg(function() return nnr.load(write("badjson.safetensors", bad_json)) end))
    local header = '{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}'
    local wrong = string.char(#header, 0, 0, 0, 0, 0, 0, 0) .. header .. string.rep("\0", 16)
    assert.matches("shape %[5%] and dtype F32 needs 20 bytes, its offsets give 16", H.errmsg(function() return nnr.load(write("wrong.safetensors", wrong)) end))
    local function with_header(h) return string.char(#h, 0, 0, 0, 0, 0, 0, 0) .. h .. string.rep("\0", 16) end
    -- found by the fuzzer: a second __metadata__ overflowed the first one's key array
    assert.matches("__metadata__ twice", H.errmsg(function()
      return nnr.load(write("meta2.safetensors", with_header('{"__metadata__":{"k":"v"},"__metadata__":{"k":"v","j":"w"}}'))) end))
    assert.matches("tensor 'w' appears twice", H.errmsg(function()
      return nnr.load(write("dup.safetensors", with_header('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'))) end))
    assert.matches("No such file", H.errmsg(function() return nnr.load(dir .. "/missing.safetensors") end))
    -- a failed save leaves the previous file intact
    assert.has_error(function() nnr.save(path, { w = "not a tensor" }) end)
    H.assert_close(nnr.load(path).w, { 1, 1, 1, 1 }, 0)
    -- no temporary files left behind
    local p = io.popen("ls " .. dir)
    local listing = p:read("*a"); p:close()
    assert.is_nil(listing:find("tmp"))
  end)

  it("stores and restores a nested training state", function()
    local m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    local opt = nnr.optim.Adam(m:parameters(), { lr = 0.01 })
    m(nnr.randn(4, 3)):sum():backward()
    opt:step()
    local path = dir .. "/ck.safetensors"
    nnr.save_checkpoint(path, { model = m:state_dict(), optimizer = opt:state_dict(), epoch = 7, rng = nnr.get_rng_state() })
    local ck = nnr.load_checkpoint(path)
    assert.equal(7, ck.epoch)
    local m2 = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    m2:load_state_dict(ck.model)
    H.assert_close(m2:get(1).weight, m:get(1).weight:totable(), 0)
    local opt2 = nnr.optim.Adam(m2:parameters(), { lr = 0.5 })
    opt2:load_state_dict(ck.optimizer)
    assert.equal(0.01, opt2.param_groups[1].lr)
    assert.equal(1, opt2.state[m2:get(1).weight].step)
    assert.same({ 0.9, 0.999 }, opt2.param_groups[1].betas)
    assert.matches("not an nnrun checkpoint", H.errmsg(function()
      nnr.save(dir .. "/plain.safetensors", { a = nnr.ones(1) }); return nnr.load_checkpoint(dir .. "/plain.safetensors") end))
  end)

  it("IDX files: reads them and names the file when corrupt", function()
    local function write(name, data) local g = io.open(dir .. "/" .. name, "wb"); g:write(data); g:close(); return dir .. "/" .. name end
    local good = write("ok.idx", string.char(0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6))
    H.assert_close(nnr.load_idx(good), { { 1, 2, 3 }, { 4, 5, 6 } }, 0)
    local trunc = write("trunc.idx", string.char(0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2))
    assert.matches("load_idx .*trunc.idx: the header promises %[2, 3%] elements of 1 bytes %(18 bytes in all%) but the file holds 14",
      H.errmsg(function() return nnr.load_idx(trunc) end))
    local magic = write("magic.idx", "hello world, not idx")
    assert.matches("magic.idx: not an IDX file", H.errmsg(function() return nnr.load_idx(magic) end))
    local i32 = write("i32.idx", string.char(0, 0, 0x0C, 1, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xfe, 0, 0, 1, 0))
    H.assert_close(nnr.load_idx(i32), { -2, 256 }, 0)
  end)
end)

describe("cpu fast paths", function()
  local F = nnr.nn.functional
  it("max_pool2d without the argmax (inference) gives the argmax path's values for any window, stride and padding", function()
    nnr.manual_seed(6)
    local x = nnr.randn(2, 3, 13, 11)
    x[1][2][5][7], x[2][3][1][1], x[2][1][13][11] = 0 / 0, 0 / 0, 0 / 0      -- inside, at a corner (padding beside it)
    local function nan_free(t) return t:masked_fill(t:ne(t), 999):totable() end
    for _, c in ipairs { { 3, 2, 1 }, { 3, 2, 0 }, { 3, 1, 1 }, { 5, 3, 2 }, { 2, 1, 1 }, { { 3, 2 }, { 2, 1 }, { 1, 0 } }, { 4, 4, 2 } } do
      local o = { stride = c[2], padding = c[3] }
      local plain = nnr.no_grad(function() return F.max_pool2d(x, c[1], o) end)
      local with_idx = F.max_pool2d(x:clone():requires_grad_(true), c[1], o):detach()
      assert.same(nan_free(with_idx), nan_free(plain))
    end
  end)
  it("max_pool2d gives the same values with and without the argmax, NaNs and ties included", function()
    nnr.manual_seed(5)
    local x = nnr.randn(2, 3, 6, 8)
    x[1][1][1][1] = 0 / 0                                   -- a NaN wins its window
    x[2][2][3][3], x[2][2][3][4] = 100, 100                 -- a tie for the max: the first one wins
    local plain = nnr.no_grad(function() return F.max_pool2d(x, 2) end)
    local xr = x:clone():requires_grad_(true)
    local y = F.max_pool2d(xr, 2)
    local function nan_free(t) return t:masked_fill(t:ne(t), 999):totable() end
    assert.same(nan_free(y:detach()), nan_free(plain))
    local v = plain[1][1][1][1]
    assert.is_true(v ~= v)
    y:sum():backward()
    -- each window sends its gradient to one element: the first maximum (or the NaN)
    assert.equal(2 * 3 * 3 * 4, xr.grad:sum():item())
    assert.equal(1, xr.grad[1][1][1][1])
    assert.equal(1, xr.grad[2][2][3][3] + xr.grad[2][2][3][4])
    assert.equal(1, xr.grad[2][2][3][3])
  end)

  it("max_pool2d 2x2 (the vectorized rows) matches a plain reference on odd and wide shapes, argmax included", function()
    nnr.manual_seed(8)
    for _, shape in ipairs({ { 1, 2, 4, 5 }, { 2, 1, 6, 9 }, { 1, 1, 2, 33 }, { 1, 3, 5, 40 }, { 1, 1, 4, 64 } }) do
      local x = nnr.randint(-3, 4, shape):float()             -- small integers: plenty of ties
      local xr = x:clone():requires_grad_(true)
      local y = F.max_pool2d(xr, 2)
      y:sum():backward()
      local xt, yt, gt = x:totable(), y:detach():totable(), xr.grad:totable()
      local HO, WO = math.floor(shape[3] / 2), math.floor(shape[4] / 2)
      for n = 1, shape[1] do for c = 1, shape[2] do
        local want_grad = {}
        for h = 1, shape[3] do want_grad[h] = {} for w = 1, shape[4] do want_grad[h][w] = 0 end end
        for ho = 1, HO do for wo = 1, WO do
          local best, bh, bw = -math.huge, 0, 0
          for dh = 0, 1 do for dw = 0, 1 do
            local v = xt[n][c][2 * ho - 1 + dh][2 * wo - 1 + dw]
            if v > best then best, bh, bw = v, 2 * ho - 1 + dh, 2 * wo - 1 + dw end
          end end
          assert.equal(best, yt[n][c][ho][wo])
          want_grad[bh][bw] = want_grad[bh][bw] + 1
        end end
        assert.same(want_grad, gt[n][c])
      end end
    end
  end)

  it("conv2d_relu's gradients match the unfused ones, per image and in chunks (large images)", function()
    nnr.manual_seed(9)
    for _, shape in ipairs({ { 3, 4, 9, 9 }, { 2, 16, 48, 48 } }) do       -- the second has > 1 MiB of columns per image
      local x = nnr.randn(unpack(shape))
      local w, b = nnr.randn(8, shape[2], 3, 3):mul_(0.2), nnr.randn(8)
      local function grads(fused)
        local xr, wr, br = x:clone():requires_grad_(true), w:clone():requires_grad_(true), b:clone():requires_grad_(true)
        local y = fused and F.conv2d_relu(xr, wr, br, { padding = 1 }) or F.relu(F.conv2d(xr, wr, br, { padding = 1 }))
        nnr.manual_seed(10)
        ;(y * nnr.randn(unpack(y.shape))):sum():backward()
        return y:detach(), xr.grad, wr.grad, br.grad
      end
      nnr.manual_seed(10)
      local a = { grads(true) }
      local r = { grads(false) }
      for k = 1, 4 do H.assert_close(r[k]:totable(), a[k]:totable(), 1e-4) end
    end
  end)

  it("linear's fused op matches matmul plus bias, with leading dimensions and strided inputs", function()
    nnr.manual_seed(6)
    local x, w, b = nnr.randn(2, 3, 7), nnr.randn(5, 7), nnr.randn(5)
    local ref = x:matmul(w:t()) + b
    H.assert_close(ref:totable(), F.linear(x, w, b):totable(), 1e-5)
    H.assert_close(x:matmul(w:t()):totable(), F.linear(x, w):totable(), 1e-5)
    local xt = nnr.randn(7, 4):t()                          -- a transposed (strided) input
    H.assert_close((xt:matmul(w:t()) + b):totable(), F.linear(xt, w, b):totable(), 1e-5)
  end)

  it("index_select of whole rows matches gathering them one by one", function()
    nnr.manual_seed(7)
    local data = nnr.randn(50, 3, 4)
    local idx = nnr.tensor({ 50, 1, 7, 7, 23 }, { dtype = "i64" })
    local got = data:index_select(1, idx)
    for k, i in ipairs({ 50, 1, 7, 7, 23 }) do assert.same(data[i]:totable(), got[k]:totable()) end
    assert.matches("index 51 is out of range", H.errmsg(function() data:index_select(1, nnr.tensor({ 51 }, { dtype = "i64" })) end))
  end)
end)
