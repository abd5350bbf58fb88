-- Mixed precision on the cpu backend (the same core path serves cuda): nnr.autocast and GradScaler.
local nnr = require "nnr"
local F = nnr.nn.functional

describe("autocast", function()
  it("runs f32 matmul and linear in the autocast dtype and losses in f32", function()
    nnr.manual_seed(1)
    local x, w, b = nnr.randn(6, 5), nnr.randn(4, 5), nnr.randn(4)
    nnr.autocast("bf16", function()
      assert.are.equal("bf16", F.linear(x, w, b).dtype)
      assert.are.equal("bf16", x:matmul(w:t()).dtype)
      assert.are.equal("f64", x:double():matmul(w:t():double()).dtype)     -- only f32 is cast
      assert.are.equal("f32", F.linear(x, w, b):log_softmax(2).dtype)
      assert.are.equal("f32", F.conv2d(nnr.randn(1, 2, 5, 5), nnr.randn(3, 2, 3, 3)).dtype)   -- no half conv on the cpu
      assert.are.equal("f32", nnr.nn.BatchNorm2d(3)(nnr.randn(2, 3, 4, 4):to("bf16")).dtype)   -- normalised in f32
      assert.is_true(nnr.amp.is_autocast_enabled())
    end)
    assert.is_false(nnr.amp.is_autocast_enabled())
    assert.are.equal("f32", F.linear(x, w, b).dtype)
  end)

  it("is restored after an error and nests", function()
    local ok = pcall(nnr.autocast, "f16", function() error("boom") end)
    assert.is_false(ok)
    assert.is_false(nnr.amp.is_autocast_enabled())
    nnr.autocast("f16", function()
      nnr.autocast("bf16", function() assert.are.equal("bf16", nnr.randn(2, 2):matmul(nnr.randn(2, 2)).dtype) end)
      assert.are.equal("f16", nnr.randn(2, 2):matmul(nnr.randn(2, 2)).dtype)
    end)
    local ok2, err = pcall(nnr.autocast, "f64", function() end)
    assert.is_false(ok2)
    assert.is_truthy(tostring(err):match("expected \"bf16\" or \"f16\""), tostring(err))
  end)

  it("gives f32 gradients to f32 parameters, close to the f32 ones", function()
    nnr.manual_seed(2)
    local x, y = nnr.randn(16, 20), nnr.randint(1, 6, { 16 })
    local w = nnr.randn(5, 20):mul_(0.3):requires_grad_()
    F.cross_entropy(F.linear(x, w), y):backward()
    local ref = w.grad:clone()
    w.grad = nil
    local loss = nnr.autocast("bf16", function() return F.cross_entropy(F.linear(x, w), y) end)
    assert.are.equal("f32", loss.dtype)
    loss:backward()
    assert.are.equal("f32", w.grad.dtype)
    local rel = (w.grad - ref):abs():max():item() / ref:abs():max():item()
    assert.is_true(rel < 0.03, "relative difference " .. rel)
  end)

  it("trains the mlp in bf16 about as well as in f32", function()
    local final = {}
    for _, mode in ipairs { "f32", "bf16" } do
      nnr.manual_seed(3)
      local model = nnr.nn.Sequential(nnr.nn.Linear(20, 32), nnr.nn.ReLU(), nnr.nn.Linear(32, 4))
      local opt = nnr.optim.SGD(model:parameters(), { lr = 0.1, momentum = 0.9 })
      nnr.manual_seed(4)
      local x = nnr.randn(64, 20)
      local y = x:narrow(2, 1, 4):argmax(2)           -- a learnable target
      local loss
      for _ = 1, 40 do
        local function step() return F.cross_entropy(model(x), y) end
        loss = mode == "f32" and step() or nnr.autocast("bf16", step)
        opt:zero_grad()
        loss:backward()
        opt:step()
      end
      for _, p in ipairs(model:parameters()) do assert.are.equal("f32", p.dtype) end
      final[mode] = loss:item()
    end
    assert.is_true(final.bf16 < 0.5, "bf16 loss " .. final.bf16)
    assert.is_true(math.abs(final.bf16 - final.f32) < 0.1, string.format("f32 %.4f, bf16 %.4f", final.f32, final.bf16))
  end)
end)

describe("GradScaler", function()
  it("scales the loss, unscales the gradients and steps", function()
    nnr.manual_seed(5)
    local w = nnr.randn(3, 4):requires_grad_()
    local opt = nnr.optim.SGD({ w }, { lr = 0.1 })
    local scaler = nnr.amp.GradScaler({ init_scale = 1024 })
    local x = nnr.randn(2, 4)
    local loss = nnr.autocast("f16", function() return F.linear(x, w):float():pow(2):sum() end)
    local before = w:clone()
    scaler:scale(loss):backward()
    local expected = w.grad / 1024
    assert.is_true(scaler:step(opt))
    scaler:update()
    -- the step used the unscaled gradient
    local moved = (before - w:detach()) / 0.1
    assert.is_true((moved - expected):abs():max():item() < 1e-3 * expected:abs():max():item() + 1e-6)
    assert.are.equal(1024, scaler:get_scale())
  end)

  it("skips a step whose gradients overflowed and backs off; grows after clean steps", function()
    local w = nnr.ones(3):requires_grad_()
    local opt = nnr.optim.SGD({ w }, { lr = 0.1 })
    local scaler = nnr.amp.GradScaler({ init_scale = 8, growth_interval = 2 })
    w.grad = nnr.tensor({ 1, math.huge, 1 })
    assert.is_false(scaler:step(opt))
    scaler:update()
    assert.are.equal(4, scaler:get_scale())
    assert.are.equal(3, w:detach():sum():item())        -- untouched
    w.grad = nnr.tensor({ 0 / 0, 1, 1 })
    assert.is_false(scaler:step(opt))
    scaler:update()
    assert.are.equal(2, scaler:get_scale())
    for _ = 1, 2 do
      w.grad = nnr.tensor({ 2, 2, 2 })
      assert.is_true(scaler:step(opt))
      scaler:update()
    end
    assert.are.equal(4, scaler:get_scale())
    local ok, err = pcall(nnr.amp.GradScaler, { init_scale = 0 })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("GradScaler: init_scale must be a finite number > 0, got 0"), tostring(err))
  end)
end)

describe("half-precision elementwise ops on the cpu", function()
  -- the f32-chunk path (relu, neg, abs; add, sub, mul, max of two tensors) must round exactly as the
  -- double path: the exact result rounded once (through f32, as every store to bf16/f16 does)
  it("equal the f64 results rounded, broadcast, strided and NaN included", function()
    nnr.manual_seed(21)
    for _, dt in ipairs { "bf16", "f16" } do
      local a = nnr.randn(37, 65):mul_(3):to(dt)
      local b = nnr.randn(37, 65):to(dt)
      a:narrow(1, 2, 1):narrow(2, 3, 1):fill_(0 / 0)
      local bias = nnr.randn(65):to(dt)
      local at = nnr.randn(65, 37):to(dt):t()                       -- strided
      local function same(got, want, what)
        local g, w = got:double(), want:double()
        local nan_g, nan_w = g:ne(g), w:ne(w)
        assert.are.equal(0, nan_g:ne(nan_w):sum():item(), dt .. " " .. what .. ": NaN in other places")
        local d = (g - w):abs():masked_fill(nan_w, 0):max():item()
        assert.are.equal(0, d, dt .. " " .. what)
      end
      local A, B, Bias, At = a:double(), b:double(), bias:double(), at:double()
      same(a:relu(), A:relu():to(dt), "relu")
      same(-a, (-A):to(dt), "neg")
      same(a:abs(), A:abs():to(dt), "abs")
      same(a + b, (A + B):to(dt), "add")
      same(a - at, (A - At):to(dt), "sub strided")
      same(a * b, (A * B):to(dt), "mul")
      same(a + bias, (A + Bias):to(dt), "add broadcast")
      same(a:max(b), A:max(B):to(dt), "maximum")
      same(a / b, (A / B):to(dt), "div (double path)")
      same(a * 0.1, (A * 0.1):to(dt), "scalar (double path)")
    end
  end)
end)
