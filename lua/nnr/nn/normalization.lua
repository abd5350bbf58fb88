-- BatchNorm1d/2d (running statistics; batch statistics in training, running
-- ones in eval) and LayerNorm. Defaults as PyTorch: eps 1e-5, momentum 0.1,
-- affine weight 1 and bias 0.
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

return M
