-- Extending autograd from Lua: autograd.grad, higher-order gradients (create_graph, gradgradcheck),
-- Functions with a Lua backward, tensor and module hooks.
local nnr = require "nnr"
local H = require "helpers"
local A = nnr.autograd
local nn, F = nnr.nn, nnr.nn.functional

local function f64(shape, lo, hi)
  return nnr.tensor(H.rand_table(shape, lo or -2, hi or 2), { dtype = "f64", requires_grad = true })
end
local function strided(shape)
  local t = H.noncontiguous(H.rand_table(shape, -2, 2), "f64")
  t:requires_grad_()
  return t
end
local function close(a, b, tol)
  local d = (a - b):abs():max():item()
  assert(d <= (tol or 1e-10), "differ by " .. d)
end
local function ok(fn, ...) local r, msg = fn(...); assert(r, msg) end
local fails = H.fails

describe("autograd.grad", function()
  before_each(function() H.reseed(11) end)

  it("gives the gradients of the inputs and leaves .grad alone", function()
    local x, w = f64({ 3, 4 }), f64({ 4, 2 })
    local y = x:matmul(w):tanh():sum()
    local gx, gw = A.grad(y, { x, w }, { retain_graph = true })
    assert.is_nil(x.grad); assert.is_nil(w.grad)
    y:backward()
    close(gx, x.grad); close(gw, w.grad)
  end)

  it("takes grad_outputs, several outputs and a non-leaf input", function()
    local x = f64({ 5 })
    local h = x * 3
    local a, b = h:sin(), h:exp()
    local v1, v2 = f64({ 5 }):detach(), f64({ 5 }):detach()
    local gh = A.grad({ a, b }, h, { grad_outputs = { v1, v2 } })
    close(gh, v1 * h:detach():cos() + v2 * h:detach():exp())
  end)

  it("allow_unused gives nil, and an unused input is an error otherwise", function()
    local x, z = f64({ 3 }), f64({ 3 })
    local y = (x * x):sum()
    fails("input 2 was not used", A.grad, y, { x, z }, { retain_graph = true })
    local gx, gz = A.grad(y, { x, z }, { allow_unused = true })
    close(gx, x:detach() * 2)
    assert.is_nil(gz)
  end)

  it("refuses bad arguments clearly", function()
    local x = f64({ 3 })
    fails("unknown option 'create_grpah'", A.grad, x:sum(), x, { create_grpah = true })
    fails("input 1 does not require grad", A.grad, x:sum(), nnr.ones(3))
    fails("outputs must be a tensor", A.grad, {}, x)
    fails("single%-element output", A.grad, x * 2, x)
    fails("gradient of shape %[2%] given", A.grad, x * 2, x, { grad_outputs = nnr.ones(2, { dtype = "f64" }) })
  end)

  it("frees the graph unless asked to keep it", function()
    local x = f64({ 3 })
    local y = x:exp():sum()
    A.grad(y, x)
    fails("a second time", A.grad, y, x)
  end)
end)

describe("higher-order gradients", function()
  before_each(function() H.reseed(12) end)

  it("second derivatives of x^3 and of a composite", function()
    local x = f64({ 6 })
    local g1 = A.grad((x * x * x):sum(), x, { create_graph = true })
    assert.is_true(g1.requires_grad)
    local g2 = A.grad(g1:sum(), x)
    close(g2, x:detach() * 6)
  end)

  it("backward{create_graph = true} leaves a .grad with history", function()
    local x = f64({ 4 })
    x:tanh():sum():backward { create_graph = true }
    assert.is_true(x.grad.requires_grad)
    local g = x.grad
    x.grad = nil
    g:sum():backward()
    local t = x:detach():tanh()
    close(x.grad, (t * t - 1) * t * 2)      -- d/dx (1 - tanh^2) = -2 tanh (1 - tanh^2)
  end)

  -- the op families issue 16 names: elementwise, activations, matmul / linear, reductions,
  -- softmax / log_softmax, views and indexing (conv2d and batch norm follow)
  local cases = {
    { "unary math", function(t) return t:exp() + t:tanh() + t:sigmoid() + t:sin() * t:cos() + t:erf() end, { { 5 } } },
    { "log sqrt reciprocal", function(t) local u = t * t + 1; return u:log() + u:sqrt() + u:reciprocal() end, { { 5 } } },
    { "relu and abs", function(t) return t:relu() * t + t:abs() * t end, { { 5 } } },
    { "arithmetic, broadcast", function(p, q) return p * q / (q * q + 1) - p end, { { 3, 4 }, { 4 } } },
    { "pow", function(p, q) return (p * p + 1) ^ q + (p * p + 1) ^ 1.5 end, { { 3, 4 }, { 4 } } },
    { "maximum minimum clamp where", function(p, q) return nnr.maximum(p, q) * nnr.minimum(p, q) + nnr.where(p:gt(0), p * p, p:clamp(-0.5, 0.5)) end, { { 3, 4 }, { 4 } } },
    { "matmul", function(p, q) return p:matmul(q) end, { { 3, 4 }, { 4, 2 } } },
    { "batched matmul with a vector", function(p, q) return p:matmul(q) end, { { 2, 3, 4 }, { 4 } } },
    { "linear and linear+relu", function(p, w, b) return F.linear(p, w, b) + F.linear_relu(p, w, b) end, { { 3, 4 }, { 5, 4 }, { 5 } } },
    { "reductions", function(p) return (p * p):sum(2) + p:mean(2) + p:prod(2) + p:var(2) + p:max(2) end, { { 3, 4 } } },
    { "softmax and log_softmax", function(p) return p:softmax(2) + p:log_softmax(1) end, { { 3, 4 } } },
    { "views, narrow, select, cat", function(p)
        return nnr.cat({ p:t():reshape(2, 6):permute(2, 1) * p:select(2, 1):narrow(1, 2, 1):unsqueeze(2), p:narrow(2, 2, 2):reshape(6, 1):expand(6, 2) }, 2):narrow(2, 2, 2) * p:reshape(6, 2)
      end, { { 3, 4 } } },
    { "gather and index_select", function(p) return p:gather(2, nnr.tensor({ { 1, 2 }, { 3, 3 }, { 4, 1 } }, { dtype = "i64" })) * p:index_select(2, { 2, 4 }) end, { { 3, 4 } } },
    { "gelu, layer_norm, cross_entropy, mse", function(p, q)
        return F.gelu(p):sum() + F.layer_norm(p, 1):sum() + F.cross_entropy(p, nnr.tensor({ 1, 4, 2 }, { dtype = "i64" })) + F.mse_loss(p, q)
      end, { { 3, 4 }, { 3, 4 } } },
  }
  for _, c in ipairs(cases) do
    it("gradgradcheck: " .. c[1], function()
      local inputs = {}
      for i, shape in ipairs(c[3]) do inputs[i] = (i == 1 and #shape == 2) and strided(shape) or f64(shape) end
      ok(A.gradgradcheck, c[2], inputs)
    end)
  end

  it("gradgradcheck catches a wrong second derivative", function()
    local Cube = A.Function { name = "Cube",
      forward = function(ctx, x) ctx:save_for_backward(x); return x * x * x end,
      backward = function(ctx, g) local x = ctx.saved_tensors[1]; return g * (x * x * 3):detach() end }   -- drops the history
    local x = f64({ 4 })
    ok(A.gradcheck, function(t) return Cube(t) end, { x })
    local r = A.gradgradcheck(function(t) return Cube(t) end, { x })
    assert.is_false(r)
  end)

  -- pooling: max (scatter at the argmax, composed), average and adaptive average (a pair of nodes,
  -- each the other's adjoint); a node whose backward is not recorded is refused by name (test_core)
  local pool_cases = {
    { "max_pool2d", function(x) return F.max_pool2d(x, 2) * x:narrow(3, 1, 2):narrow(4, 1, 2) end, { 1, 2, 4, 4 } },
    { "max_pool2d with padding", function(x) return F.max_pool2d(x, 3, { stride = 2, padding = 1 }):pow(2) end, { 1, 2, 5, 5 } },
    { "avg_pool2d, ceil_mode", function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1, ceil_mode = true }):pow(3) end, { 1, 2, 5, 5 } },
    { "adaptive_avg_pool2d", function(x) return F.adaptive_avg_pool2d(x, { 2, 3 }):pow(2) end, { 1, 2, 5, 7 } },
  }
  for _, c in ipairs(pool_cases) do
    it("gradgradcheck: " .. c[1], function() ok(A.gradgradcheck, c[2], { f64(c[3]) }) end)
  end

  -- conv2d (every geometry, fused relu, transposed) and the norms
  local rm, rv = nnr.zeros(3, { dtype = "f64" }), nnr.ones(3, { dtype = "f64" })
  local conv_cases = {
    { "conv2d", function(x, w, b) return F.conv2d(x, w, b) end, { { 2, 2, 5, 5 }, { 3, 2, 3, 3 }, { 3 } } },
    { "conv2d stride, padding, dilation", function(x, w, b) return F.conv2d(x, w, b, { stride = 2, padding = 1, dilation = 2 }) end,
      { { 1, 2, 7, 6 }, { 3, 2, 2, 3 }, { 3 } } },
    { "conv2d groups", function(x, w) return F.conv2d(x, w, nil, { groups = 2, stride = 2 }) end, { { 1, 4, 6, 6 }, { 4, 2, 3, 3 } } },
    { "conv2d fused with relu", function(x, w, b) return F.conv2d_relu(x, w, b, { padding = 1 }) end, { { 1, 2, 4, 4 }, { 2, 2, 3, 3 }, { 2 } } },
    { "conv_transpose2d", function(x, w, b) return F.conv_transpose2d(x, w, b, { stride = 2, padding = 1, output_padding = 1 }) end,
      { { 1, 2, 3, 3 }, { 2, 3, 3, 3 }, { 3 } } },
    { "batch_norm, training", function(x, w, b) return F.batch_norm(x, rm:clone(), rv:clone(), w, b, true) end, { { 4, 3, 2, 2 }, { 3 }, { 3 } } },
    { "batch_norm, no affine", function(x) return F.batch_norm(x, nil, nil, nil, nil, true) end, { { 4, 3, 5 } } },
    { "batch_norm, eval", function(x, w, b) return F.batch_norm(x, rm, rv, w, b, false) end, { { 4, 3, 2, 2 }, { 3 }, { 3 } } },
    { "group_norm", function(x, w, b) return F.group_norm(x, 2, w, b) end, { { 2, 4, 3 }, { 4 }, { 4 } } },
    { "instance_norm", function(x) return F.instance_norm(x) end, { { 2, 3, 4, 4 } } },
  }
  for _, c in ipairs(conv_cases) do
    it("gradgradcheck: " .. c[1], function()
      local inputs = {}
      for i, shape in ipairs(c[3]) do inputs[i] = f64(shape) end
      ok(A.gradgradcheck, c[2], inputs)
    end)
  end

  it("a gradient penalty trains (WGAN-GP style)", function()
    local D = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)):to("f64")
    local x = nnr.randn({ 16, 3 }, { dtype = "f64" }):requires_grad_()
    local out = D(x):sum()
    local gx = A.grad(out, x, { create_graph = true })
    local penalty = ((gx * gx):sum(2):sqrt() - 1):pow(2):mean()
    penalty:backward()
    local w = D:get(1).weight
    assert.is_not_nil(w.grad)
    -- the gradient of the penalty by finite differences along one weight
    local eps, i, j = 1e-6, 2, 3
    local function pen()
      local xx = x:detach():requires_grad_()
      local g = A.grad(D(xx):sum(), xx, { create_graph = true })
      return ((g * g):sum(2):sqrt() - 1):pow(2):mean():item()
    end
    local w0 = w[{ i, j }]
    nnr.no_grad(function() w[{ i, j }] = w0 + eps end)
    local p1 = pen()
    nnr.no_grad(function() w[{ i, j }] = w0 - eps end)
    local p2 = pen()
    nnr.no_grad(function() w[{ i, j }] = w0 end)
    assert.is_true(math.abs((p1 - p2) / (2 * eps) - w.grad[{ i, j }]) < 1e-6)
  end)

  it("a second-order MAML step differentiates through the inner update", function()
    local w = f64({ 3, 1 })
    local xs, ys = nnr.randn({ 8, 3 }, { dtype = "f64" }), nnr.randn({ 8, 1 }, { dtype = "f64" })
    local xq, yq = nnr.randn({ 8, 3 }, { dtype = "f64" }), nnr.randn({ 8, 1 }, { dtype = "f64" })
    local lr = 0.1
    local function meta_loss(wt)
      local inner = F.mse_loss(xs:matmul(wt), ys)
      local g = A.grad(inner, wt, { create_graph = true })
      local adapted = wt - g * lr
      return F.mse_loss(xq:matmul(adapted), yq)
    end
    ok(A.gradcheck, meta_loss, { w })
    -- closed form: adapted = w - lr * (2/N) Xs^T (Xs w - ys); d meta / dw = (I - lr (2/N) Xs^T Xs) grad_q
    local loss = meta_loss(w)
    local gw = A.grad(loss, w)
    local n = 8
    local Ms = nnr.eye(3, { dtype = "f64" }) - xs:t():matmul(xs) * (lr * 2 / n)
    local adapted = w:detach() - xs:t():matmul(xs:matmul(w:detach()) - ys) * (lr * 2 / n)
    local gq = xq:t():matmul(xq:matmul(adapted) - yq) * (2 / n)
    close(gw, Ms:matmul(gq), 1e-10)
  end)
end)

describe("autograd.Function", function()
  before_each(function() H.reseed(13) end)

  local Exp = A.Function { name = "MyExp",
    forward = function(ctx, x) local y = x:exp(); ctx:save_for_backward(y); return y end,
    backward = function(ctx, g) return g * ctx.saved_tensors[1] end }

  it("records one node with its backward and passes gradcheck", function()
    local x = strided({ 3, 4 })
    local y = Exp(x)
    assert.are.equal("MyExpBackward", y.grad_fn)
    ok(A.gradcheck, function(t) return Exp:apply(t) end, { x })
    ok(A.gradgradcheck, function(t) return Exp(t) end, { f64({ 4 }) })
  end)

  it("several inputs and outputs, non-tensor arguments, needs_input_grad, a non-differentiable output", function()
    local seen
    local Scale = A.Function { name = "ScaleArgmax",
      forward = function(ctx, a, b, k)
        seen = ctx.needs_input_grad
        ctx:save_for_backward(a, b)
        ctx.k = k
        local idx = (a * b):argmax(1)
        ctx:mark_non_differentiable(idx)
        return a * b * k, idx, a + b
      end,
      backward = function(ctx, g1, gidx, g3)
        local a, b = unpack(ctx.saved_tensors)
        assert(gidx == nil or not gidx.requires_grad)
        return g1 * b * ctx.k + g3, g1 * a * ctx.k + g3, nil
      end }
    local a, b = f64({ 5 }), nnr.randn({ 5 }, { dtype = "f64" })
    local y, i, s = Scale(a, b, 3)
    assert.are.same({ true, false, false }, seen)
    assert.is_true(y.requires_grad); assert.is_false(i.requires_grad); assert.are.equal("i64", i.dtype)
    b:requires_grad_()
    ok(A.gradcheck, function(p, q) local u, _, v = Scale(p, q, 2); return u * v end, { a, b })
  end)

  it("an input returned as is becomes an alias that carries the node", function()
    local Id = A.Function { name = "Id", forward = function(ctx, x) return x end, backward = function(ctx, g) return g * 2 end }
    local x = f64({ 3 })
    local y = Id(x)
    assert.are.equal("IdBackward", y.grad_fn)
    assert.is_true(x.is_leaf)
    y:sum():backward()
    close(x.grad, nnr.full({ 3 }, 2, { dtype = "f64" }))
  end)

  it("without grad recording, forward alone runs", function()
    local y = nnr.no_grad(function() return Exp(f64({ 3 })) end)
    assert.is_false(y.requires_grad)
  end)

  it("errors name the Function", function()
    local Bad = A.Function { name = "Bad", forward = function(ctx, x) return x * 2 end, backward = function(ctx, g) error("boom") end }
    fails("BadBackward: .*boom", function() Bad(f64({ 3 })):sum():backward() end)
    local Wrong = A.Function { name = "Wrong", forward = function(ctx, x) return x * 2 end, backward = function(ctx, g) return nnr.ones(2) end }
    fails("WrongBackward gave a gradient of shape %[2%] for its input 1 of shape %[3%]", function() Wrong(f64({ 3 })):sum():backward() end)
    local Many = A.Function { name = "Many", forward = function(ctx, x) return x * 2 end, backward = function(ctx, g) return g, g end }
    fails("Many.backward returned 2 values, forward took 1", function() Many(f64({ 3 })):sum():backward() end)
    local NotT = A.Function { name = "NotT", forward = function(ctx, x) return x * 2 end, backward = function(ctx, g) return 3 end }
    fails("must be a tensor or nil", function() NotT(f64({ 3 })):sum():backward() end)
    local Saved = A.Function { name = "Saved", forward = function(ctx, x) ctx:save_for_backward(x); return x * 2 end,
      backward = function(ctx, g) local _ = ctx.saved_tensors; return g * 2 end }
    local t = f64({ 3 }) * 1
    local y = Saved(t)
    nnr.no_grad(function() t:add_(1) end)
    fails("saved for backward was modified by an in%-place operation", function() y:sum():backward() end)
    fails("forward must be a function", A.Function, { backward = function() end })
    fails("unknown option 'fwd'", A.Function, { fwd = 1, forward = function() end, backward = function() end })
    fails("a second time", function() local z = Exp(f64({ 2 })):sum(); z:backward(); z:backward() end)
  end)

  it("keeps nothing after the graph is gone (no growth over many calls)", function()
    local x = f64({ 50 })
    local function entries() local n = 0; for _ in pairs(A._registry) do n = n + 1 end; return n end
    for i = 1, 2000 do
      local y = Exp(x)
      if i % 2 == 0 then y:sum():backward() end
    end
    collectgarbage(); collectgarbage()
    Exp(nnr.ones(1))      -- drains the list of dead ids
    assert.is_true(entries() <= 2, "registry holds " .. entries())
  end)
end)

describe("hooks", function()
  before_each(function() H.reseed(14) end)

  it("tensor hooks see and replace gradients, on leaves and intermediates, until removed", function()
    local x = f64({ 4 })
    local h = x * 2
    local got
    local hh = h:register_hook(function(g) got = g:clone(); return g * 10 end)
    local hx = x:register_hook(function(g) return g + 1 end)
    local loss = (h * h):sum(); loss:backward()
    close(got, h:detach() * 2)
    close(x.grad, h:detach() * 2 * 10 * 2 + 1)
    hh:remove(); hx:remove()
    x.grad = nil
    local h2 = x * 2
    h2:sum():backward()
    close(x.grad, nnr.full({ 4 }, 2, { dtype = "f64" }))
  end)

  it("hook errors are clear", function()
    local x = f64({ 3 })
    fails("does not require grad", function() nnr.ones(3):register_hook(function() end) end)
    fails("expected a function", function() x:register_hook(3) end)
    local y = x * 2
    y:register_hook(function(g) return nnr.ones(2, { dtype = "f64" }) end)
    fails("a hook returned a gradient of shape %[2%]", function() y:sum():backward() end)
    local z = x * 3
    z:register_hook(function(g) error("hook failed") end)
    fails("gradient hook: .*hook failed", function() z:sum():backward() end)
  end)

  it("module forward-pre, forward and full backward hooks", function()
    local m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)):to("f64")
    local log = {}
    local h1 = m:get(1):register_forward_pre_hook(function(mod, args) log[#log + 1] = "pre"; return args[1] * 2 end)
    local h2 = m:get(1):register_forward_hook(function(mod, args, out) log[#log + 1] = "fwd"; return out + 1 end)
    local gin, gout
    local h3 = m:get(3):register_full_backward_hook(function(mod, gi, go) gin, gout = gi, go; return { gi[1] * 0 } end)
    local x = f64({ 5, 4 })
    local y = m(x)
    local expect = nnr.no_grad(function() return m:get(3):forward((m:get(1):forward(x * 2) + 1):relu()) end)
    close(y, expect)
    assert.are.same({ "pre", "fwd" }, log)
    y:sum():backward()
    assert.are.same({ 5, 3 }, gin[1]:size()); assert.are.same({ 5, 2 }, gout[1]:size())
    assert.are.equal(0, x.grad:abs():sum():item())         -- the hook zeroed the gradient below layer 3
    h1:remove(); h2:remove(); h3:remove()
    assert.is_false(m:get(1):has_hooks())
    x.grad = nil
    m(x):sum():backward()
    assert.is_true(x.grad:abs():sum():item() > 0)
  end)

  it("a backward hook on a module whose inputs need no grad gets an empty grad_input", function()
    local lin = nn.Linear(3, 2):to("f64")
    local called
    lin:register_full_backward_hook(function(mod, gi, go) called = { gi.n, go[1]:size() } end)
    lin(nnr.randn({ 4, 3 }, { dtype = "f64" })):sum():backward()
    assert.are.same({ 0, { 4, 2 } }, called)
  end)
end)

describe("autograd corner cases (from review)", function()
  before_each(function() H.reseed(15) end)

  it("autograd.grad frees only the nodes it ran: a later backward through the others works", function()
    local x = f64({ 3 })
    local h = x:exp()
    local y, z = h * 2, h * 3
    A.grad(y:sum(), h)
    z:sum():backward()
    close(x.grad, x:detach():exp() * 3)
  end)

  it("create_graph honours an explicit retain_graph = false", function()
    local x = f64({ 3 })
    local y = (x * x):sum()
    A.grad(y, x, { create_graph = true, retain_graph = false })
    fails("a second time", A.grad, y, x)
  end)

  it("a leaf's hooks see the seed when the leaf itself is the output", function()
    local x = f64({ 3 })
    x:register_hook(function(g) return g * 0 end)
    x:backward(nnr.ones(3, { dtype = "f64" }))
    assert.are.equal(0, x.grad:abs():sum():item())
  end)

  it("retain_grad on an output of a Function with several outputs is refused, not wrong", function()
    local Two = A.Function { name = "Two", forward = function(ctx, x) return x * 2, x * 3 end,
      backward = function(ctx, a, b) return a * 2 + b * 3 end }
    local a, b = Two(f64({ 3 }))
    fails("retain_grad: not supported on the outputs of TwoBackward", function() b:retain_grad() end)
  end)

  it("a full backward hook gets nil for an output gradient that did not arrive", function()
    local Split = nn.Module:extend("Split")
    function Split:__init() nn.Module.__init(self); self:register_parameter("w", nnr.randn({ 3 }, { dtype = "f64" })) end
    function Split:forward(x) return x * self.w, x + self.w end
    local m = Split()
    local got
    m:register_full_backward_hook(function(mod, gi, go) got = go end)
    local a, b = m(f64({ 3 }))
    a:sum():backward()
    assert.is_not_nil(got[1])
    assert.is_nil(got[2])
  end)
end)

