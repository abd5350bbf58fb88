-- Learning-rate schedulers: call step() once per epoch (or per iteration,
-- as you designed the schedule). Each sets the lr of every parameter group
-- from its initial lr, as PyTorch's closed forms do.
--   StepLR(opt, {step_size, gamma = 0.1})
--   CosineAnnealingLR(opt, {T_max, eta_min = 0})
--   LinearLR(opt, {start_factor = 1/3, end_factor = 1, total_iters = 5})   (linear warm-up)
local check = require "nnr.check"
local M = {}

-- validate(opts) checks a scheduler's options once, at construction (unknown ones are refused)
local function scheduler(name, lr_at, known, validate)
  local S = {}
  S.__index = S
  S.__name = name
  setmetatable(S, { __call = function(c, opt, opts)
    if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then error(name .. ": expected an optimizer", 0) end
    opts = check.options(name, opts, known)
    validate(opts)
    local s = setmetatable({ optimizer = opt, opts = opts, last_epoch = 0 }, c)
    s.base_lrs = {}
    for i, g in ipairs(opt.param_groups) do s.base_lrs[i] = g.initial_lr or g.lr; g.initial_lr = s.base_lrs[i] end
    s:apply()
    return s
  end })
  function S:apply()
    for i, g in ipairs(self.optimizer.param_groups) do g.lr = lr_at(self.base_lrs[i], self.last_epoch, self.opts) end
  end
  function S:step()
    self.last_epoch = self.last_epoch + 1
    self:apply()
  end
  function S:get_last_lr()
    local out = {}
    for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
    return out
  end
  function S:state_dict() return { last_epoch = self.last_epoch } end
  function S:load_state_dict(sd)
    if type(sd) ~= "table" then error(name .. ":load_state_dict: expected a table", 0) end
    self.last_epoch = check.integer(name .. ":load_state_dict", "last_epoch", sd.last_epoch, 0)
    self:apply()
  end
  return S
end

M.StepLR = scheduler("StepLR", function(base, epoch, o)
  return base * (o.gamma or 0.1) ^ math.floor(epoch / o.step_size)
end, { step_size = true, gamma = true }, function(o)
  check.integer("StepLR", "step_size", o.step_size, 1)
  check.number("StepLR", "gamma", o.gamma, { min = 0, optional = true })
end)

M.CosineAnnealingLR = scheduler("CosineAnnealingLR", function(base, epoch, o)
  local eta = o.eta_min or 0
  return eta + (base - eta) * (1 + math.cos(math.pi * math.min(epoch, o.T_max) / o.T_max)) / 2
end, { T_max = true, eta_min = true }, function(o)
  check.integer("CosineAnnealingLR", "T_max", o.T_max, 1)
  check.number("CosineAnnealingLR", "eta_min", o.eta_min, { min = 0, optional = true })
end)

M.LinearLR = scheduler("LinearLR", function(base, epoch, o)
  local s, e, n = o.start_factor or 1 / 3, o.end_factor or 1, o.total_iters or 5
  local t = math.min(epoch, n) / n
  return base * (s + (e - s) * t)
end, { start_factor = true, end_factor = true, total_iters = true }, function(o)
  check.number("LinearLR", "start_factor", o.start_factor, { above = 0, max = 1, optional = true })
  check.number("LinearLR", "end_factor", o.end_factor, { min = 0, max = 1, optional = true })
  check.integer("LinearLR", "total_iters", o.total_iters, 1, nil, true)
end)
M.LinearWarmup = M.LinearLR

return M
