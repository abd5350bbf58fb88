-- Loss modules, each around its functional form with the options given once:
-- CrossEntropyLoss and NLLLoss {weight, ignore_index = -100, reduction[, label_smoothing]},
-- MSELoss, L1Loss, BCEWithLogitsLoss, BCELoss {weight}, HuberLoss {delta},
-- SmoothL1Loss {beta}, KLDivLoss {log_target; reduction also "batchmean"},
-- CosineEmbeddingLoss {margin} (forward(x1, x2, y)); reduction "mean" (default),
-- "sum", "none". Options are checked when the module is built. A class weight
-- is a buffer named "weight", as in PyTorch's state dicts.
local Module = require "nnr.nn.module"
local F = require "nnr.nn.functional"

local M = {}

local function loss_class(name, fn, check)
  local L = Module:extend(name)
  function L:__init(opts)
    Module.__init(self)
    local ok, err = pcall(check, opts)     -- the functional form's checks, named after the module
    if not ok then error((tostring(err):gsub("^[%w_]+: ", name .. ": ")), 0) end
    self.opts = {}
    for k, v in pairs(opts or {}) do self.opts[k] = v end
    if self.opts.weight ~= nil then self:register_buffer("weight", self.opts.weight) end
  end
  -- the weight buffer as it is now (load_state_dict and to() replace or move it)
  local function current(self)
    if self.weight ~= nil then self.opts.weight = self.weight end
    return self.opts
  end
  if fn == F.cosine_embedding_loss then
    function L:forward(x1, x2, target) return fn(x1, x2, target, current(self)) end
  else
    function L:forward(input, target) return fn(input, target, current(self)) end
  end
  M[name] = L
end
for name, fn in pairs { CrossEntropyLoss = F.cross_entropy, NLLLoss = F.nll_loss, MSELoss = F.mse_loss, L1Loss = F.l1_loss,
                        BCEWithLogitsLoss = F.binary_cross_entropy_with_logits, HuberLoss = F.huber_loss, SmoothL1Loss = F.smooth_l1_loss,
                        KLDivLoss = F.kl_div, BCELoss = F.binary_cross_entropy, CosineEmbeddingLoss = F.cosine_embedding_loss } do
  loss_class(name, fn, F._loss_options[name])
end

return M
