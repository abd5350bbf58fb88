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
local nll_options = options_for("nll_loss", "weight", "ignore_index", "reduction")
local cross_entropy_options = options_for("cross_entropy", "weight", "ignore_index", "reduction", "label_smoothing")
local mse_options = options_for("mse_loss", "reduction")
local l1_options = options_for("l1_loss", "reduction")
local bce_options = options_for("binary_cross_entropy_with_logits", "reduction")
local conv1d_options = options_for("conv1d", "stride", "padding", "dilation", "groups")
local conv_t1d_options = options_for("conv_transpose1d", "stride", "padding", "output_padding", "groups", "dilation")
local conv_t2d_options = options_for("conv_transpose2d", "stride", "padding", "output_padding", "groups", "dilation")
local max_pool1d_options = options_for("max_pool1d", "stride", "padding", "dilation", "ceil_mode")
local avg_pool1d_options = options_for("avg_pool1d", "stride", "padding", "ceil_mode", "count_include_pad")
local huber_options = options_for("huber_loss", "reduction", "delta")
local smooth_l1_options = options_for("smooth_l1_loss", "reduction", "beta")
local kl_div_options = options_for("kl_div", "reduction", "log_target")
local bce_prob_options = options_for("binary_cross_entropy", "weight", "reduction")
local cosine_embedding_options = options_for("cosine_embedding_loss", "margin", "reduction")

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
-- the activations of plugin.h's ACTIVATION op: one fused pass each, forward and backward
local function activation(kind, name, x, a, b)
  return call(C.nnr_activation, kind, tp(name, x, "input"), a or 0, b or 0)
end
function F.leaky_relu(x, slope)
  slope = V.number("leaky_relu", "negative_slope", slope, { default = 0.01 })
  return activation(C.NNR_ACT_LEAKY_RELU, "leaky_relu", x, slope)
end
function F.elu(x, alpha)
  alpha = V.number("elu", "alpha", alpha, { default = 1 })
  return activation(C.NNR_ACT_ELU, "elu", x, alpha, 1)
end
-- SELU: scale * ELU with alpha, both PyTorch's constants
function F.selu(x) return activation(C.NNR_ACT_ELU, "selu", x, 1.6732632423543772, 1.0507009873554805) end
-- GELU, x * Phi(x): PyTorch's exact form one fused op (GELU, its backward GELU_GRAD); approximate =
-- "tanh" its tanh form, composed
function F.gelu(x, approximate)
  if approximate == nil or approximate == "none" then return call(C.nnr_unary, C.NNR_OP_GELU, tp("gelu", x, "input")) end
  V.choice("gelu", "approximate", approximate, { "none", "tanh" })
  return x * ((x + x * x * x * 0.044715) * 0.7978845608028654):tanh():add(1) * 0.5
end
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

-- layer norm over the last dims: normalized_shape as PyTorch's (a list that the input's trailing
-- sizes must equal), or the number of trailing dims
function F.layer_norm(x, nshape, weight, bias, eps)
  tp("layer_norm", x, "input")
  local nd = x:dim()
  if type(nshape) == "table" then
    local sizes = x:size()
    local ok = #nshape >= 1 and #nshape <= nd
    for i = 1, #nshape do ok = ok and nshape[i] == sizes[nd - #nshape + i] end
    if not ok then
      error("layer_norm: normalized_shape [" .. table.concat(nshape, ", ") .. "] does not match the last dims of an input of shape " ..
        nnr.shape_str(sizes), 0)
    end
    nshape = #nshape
  end
  V.integer("layer_norm", "normalized_shape (a count of trailing dims)", nshape, 1, nd)
  local e = V.number("layer_norm", "eps", eps, { above = 0, default = 1e-5 })
  if (weight == nil) ~= (bias == nil) then error("layer_norm: give weight and bias, or neither", 0) end
  -- f32 and f64: one fused op (core/ops/layernorm.c), which checks the weight's shape; other dtypes composed
  if x.dtype == "f32" or x.dtype == "f64" then
    return call(C.nnr_layer_norm, x.p, nshape, weight and tp("layer_norm", weight, "weight"), bias and tp("layer_norm", bias, "bias"), e)
  end
  local dims = {}
  for d = nd - nshape + 1, nd do dims[#dims + 1] = d end
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

-- 1-d and transposed convolutions, 1-d pooling -----------------------------------

-- a 1-d window parameter: one whole number (or a table of one) >= min
local function single(v, name, op, min)
  if type(v) == "table" and #v == 1 then v = v[1] end
  if type(v) ~= "number" then error(op .. ": " .. name .. " must be a number, got " .. tostring(v), 0) end
  V.integer(op, name, v, min or 1, 2 ^ 31 - 1)
  return v
end
F._single = single

local function need_dims(op, x, what, dims, expect)
  tp(op, x, what)
  if x:dim() ~= dims then error(op .. ": expected a " .. dims .. "-d " .. what .. " " .. expect .. ", got " .. shape(x), 0) end
end

-- F.conv1d(x [N, C, L], weight [O, C/groups, K], bias [O][, {stride, padding, dilation, groups}]):
-- the 2-d convolution of a height-1 image
function F.conv1d(x, weight, bias, opts)
  opts = conv1d_options(opts)
  need_dims("conv1d", x, "input", 3, "[N, C, L]")
  need_dims("conv1d", weight, "weight", 3, "[O, C/groups, K]")
  local s = single(opts.stride or 1, "stride", "conv1d")
  local pd = single(opts.padding or 0, "padding", "conv1d", 0)
  local d = single(opts.dilation or 1, "dilation", "conv1d")
  local groups = V.integer("conv1d", "groups", opts.groups or 1, 1, 2 ^ 31 - 1)
  return call(C.nnr_conv2d, x:unsqueeze(3).p, weight:unsqueeze(3).p, opt_tp("conv1d", bias, "bias"), 1, s, 0, pd, 1, d, groups):squeeze(3)
end

-- F.conv_transpose2d(x [N, C, H, W], weight [C, O/groups, KH, KW], bias [O][, {stride, padding,
-- output_padding, groups, dilation}]): the gradient of conv2d with respect to its input
function F.conv_transpose2d(x, weight, bias, opts)
  opts = conv_t2d_options(opts)
  local sh, sw = pair(opts.stride or 1, "stride", "conv_transpose2d")
  local ph, pw = pair(opts.padding or 0, "padding", "conv_transpose2d", 0)
  local oh, ow = pair(opts.output_padding or 0, "output_padding", "conv_transpose2d", 0)
  local dh, dw = pair(opts.dilation or 1, "dilation", "conv_transpose2d")
  local groups = V.integer("conv_transpose2d", "groups", opts.groups or 1, 1, 2 ^ 31 - 1)
  return call(C.nnr_conv_transpose2d, tp("conv_transpose2d", x, "input"), tp("conv_transpose2d", weight, "weight"),
    opt_tp("conv_transpose2d", bias, "bias"), sh, sw, ph, pw, oh, ow, dh, dw, groups)
end

-- F.conv_transpose1d(x [N, C, L], weight [C, O/groups, K], bias [O][, opts as conv_transpose2d's])
function F.conv_transpose1d(x, weight, bias, opts)
  opts = conv_t1d_options(opts)
  need_dims("conv_transpose1d", x, "input", 3, "[N, C, L]")
  need_dims("conv_transpose1d", weight, "weight", 3, "[C, O/groups, K]")
  local s = single(opts.stride or 1, "stride", "conv_transpose1d")
  local pd = single(opts.padding or 0, "padding", "conv_transpose1d", 0)
  local op = single(opts.output_padding or 0, "output_padding", "conv_transpose1d", 0)
  local d = single(opts.dilation or 1, "dilation", "conv_transpose1d")
  local groups = V.integer("conv_transpose1d", "groups", opts.groups or 1, 1, 2 ^ 31 - 1)
  return call(C.nnr_conv_transpose2d, x:unsqueeze(3).p, weight:unsqueeze(3).p, opt_tp("conv_transpose1d", bias, "bias"),
    1, s, 0, pd, 0, op, 1, d, groups):squeeze(3)
end

-- F.max_pool1d(x [N, C, L], kernel[, {stride = kernel, padding, dilation, ceil_mode}]) on the 2-d op
function F.max_pool1d(x, kernel, opts, check_only)
  opts = max_pool1d_options(opts)
  local k = single(kernel, "kernel_size", "max_pool1d")
  local s = single(opts.stride or kernel, "stride", "max_pool1d")
  local pd = single(opts.padding or 0, "padding", "max_pool1d", 0)
  local d = single(opts.dilation or 1, "dilation", "max_pool1d")
  if pd * 2 > k then error(string.format("max_pool1d: padding (%d) must be at most half the kernel size (%d)", pd, k), 0) end
  if check_only then return end
  need_dims("max_pool1d", x, "input", 3, "[N, C, L]")
  return call(C.nnr_max_pool2d, x:unsqueeze(3).p, 1, k, 1, s, 0, pd, 1, d, opts.ceil_mode and 1 or 0):squeeze(3)
end

-- F.avg_pool1d(x [N, C, L], kernel[, {stride = kernel, padding, ceil_mode, count_include_pad = true}])
function F.avg_pool1d(x, kernel, opts, check_only)
  opts = avg_pool1d_options(opts)
  local k = single(kernel, "kernel_size", "avg_pool1d")
  local s = single(opts.stride or kernel, "stride", "avg_pool1d")
  local pd = single(opts.padding or 0, "padding", "avg_pool1d", 0)
  if pd * 2 > k then error(string.format("avg_pool1d: padding (%d) must be at most half the kernel size (%d)", pd, k), 0) end
  local include = opts.count_include_pad
  if include == nil then include = true end
  if check_only then return end
  need_dims("avg_pool1d", x, "input", 3, "[N, C, L]")
  return call(C.nnr_avg_pool2d, x:unsqueeze(3).p, 1, k, 1, s, 0, pd, opts.ceil_mode and 1 or 0, include and 1 or 0):squeeze(3)
end

-- F.adaptive_max_pool2d(x [N, C, H, W], output_size): the maximum of each of oh x ow windows, cell
-- (i, j) covering rows floor(i H / oh) .. ceil((i + 1) H / oh) - 1 (0-based), as PyTorch's. Evenly
-- divided sizes run as one max_pool2d; others take the cells' maxima one by one.
function F.adaptive_max_pool2d(x, size)
  local oh, ow = pair(size, "output_size", "adaptive_max_pool2d")
  need_dims("adaptive_max_pool2d", x, "input", 4, "[N, C, H, W]")
  local H, W = x:size(3), x:size(4)
  if H % oh == 0 and W % ow == 0 then
    return call(C.nnr_max_pool2d, x.p, H / oh, W / ow, H / oh, W / ow, 0, 0, 1, 1, 0)
  end
  local floor, ceil = math.floor, math.ceil
  local cells = {}
  for i = 0, oh - 1 do
    local h0, h1 = floor(i * H / oh), ceil((i + 1) * H / oh)
    local band = x:narrow(3, h0 + 1, h1 - h0)
    for j = 0, ow - 1 do
      local w0, w1 = floor(j * W / ow), ceil((j + 1) * W / ow)
      cells[#cells + 1] = band:narrow(4, w0 + 1, w1 - w0):flatten(3):max(3)
    end
  end
  return nnr.stack(cells, 3):view(x:size(1), x:size(2), oh, ow)
end

-- activations -------------------------------------------------------------------

function F.silu(x) return activation(C.NNR_ACT_SILU, "silu", x) end
function F.mish(x) return activation(C.NNR_ACT_MISH, "mish", x) end
-- F.softplus(x[, beta = 1[, threshold = 20]]): log(1 + exp(beta x)) / beta, and x where beta x > threshold
function F.softplus(x, beta, threshold)
  beta = V.number("softplus", "beta", beta, { default = 1 })
  if beta == 0 then error("softplus: beta must not be 0 (it divides)", 0) end
  threshold = V.number("softplus", "threshold", threshold, { default = 20 })
  return activation(C.NNR_ACT_SOFTPLUS, "softplus", x, beta, threshold)
end
-- x * relu6(x + 3) / 6
function F.hardswish(x) return activation(C.NNR_ACT_HARDSWISH, "hardswish", x) end
-- F.prelu(x, weight): x where x > 0, weight * x elsewhere; weight [1] or [C] along dim 2
function F.prelu(x, weight)
  tp("prelu", x, "input")
  tp("prelu", weight, "weight")
  local n = weight:numel()
  if weight:dim() > 1 then error("prelu: weight must be 1-d, got " .. shape(weight), 0) end
  if n ~= 1 then
    if x:dim() < 2 or x:size(2) ~= n then
      error(string.format("prelu: %d weights need an input with %d channels along dim 2, got %s", n, n, shape(x)), 0)
    end
    local view = { n }
    for _ = 3, x:dim() do view[#view + 1] = 1 end
    weight = weight:view(view)
  end
  return nnr.where(x:gt(0), x, x * weight)
end

-- dropout of whole channels -----------------------------------------------------

-- F.dropout2d(x [N, C, H, W] or [C, H, W][, p = 0.5[, training = true]]): zeroes whole channels
-- with probability p, scaling the others by 1 / (1 - p)
function F.dropout2d(x, p, training)
  p = V.probability("dropout2d", "p", p == nil and 0.5 or p)
  tp("dropout2d", x, "input")
  if x:dim() ~= 3 and x:dim() ~= 4 then error("dropout2d: expected an input [N, C, H, W] or [C, H, W], got " .. shape(x), 0) end
  if training == false or p == 0 then return x end
  local mask_shape = x:size()
  for d = x:dim() - 1, x:dim() do mask_shape[d] = 1 end
  local keep = nnr.rand(mask_shape, { dtype = x.dtype, device = x.device }):ge(p)
  return nnr.where(keep, x * (1 / (1 - p)), 0)
end

-- normalization over groups and instances ---------------------------------------

-- the affine of a normalized [N, C, ...]: weight and bias [C] along dim 2
local function channel_affine(y, weight, bias)
  if not weight and not bias then return y end
  local view = { 1, y:size(2) }
  for _ = 3, y:dim() do view[#view + 1] = 1 end
  if weight then y = y * weight:view(view) end
  if bias then y = y + bias:view(view) end
  return y
end

local function check_channel_param(op, t, what, c)
  if t == nil then return end
  tp(op, t, what)
  if t:dim() ~= 1 or t:size(1) ~= c then error(string.format("%s: %s of shape %s, expected [%d]", op, what, shape(t), c), 0) end
end

-- F.group_norm(x [N, C, ...], num_groups[, weight [C], bias [C], eps = 1e-5]): each sample's channels
-- in num_groups groups, normalized over the group's channels and positions
function F.group_norm(x, num_groups, weight, bias, eps)
  tp("group_norm", x, "input")
  eps = V.number("group_norm", "eps", eps, { above = 0, default = 1e-5 })
  V.integer("group_norm", "num_groups", num_groups, 1)
  if x:dim() < 2 then error("group_norm: expected an input [N, C, ...], got " .. shape(x), 0) end
  local c = x:size(2)
  if c % num_groups ~= 0 then
    error(string.format("group_norm: %d channels (input %s) cannot be split into %d groups", c, shape(x), num_groups), 0)
  end
  check_channel_param("group_norm", weight, "weight", c)
  check_channel_param("group_norm", bias, "bias", c)
  local g = x:reshape(x:size(1), num_groups, -1)
  local y = ((g - g:mean(3, true)) / (g:var(3, true, 0) + eps):sqrt()):view(x:size())
  return channel_affine(y, weight, bias)
end

-- F.instance_norm(x [N, C, ...][, {running_mean, running_var, weight, bias, use_input_stats = true,
-- momentum = 0.1, eps = 1e-5}]): each channel of each sample normalized over its positions. With
-- use_input_stats and running stats, those are updated with the batch's mean of the instances'
-- mean and unbiased variance (PyTorch's); without use_input_stats the running ones normalize.
local instance_norm_options = options_for("instance_norm", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps")
function F.instance_norm(x, opts)
  opts = instance_norm_options(opts)
  tp("instance_norm", x, "input")
  local eps = V.number("instance_norm", "eps", opts.eps, { above = 0, default = 1e-5 })
  local momentum = V.number("instance_norm", "momentum", opts.momentum, { min = 0, max = 1, default = 0.1 })
  local use_input = opts.use_input_stats
  if use_input == nil then use_input = true end
  V.boolean("instance_norm", "use_input_stats", use_input)
  if x:dim() < 3 then error("instance_norm: expected an input [N, C, ...] with at least one spatial dim, got " .. shape(x), 0) end
  local c = x:size(2)
  for _, k in ipairs { "running_mean", "running_var", "weight", "bias" } do check_channel_param("instance_norm", opts[k], k, c) end
  local rm, rv = opts.running_mean, opts.running_var
  if (rm == nil) ~= (rv == nil) then error("instance_norm: give both running_mean and running_var, or neither", 0) end
  if not use_input and not rm then error("instance_norm: use_input_stats = false needs running_mean and running_var", 0) end
  local dims = {}
  for d = 3, x:dim() do dims[#dims + 1] = d end
  local y
  if use_input then
    local mean = x:mean(dims, true)
    local var = x:var(dims, true, 0)
    y = (x - mean) / (var + eps):sqrt()
    if rm then
      nnr.no_grad(function()
        local n = x:numel() / (x:size(1) * c)
        local unbiased = var:detach():reshape(x:size(1), c) * (n / math.max(n - 1, 1))
        rm:mul_(1 - momentum):add_(mean:detach():reshape(x:size(1), c):mean(1) * momentum)
        rv:mul_(1 - momentum):add_(unbiased:mean(1) * momentum)
      end)
    end
  else
    local view = { 1, c }
    for _ = 3, x:dim() do view[#view + 1] = 1 end
    y = (x - rm:view(view)) / (rv:view(view) + eps):sqrt()
  end
  return channel_affine(y, opts.weight, opts.bias)
end

-- rearranging channels and space ------------------------------------------------

-- F.pixel_shuffle(x [..., C r^2, H, W], r) -> [..., C, H r, W r]
function F.pixel_shuffle(x, r)
  tp("pixel_shuffle", x, "input")
  V.integer("pixel_shuffle", "upscale_factor", r, 1, 2 ^ 31 - 1)
  local nd = x:dim()
  if nd < 3 or x:size(nd - 2) % (r * r) ~= 0 then
    error(string.format("pixel_shuffle: input of shape %s, expected [..., C * %d, H, W] (channels divisible by upscale_factor^2)",
      shape(x), r * r), 0)
  end
  local sz = x:size()
  local lead = {}
  for d = 1, nd - 3 do lead[d] = sz[d] end
  local c, h, w = sz[nd - 2] / (r * r), sz[nd - 1], sz[nd]
  local b = x:reshape(-1, c, r, r, h, w):permute(1, 2, 5, 3, 6, 4)
  local out = { unpack(lead) }
  for _, v in ipairs { c, h * r, w * r } do out[#out + 1] = v end
  return b:reshape(out)
end

-- F.pixel_unshuffle(x [..., C, H r, W r], r) -> [..., C r^2, H, W]
function F.pixel_unshuffle(x, r)
  tp("pixel_unshuffle", x, "input")
  V.integer("pixel_unshuffle", "downscale_factor", r, 1, 2 ^ 31 - 1)
  local nd = x:dim()
  if nd < 3 or x:size(nd - 1) % r ~= 0 or x:size(nd) % r ~= 0 then
    error(string.format("pixel_unshuffle: input of shape %s, expected [..., C, H, W] with H and W divisible by downscale_factor %d",
      shape(x), r), 0)
  end
  local sz = x:size()
  local lead = {}
  for d = 1, nd - 3 do lead[d] = sz[d] end
  local c, h, w = sz[nd - 2], sz[nd - 1] / r, sz[nd] / r
  local b = x:reshape(-1, c, h, r, w, r):permute(1, 2, 4, 6, 3, 5)
  local out = { unpack(lead) }
  for _, v in ipairs { c * r * r, h, w } do out[#out + 1] = v end
  return b:reshape(out)
end

-- losses -------------------------------------------------------------------------
local function reduce(loss, reduction, op)
  reduction = reduction or "mean"
  if reduction == "mean" then return loss:mean() end
  if reduction == "sum" then return loss:sum() end
  if reduction == "none" then return loss end
  error(op .. ": reduction must be 'mean', 'sum' or 'none', got '" .. tostring(reduction) .. "'", 0)
end

-- reduction: "mean" (nil), "sum", "none", or extra ("batchmean" for kl_div)
local function check_reduction(op, r, extra)
  r = r or "mean"
  if r == "mean" or r == "sum" or r == "none" or (extra and r == extra) then return r end
  error(op .. ": reduction must be 'mean', 'sum'" .. (extra and ", 'none' or '" .. extra .. "'" or " or 'none'") .. ", got " .. V.show(r), 0)
end

-- PyTorch's default ignore_index, kept: it is no class in a 1-based world either, and label 0 stays
-- an error (the mark of 0-based labels not yet shifted) rather than a silently ignored class
F.DEFAULT_IGNORE_INDEX = -100

-- targets: 1-based class indices [N] (or [N, d...] with scores [N, C, d...]), i64 or i32: their
-- dtype and shape checked here (their values by the gather or the fused op that reads them)
local function check_targets(op, logits, target)
  if not nnr.is_tensor(target) then error(op .. ": target must be a tensor of class indices, got " .. type(target), 0) end
  if target.dtype ~= "i64" and target.dtype ~= "i32" then
    error(op .. ": target must hold class indices (i64), got " .. target.dtype, 0)
  end
  local ok = target:dim() == logits:dim() - 1 and target:size(1) == logits:size(1)
  for d = 3, logits:dim() do ok = ok and target:size(d - 1) == logits:size(d) end
  if not ok then
    error(op .. ": target of shape " .. shape(target) .. " does not fit input of shape " .. shape(logits) ..
      " (expected [N] class indices for [N, C] scores, or [N, d...] for [N, C, d...])", 0)
  end
end

-- picks logp[n, target[n]] along dim 2
local function pick(logp, target)
  return logp:gather(2, target:long():unsqueeze(2)):squeeze(2)
end

-- the picked log-probabilities and the targets that count: valid (nil: all of them) and safe (the targets
-- with the ignored ones set to class 1). gather checks every index, so the labels' range is checked
-- once, by it: the min, max and two syncs that said which label was out of range ran on every batch
-- and now run only to word the error. The ignored targets are masked only where they can occur: an
-- ignore_index in the class range always, one outside it (the default -100) when gather found a label
-- out of range and it is that index.
local INVALID = C.NNR_ERR_INVALID
local function pick_targets(op, logp, target, ignore_index)
  local classes = logp:size(2)
  local valid, safe = nil, target
  local function masked()
    valid = target:ne(ignore_index)
    safe = nnr.where(valid, target, 1)
  end
  if ignore_index >= 1 and ignore_index <= classes then masked() end
  local ok, picked = pcall(pick, logp, safe)
  -- only an index gather refused (not an interrupt or a lack of memory) is the labels' business
  if not ok and C.nnr_last_status() ~= INVALID then error(picked, 0) end
  if not ok and not valid and target:eq(ignore_index):any():item() then
    masked()
    ok, picked = pcall(pick, logp, safe)
  end
  if not ok then
    local lo, hi = safe:min():item(), safe:max():item()
    if lo >= 1 and hi <= classes then error(picked, 0) end    -- not the labels' range: gather's own error
    error(string.format("%s: target label %d is outside the class range 1..%d%s", op, lo < 1 and lo or hi, classes,
      ignore_index == F.DEFAULT_IGNORE_INDEX and "" or " (ignore_index is " .. ignore_index .. ")"), 0)
  end
  return picked, valid, safe
end

-- the class weight option: nil, or a floating-point tensor [C]
local function class_weight(op, w, classes)
  if w == nil then return nil end
  if not nnr.is_tensor(w) or w:dim() ~= 1 or (classes and w:size(1) ~= classes) or not w:is_floating_point() then
    error(string.format("%s: weight must be a floating-point tensor [%s] (one weight per class), got %s", op, classes or "C",
      nnr.is_tensor(w) and (w.dtype .. " " .. shape(w)) or type(w)), 0)
  end
  return w
end

-- options shared by nll_loss and cross_entropy, checked (modules check them when built)
function F._class_loss_options(op, opts)
  local o = (op == "nll_loss" and nll_options or cross_entropy_options)(opts)
  class_weight(op, o.weight)
  local ignore = V.integer(op, "ignore_index", o.ignore_index == nil and F.DEFAULT_IGNORE_INDEX or o.ignore_index, -2 ^ 31, 2 ^ 31 - 1)
  local eps = V.number(op, "label_smoothing", o.label_smoothing, { min = 0, max = 1, default = 0 })
  check_reduction(op, o.reduction)
  return o, ignore, eps
end

-- the weighted negative log likelihood of log-probabilities logp [N, C, d...] (PyTorch's nll_loss:
-- the mean divides by the summed weights of the targets that count)
local function nll(op, logp, target, o, ignore, eps)
  local weight = class_weight(op, o.weight, logp:size(2))
  check_targets(op, logp, target)
  local picked, valid, safe = pick_targets(op, logp, target, ignore)
  local reduction = o.reduction or "mean"
  local w                                  -- per-target weights [N, d...], 0 where ignored; nil: all 1
  if weight then
    w = weight:index_select(1, safe:reshape(-1):long()):view(target:size())
    if valid then w = nnr.where(valid, w, 0) end
  elseif valid then
    w = valid:to(logp.dtype)
  end
  local function reduced(l, denominator)
    if reduction == "none" then return l end
    if reduction == "sum" then return l:sum() end
    return l:sum() / denominator
  end
  local count = w and w:sum() or target:numel()
  if eps == 0 and not w and reduction ~= "none" then
    -- -sum / count as sum / -count (the same float): no negated copy of the picked values
    return reduction == "sum" and -picked:sum() or picked:sum() / -count
  end
  local loss = -picked
  if w then loss = loss * w end
  if eps == 0 then return reduced(loss, count) end
  -- label smoothing (PyTorch's): (1 - eps) nll + eps / C * sum_c -w_c logp_c, ignored targets 0
  local classes = logp:size(2)
  local smooth
  if weight then
    local view = { 1, classes }
    for _ = 3, logp:dim() do view[#view + 1] = 1 end
    smooth = -(logp * weight:view(view)):sum(2)
  else
    smooth = -logp:sum(2)
  end
  if valid then smooth = nnr.where(valid, smooth, 0) end
  return reduced(loss, count) * (1 - eps) + reduced(smooth, count) * (eps / classes)
end

-- F.nll_loss(logp, target[, {weight, ignore_index = -100, reduction}])
function F.nll_loss(logp, target, opts)
  local o, ignore = F._class_loss_options("nll_loss", opts)
  tp("nll_loss", logp, "input")
  if logp:dim() < 2 then error("nll_loss: expected log-probabilities of shape [N, C], got " .. shape(logp), 0) end
  return nll("nll_loss", logp, target, o, ignore, 0)
end

-- the fused loss (the core's CROSS_ENTROPY, one op each way): its reduction ids, and the error of a
-- label out of range with ignore_index named when it is not the default, as the composed form says it
local REDUCTION_ID = { none = 0, sum = 1, mean = 2 }
local function fused_cross_entropy(logits, target, ignore, reduction)
  if ignore == F.DEFAULT_IGNORE_INDEX then return call(C.nnr_cross_entropy, logits.p, target.p, 1, ignore, reduction) end
  local ok, r = pcall(call, C.nnr_cross_entropy, logits.p, target.p, 1, ignore, reduction)
  if ok then return r end
  if C.nnr_last_status() == INVALID and r:find("outside the class range", 1, true) then r = r .. " (ignore_index is " .. ignore .. ")" end
  error(r, 0)
end

-- F.cross_entropy(logits, target[, {weight, ignore_index = -100, reduction, label_smoothing}])
-- Scores [N, C] in f32 or f64 without class weights or label smoothing (a classifier's usual loss)
-- take the fused op; the rest is log_softmax and the negative log likelihood.
function F.cross_entropy(logits, target, opts)
  local o, ignore, eps = F._class_loss_options("cross_entropy", opts)
  tp("cross_entropy", logits, "input")
  if logits:dim() < 2 then error("cross_entropy: expected scores of shape [N, C], got " .. shape(logits), 0) end
  local dt = logits.dtype
  if eps == 0 and o.weight == nil and logits:dim() == 2 and (dt == "f32" or dt == "f64") then
    check_targets("cross_entropy", logits, target)
    return fused_cross_entropy(logits, target, ignore, REDUCTION_ID[o.reduction or "mean"])
  end
  return nll("cross_entropy", logits:log_softmax(2), target, o, ignore, eps)
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

-- (1 - y) x - log sigmoid(x), with -log sigmoid(x) = softplus(-x), the fused one without a threshold:
-- max(z, 0) + log1p(exp(-|z|)), stable for large |x|, its gradient sigmoid(x) - y (at x = 0 too)
function F.binary_cross_entropy_with_logits(x, y, opts)
  bce_options(opts)
  same_shape("binary_cross_entropy_with_logits", x, y)
  local loss = x * (1 - y) + activation(C.NNR_ACT_SOFTPLUS, "binary_cross_entropy_with_logits", -x, 1, 3e38)
  return reduce(loss, opts and opts.reduction, "binary_cross_entropy_with_logits")
end


local reduction_of = check_reduction

-- the loss-module options checked when the module is built (each F form checks them again)
F._loss_options = {
  CrossEntropyLoss = function(o) F._class_loss_options("cross_entropy", o) end,
  NLLLoss = function(o) F._class_loss_options("nll_loss", o) end,
  MSELoss = function(o) reduction_of("mse_loss", mse_options(o).reduction) end,
  L1Loss = function(o) reduction_of("l1_loss", l1_options(o).reduction) end,
  BCEWithLogitsLoss = function(o) reduction_of("binary_cross_entropy_with_logits", bce_options(o).reduction) end,
}

-- F.huber_loss(x, y[, {delta = 1, reduction}]): 0.5 e^2 where |e| < delta, delta (|e| - delta / 2) elsewhere
local function huber_opts(opts)
  opts = huber_options(opts)
  reduction_of("huber_loss", opts.reduction)
  return opts, V.number("huber_loss", "delta", opts.delta, { above = 0, default = 1 })
end
F._loss_options.HuberLoss = huber_opts
function F.huber_loss(x, y, opts)
  local o, delta = huber_opts(opts)
  same_shape("huber_loss", x, y)
  local e = x - y
  local a = e:abs()
  return reduce(nnr.where(a:lt(delta), e * e * 0.5, (a - 0.5 * delta) * delta), o.reduction, "huber_loss")
end

-- F.smooth_l1_loss(x, y[, {beta = 1, reduction}]): 0.5 e^2 / beta where |e| < beta, |e| - beta / 2 elsewhere
local function smooth_l1_opts(opts)
  opts = smooth_l1_options(opts)
  reduction_of("smooth_l1_loss", opts.reduction)
  return opts, V.number("smooth_l1_loss", "beta", opts.beta, { min = 0, default = 1 })
end
F._loss_options.SmoothL1Loss = smooth_l1_opts
function F.smooth_l1_loss(x, y, opts)
  local o, beta = smooth_l1_opts(opts)
  same_shape("smooth_l1_loss", x, y)
  local e = x - y
  local a = e:abs()
  if beta == 0 then return reduce(a, o.reduction, "smooth_l1_loss") end
  return reduce(nnr.where(a:lt(beta), e * e * (0.5 / beta), a - 0.5 * beta), o.reduction, "smooth_l1_loss")
end

-- F.kl_div(input, target[, {reduction = "mean", log_target = false}]): input holds log-probabilities;
-- target probabilities (log-probabilities with log_target). target log(target) is 0 where target is 0.
-- "batchmean" divides the sum by the batch size (dim 1), the true KL divergence per sample
local function kl_opts(opts)
  opts = kl_div_options(opts)
  reduction_of("kl_div", opts.reduction, "batchmean")
  V.boolean("kl_div", "log_target", opts.log_target)
  return opts
end
F._loss_options.KLDivLoss = kl_opts
function F.kl_div(input, target, opts)
  local o = kl_opts(opts)
  tp("kl_div", input, "input")
  tp("kl_div", target, "target")
  same_shape("kl_div", input, target)
  local loss
  if o.log_target then
    loss = target:exp() * (target - input)
  else
    local pos = target:gt(0)
    loss = nnr.where(pos, target * nnr.where(pos, target, 1):log(), 0) - target * input
  end
  if o.reduction == "batchmean" then
    return loss:sum() / (input:dim() > 0 and input:size(1) or 1)
  end
  return reduce(loss, o.reduction, "kl_div")
end

-- F.binary_cross_entropy(p, y[, {weight, reduction}]): -(y log p + (1 - y) log(1 - p)) * weight,
-- p in [0, 1], each log clamped at -100 as PyTorch's (so p = 0 or 1 gives a finite loss)
local function bce_prob_opts(opts)
  opts = bce_prob_options(opts)
  reduction_of("binary_cross_entropy", opts.reduction)
  if opts.weight ~= nil and not nnr.is_tensor(opts.weight) then
    error("binary_cross_entropy: weight must be a tensor (broadcast to the input's shape), got " .. type(opts.weight), 0)
  end
  return opts
end
F._loss_options.BCELoss = bce_prob_opts
function F.binary_cross_entropy(p, y, opts)
  local o = bce_prob_opts(opts)
  tp("binary_cross_entropy", p, "input")
  tp("binary_cross_entropy", y, "target")
  same_shape("binary_cross_entropy", p, y)
  if p:numel() > 0 then
    local lo, hi = p:min():item(), p:max():item()
    if not (lo >= 0 and hi <= 1) then
      error(string.format("binary_cross_entropy: input values must be probabilities in [0, 1], got %s (apply sigmoid first, or use binary_cross_entropy_with_logits)",
        not (lo >= 0) and V.show(lo) or V.show(hi)), 0)
    end
  end
  local loss = -(y * p:log():clamp(-100, nil) + (1 - y) * (1 - p):log():clamp(-100, nil))
  if o.weight then loss = loss * o.weight end
  return reduce(loss, o.reduction, "binary_cross_entropy")
end

-- F.cosine_embedding_loss(x1, x2, y[, {margin = 0, reduction}]): x1, x2 [N, D] (or [D]), y [N] of
-- 1 (similar: 1 - cos) and -1 (dissimilar: max(0, cos - margin)); any other label is an error
local function cosine_embedding_opts(opts)
  opts = cosine_embedding_options(opts)
  reduction_of("cosine_embedding_loss", opts.reduction)
  return opts, V.number("cosine_embedding_loss", "margin", opts.margin, { min = -1, max = 1, default = 0 })
end
F._loss_options.CosineEmbeddingLoss = cosine_embedding_opts
function F.cosine_embedding_loss(x1, x2, y, opts)
  local o, margin = cosine_embedding_opts(opts)
  tp("cosine_embedding_loss", x1, "input1")
  tp("cosine_embedding_loss", x2, "input2")
  tp("cosine_embedding_loss", y, "target")
  local nd = x1:dim()
  if shape(x1) ~= shape(x2) or (nd ~= 1 and nd ~= 2) or y:dim() ~= nd - 1 or (nd == 2 and y:size(1) ~= x1:size(1)) then
    error(string.format("cosine_embedding_loss: inputs of shapes %s and %s with target %s, expected [N, D], [N, D] and [N] (or [D], [D] and [])",
      shape(x1), shape(x2), shape(y)), 0)
  end
  if y:numel() > 0 and y:eq(1):logical_or(y:eq(-1)):logical_not():sum():item() > 0 then
    error("cosine_embedding_loss: target values must be 1 or -1", 0)
  end
  local EPS = 1e-12
  local prod = (x1 * x2):sum(nd)
  local cos = prod / (((x1 * x1):sum(nd) + EPS) * ((x2 * x2):sum(nd) + EPS)):sqrt()
  local loss = nnr.where(y:eq(1), 1 - cos, (cos - margin):clamp(0, nil))
  return reduce(loss, o.reduction, "cosine_embedding_loss")
end

return F
