-- nnr.kernel: elementwise maps and reductions written in LuaJIT, run over chunks in worker states.
local nnr = require "nnr"
local H = require "helpers"
local K = nnr.kernel

local function close(a, b, tol)
  local d = (a:double() - b:double()):abs():max():item()
  assert(d <= (tol or 1e-6), "differ by " .. d)
end
local function fails(pattern, fn)
  local ok, err = pcall(fn)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), "error '" .. tostring(err) .. "' does not match " .. pattern)
end

describe("nnr.kernel.map", function()
  before_each(function() H.reseed(21) end)

  it("maps over any strides, broadcasts tensors and passes numbers through", function()
    local x, b = nnr.randn(5, 7), nnr.randn(7)
    local axpy = K.map("function(a, c, s) return s * a + c end")
    close(axpy(x, b, 2.5), x * 2.5 + b)
    local col = nnr.randn(1, 5)
    close(axpy(x:t(), col:expand(7, 5), -1), x:t() * -1 + col)          -- a zero stride
    local y = nnr.randn(4, 6):narrow(2, 2, 3)            -- a strided view
    close(K.map("function(v) return v * v end")(y), y * y)
    close(axpy(x:t(), b:view(7, 1), 0.5), x:t() * 0.5 + b:view(7, 1))
  end)

  it("gives PyTorch's result dtypes, or the one asked for, and checks narrowing stores", function()
    local i = nnr.tensor({ 1, 2, 3 }, { dtype = "i32" })
    assert.are.equal("i32", K.map("function(v) return v + 1 end")(i).dtype)
    assert.are.equal("f32", K.map("function(a, b) return a + b end")(i, nnr.ones(3)).dtype)
    local pos = K.map("function(v) return v > 0 end", { dtype = "bool" })(nnr.tensor({ -1, 2, 0 }))
    assert.are.same({ false, true, false }, pos:totable())
    fails("not a value of the output dtype i32", function() K.map("function(v) return v / 2 end")(i) end)
    fails("not a value of the output dtype u8", function() K.map("function(v) return v * 100 end", { dtype = "u8" })(nnr.tensor({ 3 })) end)
    fails("not a value of the output dtype i64", function() K.map("function(v) return 0 / 0 end", { dtype = "i64" })(nnr.ones(2)) end)
    local i64 = nnr.tensor({ 2 ^ 40, -3 }, { dtype = "i64" })
    assert.are.same({ 2 ^ 40 + 1, -2 }, K.map("function(v) return v + 1 end")(i64):totable())
  end)

  it("writes into out, in place when out is the input itself", function()
    local x = nnr.randn(6, 5)
    local want = x * 3
    local sq = K.map("function(v) return v * 3 end")
    local r = sq(x, { out = x })
    assert.is_true(rawequal(r, x))
    close(x, want)
    fails("out overlaps input 1 in another layout", function() sq(x, { out = x:t():contiguous():view(6, 5):t():t() + 0 }) ; sq(x:t(), { out = x:view(5, 6) }) end)
    fails("out is expanded", function() sq(nnr.ones(3, 4), { out = nnr.zeros(1, 4):expand(3, 4) }) end)
    fails("out has shape %[2%]", function() sq(nnr.ones(3), { out = nnr.zeros(2) }) end)
  end)

  it("splits large tensors into chunks across the worker states with the same result", function()
    local x = nnr.randn(300001)
    local gelu = K.map("function(v) return v / (1 + math.exp(-1.5957691216057308 * (v + 0.044715 * v * v * v))) end")
    local prev = nnr.get_num_threads()
    nnr.set_num_threads(2)
    local two = gelu(x)
    nnr.set_num_threads(1)
    local one = gelu(x)
    nnr.set_num_threads(prev)
    close(two, one, 0)
    close(two, nnr.nn.functional.gelu(x), 2e-3)
  end)

  it("refuses what it cannot do, clearly", function()
    local m = K.map("function(v) return v end")
    fails("does not compile", function() K.map("function(v) return v +") end)
    fails("must be a function expression", function() K.map("42") end)
    fails("must be Lua source", function() K.map(function(v) return v end) end)
    fails("unknown option 'dtyp'", function() K.map("function(v) return v end", { dtyp = "f32" }) end)
    fails("is f16, which kernels cannot read", function() m(nnr.ones(2, { dtype = "f16" })) end)
    fails("requires grad, and a kernel records no gradient", function() m(nnr.ones(2):requires_grad_()) end)
    fails("argument 1 must be a tensor or a number, got string", function() m("x") end)
    fails("at least one argument must be a tensor", function() m(3) end)
    fails("shapes %[3%] and %[2%] cannot broadcast", function() K.map("function(a, b) return a + b end")(nnr.ones(3), nnr.ones(2)) end)
    fails("attempt to", function() K.map("function(v) return v.x end")(nnr.ones(2)) end)
    fails("unknown option 'outt'", function() m(nnr.ones(2), { outt = 1 }) end)
  end)

  it("makes a Function with a forward and a backward kernel, checked by gradcheck", function()
    local fwd = K.map("function(x) return x * x * x + math.sin(x) end")
    local bwd = K.map("function(x, g) return g * (3 * x * x + math.cos(x)) end")
    local Cubic = nnr.autograd.Function { name = "Cubic",
      forward = function(ctx, x) ctx:save_for_backward(x); return fwd(x) end,
      backward = function(ctx, g) return bwd(ctx.saved_tensors[1], g) end }
    local x = nnr.randn({ 3, 4 }, { dtype = "f64" }):t():requires_grad_()
    local ok, msg = nnr.autograd.gradcheck(function(t) return Cubic(t) end, { x })
    assert(ok, msg)
  end)
end)

describe("nnr.kernel.reduce", function()
  before_each(function() H.reseed(22) end)
  local sumsq = K.reduce("function(acc, v) return acc + v * v end", { init = 0, combine = "function(a, b) return a + b end" })

  it("reduces everything, or along one dim with keepdim", function()
    local x = nnr.randn({ 4, 5 }, { dtype = "f64" })
    close(sumsq(x), (x * x):sum(), 1e-12)
    close(sumsq(x:t(), { dim = 1 }), (x * x):sum(2), 1e-12)
    close(sumsq(x, { dim = -1, keepdim = true }), (x * x):sum(2, true), 1e-12)
    local mx = K.reduce("function(acc, v) return math.max(acc, v) end", { init = -math.huge })
    close(mx(x, { dim = 2 }), x:max(2), 0)
    local dot = K.reduce("function(acc, a, b) return acc + a * b end", { init = 0, combine = "function(a, b) return a + b end" })
    local y = nnr.randn({ 5 }, { dtype = "f64" })
    close(dot(x, y, { dim = 2 }), x:matmul(y), 1e-12)
  end)

  it("joins the chunks of a large tensor with combine", function()
    local x = nnr.randn({ 500000 }, { dtype = "f64" })
    close(sumsq(x), (x * x):sum(), 1e-6)
    local no_combine = K.reduce("function(acc, v) return acc + v end")
    close(no_combine(x), x:sum(), 1e-6)
  end)

  it("refuses bad options", function()
    fails("keepdim needs dim", function() sumsq(nnr.ones(3), { keepdim = true }) end)
    fails("init must be a number", function() K.reduce("function(a, v) return a end", { init = "0" }) end)
    fails("dimension 3 is out of range", function() sumsq(nnr.ones(2, 2), { dim = 3 }) end)
    fails("reduction gave", function() K.reduce("function(a, v) return 'x' end")(nnr.ones(2)) end)
  end)
end)
