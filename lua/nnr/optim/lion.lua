-- optim.Lion(params, {lr = 1e-4, betas = {0.9, 0.99}, weight_decay = 0})
--
-- EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), the
-- update of the lucidrains/lion-pytorch reference, per parameter p with gradient g:
--   p = p * (1 - lr * weight_decay)               (decoupled weight decay)
--   p = p - lr * sign(beta1 * m + (1 - beta1) * g)
--   m = beta2 * m + (1 - beta2) * g
-- The update has the same magnitude everywhere, so Lion wants a learning rate 3-10x smaller than
-- AdamW's and a weight decay 3-10x larger. State per parameter: exp_avg (m, starting at zero).
-- Composed from in-place tensor ops into one scratch tensor per parameter: no allocation per step
-- (the interpolations are written b (m - g) + g, which needs no temporary).
local nnr = require "nnr"
local Optimizer = require "nnr.optim.optimizer"
local check = require "nnr.check"
local UNIT = { min = 0, max = 1 }   -- specs made once, not per step

local Lion = Optimizer:extend("Lion", { lr = 1e-4, betas = { 0.9, 0.99 }, weight_decay = 0 })

function Lion:check_group(g)
  Optimizer.check_group(self, g)
  if type(g.betas) ~= "table" or #g.betas ~= 2 then error("Lion: betas must be a pair {beta1, beta2}", 0) end
  check.number("Lion", "betas[1]", g.betas[1], UNIT)
  check.number("Lion", "betas[2]", g.betas[2], UNIT)
end

function Lion:step() return nnr.no_grad(Optimizer.step, self) end

function Lion:update(p, grad, g, st)
  if not st then
    st = { exp_avg = nnr.zeros_like(p) }
    self.state[p] = st
  end
  self.scratch = self.scratch or setmetatable({}, { __mode = "k" })
  local buf = self.scratch[p]
  if not buf then buf = nnr.empty_like(p); self.scratch[p] = buf end
  local m, b1, b2 = st.exp_avg, g.betas[1], g.betas[2]
  if g.weight_decay ~= 0 then p:mul_(1 - g.lr * g.weight_decay) end
  buf:copy_(m):sub_(grad):mul_(b1):add_(grad):sign_():mul_(g.lr)
  p:sub_(buf)
  m:sub_(grad):mul_(b2):add_(grad)
end

return Lion
