-- optim.Adagrad(params, {lr = 0.01, lr_decay = 0, weight_decay = 0, initial_accumulator_value = 0, eps = 1e-10})
--
-- PyTorch's rule at step t (Duchi et al. 2011), per parameter p with gradient g:
--   g = g + weight_decay * p
--   clr = lr / (1 + (t - 1) * lr_decay)
--   sum = sum + g^2                         (sum starts at initial_accumulator_value)
--   p = p - clr * g / (sqrt(sum) + eps)
-- State per parameter: step, sum (PyTorch's names, so state dicts read alike). Composed from
-- in-place tensor ops into one scratch tensor per parameter (no allocation per step without
-- weight decay); the scratch is not state and is not saved.
local nnr = require "nnr"
local Optimizer = require "nnr.optim.optimizer"
local check = require "nnr.check"
local NON_NEGATIVE = { min = 0 }   -- specs made once, not per step

local Adagrad = Optimizer:extend("Adagrad", { lr = 0.01, lr_decay = 0, weight_decay = 0, initial_accumulator_value = 0, eps = 1e-10 })

function Adagrad:check_group(g)
  Optimizer.check_group(self, g)
  check.number("Adagrad", "lr_decay", g.lr_decay, NON_NEGATIVE)
  check.number("Adagrad", "initial_accumulator_value", g.initial_accumulator_value, NON_NEGATIVE)
  check.number("Adagrad", "eps", g.eps, NON_NEGATIVE)
end

function Adagrad:step() return nnr.no_grad(Optimizer.step, self) end

function Adagrad:update(p, grad, g, st)
  if not st then
    st = { step = 0, sum = nnr.full_like(p, g.initial_accumulator_value) }
    self.state[p] = st
  end
  self.scratch = self.scratch or setmetatable({}, { __mode = "k" })
  local buf = self.scratch[p]
  if not buf then buf = nnr.empty_like(p); self.scratch[p] = buf end
  st.step = st.step + 1
  if g.weight_decay ~= 0 then grad = grad + p * g.weight_decay end
  local clr = g.lr / (1 + (st.step - 1) * g.lr_decay)
  st.sum:add_(buf:copy_(grad):mul_(grad))
  buf:copy_(st.sum):sqrt_():add_(g.eps):reciprocal_():mul_(grad):mul_(clr)
  p:sub_(buf)
end

return Adagrad
