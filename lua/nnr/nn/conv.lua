-- nn.Conv2d(in, out, kernel[, {stride, padding, dilation, groups, bias}]):
-- NCHW input [N, C, H, W] (or [C, H, W]). PyTorch's default initialisation.
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local V = require "nnr.check"
local F = require "nnr.nn.functional"

local Conv2d = Module:extend("Conv2d")

local function pair(v) if type(v) == "table" then return v[1], v[2] end return v, v end

function Conv2d:__init(in_channels, out_channels, kernel_size, opts)
  Module.__init(self)
  opts = V.options("Conv2d", opts, { stride = true, padding = true, dilation = true, groups = true, bias = true, dtype = true, device = true })
  V.integer("Conv2d", "in_channels", in_channels, 1)
  V.integer("Conv2d", "out_channels", out_channels, 1)
  local groups = V.integer("Conv2d", "groups", opts.groups or 1, 1)
  F._pair(kernel_size, "kernel_size", "Conv2d")
  F._pair(opts.stride or 1, "stride", "Conv2d")
  F._pair(opts.padding or 0, "padding", "Conv2d", 0)
  F._pair(opts.dilation or 1, "dilation", "Conv2d")
  if in_channels % groups ~= 0 or out_channels % groups ~= 0 then
    error(string.format("Conv2d: in_channels (%d) and out_channels (%d) must be divisible by groups (%d)", in_channels, out_channels, groups), 0)
  end
  self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
  self.kh, self.kw = pair(kernel_size)
  self.stride, self.padding, self.dilation = opts.stride or 1, opts.padding or 0, opts.dilation or 1
  local fan_in = in_channels / groups * self.kh * self.kw
  local bound = 1 / math.sqrt(fan_in)
  local o = { dtype = opts.dtype, device = opts.device }
  self:register_parameter("weight", nnr.empty(out_channels, in_channels / groups, self.kh, self.kw, o):uniform_(-bound, bound))
  if opts.bias ~= false then self:register_parameter("bias", nnr.empty(out_channels, o):uniform_(-bound, bound)) end
end

function Conv2d:forward(x) return self:_forward(x, false) end

-- a ReLU after it runs in the same op (F.conv2d_relu)
function Conv2d:fuse_next(next_module)
  if self.forward ~= Conv2d.forward or next_module:fusable_activation() ~= "relu" then return nil end
  return function(x) return self:_forward(x, true) end
end

-- relu: the ReLU that follows in a Sequential, fused into the convolution (F.conv2d_relu)
function Conv2d:_forward(x, relu)
  local unbatched = x:dim() == 3
  if unbatched then x = x:unsqueeze(1) end
  if x:dim() ~= 4 or x:size(2) ~= self.in_channels then
    error(string.format("Conv2d(%d -> %d, %dx%d): input of shape %s, expected [N, %d, H, W]", self.in_channels, self.out_channels,
      self.kh, self.kw, nnr.shape_str(x:size()), self.in_channels), 0)
  end
  local y = (relu and F.conv2d_relu or F.conv2d)(x, self.weight, self.bias,
    { stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups })
  if unbatched then y = y:squeeze(1) end
  return y
end

function Conv2d:extra_repr()
  return string.format("%d, %d, kernel_size=%dx%d, stride=%s, padding=%s", self.in_channels, self.out_channels, self.kh, self.kw,
    tostring(type(self.stride) == "table" and table.concat(self.stride, "x") or self.stride),
    tostring(type(self.padding) == "table" and table.concat(self.padding, "x") or self.padding))
end

return Conv2d
