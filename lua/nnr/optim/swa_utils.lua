-- nnr.optim.swa_utils: weight averaging, PyTorch's torch.optim.swa_utils.
--
--   local ema = swa_utils.AveragedModel(model, {ema_decay = 0.999})     -- or {multi_avg_fn = ...}
--   local swa = swa_utils.AveragedModel(model)                          -- equal weights (SWA)
--   ... after each optimizer step (EMA) or epoch (SWA): avg:update_parameters(model)
--   swa_utils.update_bn(loader, swa)      -- BatchNorm statistics for the averaged weights
--   ema(x)                                -- the averaged copy's forward
--
-- AveragedModel(model, {avg_fn =, multi_avg_fn =, ema_decay =, use_buffers = false, device =}):
-- an nn.Module holding a deep copy of model as its child "module" and a counter n_averaged (an i64
-- buffer), so its state_dict has PyTorch's keys ("module.<name>", "n_averaged"). The first
-- update_parameters copies the model's parameters; each later one averages them in:
--   default (SWA):  a = a + (p - a) / (n + 1)           (the running mean of every model seen)
--   ema_decay = d:  a = a + (1 - d) (p - a)             (get_ema_multi_avg_fn(d))
--   avg_fn(a, p, n) -> the new value of a (a tensor), one pair at a time
--   multi_avg_fn(as, ps, n): updates the list as in place from the list ps
-- n is the number of models averaged so far, a Lua number. With use_buffers the buffers are averaged
-- too (integer ones, BatchNorm's num_batches_tracked, are copied: a count has no average);
-- without, they are copied from the model at every update (PyTorch 2's behaviour).
--
-- SWALR(opt, {swa_lr, anneal_epochs = 10, anneal_strategy = "cos"}): anneals each group's lr from
-- where it stands when SWALR first steps to swa_lr (a number or one per group) over anneal_epochs
-- steps, then holds it; PyTorch's chainable rule, so it takes over from another scheduler.
--
-- update_bn(loader, model[, device]): resets the running mean and variance of every BatchNorm in
-- model and recomputes them with one pass over loader (training mode, no gradients), as a
-- cumulative average over the batches (PyTorch's momentum = None), then restores the momenta and
-- the mode. loader: a DataLoader, a list of batches, or an iterator function; a batch is a tensor
-- or a table whose first element is the input.
local nnr = require "nnr"
local check = require "nnr.check"
local Module = require "nnr.nn.module"

local M = {}

-- the averaging rules as functions, PyTorch's names
function M.get_ema_multi_avg_fn(decay)
  if decay == nil then decay = 0.999 end
  check.number("get_ema_multi_avg_fn", "decay", decay, { min = 0, max = 1 })
  return function(averaged, current)
    for i, a in ipairs(averaged) do a:add_((current[i] - a):mul_(1 - decay)) end
  end
end
function M.get_swa_multi_avg_fn()
  return function(averaged, current, n)
    for i, a in ipairs(averaged) do a:add_((current[i] - a):div_(n + 1)) end
  end
end
function M.get_ema_avg_fn(decay)
  if decay == nil then decay = 0.999 end
  check.number("get_ema_avg_fn", "decay", decay, { min = 0, max = 1 })
  return function(a, p) return a + (p - a) * (1 - decay) end
end
function M.get_swa_avg_fn()
  return function(a, p, n) return a + (p - a) / (n + 1) end
end

local function callable(v) return type(v) == "function" or (type(v) == "table" and getmetatable(v) and getmetatable(v).__call) end

local AveragedModel = Module:extend("AveragedModel")
M.AveragedModel = AveragedModel
local KNOWN = { avg_fn = true, multi_avg_fn = true, ema_decay = true, use_buffers = true, device = true }

function AveragedModel:__init(model, opts)
  Module.__init(self)
  local who = "AveragedModel"
  if type(model) ~= "table" or type(model.parameters) ~= "function" then
    error(who .. ": expected a module (an nn.Module) to average, got " .. type(model), 0)
  end
  opts = check.options(who, opts, KNOWN)
  local given = (opts.avg_fn ~= nil and 1 or 0) + (opts.multi_avg_fn ~= nil and 1 or 0) + (opts.ema_decay ~= nil and 1 or 0)
  if given > 1 then error(who .. ": give at most one of avg_fn, multi_avg_fn and ema_decay", 0) end
  if opts.avg_fn ~= nil and not callable(opts.avg_fn) then error(who .. ": avg_fn must be a function(averaged, current, n_averaged) -> tensor", 0) end
  if opts.multi_avg_fn ~= nil and not callable(opts.multi_avg_fn) then
    error(who .. ": multi_avg_fn must be a function(averaged_list, current_list, n_averaged) that updates the first list in place", 0)
  end
  local multi = opts.multi_avg_fn
  if opts.ema_decay ~= nil then
    check.number(who, "ema_decay", opts.ema_decay, { min = 0, max = 1 })
    multi = M.get_ema_multi_avg_fn(opts.ema_decay)
  end
  rawset(self, "avg_fn", opts.avg_fn)
  rawset(self, "multi_avg_fn", multi)
  rawset(self, "use_buffers", check.boolean(who, "use_buffers", opts.use_buffers))
  local copy = require("nnr.nn.utils").deep_copy(model, opts.device)
  self:add_module("module", copy)
  self:register_buffer("n_averaged", nnr.zeros({}, { dtype = "i64", device = opts.device }))
end

function AveragedModel:forward(...) return self.module(...) end

-- the tensors averaged, in order: parameters, then buffers with use_buffers
local function tensors_of(m, use_buffers)
  local out = {}
  for _, p in ipairs(m:parameters()) do out[#out + 1] = p end
  if use_buffers then for _, nb in ipairs(m:named_buffers()) do out[#out + 1] = nb[2] end end
  return out
end

local function pair_check(mine, theirs, what)
  if #mine ~= #theirs then
    error(string.format("AveragedModel:update_parameters: the model has %d %s, the averaged copy %d (not the model it was made from?)",
      #theirs, what, #mine), 0)
  end
  for i, a in ipairs(mine) do
    local p = theirs[i]
    if nnr.shape_str(a:size()) ~= nnr.shape_str(p:size()) then
      error(string.format("AveragedModel:update_parameters: %s %d has shape %s in the model, %s in the averaged copy", what, i,
        nnr.shape_str(p:size()), nnr.shape_str(a:size())), 0)
    end
  end
end

function AveragedModel:update_parameters(model)
  if type(model) ~= "table" or type(model.parameters) ~= "function" then
    error("AveragedModel:update_parameters: expected the model being trained (an nn.Module), got " .. type(model), 0)
  end
  local mine, theirs = tensors_of(self.module, self.use_buffers), tensors_of(model, self.use_buffers)
  pair_check(mine, theirs, self.use_buffers and "parameters and buffers" or "parameters")
  local n = self.n_averaged:item()
  nnr.no_grad(function()
    local avg_list, cur_list = {}, {}
    for i, a in ipairs(mine) do
      local p = theirs[i]:detach()
      if p.device ~= a.device or p.dtype ~= a.dtype then p = p:to(a.device, a.dtype) end
      if n == 0 or not a:is_floating_point() then
        a:copy_(p)                             -- the first model, and counters (nothing to average)
      else
        avg_list[#avg_list + 1], cur_list[#cur_list + 1] = a, p
      end
    end
    if #avg_list > 0 then
      if self.avg_fn then
        for i, a in ipairs(avg_list) do
          local v = self.avg_fn(a:detach(), cur_list[i], n)
          if not nnr.is_tensor(v) then error("AveragedModel: avg_fn returned a " .. type(v) .. ", expected the new average (a tensor)", 0) end
          a:copy_(v)
        end
      else
        (self.multi_avg_fn or M.get_swa_multi_avg_fn())(avg_list, cur_list, n)
      end
    end
    if not self.use_buffers then
      -- the buffers follow the model's (BatchNorm statistics; update_bn recomputes them for the average)
      local bm, bt = {}, {}
      for _, nb in ipairs(self.module:named_buffers()) do bm[#bm + 1] = nb[2] end
      for _, nb in ipairs(model:named_buffers()) do bt[#bt + 1] = nb[2] end
      pair_check(bm, bt, "buffers")
      for i, b in ipairs(bm) do b:copy_(bt[i]:detach():to(b.device, b.dtype)) end
    end
    self.n_averaged:add_(1)
  end)
end

-- SWALR ----------------------------------------------------------------------------------------
local SWALR = {}
SWALR.__index = SWALR
SWALR.__name = "SWALR"
M.SWALR = SWALR
local function anneal_cos(t) return (1 - math.cos(math.pi * t)) / 2 end
local function anneal_linear(t) return t end
setmetatable(SWALR, { __call = function(c, opt, opts)
  local who = "SWALR"
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" then error(who .. ": expected an optimizer", 0) end
  opts = check.options(who, opts, { swa_lr = true, anneal_epochs = true, anneal_strategy = true })
  local n = #opt.param_groups
  local swa = {}
  if opts.swa_lr == nil then error(who .. ": swa_lr is needed (a number, or a list of one per parameter group)", 0) end
  if type(opts.swa_lr) == "table" then
    if #opts.swa_lr ~= n then error(string.format("%s: swa_lr has %d values, the optimizer %d parameter groups", who, #opts.swa_lr, n), 0) end
    for i = 1, n do swa[i] = check.number(who, "swa_lr[" .. i .. "]", opts.swa_lr[i], { min = 0 }) end
  else
    check.number(who, "swa_lr", opts.swa_lr, { min = 0 })
    for i = 1, n do swa[i] = opts.swa_lr end
  end
  local epochs = opts.anneal_epochs == nil and 10 or check.integer(who, "anneal_epochs", opts.anneal_epochs, 0)
  local strategy = check.choice(who, "anneal_strategy", opts.anneal_strategy == nil and "cos" or opts.anneal_strategy, { "cos", "linear" })
  local s = setmetatable({ optimizer = opt, anneal_epochs = epochs, anneal = strategy == "cos" and anneal_cos or anneal_linear,
    last_epoch = -1, step_count = 0 }, c)
  for i, g in ipairs(opt.param_groups) do
    g.swa_lr = swa[i]
    if g.initial_lr == nil then g.initial_lr = g.lr end
  end
  s:step()                                  -- PyTorch's initial step
  return s
end })
function SWALR:step()
  self.step_count = self.step_count + 1
  self.last_epoch = self.last_epoch + 1
  local step = self.step_count - 1
  if self.anneal_epochs == 0 then step = math.max(1, step) end
  local span = math.max(1, self.anneal_epochs)
  local prev_alpha = self.anneal(math.max(0, math.min(1, (step - 1) / span)))
  local alpha = self.anneal(math.max(0, math.min(1, step / span)))
  for _, g in ipairs(self.optimizer.param_groups) do
    -- the lr this annealing started from, recovered from the current one
    local start = prev_alpha == 1 and g.swa_lr or (g.lr - prev_alpha * g.swa_lr) / (1 - prev_alpha)
    g.lr = g.swa_lr * alpha + start * (1 - alpha)
  end
end
function SWALR:get_last_lr()
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
  return out
end
function SWALR:state_dict() return { last_epoch = self.last_epoch, step_count = self.step_count } end
function SWALR:load_state_dict(sd)
  local who = "SWALR:load_state_dict"
  if type(sd) ~= "table" then error(who .. ": expected a table", 0) end
  local last = check.integer(who, "last_epoch", sd.last_epoch, 0)
  local count = check.integer(who, "step_count", sd.step_count, 1)
  self.last_epoch, self.step_count = last, count
end

-- update_bn ------------------------------------------------------------------------------------
local function is_batch_norm(m)
  return type(m.__name) == "string" and m.__name:match("^BatchNorm") ~= nil and nnr.is_tensor(rawget(m, "running_mean"))
    and nnr.is_tensor(rawget(m, "running_var"))
end

-- an iterator over the inputs of loader's batches
local function inputs_of(loader)
  local nextb
  if type(loader) == "function" then
    nextb = loader
  elseif (type(loader) == "table" or type(loader) == "userdata") and type(loader.iter) == "function" then
    nextb = loader:iter()             -- a DataLoader
  elseif type(loader) == "table" then
    local i = 0
    nextb = function() i = i + 1; return loader[i] end
  else
    error("update_bn: loader must be a DataLoader, a list of batches or an iterator function, got " .. type(loader), 0)
  end
  local k = 0
  return function()
    local b = nextb()
    if b == nil then return nil end
    k = k + 1
    if type(b) == "table" and not nnr.is_tensor(b) then b = b[1] end
    if not nnr.is_tensor(b) then
      error(string.format("update_bn: batch %d is a %s, expected a tensor or a table whose first element is the input", k, type(b)), 0)
    end
    return b
  end
end

function M.update_bn(loader, model, device)
  if type(model) ~= "table" or type(model.modules) ~= "function" then
    error("update_bn: expected a model (an nn.Module) as the second argument, got " .. type(model), 0)
  end
  local bns = {}
  for _, m in ipairs(model:modules()) do if is_batch_norm(m) then bns[#bns + 1] = m end end
  if #bns == 0 then return end
  local momenta = {}
  nnr.no_grad(function()
    for i, m in ipairs(bns) do
      m.running_mean:zero_()
      m.running_var:fill_(1)
      if m.num_batches_tracked then m.num_batches_tracked:zero_() end
      momenta[i] = m.momentum
    end
  end)
  local was_training = model.training
  model:train()
  local ok, err = pcall(nnr.no_grad, function()
    for x in inputs_of(loader) do
      if device then x = x:to(device) end
      -- a cumulative average: the k-th batch of a module weighs 1/k (PyTorch's momentum = None)
      for i, m in ipairs(bns) do m.momentum = 1 / ((m.num_batches_tracked and m.num_batches_tracked:item() or 0) + 1) end
      model(x)
    end
  end)
  for i, m in ipairs(bns) do m.momentum = momenta[i] end
  model:train(was_training)
  if not ok then error(err, 0) end
end

return M
