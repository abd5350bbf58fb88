-- optim.RMSprop(params, {lr = 0.01, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0})
--
-- PyTorch's rule: g = grad + wd p;  s = alpha s + (1 - alpha) g^2;  a = sqrt(s) + eps
--   momentum 0: p = p - lr g / a;   else b = momentum b + g / a, p = p - lr b
local nnr = require "nnr"
local binding = require "nnr.binding"
local Optimizer = require "nnr.optim.optimizer"
local check = require "nnr.check"
local NON_NEGATIVE, UNIT = { min = 0 }, { min = 0, below = 1 }   -- specs made once, not per step

local RMSprop = Optimizer:extend("RMSprop", { lr = 0.01, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0 })

function RMSprop:check_group(g)
  Optimizer.check_group(self, g)
  check.number("RMSprop", "alpha", g.alpha, NON_NEGATIVE)
  check.number("RMSprop", "eps", g.eps, NON_NEGATIVE)
  check.number("RMSprop", "momentum", g.momentum, NON_NEGATIVE)
end

function RMSprop:update(p, grad, g, st)
  if not st then
    st = { square_avg = nnr.zeros_like(p) }
    if g.momentum ~= 0 then st.momentum_buffer = nnr.zeros_like(p) end
    self.state[p] = st
  end
  binding.check(binding.C.nnr_rmsprop_step(p.p, grad.p, st.square_avg.p, st.momentum_buffer and st.momentum_buffer.p or nil,
    g.lr, g.alpha, g.eps, g.weight_decay, g.momentum))
end

return RMSprop
