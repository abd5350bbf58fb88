-- nnr.nn.functional: the stateless forms of the layers and losses. Modules
-- call these; a user can too. Dimensions and class indices are 1-based.
local nnr = require "nnr"
local binding = require "nnr.binding"
local C = binding.C
local own, check = binding.own, binding.check

local F = {}

local function pair(v, name, op)
  if type(v) == "number" then return v, v end
  if type(v) == "table" and #v == 2 then return v[1], v[2] end
  error(op .. ": " .. name .. " must be a number or a pair {h, w}, got " .. tostring(v), 0)
end

local function shape(t) return nnr.shape_str(t:size()) end

-- y = x W^T + b;  x [..., in], weight [out, in], bias [out]
function F.linear(x, weight, bias)
  return own(C.nnr_linear(x.p, weight.p, bias and bias.p or nil))
end

-- relu(linear(x, weight, bias)) as one op on the cpu backend (nn.Sequential uses it for Linear then ReLU)
function F.linear_relu(x, weight, bias)
  return own(C.nnr_linear_relu(x.p, weight.p, bias and bias.p or nil))
end

local function conv(cfn, x, weight, bias, opts)
  opts = opts or {}
  local sh, sw = pair(opts.stride or 1, "stride", "conv2d")
  local ph, pw = pair(opts.padding or 0, "padding", "conv2d")
  local dh, dw = pair(opts.dilation or 1, "dilation", "conv2d")
  return own(cfn(x.p, weight.p, bias and bias.p or nil, sh, sw, ph, pw, dh, dw, opts.groups or 1))
end

function F.conv2d(x, weight, bias, opts) return conv(C.nnr_conv2d, x, weight, bias, opts) end
-- relu(conv2d(...)) as one op on the cpu backend (nn.Sequential uses it for Conv2d then ReLU)
function F.conv2d_relu(x, weight, bias, opts) return conv(C.nnr_conv2d_relu, x, weight, bias, opts) end

function F.max_pool2d(x, kernel, opts)
  opts = opts or {}
  local kh, kw = pair(kernel, "kernel_size", "max_pool2d")
  local sh, sw = pair(opts.stride or kernel, "stride", "max_pool2d")
  local ph, pw = pair(opts.padding or 0, "padding", "max_pool2d")
  local dh, dw = pair(opts.dilation or 1, "dilation", "max_pool2d")
  return own(C.nnr_max_pool2d(x.p, kh, kw, sh, sw, ph, pw, dh, dw, opts.ceil_mode and 1 or 0))
end

function F.avg_pool2d(x, kernel, opts)
  opts = opts or {}
  local kh, kw = pair(kernel, "kernel_size", "avg_pool2d")
  local sh, sw = pair(opts.stride or kernel, "stride", "avg_pool2d")
  local ph, pw = pair(opts.padding or 0, "padding", "avg_pool2d")
  local include = opts.count_include_pad
  if include == nil then include = true end
  return own(C.nnr_avg_pool2d(x.p, kh, kw, sh, sw, ph, pw, opts.ceil_mode and 1 or 0, include and 1 or 0))
end

function F.adaptive_avg_pool2d(x, size)
  local oh, ow = pair(size, "output_size", "adaptive_avg_pool2d")
  return own(C.nnr_adaptive_avg_pool2d(x.p, oh, ow))
end

function F.relu(x) return x:relu() end
function F.leaky_relu(x, slope) return nnr.where(x:gt(0), x, x * (slope or 0.01)) end
function F.elu(x, alpha)
  return nnr.where(x:gt(0), x, (x:clamp(nil, 0):exp() - 1) * (alpha or 1))
end
-- exact GELU, x * Phi(x), as PyTorch's default
function F.gelu(x) return x * ((x * 0.7071067811865476):erf() + 1) * 0.5 end
function F.sigmoid(x) return x:sigmoid() end
function F.tanh(x) return x:tanh() end
function F.softmax(x, dim) return x:softmax(dim or -1) end
function F.log_softmax(x, dim) return x:log_softmax(dim or -1) end

function F.dropout(x, p, training)
  if not training or p == 0 then return x end
  if p < 0 or p >= 1 then error("dropout: probability must be in [0, 1), got " .. tostring(p), 0) end
  local keep = nnr.rand(x:size(), { dtype = x.dtype, device = x.device }):ge(p)
  return nnr.where(keep, x * (1 / (1 - p)), 0)
end

-- batch norm over dim 2 (channels) of [N, C] or [N, C, ...]; running stats updated in place when training
function F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
  return own(C.nnr_batch_norm(x.p, weight and weight.p or nil, bias and bias.p or nil, running_mean and running_mean.p or nil,
    running_var and running_var.p or nil, training and 1 or 0, momentum or 0.1, eps or 1e-5))
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
  local y = (x - mean) / (var + (eps or 1e-5)):sqrt()
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
  opts = opts or {}
  check_targets("nll_loss", logp, target)
  return reduce(-pick(logp, target), opts.reduction, "nll_loss")
end

function F.cross_entropy(logits, target, opts)
  opts = opts or {}
  if logits:dim() < 2 then error("cross_entropy: expected scores of shape [N, C], got " .. shape(logits), 0) end
  check_targets("cross_entropy", logits, target)
  local logp = logits:log_softmax(2)
  local loss = -pick(logp, target)
  local eps = opts.label_smoothing or 0
  if eps < 0 or eps > 1 then error("cross_entropy: label_smoothing must be in [0, 1], got " .. tostring(eps), 0) end
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
  same_shape("mse_loss", x, y)
  local d = x - y
  return reduce(d * d, opts and opts.reduction, "mse_loss")
end

function F.l1_loss(x, y, opts)
  same_shape("l1_loss", x, y)
  return reduce((x - y):abs(), opts and opts.reduction, "l1_loss")
end

-- max(x, 0) - x y + log(1 + exp(-|x|)): stable for large |x|
function F.binary_cross_entropy_with_logits(x, y, opts)
  same_shape("binary_cross_entropy_with_logits", x, y)
  local loss = x:clamp(0) - x * y + ((-x:abs()):exp() + 1):log()
  return reduce(loss, opts and opts.reduction, "binary_cross_entropy_with_logits")
end

return F
