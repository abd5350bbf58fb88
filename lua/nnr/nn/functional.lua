-- nnr.nn.functional: the stateless forms of the layers and losses. Modules
-- call these; a user can too. Dimensions and class indices are 1-based.
local nnr = require "nnr"
local binding = require "nnr.binding"
local C = binding.C
local own, check, call = binding.own, binding.check, binding.call
local V = require "nnr.check"
local tp = require("nnr.tensor").tp
-- an optional tensor argument (a bias): nil, or a tensor
local function opt_tp(op, x, what) if x == nil then return nil end return tp(op, x, what) end

local F = {}

-- a window parameter: one whole number or a pair {h, w}, each >= min (they travel to C as int)
local function pair(v, name, op, min)
  min = min or 1
  if type(v) == "number" then V.integer(op, name, v, min, 2 ^ 31 - 1); return v, v end
  if type(v) == "table" and #v == 2 then
    V.integer(op, name .. "[1]", v[1], min, 2 ^ 31 - 1)
    V.integer(op, name .. "[2]", v[2], min, 2 ^ 31 - 1)
    return v[1], v[2]
  end
  error(op .. ": " .. name .. " must be a number or a pair {h, w}, got " .. tostring(v), 0)
end
F._pair = pair

-- the checker of a functional form's options table (its last argument): known keys only. Built
-- once, at load: a call allocates nothing for it
local function options_for(op, ...)
  local known, set = { ... }, {}
  for _, k in ipairs(known) do set[k] = true end
  local hint = op .. ": options must be a table {" .. table.concat(known, "=, ") .. "=}, got "
  return function(opts)
    if opts ~= nil and type(opts) ~= "table" then error(hint .. type(opts), 0) end
    return V.options(op, opts, set)
  end
end
local conv_options = options_for("conv2d", "stride", "padding", "dilation", "groups")
local max_pool_options = options_for("max_pool2d", "stride", "padding", "dilation", "ceil_mode")
local avg_pool_options = options_for("avg_pool2d", "stride", "padding", "ceil_mode", "count_include_pad")
local nll_options = options_for("nll_loss", "reduction")
local cross_entropy_options = options_for("cross_entropy", "reduction", "label_smoothing")
local mse_options = options_for("mse_loss", "reduction")
local l1_options = options_for("l1_loss", "reduction")
local bce_options = options_for("binary_cross_entropy_with_logits", "reduction")

local function shape(t) return nnr.shape_str(t:size()) end

-- y = x W^T + b;  x [..., in], weight [out, in], bias [out]
function F.linear(x, weight, bias)
  return call(C.nnr_linear, tp("linear", x, "input"), tp("linear", weight, "weight"), opt_tp("linear", bias, "bias"))
end

-- relu(linear(x, weight, bias)) as one op on the cpu backend (nn.Sequential uses it for Linear then ReLU)
function F.linear_relu(x, weight, bias)
  return call(C.nnr_linear_relu, tp("linear", x, "input"), tp("linear", weight, "weight"), opt_tp("linear", bias, "bias"))
end

local function conv(cfn, x, weight, bias, opts)
  opts = conv_options(opts)
  local sh, sw = pair(opts.stride or 1, "stride", "conv2d")
  local ph, pw = pair(opts.padding or 0, "padding", "conv2d", 0)
  local dh, dw = pair(opts.dilation or 1, "dilation", "conv2d")
  local groups = V.integer("conv2d", "groups", opts.groups or 1, 1, 2 ^ 31 - 1)
  return call(cfn, tp("conv2d", x, "input"), tp("conv2d", weight, "weight"), opt_tp("conv2d", bias, "bias"), sh, sw, ph, pw, dh, dw, groups)
end

function F.conv2d(x, weight, bias, opts) return conv(C.nnr_conv2d, x, weight, bias, opts) end
-- relu(conv2d(...)) as one op on the cpu backend (nn.Sequential uses it for Conv2d then ReLU)
function F.conv2d_relu(x, weight, bias, opts) return conv(C.nnr_conv2d_relu, x, weight, bias, opts) end

function F.max_pool2d(x, kernel, opts, check_only)
  opts = max_pool_options(opts)
  local kh, kw = pair(kernel, "kernel_size", "max_pool2d")
  local sh, sw = pair(opts.stride or kernel, "stride", "max_pool2d")
  local ph, pw = pair(opts.padding or 0, "padding", "max_pool2d", 0)
  local dh, dw = pair(opts.dilation or 1, "dilation", "max_pool2d")
  if check_only then return end
  return call(C.nnr_max_pool2d, tp("max_pool2d", x, "input"), kh, kw, sh, sw, ph, pw, dh, dw, opts.ceil_mode and 1 or 0)
end

function F.avg_pool2d(x, kernel, opts, check_only)
  opts = avg_pool_options(opts)
  local kh, kw = pair(kernel, "kernel_size", "avg_pool2d")
  local sh, sw = pair(opts.stride or kernel, "stride", "avg_pool2d")
  local ph, pw = pair(opts.padding or 0, "padding", "avg_pool2d", 0)
  local include = opts.count_include_pad
  if include == nil then include = true end
  if check_only then return end
  return call(C.nnr_avg_pool2d, tp("avg_pool2d", x, "input"), kh, kw, sh, sw, ph, pw, opts.ceil_mode and 1 or 0, include and 1 or 0)
end

function F.adaptive_avg_pool2d(x, size)
  local oh, ow = pair(size, "output_size", "adaptive_avg_pool2d")
  return call(C.nnr_adaptive_avg_pool2d, tp("adaptive_avg_pool2d", x, "input"), oh, ow)
end

function F.relu(x) return x:relu() end
function F.leaky_relu(x, slope)
  slope = V.number("leaky_relu", "negative_slope", slope, { default = 0.01 })
  return nnr.where(x:gt(0), x, x * slope)
end
function F.elu(x, alpha)
  alpha = V.number("elu", "alpha", alpha, { default = 1 })
  return nnr.where(x:gt(0), x, (x:clamp(nil, 0):exp() - 1) * alpha)
end
-- exact GELU, x * Phi(x), as PyTorch's default
function F.gelu(x) return x * ((x * 0.7071067811865476):erf() + 1) * 0.5 end
function F.sigmoid(x) return x:sigmoid() end
function F.tanh(x) return x:tanh() end
function F.softmax(x, dim) return x:softmax(dim or -1) end
function F.log_softmax(x, dim) return x:log_softmax(dim or -1) end

function F.dropout(x, p, training)
  V.probability("dropout", "p", p)
  if not training or p == 0 then return x end
  local keep = nnr.rand(x:size(), { dtype = x.dtype, device = x.device }):ge(p)
  return nnr.where(keep, x * (1 / (1 - p)), 0)
end

-- batch norm over dim 2 (channels) of [N, C] or [N, C, ...]; running stats updated in place when training
function F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
  momentum = V.number("batch_norm", "momentum", momentum, { min = 0, max = 1, default = 0.1 })
  eps = V.number("batch_norm", "eps", eps, { above = 0, default = 1e-5 })
  return call(C.nnr_batch_norm, tp("batch_norm", x, "input"), opt_tp("batch_norm", weight, "weight"), opt_tp("batch_norm", bias, "bias"),
    opt_tp("batch_norm", running_mean, "running_mean"), opt_tp("batch_norm", running_var, "running_var"), training and 1 or 0, momentum or 0.1, eps or 1e-5)
end

-- the same, composed from tensor ops (kept as the reference the fused one is tested against)
function F.batch_norm_reference(x, running_mean, running_var, weight, bias, training, momentum, eps)
  local nd = x:dim()
  local dims = { 1 }
  for d = 3, nd do dims[#dims + 1] = d end
  local view = { 1, x:size(2) }
  for d = 3, nd do view[d] = 1 end
  local mean, var
  if training then
    mean = x:mean(dims, true)
    var = x:var(dims, true, 0)
    if running_mean then
      nnr.no_grad(function()
        local n = x:numel() / x:size(2)
        running_mean:mul_(1 - momentum):add_(mean:detach():view(-1) * momentum)
        running_var:mul_(1 - momentum):add_(var:detach():view(-1) * (momentum * n / math.max(n - 1, 1)))
      end)
    end
  else
    mean, var = running_mean:view(view), running_var:view(view)
  end
  local y = (x - mean) / (var + eps):sqrt()
  if weight then y = y * weight:view(view) + bias:view(view) end
  return y
end

-- layer norm over the last #normalized_shape dims
function F.layer_norm(x, nshape, weight, bias, eps)
  local dims = {}
  for d = x:dim() - nshape + 1, x:dim() do dims[#dims + 1] = d end
  local mean = x:mean(dims, true)
  local var = x:var(dims, true, 0)
  local y = (x - mean) / (var + V.number("layer_norm", "eps", eps, { above = 0, default = 1e-5 })):sqrt()
  if weight then y = y * weight + bias end
  return y
end

function F.embedding(indices, weight)
  local flat = indices:reshape(-1)
  local rows = weight:index_select(1, flat)
  local out = indices:size()
  out[#out + 1] = weight:size(2)
  return rows:view(out)
end

-- losses -------------------------------------------------------------------------
local function reduce(loss, reduction, op)
  reduction = reduction or "mean"
  if reduction == "mean" then return loss:mean() end
  if reduction == "sum" then return loss:sum() end
  if reduction == "none" then return loss end
  error(op .. ": reduction must be 'mean', 'sum' or 'none', got '" .. tostring(reduction) .. "'", 0)
end

-- targets: 1-based class indices [N] (or [N, d...] with logits [N, C, d...])
local function check_targets(op, logits, target)
  if target.dtype ~= "i64" and target.dtype ~= "i32" then
    error(op .. ": target must hold class indices (i64), got " .. target.dtype, 0)
  end
  if target:dim() ~= logits:dim() - 1 or target:size(1) ~= logits:size(1) then
    error(op .. ": target of shape " .. shape(target) .. " does not fit input of shape " .. shape(logits) ..
      " (expected [N] class indices for [N, C] scores)", 0)
  end
  local classes = logits:size(2)
  if target:numel() == 0 then return end      -- an empty batch: the mean of nothing is nan, as PyTorch's
  local lo, hi = target:min():item(), target:max():item()
  if lo < 1 or hi > classes then
    local bad = lo < 1 and lo or hi
    error(string.format("%s: target label %d is outside the class range 1..%d", op, bad, classes), 0)
  end
end

-- picks logp[n, target[n]] along dim 2
local function pick(logp, target)
  return logp:gather(2, target:long():unsqueeze(2)):squeeze(2)
end

function F.nll_loss(logp, target, opts)
  opts = nll_options(opts)
  check_targets("nll_loss", logp, target)
  return reduce(-pick(logp, target), opts.reduction, "nll_loss")
end

function F.cross_entropy(logits, target, opts)
  opts = cross_entropy_options(opts)
  if logits:dim() < 2 then error("cross_entropy: expected scores of shape [N, C], got " .. shape(logits), 0) end
  check_targets("cross_entropy", logits, target)
  local logp = logits:log_softmax(2)
  local loss = -pick(logp, target)
  local eps = V.number("cross_entropy", "label_smoothing", opts.label_smoothing, { min = 0, max = 1, default = 0 })
  if eps > 0 then
    loss = loss * (1 - eps) - logp:mean(2) * eps
  end
  return reduce(loss, opts.reduction, "cross_entropy")
end

local function same_shape(op, a, b)
  if shape(a) ~= shape(b) then
    error(op .. ": input of shape " .. shape(a) .. " and target of shape " .. shape(b) .. " differ", 0)
  end
end

function F.mse_loss(x, y, opts)
  mse_options(opts)
  same_shape("mse_loss", x, y)
  local d = x - y
  return reduce(d * d, opts and opts.reduction, "mse_loss")
end

function F.l1_loss(x, y, opts)
  l1_options(opts)
  same_shape("l1_loss", x, y)
  return reduce((x - y):abs(), opts and opts.reduction, "l1_loss")
end

-- (1 - y) x - log sigmoid(x), with log sigmoid(x) = log_softmax([0, x])[2]: stable for large |x|
-- and smooth everywhere, so its gradient is sigmoid(x) - y at x = 0 too (max(x, 0) and |x| have
-- kinks there whose subgradients do not cancel, and zero-initialised logits start exactly there)
function F.binary_cross_entropy_with_logits(x, y, opts)
  bce_options(opts)
  same_shape("binary_cross_entropy_with_logits", x, y)
  local d = x:dim() + 1
  local log_sig = nnr.stack({ nnr.zeros_like(x), x }, d):log_softmax(d):select(d, 2)
  local loss = x * (1 - y) - log_sig
  return reduce(loss, opts and opts.reduction, "binary_cross_entropy_with_logits")
end

return F
