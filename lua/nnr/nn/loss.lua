-- Loss modules: CrossEntropyLoss (class indices, label smoothing), NLLLoss,
-- MSELoss, L1Loss, BCEWithLogitsLoss; reduction "mean" (default), "sum", "none".
local Module = require "nnr.nn.module"
local F = require "nnr.nn.functional"

local M = {}

local function loss_class(name, fn)
  local L = Module:extend(name)
  function L:__init(opts)
    Module.__init(self)
    self.opts = opts or {}
  end
  function L:forward(input, target) return fn(input, target, self.opts) end
  M[name] = L
end
loss_class("CrossEntropyLoss", F.cross_entropy)
loss_class("NLLLoss", F.nll_loss)
loss_class("MSELoss", F.mse_loss)
loss_class("L1Loss", F.l1_loss)
loss_class("BCEWithLogitsLoss", F.binary_cross_entropy_with_logits)

return M
