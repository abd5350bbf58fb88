-- optim.SGD(params, {lr, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false})
--
-- PyTorch's rule, per parameter p with gradient g:
--   d = g + weight_decay * p
--   b = d (first step) or momentum * b + (1 - dampening) * d
--   d = nesterov and d + momentum * b or b          (when momentum ~= 0)
--   p = p - lr * d
-- One fused kernel does it in a single pass over p, g and b.
local nnr = require "nnr"
local C = require("nnr.binding").C
local check = require "nnr.check"
local NON_NEGATIVE, UNIT = { min = 0 }, { min = 0, below = 1 }   -- specs made once, not per step
local status_check = require("nnr.binding").check
local Optimizer = require "nnr.optim.optimizer"

local SGD = Optimizer:extend("SGD", { lr = 0.001, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false })

function SGD:check_group(g)
  Optimizer.check_group(self, g)
  check.number("SGD", "momentum", g.momentum, NON_NEGATIVE)
  check.number("SGD", "dampening", g.dampening)
  check.boolean("SGD", "nesterov", g.nesterov)
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    error("SGD: nesterov needs momentum > 0 and dampening 0", 0)
  end
end

function SGD:update(p, grad, g, st)
  local fresh = 0
  if g.momentum ~= 0 and (not st or not st.momentum_buffer) then
    st = st or {}
    st.momentum_buffer = nnr.zeros_like(p)
    self.state[p] = st
    fresh = 1
  end
  local buf = st and st.momentum_buffer
  status_check(C.nnr_sgd_step(p.p, grad.p, buf and buf.p or nil, g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov and 1 or 0, fresh))
end

return SGD
