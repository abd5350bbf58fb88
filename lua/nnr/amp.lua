-- Mixed precision (docs/cuda.md): nnr.autocast and nnr.amp.GradScaler.
--
--   local loss = nnr.autocast("bf16", function() return F.cross_entropy(model(x), y) end)
--
-- Inside fn, matmul, linear and (where the device's backend has it, e.g. cuda) convolution of
-- f32 tensors run in bf16 or f16: their f32 operands are cast, the casts are recorded, so the
-- gradients reach the f32 parameters (the master weights) in f32. softmax and log_softmax of
-- half inputs run in f32, so losses are computed in f32. Autocast is per thread and nests.
--
-- f16 has a narrow range: scale the loss so small gradients do not flush to zero, and skip the
-- steps whose gradients overflowed (PyTorch's torch.cuda.amp.GradScaler, same defaults):
--   local scaler = nnr.amp.GradScaler()
--   scaler:scale(loss):backward(); scaler:step(opt); scaler:update()
local nnr = require "nnr"
local binding = require "nnr.binding"
local C = binding.C

local M = {}

local dtypes = { bf16 = true, f16 = true }

function M.autocast(dtype, fn, ...)
  if dtype == false or dtype == nil then dtype = nil
  elseif not dtypes[dtype] then error(string.format("autocast: dtype '%s', expected \"bf16\" or \"f16\"", tostring(dtype)), 2) end
  if type(fn) ~= "function" then error("autocast: expected a function to run", 2) end
  local id = dtype and binding.dtype_id(dtype) or -1
  local prev = C.nnr_set_autocast(id)
  local results = { pcall(fn, ...) }
  C.nnr_set_autocast(prev)
  if not results[1] then error(results[2], 0) end
  return unpack(results, 2, table.maxn(results))
end

function M.is_autocast_enabled() return C.nnr_get_autocast() >= 0 end

local GradScaler = {}
GradScaler.__index = GradScaler

function M.GradScaler(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not ({ init_scale = 1, growth_factor = 1, backoff_factor = 1, growth_interval = 1, enabled = 1 })[k] then
      error("GradScaler: unknown option '" .. tostring(k) .. "'", 0)
    end
  end
  local s = setmetatable({
    scale_ = opts.init_scale or 65536.0,
    growth_factor = opts.growth_factor or 2.0,
    backoff_factor = opts.backoff_factor or 0.5,
    growth_interval = opts.growth_interval or 2000,
    enabled = opts.enabled ~= false,
    growth_tracker = 0,
    unscaled = {},        -- optimizer -> found_inf, for this step
  }, GradScaler)
  local check = require "nnr.check"
  check.number("GradScaler", "init_scale", s.scale_, { above = 0 })
  check.number("GradScaler", "growth_factor", s.growth_factor, { above = 1 })
  check.number("GradScaler", "backoff_factor", s.backoff_factor, { above = 0, below = 1 })
  check.integer("GradScaler", "growth_interval", s.growth_interval, 1)
  check.boolean("GradScaler", "enabled", opts.enabled)
  return s
end

function GradScaler:get_scale() return self.enabled and self.scale_ or 1.0 end

function GradScaler:scale(loss)
  if not self.enabled then return loss end
  return loss * self.scale_
end

-- divides the gradients by the scale (once per step) and notes whether any is inf or NaN
function GradScaler:unscale_(opt)
  if not self.enabled or self.unscaled[opt] ~= nil then return end
  local inv, bad = 1.0 / self.scale_, nil
  for _, g in ipairs(opt.param_groups) do
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad then
        grad:mul_(inv)
        -- 0 * g is NaN exactly where g is inf or NaN: one sum per parameter, one read at the end
        local s = (grad * 0):sum():to("cpu", "f64")
        bad = bad and bad + s or s
      end
    end
  end
  local v = bad and bad:item() or 0
  self.unscaled[opt] = v ~= v
end

-- opt:step() unless the gradients overflowed; returns true when the step was taken
function GradScaler:step(opt)
  if not self.enabled then opt:step() return true end
  self:unscale_(opt)
  if self.unscaled[opt] then return false end
  opt:step()
  return true
end

-- after each step: back off when any optimizer saw an overflow, grow after growth_interval clean steps
function GradScaler:update()
  if not self.enabled then return end
  local found = false
  for _, f in pairs(self.unscaled) do found = found or f end
  if found then
    self.scale_ = self.scale_ * self.backoff_factor
    self.growth_tracker = 0
  else
    self.growth_tracker = self.growth_tracker + 1
    if self.growth_tracker >= self.growth_interval then
      self.scale_ = self.scale_ * self.growth_factor
      self.growth_tracker = 0
    end
  end
  self.unscaled = {}
end

function GradScaler:state_dict()
  return { scale = self.scale_, growth_factor = self.growth_factor, backoff_factor = self.backoff_factor,
           growth_interval = self.growth_interval, growth_tracker = self.growth_tracker }
end

function GradScaler:load_state_dict(s)
  self.scale_, self.growth_tracker = s.scale, s.growth_tracker or 0
  self.growth_factor = s.growth_factor or self.growth_factor
  self.backoff_factor = s.backoff_factor or self.backoff_factor
  self.growth_interval = s.growth_interval or self.growth_interval
end

return M
