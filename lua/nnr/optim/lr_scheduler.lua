-- Learning-rate schedulers: call step() once per epoch (or per iteration,
-- as you designed the schedule). Each follows PyTorch step for step: step() uses PyTorch's
-- chainable form (the new lr from the group's current one), so two schedulers on one optimizer
-- compose as in PyTorch (a warm-up and a decay both stepped, SWALR taking over from a cosine);
-- alone, each gives its closed form (the lr from the initial lr and the step count), which is
-- what construction-time bookkeeping, SequentialLR's switch and load_state_dict use:
--   StepLR(opt, {step_size, gamma = 0.1})
--   MultiStepLR(opt, {milestones, gamma = 0.1})
--   ExponentialLR(opt, {gamma})
--   CosineAnnealingLR(opt, {T_max, eta_min = 0})       (periodic past T_max, as PyTorch)
--   LinearLR(opt, {start_factor = 1/3, end_factor = 1, total_iters = 5})   (linear warm-up)
--   OneCycleLR(opt, {max_lr, total_steps | epochs and steps_per_epoch, pct_start = 0.3,
--     anneal_strategy = "cos", cycle_momentum = true, base_momentum = 0.85, max_momentum = 0.95,
--     div_factor = 25, final_div_factor = 1e4, three_phase = false})
--   SequentialLR(opt, {schedulers = {...}, milestones = {...}})   (warm-up then decay)
-- and one that follows a metric: ReduceLROnPlateau(opt, {...}) with step(metric).
-- (swa_utils.SWALR is a scheduler too.)
local check = require "nnr.check"
local nnr = require "nnr"
local M = {}

-- lr_at(base, epoch, opts, group): the closed form. chain(lr, epoch, opts, base, group): PyTorch's
-- get_lr, the lr after step number epoch from the group's lr before it (nil: the closed form).
-- validate(opts, optimizer) checks the options once, at construction (unknown ones are refused),
-- and may return them processed.
local function scheduler(name, lr_at, known, validate, chain)
  local S = {}
  S.__index = S
  S.__name = name
  setmetatable(S, { __call = function(c, opt, opts)
    if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then error(name .. ": expected an optimizer", 0) end
    opts = check.options(name, opts, known)
    opts = validate(opts, opt) or opts
    local s = setmetatable({ optimizer = opt, opts = opts, last_epoch = 0 }, c)
    s.base_lrs = {}
    for i, g in ipairs(opt.param_groups) do s.base_lrs[i] = g.initial_lr or g.lr; g.initial_lr = s.base_lrs[i] end
    s:chain_step()                         -- PyTorch's initial step, at epoch 0
    return s
  end })
  -- the closed form at last_epoch
  function S:apply()
    for i, g in ipairs(self.optimizer.param_groups) do g.lr = lr_at(self.base_lrs[i], self.last_epoch, self.opts, g) end
  end
  -- the chainable form at last_epoch
  function S:chain_step()
    if not chain then return self:apply() end
    for i, g in ipairs(self.optimizer.param_groups) do g.lr = chain(g.lr, self.last_epoch, self.opts, self.base_lrs[i], g) end
  end
  function S:step()
    local epoch = self.last_epoch + 1
    if self.check_epoch then self:check_epoch(epoch) end   -- refused before anything changes
    self.last_epoch = epoch
    self:chain_step()
  end
  function S:get_last_lr()
    local out = {}
    for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
    return out
  end
  function S:state_dict() return { last_epoch = self.last_epoch } end
  -- the epoch back, and the lrs from the closed form at it
  function S:load_state_dict(sd)
    if type(sd) ~= "table" then error(name .. ":load_state_dict: expected a table", 0) end
    local epoch = check.integer(name .. ":load_state_dict", "last_epoch", sd.last_epoch, 0)
    if self.check_epoch then self:check_epoch(epoch, name .. ":load_state_dict") end
    self.last_epoch = epoch
    self:apply()
  end
  return S
end

M.StepLR = scheduler("StepLR", function(base, epoch, o)
  return base * (o.gamma or 0.1) ^ math.floor(epoch / o.step_size)
end, { step_size = true, gamma = true }, function(o)
  check.integer("StepLR", "step_size", o.step_size, 1)
  check.number("StepLR", "gamma", o.gamma, { min = 0, optional = true })
end, function(lr, epoch, o)
  if epoch == 0 or epoch % o.step_size ~= 0 then return lr end
  return lr * (o.gamma or 0.1)
end)

M.CosineAnnealingLR = scheduler("CosineAnnealingLR", function(base, epoch, o)
  local eta = o.eta_min or 0
  return eta + (base - eta) * (1 + math.cos(math.pi * epoch / o.T_max)) / 2
end, { T_max = true, eta_min = true }, function(o)
  check.integer("CosineAnnealingLR", "T_max", o.T_max, 1)
  check.number("CosineAnnealingLR", "eta_min", o.eta_min, { min = 0, optional = true })
end, function(lr, epoch, o, base)
  local eta, T = o.eta_min or 0, o.T_max
  if epoch == 0 then return lr end
  if (epoch - 1 - T) % (2 * T) == 0 then return lr + (base - eta) * (1 - math.cos(math.pi / T)) / 2 end
  return (1 + math.cos(math.pi * epoch / T)) / (1 + math.cos(math.pi * (epoch - 1) / T)) * (lr - eta) + eta
end)

M.LinearLR = scheduler("LinearLR", function(base, epoch, o)
  local s, e, n = o.start_factor or 1 / 3, o.end_factor or 1, o.total_iters or 5
  local t = math.min(epoch, n) / n
  return base * (s + (e - s) * t)
end, { start_factor = true, end_factor = true, total_iters = true }, function(o)
  check.number("LinearLR", "start_factor", o.start_factor, { above = 0, max = 1, optional = true })
  check.number("LinearLR", "end_factor", o.end_factor, { min = 0, max = 1, optional = true })
  check.integer("LinearLR", "total_iters", o.total_iters, 1, nil, true)
end, function(lr, epoch, o)
  local s, e, n = o.start_factor or 1 / 3, o.end_factor or 1, o.total_iters or 5
  if epoch == 0 then return lr * s end
  if epoch > n then return lr end
  return lr * (1 + (e - s) / (n * s + (epoch - 1) * (e - s)))
end)
M.LinearWarmup = M.LinearLR

M.ExponentialLR = scheduler("ExponentialLR", function(base, epoch, o)
  return base * o.gamma ^ epoch
end, { gamma = true }, function(o)
  check.number("ExponentialLR", "gamma", o.gamma, { min = 0 })
end, function(lr, epoch, o)
  if epoch == 0 then return lr end
  return lr * o.gamma
end)

-- milestones: a list of epochs (whole numbers >= 0, in any order, repeats allowed: a milestone
-- listed twice decays twice, as PyTorch's Counter does)
local function bisect_right(list, x)      -- how many entries of the sorted list are <= x
  local lo, hi = 1, #list + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if x < list[mid] then hi = mid else lo = mid + 1 end
  end
  return lo - 1
end
M._bisect_right = bisect_right

M.MultiStepLR = scheduler("MultiStepLR", function(base, epoch, o)
  return base * (o.gamma or 0.1) ^ bisect_right(o.sorted, epoch)
end, { milestones = true, gamma = true }, function(o)
  if type(o.milestones) ~= "table" then error("MultiStepLR: milestones must be a list of epochs, e.g. {30, 80}", 0) end
  local sorted = {}
  for i = 1, #o.milestones do sorted[i] = check.integer("MultiStepLR", "milestones[" .. i .. "]", o.milestones[i], 0) end
  for k in pairs(o.milestones) do
    if type(k) ~= "number" or k < 1 or k > #o.milestones or k ~= math.floor(k) then
      error("MultiStepLR: milestones must be a list (keys 1..n), got key " .. check.show(k), 0)
    end
  end
  table.sort(sorted)
  check.number("MultiStepLR", "gamma", o.gamma, { min = 0, optional = true })
  local count = {}
  for _, m in ipairs(sorted) do count[m] = (count[m] or 0) + 1 end
  return { milestones = o.milestones, gamma = o.gamma, sorted = sorted, count = count }
end, function(lr, epoch, o)
  local n = o.count[epoch]
  if not n then return lr end
  return lr * (o.gamma or 0.1) ^ n
end)

-- a number for every group, from one number or a list of one per group
local function per_group(who, name, v, opt, spec)
  local n = #opt.param_groups
  local out = {}
  if type(v) == "table" then
    if #v ~= n then error(string.format("%s: %s has %d values, the optimizer %d parameter groups", who, name, #v, n), 0) end
    for i = 1, n do out[i] = check.number(who, name .. "[" .. i .. "]", v[i], spec) end
  else
    check.number(who, name, v, spec)
    for i = 1, n do out[i] = v end
  end
  return out
end

-- OneCycleLR (Smith and Topin 2017, "Super-Convergence"), PyTorch's phases: from max_lr / div_factor
-- up to max_lr over pct_start of total_steps, then down to initial_lr / final_div_factor (or, with
-- three_phase, back to the initial lr symmetrically, then down to the minimum), by cosine or linear
-- annealing; momentum (SGD's and RMSprop's momentum, beta1 of Adam, AdamW and Lion) cycles
-- inversely between max_momentum and base_momentum. Call step() after every batch: at most
-- total_steps times. It keeps initial_lr, max_lr, min_lr, max_momentum and base_momentum in each
-- parameter group, as PyTorch does (the optimizer's state dict carries them).
local ONE_CYCLE_KNOWN = { max_lr = true, total_steps = true, epochs = true, steps_per_epoch = true, pct_start = true,
  anneal_strategy = true, cycle_momentum = true, base_momentum = true, max_momentum = true, div_factor = true,
  final_div_factor = true, three_phase = true }
local function anneal_cos(start, stop, pct) return stop + (start - stop) / 2 * (math.cos(math.pi * pct) + 1) end
local function anneal_linear(start, stop, pct) return (stop - start) * pct + start end

M.OneCycleLR = scheduler("OneCycleLR", function(_, epoch, o, g)
  local start_step = 0
  for i, phase in ipairs(o.phases) do
    local end_step = phase.end_step
    if epoch <= end_step or i == #o.phases then
      if end_step == start_step then
        error(string.format("OneCycleLR: step %d falls in an empty phase (pct_start %s with total_steps %d)", epoch, check.show(o.pct_start), o.total), 0)
      end
      local pct = (epoch - start_step) / (end_step - start_step)
      if o.cycle_momentum then
        local m = o.anneal(g[phase.start_momentum], g[phase.end_momentum], pct)
        if o.use_beta1 then g.betas = { m, g.betas[2] } else g.momentum = m end
      end
      return o.anneal(g[phase.start_lr], g[phase.end_lr], pct)
    end
    start_step = end_step
  end
end, ONE_CYCLE_KNOWN, function(o, opt)
  local who = "OneCycleLR"
  local total
  if o.total_steps ~= nil then
    if o.epochs ~= nil or o.steps_per_epoch ~= nil then
      error("OneCycleLR: give total_steps or epochs and steps_per_epoch, not both", 0)
    end
    total = check.integer(who, "total_steps", o.total_steps, 1)
  elseif o.epochs ~= nil or o.steps_per_epoch ~= nil then
    check.integer(who, "epochs", o.epochs, 1)
    check.integer(who, "steps_per_epoch", o.steps_per_epoch, 1)
    total = o.epochs * o.steps_per_epoch
  else
    error("OneCycleLR: total_steps is needed (or epochs and steps_per_epoch)", 0)
  end
  local pct = check.number(who, "pct_start", o.pct_start, { min = 0, max = 1, default = 0.3 })
  local strategy = check.choice(who, "anneal_strategy", o.anneal_strategy == nil and "cos" or o.anneal_strategy, { "cos", "linear" })
  local three = check.boolean(who, "three_phase", o.three_phase)
  local div = check.number(who, "div_factor", o.div_factor, { above = 0, default = 25 })
  local final_div = check.number(who, "final_div_factor", o.final_div_factor, { above = 0, default = 1e4 })
  local cycle = o.cycle_momentum
  if cycle == nil then cycle = true end
  check.boolean(who, "cycle_momentum", cycle)
  if o.max_lr == nil then error("OneCycleLR: max_lr is needed (a number, or a list of one per parameter group)", 0) end
  local max_lrs = per_group(who, "max_lr", o.max_lr, opt, { min = 0 })
  local phases
  if three then
    phases = {
      { end_step = pct * total - 1, start_lr = "initial_lr", end_lr = "max_lr", start_momentum = "max_momentum", end_momentum = "base_momentum" },
      { end_step = 2 * pct * total - 2, start_lr = "max_lr", end_lr = "initial_lr", start_momentum = "base_momentum", end_momentum = "max_momentum" },
      { end_step = total - 1, start_lr = "initial_lr", end_lr = "min_lr", start_momentum = "max_momentum", end_momentum = "max_momentum" },
    }
  else
    phases = {
      { end_step = pct * total - 1, start_lr = "initial_lr", end_lr = "max_lr", start_momentum = "max_momentum", end_momentum = "base_momentum" },
      { end_step = total - 1, start_lr = "max_lr", end_lr = "min_lr", start_momentum = "base_momentum", end_momentum = "max_momentum" },
    }
  end
  local use_beta1, max_m, base_m
  if cycle then
    local d = opt.defaults or {}
    if d.momentum == nil and d.betas == nil then
      error("OneCycleLR: cycle_momentum needs an optimizer with momentum (SGD, RMSprop) or betas (Adam, AdamW, Lion); pass cycle_momentum = false", 0)
    end
    use_beta1 = d.betas ~= nil
    max_m = per_group(who, "max_momentum", o.max_momentum == nil and 0.95 or o.max_momentum, opt, { min = 0, max = 1 })
    base_m = per_group(who, "base_momentum", o.base_momentum == nil and 0.85 or o.base_momentum, opt, { min = 0, max = 1 })
  elseif o.max_momentum ~= nil or o.base_momentum ~= nil then
    error("OneCycleLR: base_momentum and max_momentum need cycle_momentum = true (they would be ignored)", 0)
  end
  -- validated whole; now the groups are written
  for i, g in ipairs(opt.param_groups) do
    g.initial_lr = max_lrs[i] / div
    g.max_lr = max_lrs[i]
    g.min_lr = g.initial_lr / final_div
    if cycle then
      if use_beta1 then g.betas = { max_m[i], g.betas[2] } else g.momentum = max_m[i] end
      g.max_momentum, g.base_momentum = max_m[i], base_m[i]
    end
  end
  return { total = total, pct_start = pct, phases = phases, anneal = strategy == "cos" and anneal_cos or anneal_linear,
    cycle_momentum = cycle, use_beta1 = use_beta1 }
end)
function M.OneCycleLR:check_epoch(epoch, who)
  if epoch > self.opts.total then
    error(string.format("%s: stepped %d times, total_steps is %d (step once per batch; total_steps = epochs * steps_per_epoch)",
      who or "OneCycleLR", epoch, self.opts.total), 0)
  end
end

-- SequentialLR(opt, {schedulers = {s1, s2, ...}, milestones = {m1, ...}}): s1 until step m1, then s2
-- from its own start, and so on (PyTorch's semantics: at milestone m the next scheduler restarts at
-- its epoch 0). The schedulers must be closed-form ones of this optimizer (not ReduceLROnPlateau).
local Sequential = {}
Sequential.__index = Sequential
Sequential.__name = "SequentialLR"
setmetatable(Sequential, { __call = function(c, opt, opts)
  local who = "SequentialLR"
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then error(who .. ": expected an optimizer", 0) end
  opts = check.options(who, opts, { schedulers = true, milestones = true })
  local list, ms = opts.schedulers, opts.milestones
  if type(list) ~= "table" or #list == 0 then error(who .. ": schedulers must be a non-empty list of schedulers", 0) end
  for i, s in ipairs(list) do
    if type(s) ~= "table" or type(s.apply) ~= "function" or type(s.chain_step) ~= "function" or type(s.last_epoch) ~= "number" then
      error(string.format("%s: schedulers[%d] is not a closed-form scheduler (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, OneCycleLR)", who, i), 0)
    end
    if s.optimizer ~= opt then error(string.format("%s: schedulers[%d] belongs to another optimizer", who, i), 0) end
  end
  if type(ms) ~= "table" or #ms ~= #list - 1 then
    error(string.format("%s: expected %d milestones (one fewer than the schedulers), got %s", who, #list - 1,
      type(ms) == "table" and tostring(#ms) or type(ms)), 0)
  end
  for i = 1, #ms do
    check.integer(who, "milestones[" .. i .. "]", ms[i], i == 1 and 1 or ms[i - 1] + 1)
  end
  local s = setmetatable({ optimizer = opt, schedulers = list, milestones = ms, last_epoch = 0 }, c)
  -- as PyTorch: the lrs back to their initial values, the other schedulers before their first
  -- step, the first at its epoch 0
  for _, g in ipairs(opt.param_groups) do g.lr = g.initial_lr or g.lr end
  for i, sch in ipairs(list) do sch.last_epoch = i == 1 and 0 or -1 end
  list[1]:chain_step()
  return s
end })
function Sequential:step()
  local epoch = self.last_epoch + 1
  local idx = bisect_right(self.milestones, epoch) + 1
  local sch = self.schedulers[idx]
  if idx > 1 and self.milestones[idx - 1] == epoch then
    sch.last_epoch = 0
    sch:apply()
  else
    sch:step()
  end
  self.last_epoch = epoch
end
function Sequential:get_last_lr()
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
  return out
end
function Sequential:state_dict()
  local subs = {}
  for i, sch in ipairs(self.schedulers) do subs[i] = sch:state_dict() end
  return { last_epoch = self.last_epoch, schedulers = subs }
end
function Sequential:load_state_dict(sd)
  local who = "SequentialLR:load_state_dict"
  if type(sd) ~= "table" or type(sd.schedulers) ~= "table" then error(who .. ": expected the table state_dict() returns ({last_epoch = ..., schedulers = {...}})", 0) end
  local epoch = check.integer(who, "last_epoch", sd.last_epoch, 0)
  local n = 0
  for _ in pairs(sd.schedulers) do n = n + 1 end
  if n ~= #self.schedulers then error(string.format("%s: %d scheduler states, %d schedulers", who, n, #self.schedulers), 0) end
  -- checked whole first: each state must load into its scheduler (a copy of the epoch is kept to undo)
  local saved = {}
  for i, sch in ipairs(self.schedulers) do saved[i] = sch.last_epoch end
  local idx = bisect_right(self.milestones, epoch) + 1
  local ok, err = pcall(function()
    for i, sch in ipairs(self.schedulers) do
      local sub = sd.schedulers[i] or sd.schedulers[tostring(i)]
      if type(sub) ~= "table" then error(string.format("%s: schedulers[%d] must be a table", who, i), 0) end
      if i ~= idx then sch:load_state_dict(sub) end
    end
    self.schedulers[idx]:load_state_dict(sd.schedulers[idx] or sd.schedulers[tostring(idx)])   -- the active one sets the lrs
  end)
  if not ok then
    for i, sch in ipairs(self.schedulers) do sch.last_epoch = saved[i] end
    self.schedulers[bisect_right(self.milestones, self.last_epoch) + 1]:apply()
    error(err, 0)
  end
  self.last_epoch = epoch
end
M.SequentialLR = Sequential

-- ReduceLROnPlateau(opt, {mode = "min", factor = 0.1, patience = 10, threshold = 1e-4,
--   threshold_mode = "rel", cooldown = 0, min_lr = 0 (or one per group), eps = 1e-8})
-- step(metric): when the metric has not improved (by more than threshold, relative or absolute)
-- for more than patience steps, every lr becomes max(lr * factor, min_lr) (a change smaller than
-- eps is skipped), then cooldown steps pass before bad steps count again. A NaN metric is never
-- an improvement (as PyTorch).
local Plateau = {}
Plateau.__index = Plateau
Plateau.__name = "ReduceLROnPlateau"
local PLATEAU_KNOWN = { mode = true, factor = true, patience = true, threshold = true, threshold_mode = true, cooldown = true,
  min_lr = true, eps = true }
setmetatable(Plateau, { __call = function(c, opt, opts)
  local who = "ReduceLROnPlateau"
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then error(who .. ": expected an optimizer", 0) end
  opts = check.options(who, opts, PLATEAU_KNOWN)
  local s = setmetatable({ optimizer = opt }, c)
  s.mode = check.choice(who, "mode", opts.mode == nil and "min" or opts.mode, { "min", "max" })
  s.factor = check.number(who, "factor", opts.factor, { min = 0, below = 1, default = 0.1 })
  s.patience = opts.patience == nil and 10 or check.integer(who, "patience", opts.patience, 0)
  s.threshold = check.number(who, "threshold", opts.threshold, { min = 0, default = 1e-4 })
  s.threshold_mode = check.choice(who, "threshold_mode", opts.threshold_mode == nil and "rel" or opts.threshold_mode, { "rel", "abs" })
  s.cooldown = opts.cooldown == nil and 0 or check.integer(who, "cooldown", opts.cooldown, 0)
  s.min_lrs = per_group(who, "min_lr", opts.min_lr == nil and 0 or opts.min_lr, opt, { min = 0 })
  s.eps = check.number(who, "eps", opts.eps, { min = 0, default = 1e-8 })
  s.last_epoch = 0
  s:_reset()
  return s
end })
function Plateau:_reset()
  self.best = self.mode == "min" and math.huge or -math.huge
  self.cooldown_counter = 0
  self.num_bad_epochs = 0
end
function Plateau:is_better(a, best)
  if self.mode == "min" and self.threshold_mode == "rel" then return a < best * (1 - self.threshold) end
  if self.mode == "min" then return a < best - self.threshold end
  if self.threshold_mode == "rel" then return a > best * (self.threshold + 1) end
  return a > best + self.threshold
end
function Plateau:step(metric)
  local current = metric
  if nnr.is_tensor(metric) then
    if metric:numel() ~= 1 then error("ReduceLROnPlateau:step: the metric has shape " .. nnr.shape_str(metric:size()) .. ", expected one number", 0) end
    current = metric:item()
  end
  if type(current) ~= "number" then
    error("ReduceLROnPlateau:step: expected the metric (a number or a one-element tensor), got " .. type(metric), 0)
  end
  self.last_epoch = self.last_epoch + 1
  if self:is_better(current, self.best) then
    self.best = current
    self.num_bad_epochs = 0
  else
    self.num_bad_epochs = self.num_bad_epochs + 1
  end
  if self.cooldown_counter > 0 then
    self.cooldown_counter = self.cooldown_counter - 1
    self.num_bad_epochs = 0                 -- bad epochs in cooldown do not count
  end
  if self.num_bad_epochs > self.patience then
    for i, g in ipairs(self.optimizer.param_groups) do
      local old = g.lr
      local new = math.max(old * self.factor, self.min_lrs[i])
      if old - new > self.eps then g.lr = new end
    end
    self.cooldown_counter = self.cooldown
    self.num_bad_epochs = 0
  end
end
function Plateau:get_last_lr()
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
  return out
end
function Plateau:state_dict()
  return { last_epoch = self.last_epoch, best = self.best, num_bad_epochs = self.num_bad_epochs, cooldown_counter = self.cooldown_counter }
end
function Plateau:load_state_dict(sd)
  local who = "ReduceLROnPlateau:load_state_dict"
  if type(sd) ~= "table" then error(who .. ": expected a table", 0) end
  local last = check.integer(who, "last_epoch", sd.last_epoch, 0)
  local best = check.number(who, "best", sd.best, { inf = true })
  local bad = check.integer(who, "num_bad_epochs", sd.num_bad_epochs, 0)
  local cool = check.integer(who, "cooldown_counter", sd.cooldown_counter, 0)
  self.last_epoch, self.best, self.num_bad_epochs, self.cooldown_counter = last, best, bad, cool
end
M.ReduceLROnPlateau = Plateau

return M
