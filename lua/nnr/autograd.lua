-- nnr.autograd: gradient checking against finite differences.
--
-- gradcheck(fn, inputs[, opts]) -> ok, message
--   fn: function of the input tensors returning one tensor.
--   inputs: tensors; those that require grad are checked (use f64).
--   opts: eps (1e-6), atol (1e-5), rtol (1e-3).
-- The output is projected on a fixed random tensor v, so one backward pass
-- gives v.J; each input element is then perturbed by +-eps and the central
-- difference of sum(fn(...) * v) compared with it. Works on non-contiguous
-- inputs: elements are written through their strides.
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C

local M = {}

local function project(nnr, out, v)
  return (out:to("f64") * v):sum():item()
end

function M.gradcheck(fn, inputs, opts)
  local nnr = require "nnr"
  local check = require "nnr.check"
  opts = check.options("gradcheck", opts, { eps = true, atol = true, rtol = true })
  local eps = check.number("gradcheck", "eps", opts.eps, { above = 0, default = 1e-6 })
  local atol = check.number("gradcheck", "atol", opts.atol, { min = 0, default = 1e-5 })
  local rtol = check.number("gradcheck", "rtol", opts.rtol, { min = 0, default = 1e-3 })
  local out = fn(unpack(inputs))
  if not nnr.is_tensor(out) then return false, "gradcheck: fn must return a tensor" end
  if not out.requires_grad then return false, "gradcheck: the output does not require grad (no input requires grad?)" end
  nnr.manual_seed(4321)
  local v = nnr.randn(out:size(), { dtype = "f64", device = out.device })
  for _, x in ipairs(inputs) do if nnr.is_tensor(x) and x.requires_grad then x.grad = nil end end
  (out:to("f64") * v):sum():backward()
  local analytic = {}
  for i, x in ipairs(inputs) do
    if nnr.is_tensor(x) and x.requires_grad then
      analytic[i] = x.grad or nnr.zeros_like(x)
    end
  end
  local idx, val = ffi.new("int64_t[8]"), ffi.new("double[1]")
  return nnr.no_grad(function()
    for i, x in ipairs(inputs) do
      if analytic[i] then
        local sizes, n = x:size(), x:numel()
        local a = analytic[i]:to("f64"):contiguous()
        local flat = a:view(-1)
        for k = 0, n - 1 do
          local rem = k
          for d = #sizes, 1, -1 do idx[d - 1] = rem % sizes[d]; rem = math.floor(rem / sizes[d]) end
          binding.check(C.nnr_get(x.p, idx, val))
          local orig = val[0]
          binding.check(C.nnr_set(x.p, idx, orig + eps))
          local fp = project(nnr, fn(unpack(inputs)), v)
          binding.check(C.nnr_set(x.p, idx, orig - eps))
          local fm = project(nnr, fn(unpack(inputs)), v)
          binding.check(C.nnr_set(x.p, idx, orig))
          local numeric = (fp - fm) / (2 * eps)
          local got = flat[k + 1]
          if math.abs(numeric - got) > atol + rtol * math.abs(numeric) then
            local where = {}
            for d = 1, #sizes do where[d] = tonumber(idx[d - 1]) + 1 end
            return false, string.format("gradcheck: input %d element [%s]: numerical %.8g, analytical %.8g",
              i, table.concat(where, ", "), numeric, got)
          end
        end
      end
    end
    return true, "ok"
  end)
end

return M
