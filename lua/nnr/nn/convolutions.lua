-- Conv1d, ConvTranspose1d and ConvTranspose2d (Conv2d is conv.lua), with PyTorch's arguments,
-- parameter layouts and initialisation, so that state dicts move both ways:
--   Conv1d(in, out, k[, {stride, padding, dilation, groups, bias, dtype, device}])       weight [out, in/groups, k]
--   ConvTranspose2d(in, out, k[, {stride, padding, output_padding, groups, bias, dilation, dtype, device}])
--                                                                       weight [in, out/groups, kh, kw]
-- Weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = weight:size(2) * kernel elements
-- (PyTorch's kaiming_uniform_(a = sqrt(5)) and its bias rule).
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local V = require "nnr.check"
local F = require "nnr.nn.functional"

local M = {}

local function show(v) if type(v) == "table" then return table.concat(v, "x") end return tostring(v) end

-- one class per layer kind: dims 1 or 2, transposed or not
local function conv_class(name, dims, transposed)
  local Conv = Module:extend(name)
  local known = { stride = true, padding = true, dilation = true, groups = true, bias = true, dtype = true, device = true }
  if transposed then known.output_padding = true end
  local fn = dims == 1 and (transposed and F.conv_transpose1d or F.conv1d) or F.conv_transpose2d
  local window = dims == 1 and function(v, what, min) return F._single(v, what, name, min) end
    or function(v, what, min) return { F._pair(v, what, name, min) } end

  function Conv:__init(in_channels, out_channels, kernel_size, opts)
    Module.__init(self)
    opts = V.options(name, opts, known)
    V.integer(name, "in_channels", in_channels, 1)
    V.integer(name, "out_channels", out_channels, 1)
    local groups = V.integer(name, "groups", opts.groups or 1, 1)
    if in_channels % groups ~= 0 or out_channels % groups ~= 0 then
      error(string.format("%s: in_channels (%d) and out_channels (%d) must be divisible by groups (%d)", name, in_channels, out_channels, groups), 0)
    end
    local k = window(kernel_size, "kernel_size")
    self.stride = window(opts.stride or 1, "stride")
    self.padding = window(opts.padding or 0, "padding", 0)
    self.dilation = window(opts.dilation or 1, "dilation")
    if transposed then
      self.output_padding = window(opts.output_padding or 0, "output_padding", 0)
      local op, st, dl = self.output_padding, self.stride, self.dilation
      if dims == 1 then op, st, dl = { op }, { st }, { dl } end
      for d = 1, dims do
        if op[d] >= st[d] and op[d] >= dl[d] then
          error(string.format("%s: output_padding (%s) must be smaller than either stride (%s) or dilation (%s)", name, show(self.output_padding),
            show(self.stride), show(self.dilation)), 0)
        end
      end
    end
    self.in_channels, self.out_channels, self.groups, self.kernel_size = in_channels, out_channels, groups, k
    local shape = transposed and { in_channels, out_channels / groups } or { out_channels, in_channels / groups }
    local kernel_elems = 1
    for _, v in ipairs(dims == 1 and { k } or k) do shape[#shape + 1] = v; kernel_elems = kernel_elems * v end
    local bound = 1 / math.sqrt(shape[2] * kernel_elems)
    local o = { dtype = opts.dtype, device = opts.device }
    self:register_parameter("weight", nnr.empty(shape, o):uniform_(-bound, bound))
    if opts.bias ~= false then self:register_parameter("bias", nnr.empty(out_channels, o):uniform_(-bound, bound)) end
  end

  function Conv:forward(x)
    local batched_dims = dims + 2
    if not nnr.is_tensor(x) then error(string.format("%s: input must be a tensor, got %s", name, type(x)), 0) end
    local unbatched = x:dim() == batched_dims - 1
    if unbatched then x = x:unsqueeze(1) end
    if x:dim() ~= batched_dims or x:size(2) ~= self.in_channels then
      error(string.format("%s(%d -> %d, kernel %s): input of shape %s, expected [N, %d, %s]", name, self.in_channels, self.out_channels,
        show(self.kernel_size), nnr.shape_str(x:size()), self.in_channels, dims == 1 and "L" or "H, W"), 0)
    end
    local opts = { stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups,
                   output_padding = self.output_padding }
    local y = fn(x, self.weight, self.bias, opts)
    if unbatched then y = y:squeeze(1) end
    return y
  end

  function Conv:extra_repr()
    local s = string.format("%d, %d, kernel_size=%s, stride=%s, padding=%s", self.in_channels, self.out_channels, show(self.kernel_size),
      show(self.stride), show(self.padding))
    if transposed then s = s .. ", output_padding=" .. show(self.output_padding) end
    if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
    return s
  end
  M[name] = Conv
end

conv_class("Conv1d", 1, false)
conv_class("ConvTranspose1d", 1, true)
conv_class("ConvTranspose2d", 2, true)

return M
