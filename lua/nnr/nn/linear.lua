-- nn.Linear(in, out[, {bias = true}]): y = x W^T + b, x [..., in].
-- Weights and bias are initialised as PyTorch does: U(-1/sqrt(in), 1/sqrt(in)).
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local F = require "nnr.nn.functional"
local V = require "nnr.check"

local Linear = Module:extend("Linear")

function Linear:__init(in_features, out_features, opts)
  Module.__init(self)
  opts = V.options("Linear", opts, { bias = true, dtype = true, device = true })
  self.in_features = V.integer("Linear", "in_features", in_features, 1)
  self.out_features = V.integer("Linear", "out_features", out_features, 1)
  local bound = 1 / math.sqrt(in_features)
  local o = { dtype = opts.dtype, device = opts.device }
  self:register_parameter("weight", nnr.empty(out_features, in_features, o):uniform_(-bound, bound))
  if opts.bias ~= false then
    self:register_parameter("bias", nnr.empty(out_features, o):uniform_(-bound, bound))
  end
end

local is_tensor = nnr.is_tensor
local function check_input(self, x)
  if not is_tensor(x) then
    error(string.format("Linear(%d -> %d): input must be a tensor, got %s", self.in_features, self.out_features, type(x)), 0)
  end
  if x:dim() < 1 or x:size(-1) ~= self.in_features then
    error(string.format("Linear(%d -> %d): input of shape %s, expected [..., %d]", self.in_features, self.out_features,
      nnr.shape_str(x:size()), self.in_features), 0)
  end
end

function Linear:forward(x)
  check_input(self, x)
  return F.linear(x, self.weight, self.bias)
end

-- a ReLU after it runs in the same op (F.linear_relu: applied while the output is in cache, and the
-- backward reads the mask from the output)
function Linear:fuse_next(next_module)
  if self.forward ~= Linear.forward or next_module:fusable_activation() ~= "relu" then return nil end
  return function(x)
    check_input(self, x)
    return F.linear_relu(x, self.weight, self.bias)
  end
end

function Linear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s", self.in_features, self.out_features, tostring(self.bias ~= nil))
end

return Linear
