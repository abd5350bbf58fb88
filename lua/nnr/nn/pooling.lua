-- Pooling layers over NCHW input: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d; over
-- NCL input: MaxPool1d, AvgPool1d.
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local F = require "nnr.nn.functional"

local M = {}

local function batched(name, x, fn)
  if not nnr.is_tensor(x) then error(name .. ": input must be a tensor, got " .. type(x), 0) end
  if x:dim() == 3 then return fn(x:unsqueeze(1)):squeeze(1) end
  if x:dim() ~= 4 then error(name .. ": input of shape " .. nnr.shape_str(x:size()) .. ", expected [N, C, H, W]", 0) end
  return fn(x)
end

local MaxPool2d = Module:extend("MaxPool2d")
M.MaxPool2d = MaxPool2d
function MaxPool2d:__init(kernel_size, opts)
  Module.__init(self)
  self.kernel_size, self.opts = kernel_size, opts or {}
  F.max_pool2d(nil, kernel_size, self.opts, true)   -- checks the options now, not at the first forward
end
function MaxPool2d:forward(x)
  return batched("MaxPool2d", x, function(t) return F.max_pool2d(t, self.kernel_size, self.opts) end)
end
function MaxPool2d:extra_repr() return "kernel_size=" .. tostring(self.kernel_size) end

local AvgPool2d = Module:extend("AvgPool2d")
M.AvgPool2d = AvgPool2d
function AvgPool2d:__init(kernel_size, opts)
  Module.__init(self)
  self.kernel_size, self.opts = kernel_size, opts or {}
  F.avg_pool2d(nil, kernel_size, self.opts, true)
end
function AvgPool2d:forward(x)
  return batched("AvgPool2d", x, function(t) return F.avg_pool2d(t, self.kernel_size, self.opts) end)
end
function AvgPool2d:extra_repr() return "kernel_size=" .. tostring(self.kernel_size) end

local AdaptiveAvgPool2d = Module:extend("AdaptiveAvgPool2d")
M.AdaptiveAvgPool2d = AdaptiveAvgPool2d
function AdaptiveAvgPool2d:__init(output_size)
  Module.__init(self)
  F._pair(output_size, "output_size", "AdaptiveAvgPool2d")
  self.output_size = output_size
end
function AdaptiveAvgPool2d:forward(x)
  return batched("AdaptiveAvgPool2d", x, function(t) return F.adaptive_avg_pool2d(t, self.output_size) end)
end
function AdaptiveAvgPool2d:extra_repr() return "output_size=" .. tostring(self.output_size) end

local AdaptiveMaxPool2d = Module:extend("AdaptiveMaxPool2d")
M.AdaptiveMaxPool2d = AdaptiveMaxPool2d
function AdaptiveMaxPool2d:__init(output_size)
  Module.__init(self)
  F._pair(output_size, "output_size", "AdaptiveMaxPool2d")
  self.output_size = output_size
end
function AdaptiveMaxPool2d:forward(x)
  return batched("AdaptiveMaxPool2d", x, function(t) return F.adaptive_max_pool2d(t, self.output_size) end)
end
function AdaptiveMaxPool2d:extra_repr() return "output_size=" .. tostring(self.output_size) end

-- [N, C, L], or unbatched [C, L]
local function batched1d(name, x, fn)
  if not nnr.is_tensor(x) then error(name .. ": input must be a tensor, got " .. type(x), 0) end
  if x:dim() == 2 then return fn(x:unsqueeze(1)):squeeze(1) end
  if x:dim() ~= 3 then error(name .. ": input of shape " .. nnr.shape_str(x:size()) .. ", expected [N, C, L] or [C, L]", 0) end
  return fn(x)
end

local function pool1d_class(name, fn)
  local P = Module:extend(name)
  function P:__init(kernel_size, opts)
    Module.__init(self)
    self.kernel_size, self.opts = kernel_size, opts or {}
    fn(nil, kernel_size, self.opts, true)   -- checks the options now, not at the first forward
  end
  function P:forward(x)
    return batched1d(name, x, function(t) return fn(t, self.kernel_size, self.opts) end)
  end
  function P:extra_repr() return "kernel_size=" .. tostring(self.kernel_size) end
  M[name] = P
end
pool1d_class("MaxPool1d", F.max_pool1d)
pool1d_class("AvgPool1d", F.avg_pool1d)

return M
