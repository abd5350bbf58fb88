-- BatchNorm1d/2d (running statistics; batch statistics in training, running
-- ones in eval), LayerNorm, GroupNorm and InstanceNorm1d/2d. Defaults as
-- PyTorch: eps 1e-5, momentum 0.1, affine weight 1 and bias 0 (InstanceNorm:
-- affine and track_running_stats off).
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local V = require "nnr.check"
local F = require "nnr.nn.functional"

local M = {}

local function batch_norm_class(name, expected_dims)
  local BN = Module:extend(name)
  function BN:__init(num_features, opts)
    Module.__init(self)
    opts = V.options(name, opts, { eps = true, momentum = true, affine = true, track_running_stats = true, dtype = true, device = true })
    self.num_features = V.integer(name, "num_features", num_features, 1)
    self.eps = V.number(name, "eps", opts.eps, { above = 0, default = 1e-5 })
    self.momentum = V.number(name, "momentum", opts.momentum, { min = 0, max = 1, default = 0.1 })
    local o = { dtype = opts.dtype, device = opts.device }
    if opts.affine ~= false then
      self:register_parameter("weight", nnr.ones(num_features, o))
      self:register_parameter("bias", nnr.zeros(num_features, o))
    end
    if opts.track_running_stats ~= false then
      self:register_buffer("running_mean", nnr.zeros(num_features, o))
      self:register_buffer("running_var", nnr.ones(num_features, o))
      self:register_buffer("num_batches_tracked", nnr.zeros({}, { dtype = "i64", device = opts.device }))
    end
  end
  function BN:forward(x)
    local ok = false
    for _, d in ipairs(expected_dims) do ok = ok or x:dim() == d end
    if not ok or x:size(2) ~= self.num_features then
      error(string.format("%s(%d): input of shape %s, expected [N, %d%s]", name, self.num_features, nnr.shape_str(x:size()),
        self.num_features, expected_dims[1] == 4 and ", H, W" or ""), 0)
    end
    local use_batch = self.training or not self.running_mean
    if self.training and self.num_batches_tracked then
      nnr.no_grad(function() self.num_batches_tracked:add_(1) end)
    end
    return F.batch_norm(x, self.training and self.running_mean or self.running_mean, self.running_var, self.weight, self.bias,
      use_batch, self.momentum, self.eps)
  end
  function BN:extra_repr() return string.format("%d, eps=%g, momentum=%g", self.num_features, self.eps, self.momentum) end
  return BN
end

M.BatchNorm1d = batch_norm_class("BatchNorm1d", { 2, 3 })
M.BatchNorm2d = batch_norm_class("BatchNorm2d", { 4 })

local LayerNorm = Module:extend("LayerNorm")
M.LayerNorm = LayerNorm
function LayerNorm:__init(shape, opts)
  Module.__init(self)
  opts = V.options("LayerNorm", opts, { eps = true, elementwise_affine = true, dtype = true, device = true })
  self.shape = type(shape) == "table" and shape or { shape }
  if #self.shape == 0 then error("LayerNorm: normalized_shape must have at least one size", 0) end
  for i = 1, #self.shape do V.integer("LayerNorm", "normalized_shape[" .. i .. "]", self.shape[i], 1) end
  self.eps = V.number("LayerNorm", "eps", opts.eps, { above = 0, default = 1e-5 })
  local o = { dtype = opts.dtype, device = opts.device }
  if opts.elementwise_affine ~= false then
    self:register_parameter("weight", nnr.ones(self.shape, o))
    self:register_parameter("bias", nnr.zeros(self.shape, o))
  end
end
function LayerNorm:forward(x)
  local n = #self.shape
  local ok = x:dim() >= n
  for i = 1, n do ok = ok and x:size(x:dim() - n + i) == self.shape[i] end
  if not ok then
    error("LayerNorm(" .. nnr.shape_str(self.shape) .. "): input of shape " .. nnr.shape_str(x:size()) ..
      " does not end in " .. nnr.shape_str(self.shape), 0)
  end
  return F.layer_norm(x, n, self.weight, self.bias, self.eps)
end
function LayerNorm:extra_repr() return nnr.shape_str(self.shape) .. ", eps=" .. self.eps end

-- GroupNorm(num_groups, num_channels[, {eps = 1e-5, affine = true, dtype, device}]): input [N, C, ...]
local GroupNorm = Module:extend("GroupNorm")
M.GroupNorm = GroupNorm
function GroupNorm:__init(num_groups, num_channels, opts)
  Module.__init(self)
  opts = V.options("GroupNorm", opts, { eps = true, affine = true, dtype = true, device = true })
  self.num_groups = V.integer("GroupNorm", "num_groups", num_groups, 1)
  self.num_channels = V.integer("GroupNorm", "num_channels", num_channels, 1)
  if num_channels % num_groups ~= 0 then
    error(string.format("GroupNorm: num_channels (%d) must be divisible by num_groups (%d)", num_channels, num_groups), 0)
  end
  self.eps = V.number("GroupNorm", "eps", opts.eps, { above = 0, default = 1e-5 })
  self.affine = opts.affine ~= false
  local o = { dtype = opts.dtype, device = opts.device }
  if self.affine then
    self:register_parameter("weight", nnr.ones(num_channels, o))
    self:register_parameter("bias", nnr.zeros(num_channels, o))
  end
end
function GroupNorm:forward(x)
  if not nnr.is_tensor(x) or x:dim() < 2 or x:size(2) ~= self.num_channels then
    error(string.format("GroupNorm(%d, %d): input of shape %s, expected [N, %d, ...]", self.num_groups, self.num_channels,
      nnr.is_tensor(x) and nnr.shape_str(x:size()) or type(x), self.num_channels), 0)
  end
  return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
end
function GroupNorm:extra_repr()
  return string.format("%d, %d, eps=%g, affine=%s", self.num_groups, self.num_channels, self.eps, tostring(self.affine))
end

-- InstanceNorm1d/2d(num_features[, {eps = 1e-5, momentum = 0.1, affine = false, track_running_stats = false,
-- dtype, device}]): input [N, C, L] / [N, C, H, W], or unbatched [C, L] / [C, H, W]. With
-- track_running_stats, eval mode normalizes with the running statistics.
local function instance_norm_class(name, spatial)
  local IN = Module:extend(name)
  function IN:__init(num_features, opts)
    Module.__init(self)
    opts = V.options(name, opts, { eps = true, momentum = true, affine = true, track_running_stats = true, dtype = true, device = true })
    self.num_features = V.integer(name, "num_features", num_features, 1)
    self.eps = V.number(name, "eps", opts.eps, { above = 0, default = 1e-5 })
    self.momentum = V.number(name, "momentum", opts.momentum, { min = 0, max = 1, default = 0.1 })
    self.affine = V.boolean(name, "affine", opts.affine)
    self.track_running_stats = V.boolean(name, "track_running_stats", opts.track_running_stats)
    local o = { dtype = opts.dtype, device = opts.device }
    if self.affine then
      self:register_parameter("weight", nnr.ones(num_features, o))
      self:register_parameter("bias", nnr.zeros(num_features, o))
    end
    if self.track_running_stats then
      self:register_buffer("running_mean", nnr.zeros(num_features, o))
      self:register_buffer("running_var", nnr.ones(num_features, o))
      self:register_buffer("num_batches_tracked", nnr.zeros({}, { dtype = "i64", device = opts.device }))
    end
  end
  function IN:forward(x)
    local batched = nnr.is_tensor(x) and x:dim() == spatial + 2
    if not nnr.is_tensor(x) or not (batched or x:dim() == spatial + 1) or x:size(batched and 2 or 1) ~= self.num_features then
      error(string.format("%s(%d): input of shape %s, expected [N, %d, %s] or [%d, %s]", name, self.num_features,
        nnr.is_tensor(x) and nnr.shape_str(x:size()) or type(x), self.num_features, spatial == 1 and "L" or "H, W", self.num_features,
        spatial == 1 and "L" or "H, W"), 0)
    end
    if not batched then x = x:unsqueeze(1) end
    local use_input = self.training or not self.track_running_stats   -- (PyTorch's never counts num_batches_tracked)
    local y = F.instance_norm(x, { running_mean = self.running_mean, running_var = self.running_var, weight = self.weight, bias = self.bias,
      use_input_stats = use_input, momentum = self.momentum, eps = self.eps })
    if not batched then y = y:squeeze(1) end
    return y
  end
  function IN:extra_repr()
    return string.format("%d, eps=%g, momentum=%g, affine=%s, track_running_stats=%s", self.num_features, self.eps, self.momentum,
      tostring(self.affine), tostring(self.track_running_stats))
  end
  return IN
end

M.InstanceNorm1d = instance_norm_class("InstanceNorm1d", 1)
M.InstanceNorm2d = instance_norm_class("InstanceNorm2d", 2)

return M
