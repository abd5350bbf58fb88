-- Learning-rate schedulers: call step() once per epoch (or per iteration,
-- as you designed the schedule). Each sets the lr of every parameter group
-- from its initial lr, as PyTorch's closed forms do.
--   StepLR(opt, {step_size, gamma = 0.1})
--   CosineAnnealingLR(opt, {T_max, eta_min = 0})
--   LinearLR(opt, {start_factor = 1/3, end_factor = 1, total_iters = 5})   (linear warm-up)
local M = {}

local function scheduler(name, lr_at)
  local S = {}
  S.__index = S
  S.__name = name
  setmetatable(S, { __call = function(c, opt, opts)
    local s = setmetatable({ optimizer = opt, opts = opts or {}, last_epoch = 0 }, c)
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
  function S:load_state_dict(sd) self.last_epoch = sd.last_epoch; self:apply() end
  return S
end

M.StepLR = scheduler("StepLR", function(base, epoch, o)
  if not o.step_size or o.step_size < 1 then error("StepLR: step_size must be >= 1", 0) end
  return base * (o.gamma or 0.1) ^ math.floor(epoch / o.step_size)
end)

M.CosineAnnealingLR = scheduler("CosineAnnealingLR", function(base, epoch, o)
  if not o.T_max or o.T_max < 1 then error("CosineAnnealingLR: T_max must be >= 1", 0) end
  local eta = o.eta_min or 0
  return eta + (base - eta) * (1 + math.cos(math.pi * math.min(epoch, o.T_max) / o.T_max)) / 2
end)

M.LinearLR = scheduler("LinearLR", function(base, epoch, o)
  local s, e, n = o.start_factor or 1 / 3, o.end_factor or 1, o.total_iters or 5
  local t = math.min(epoch, n) / n
  return base * (s + (e - s) * t)
end)
M.LinearWarmup = M.LinearLR

return M
