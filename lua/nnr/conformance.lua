-- The backend conformance kit (nnrun --check-backend lib.so): runs every op
-- family on each device of a backend and on the cpu backend, from the same
-- random inputs, and compares. An op the backend lacks runs through the cpu
-- fallback; the report says which ran natively. As ggml's test-backend-ops.
local nnr = require "nnr"
local C = require("nnr.binding").C
local ffi = require "ffi"

local M = {}

local TOL = { f32 = 1e-5, f64 = 1e-12, f16 = 2e-3, bf16 = 1.6e-2 }

local function max_rel_err(a, b)
  local x, y = a:to("cpu", "f64"), b:to("cpu", "f64")
  if x.dtype == "bool" then x = x:double() end
  local diff = (x - y):abs()
  local nan_x, nan_y = x:ne(x), y:ne(y)
  if nan_x:ne(nan_y):sum():item() > 0 then return math.huge end
  diff = diff:masked_fill(nan_x, 0)
  local scale = y:abs():masked_fill(nan_y, 1):clamp(1)
  if diff:numel() == 0 then return 0 end
  return (diff / scale):max():item()
end

-- each case: name, op ids it exercises, dtypes, and f(device, dtype) -> tensor
local function cases()
  local list = {}
  local function add(name, ops, dtypes, f) list[#list + 1] = { name = name, ops = ops, dtypes = dtypes, f = f } end
  local floats = { "f32", "f64", "f16", "bf16" }
  local function input(dev, dt, lo, hi, ...)
    nnr.manual_seed(1234)
    local t = nnr.rand(...):mul_(hi - lo):add_(lo)
    return t:to(dt):to(dev)
  end
  local O = nnr.ops
  for _, name in ipairs { "neg", "abs", "exp", "tanh", "sigmoid", "relu", "sin", "cos", "sign", "reciprocal" } do
    add(name, { O[name] }, floats, function(dev, dt) return input(dev, dt, -2, 2, 7, 9)[name](input(dev, dt, -2, 2, 7, 9)) end)
  end
  for _, name in ipairs { "log", "sqrt" } do
    add(name, { O[name] }, floats, function(dev, dt) local x = input(dev, dt, 0.1, 3, 7, 9); return x[name](x) end)
  end
  for _, name in ipairs { "add", "sub", "mul", "div", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge" } do
    add(name .. " (broadcast)", { O[name] }, floats, function(dev, dt)
      local a, b = input(dev, dt, -2, 2, 5, 1, 6), input(dev, dt, -2, 2, 4, 6)
      return a[name](a, b)
    end)
    add(name .. " (scalar)", { O[name] }, { "f32", "i64" }, function(dev, dt)
      local a = input(dev, "f32", -5, 5, 33):to(dt)
      return a[name](a, 1.5)
    end)
  end
  add("pow", { O.pow }, { "f32", "f64" }, function(dev, dt) return input(dev, dt, 0.5, 2, 8, 8) ^ input(dev, dt, -1, 2, 8) end)
  add("where", { 64 }, floats, function(dev, dt)
    local a, b = input(dev, dt, -1, 1, 6, 7), input(dev, dt, -1, 1, 7)
    return nnr.where(a:gt(0), a, b)
  end)
  add("clamp", { 65 }, floats, function(dev, dt) return input(dev, dt, -3, 3, 50):clamp(-1, 0.5) end)
  for _, to in ipairs { "f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool" } do
    add("cast to " .. to, { 66 }, { "f32", "i64" }, function(dev, dt) return input(dev, "f32", -50, 200, 40):to(dt):to(to) end)
  end
  add("strided copy", { 66 }, floats, function(dev, dt) return input(dev, dt, -1, 1, 6, 9):t():contiguous() end)
  add("fill", { 67 }, floats, function(dev, dt) return nnr.full({ 3, 5 }, 2.5, { dtype = dt, device = dev }) end)
  add("arange", { 68 }, { "f32", "i64" }, function(dev, dt) return nnr.arange(0, 20, 3, { dtype = dt, device = dev }) end)
  add("rand", { 80 }, { "f32", "f64" }, function(dev, dt) nnr.manual_seed(9); return nnr.rand(100, { dtype = dt, device = dev }) end)
  add("randn", { 81 }, { "f32", "f64" }, function(dev, dt) nnr.manual_seed(9); return nnr.randn(100, { dtype = dt, device = dev }) end)
  add("randint", { 82 }, { "i64" }, function(dev, dt) nnr.manual_seed(9); return nnr.randint(-5, 5, { 100 }, { dtype = dt, device = dev }) end)
  for _, r in ipairs { "sum", "mean", "max", "min", "argmax", "argmin", "var", "prod" } do
    add(r, { ({ sum = 96, prod = 97, max = 98, min = 99, argmax = 100, argmin = 101, mean = 102, var = 103 })[r] }, { "f32", "f64" }, function(dev, dt)
      local x = input(dev, dt, 0.5, 1.5, 4, 5, 6)
      local parts = { x[r](x), x[r](x, 2), x[r](x, 3, true) }
      local flat = {}
      for i, p in ipairs(parts) do flat[i] = p:double():flatten() end
      return nnr.cat(flat)
    end)
  end
  add("softmax", { 112 }, floats, function(dev, dt) return input(dev, dt, -3, 3, 5, 7):softmax(2) end)
  add("log_softmax", { 113 }, floats, function(dev, dt) return input(dev, dt, -3, 3, 5, 7):log_softmax(1) end)
  add("linear (fused)", { 129 }, { "f32", "f64" }, function(dev, dt)
    return nnr.nn.functional.linear(input(dev, dt, -1, 1, 2, 3, 9), input(dev, dt, -1, 1, 5, 9), input(dev, dt, -1, 1, 5))
  end)
  add("matmul", { 128 }, { "f32", "f64" }, function(dev, dt)
    return input(dev, dt, -1, 1, 3, 17, 9):matmul(input(dev, dt, -1, 1, 9, 5))
  end)
  add("gather", { 144 }, { "f32", "f64" }, function(dev, dt)
    local idx = nnr.tensor({ { 3, 1 }, { 2, 2 }, { 1, 3 } }, { dtype = "i64", device = dev })
    return input(dev, dt, -1, 1, 3, 3):gather(2, idx)
  end)
  add("index_select", { 145 }, { "f32", "f64" }, function(dev, dt)
    return input(dev, dt, -1, 1, 4, 5):index_select(2, nnr.tensor({ 5, 1, 3 }, { dtype = "i64", device = dev }))
  end)
  add("matmul (strided, batch broadcast)", { 128 }, { "f32", "f64" }, function(dev, dt)
    local a = input(dev, dt, -1, 1, 2, 3, 7, 5):transpose(3, 4)      -- [2, 3, 5, 7], column-major matrices
    return a:matmul(input(dev, dt, -1, 1, 3, 7, 4))
  end)
  -- half precision: the cpu computes in f32 from the same rounded inputs
  add("matmul (half)", { 128 }, { "f16", "bf16" }, function(dev, dt)
    local a, b = input(dev, dt, -1, 1, 2, 33, 40), input(dev, dt, -1, 1, 40, 24)
    if dev == "cpu" then return a:float():matmul(b:float()):to(dt) end
    return a:matmul(b)
  end)
  add("linear+relu (fused)", { 129 }, { "f32", "f64" }, function(dev, dt)
    return nnr.nn.functional.linear_relu(input(dev, dt, -1, 1, 6, 9), input(dev, dt, -1, 1, 5, 9), input(dev, dt, -1, 1, 5))
  end)
  add("erf", { O.erf }, floats, function(dev, dt) return input(dev, dt, -2, 2, 7, 9):erf() end)
  add("logical_not", { O.logical_not }, { "f32", "i64" }, function(dev, dt) return input(dev, "f32", -2, 2, 30):gt(0):to(dt):logical_not() end)
  add("scatter_add", { 146 }, { "f32", "f64" }, function(dev, dt)
    local idx = nnr.tensor({ { 1, 2, 1 }, { 3, 1, 2 } }, { dtype = "i64", device = dev })
    return input(dev, dt, -1, 1, 3, 3):scatter_add(1, idx, input(dev, dt, -1, 1, 2, 3))
  end)
  add("index_add", { 147 }, { "f32", "f64" }, function(dev, dt)
    local idx = nnr.tensor({ 2, 4, 2 }, { dtype = "i64", device = dev })
    return input(dev, dt, -1, 1, 5, 3):index_add(1, idx, input(dev, dt, -1, 1, 3, 3))
  end)
  local F = nnr.nn.functional
  -- an op and its gradients: the outputs, then each input's gradient, flattened into one tensor
  local function with_grads(dev, dt, inputs, f)
    local xs = {}
    for i, spec in ipairs(inputs) do xs[i] = input(dev, dt, spec[1], spec[2], unpack(spec, 3)):requires_grad_() end
    local y = f(unpack(xs))
    local r = input(dev, dt, -1, 1, unpack(y:size()))
    ;(y * r):sum():backward()
    local flat = { y:detach():double():flatten() }
    for i, x in ipairs(xs) do flat[#flat + 1] = x.grad:double():flatten() end
    return nnr.cat(flat)
  end
  add("conv2d (groups, stride, pad)", { 160, 161, 162 }, { "f32", "f64" }, function(dev, dt)
    return with_grads(dev, dt, { { -1, 1, 2, 4, 7, 6 }, { -1, 1, 6, 2, 3, 3 }, { -1, 1, 6 } }, function(x, w, b)
      return F.conv2d(x, w, b, { stride = 2, padding = 1, groups = 2 })
    end)
  end)
  add("conv2d (dilation, no bias)", { 160, 161, 162 }, { "f32", "f64" }, function(dev, dt)
    return with_grads(dev, dt, { { -1, 1, 3, 3, 9, 8 }, { -1, 1, 4, 3, 3, 2 } }, function(x, w)
      return F.conv2d(x, w, nil, { padding = { 2, 1 }, dilation = { 2, 1 } })
    end)
  end)
  add("conv2d+relu (fused)", { 160, 161, 162 }, { "f32", "f64" }, function(dev, dt)
    return with_grads(dev, dt, { { -1, 1, 2, 3, 6, 6 }, { -1, 1, 5, 3, 3, 3 }, { -1, 1, 5 } }, function(x, w, b)
      return F.conv2d_relu(x, w, b, { padding = 1 })
    end)
  end)
  -- half convolution and pooling (autocast on a GPU): the cpu computes in f32 from the same rounded inputs
  local function half_case(dev, dt, shapes, f)
    local xs = {}
    for i, shape in ipairs(shapes) do
      local t = input(dev, dt, -1, 1, unpack(shape))
      xs[i] = (dev == "cpu" and t:float() or t):requires_grad_()
    end
    local y = f(unpack(xs))
    local r = input(dev, dt, -1, 1, unpack(y:size()))
    ;(y * (dev == "cpu" and r:float() or r)):sum():backward()
    local flat = { y:detach():double():flatten() }
    for _, x in ipairs(xs) do flat[#flat + 1] = x.grad:double():flatten() end
    return nnr.cat(flat):to(dt)
  end
  add("conv2d (half)", { 160, 161, 162 }, { "f16", "bf16" }, function(dev, dt)
    return half_case(dev, dt, { { 2, 4, 7, 6 }, { 6, 2, 3, 3 }, { 6 } }, function(x, w, b)
      return F.conv2d(x, w, b, { stride = 2, padding = 1, groups = 2 })
    end)
  end)
  add("max_pool2d (half)", { 163, 164 }, { "f16", "bf16" }, function(dev, dt)
    return half_case(dev, dt, { { 2, 3, 8, 8 } }, function(x) return F.max_pool2d(x, 2) end)
  end)
  add("max_pool2d", { 163, 164 }, { "f32", "f64" }, function(dev, dt)
    return with_grads(dev, dt, { { -1, 1, 2, 3, 9, 8 } }, function(x) return F.max_pool2d(x, 3, { stride = 2, padding = 1 }) end)
  end)
  add("max_pool2d 2x2", { 163, 164 }, { "f32", "f64" }, function(dev, dt)
    return with_grads(dev, dt, { { -1, 1, 4, 5, 8, 10 } }, function(x) return F.max_pool2d(x, 2) end)
  end)
  add("avg_pool2d", { 165, 166 }, { "f32", "f64" }, function(dev, dt)
    return with_grads(dev, dt, { { -1, 1, 2, 3, 9, 8 } }, function(x)
      return F.avg_pool2d(x, 3, { stride = 2, padding = 1, count_include_pad = false })
    end)
  end)
  add("adaptive_avg_pool2d", { 167, 168 }, { "f32", "f64" }, function(dev, dt)
    return with_grads(dev, dt, { { -1, 1, 2, 3, 9, 7 } }, function(x) return F.adaptive_avg_pool2d(x, { 4, 3 }) end)
  end)
  add("batch_norm (training)", { 169, 170, 171, 172 }, { "f32", "f64" }, function(dev, dt)
    local rm, rv = nnr.zeros(3, { dtype = dt, device = dev }), nnr.ones(3, { dtype = dt, device = dev })
    local g = with_grads(dev, dt, { { -1, 2, 4, 3, 5, 5 }, { 0.5, 1.5, 3 }, { -1, 1, 3 } }, function(x, w, b)
      return F.batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5)
    end)
    return nnr.cat { g, rm:double(), rv:double() }
  end)
  add("cross_entropy", { 113, 144 }, { "f32", "f64" }, function(dev, dt)
    local target = nnr.tensor({ 3, 1, 5, 2 }, { dtype = "i64", device = dev })
    return with_grads(dev, dt, { { -2, 2, 4, 5 } }, function(x) return F.cross_entropy(x, target):reshape(1) end)
  end)
  local optimizers = {
    { "sgd (momentum, nesterov)", 192, function(p) return nnr.optim.SGD({ p }, { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.01 }) end },
    { "adam", 193, function(p) return nnr.optim.Adam({ p }, { lr = 0.01, weight_decay = 0.01 }) end },
    { "adamw", 193, function(p) return nnr.optim.AdamW({ p }, { lr = 0.01, weight_decay = 0.1 }) end },
    { "rmsprop (momentum)", 194, function(p) return nnr.optim.RMSprop({ p }, { lr = 0.01, momentum = 0.5, weight_decay = 0.01 }) end },
  }
  for _, o in ipairs(optimizers) do
    add(o[1], { o[2] }, { "f32", "f64" }, function(dev, dt)
      local p = input(dev, dt, -1, 1, 37):requires_grad_()
      local opt = o[3](p)
      for step = 1, 3 do
        p.grad = input(dev, dt, -1 + step, 1 + step, 37)
        opt:step()
      end
      return p:detach()
    end)
  end
  return list
end

-- checks every device of the backend named `plugin`; returns ok, report lines
function M.check(plugin)
  local devices = {}
  for _, d in ipairs(nnr.devices()) do if d.type == plugin then devices[#devices + 1] = d end end
  if #devices == 0 then
    -- a plugin that loaded but found no device (no GPU, no driver) is skipped with its reason
    local i = C.nnr_plugin_find(plugin)
    local why = i >= 0 and ffi.string(C.nnr_plugin_message(i)) or "see nnrun --plugins"
    return "skip", { "skip: no device of backend '" .. plugin .. "': " .. why }
  end
  local lines, failures, total = {}, 0, 0
  for _, dev in ipairs(devices) do
    lines[#lines + 1] = string.format("device %s", dev.name)
    for _, case in ipairs(cases()) do
      for _, dt in ipairs(case.dtypes) do
        total = total + 1
        local before = 0
        for _, op in ipairs(case.ops) do before = before + tonumber(C.nnr_fallback_count(op)) end
        local ok_ref, ref = pcall(case.f, "cpu", dt)
        local ok_dev, got = pcall(case.f, dev.name, dt)
        local after = 0
        for _, op in ipairs(case.ops) do after = after + tonumber(C.nnr_fallback_count(op)) end
        local how = after > before and "cpu fallback" or "native"
        local status
        if not ok_ref then
          status = "skip (cpu: " .. tostring(ref) .. ")"
          total = total - 1
        elseif not ok_dev and (tostring(got):match("not supported for dtype %w+ by %w+ or the cpu fallback") or
                               tostring(got):match("dtype %w+ is not supported %(expected f32 or f64; f16 and bf16 on backends that have them%)")) then
          status = "skip (neither this backend nor the cpu fallback has it)"
          total = total - 1
        elseif not ok_dev then
          status = "FAIL: " .. tostring(got)
          failures = failures + 1
        else
          local err = max_rel_err(got, ref)
          local tol = TOL[dt] or 0
          if case.name:match("^cast") or case.name:match("^rand") then tol = math.max(tol, TOL[dt] or 0) end
          if got.dtype ~= ref.dtype or table.concat(got:size(), ",") ~= table.concat(ref:size(), ",") then
            status = "FAIL: result is " .. got.dtype .. " " .. tostring(got:size()) .. ", cpu gives " .. ref.dtype .. " " .. tostring(ref:size())
            failures = failures + 1
          elseif err > tol then
            status = string.format("FAIL: max relative error %.3g > %.3g", err, tol)
            failures = failures + 1
          else
            status = string.format("ok (%s, err %.1g)", how, err)
          end
        end
        lines[#lines + 1] = string.format("  %-24s %-5s %s", case.name, dt, status)
      end
    end
  end
  lines[#lines + 1] = string.format("%d passed, %d failed", total - failures, failures)
  return failures == 0, lines
end

return M
