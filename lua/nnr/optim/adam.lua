-- optim.Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0})
-- optim.AdamW: the same with decoupled weight decay (default 0.01).
--
-- PyTorch's rule at step t: g = grad (+ wd * p for Adam; AdamW does p = p (1 - lr wd))
--   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
--   p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
-- fused into one pass per parameter.
local nnr = require "nnr"
local binding = require "nnr.binding"
local Optimizer = require "nnr.optim.optimizer"
local check = require "nnr.check"
local NON_NEGATIVE, UNIT = { min = 0 }, { min = 0, below = 1 }   -- specs made once, not per step

local function make(name, decoupled, default_wd)
  local A = Optimizer:extend(name, { lr = 0.001, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = default_wd })
  function A:check_group(g)
    Optimizer.check_group(self, g)
    if type(g.betas) ~= "table" or #g.betas ~= 2 then error(name .. ": betas must be a pair {beta1, beta2}", 0) end
    check.number(name, "betas[1]", g.betas[1], UNIT)
    check.number(name, "betas[2]", g.betas[2], UNIT)
    check.number(name, "eps", g.eps, NON_NEGATIVE)
  end
  function A:update(p, grad, g, st)
    if not st then
      st = { step = 0, exp_avg = nnr.zeros_like(p), exp_avg_sq = nnr.zeros_like(p) }
      self.state[p] = st
    end
    st.step = st.step + 1
    binding.check(binding.C.nnr_adam_step(p.p, grad.p, st.exp_avg.p, st.exp_avg_sq.p, g.lr, g.betas[1], g.betas[2], g.eps,
      g.weight_decay, st.step, decoupled and 1 or 0))
  end
  return A
end

return { Adam = make("Adam", false, 0), AdamW = make("AdamW", true, 0.01) }
