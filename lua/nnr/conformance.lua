-- The backend conformance kit (nnrun --check-backend lib.so): runs every op
-- family on each device of a backend and on the cpu backend, from the same
-- random inputs, and compares. An op the backend lacks runs through the cpu
-- fallback; the report says which ran natively. As ggml's test-backend-ops.
local nnr = require "nnr"
local C = require("nnr.core").C

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
  return list
end

-- checks every device of the backend named `plugin`; returns ok, report lines
function M.check(plugin)
  local devices = {}
  for _, d in ipairs(nnr.devices()) do if d.type == plugin then devices[#devices + 1] = d end end
  if #devices == 0 then return false, { "no device of backend '" .. plugin .. "' (see nnrun --plugins)" } end
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
