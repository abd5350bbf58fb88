-- The base of every optimizer: parameter groups, per-parameter state,
-- zero_grad, and state_dict/load_state_dict (state keyed by the parameter's
-- position across groups, as PyTorch does).
local nnr = require "nnr"
local check = require "nnr.check"

-- a copy of a list option (betas), so that groups and state dicts never share one table
local function copy_list(t) local c = {}; for k, v in pairs(t) do c[k] = v end; return c end

local Optimizer = {}
Optimizer.__index = Optimizer

function Optimizer:extend(name, defaults)
  local cls = setmetatable({}, { __index = self, __call = function(c, params, opts)
    local o = setmetatable({}, c)
    o:__init(params, opts)
    return o
  end })
  cls.__index = cls
  cls.__name = name
  cls.defaults = defaults
  return cls
end

-- params: a list of tensors, or a list of groups {params = {...}, lr = ...}
function Optimizer:__init(params, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if self.defaults[k] == nil then error(self.__name .. ": unknown option '" .. tostring(k) .. "'", 0) end
  end
  if type(params) ~= "table" or #params == 0 then error(self.__name .. ": expected a non-empty list of parameters or groups", 0) end
  local groups = nnr.is_tensor(params[1]) and { { params = params } } or params
  self.param_groups, self.state = {}, {}
  for gi, g in ipairs(groups) do
    if type(g) ~= "table" or type(g.params) ~= "table" then
      error(string.format("%s: group %d must be a table {params = {...}, ...}", self.__name, gi), 0)
    end
    for k in pairs(g) do
      if k ~= "params" and self.defaults[k] == nil then
        error(string.format("%s: group %d: unknown option '%s'", self.__name, gi, tostring(k)), 0)
      end
    end
    local group = { params = g.params }
    for k, v in pairs(self.defaults) do
      local value = g[k]
      if value == nil then value = opts[k] end
      if value == nil then value = v end
      group[k] = type(value) == "table" and copy_list(value) or value     -- groups never share a betas table
    end
    for pi, p in ipairs(group.params) do
      if not nnr.is_tensor(p) then error(string.format("%s: group %d entry %d is not a tensor", self.__name, gi, pi), 0) end
      if not p.requires_grad then error(string.format("%s: group %d parameter %d does not require grad", self.__name, gi, pi), 0) end
    end
    self:check_group(group)
    self.param_groups[gi] = group
  end
end

-- the options every optimizer has; a subclass checks its own after calling this. Checked at
-- construction and again at every step, so that a NaN that a scheduler or the user put into a
-- group stops the run instead of training to nan.
local NON_NEGATIVE = { min = 0 }
function Optimizer:check_group(group)
  check.number(self.__name, "lr", group.lr, NON_NEGATIVE)
  if group.weight_decay ~= nil then check.number(self.__name, "weight_decay", group.weight_decay, NON_NEGATIVE) end
end

-- The iteration every optimizer shares: each parameter that has a gradient, with its group and its
-- state (nil before its first update). An optimizer supplies update(p, grad, group, state), its own
-- rule (one fused kernel call), and keeps its state in self.state[p].
function Optimizer:step()
  for _, g in ipairs(self.param_groups) do
    self:check_group(g)
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad then self:update(p, grad, g, self.state[p]) end
    end
  end
end

function Optimizer:zero_grad(set_to_zero)
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if set_to_zero and p.grad then p.grad:zero_() else p.grad = nil end
    end
  end
end

-- parameters in order across groups: the keys of the state
function Optimizer:each_param()
  local list = {}
  for gi, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do list[#list + 1] = { p, g } end
  end
  return list
end

function Optimizer:state_dict()
  local state, groups, index = {}, {}, 0
  for gi, g in ipairs(self.param_groups) do
    local entry = { params = {} }
    for k, v in pairs(g) do if k ~= "params" then entry[k] = type(v) == "table" and copy_list(v) or v end end
    for _, p in ipairs(g.params) do
      index = index + 1
      entry.params[#entry.params + 1] = index
      if self.state[p] then
        local s = {}
        for k, v in pairs(self.state[p]) do s[k] = v end
        state[index] = s
      end
    end
    groups[gi] = entry
  end
  return { state = state, param_groups = groups }
end

function Optimizer:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" or type(sd.state) ~= "table" then
    error(self.__name .. ":load_state_dict: expected the table state_dict() returns ({state = ..., param_groups = ...})", 0)
  end
  for gi, g in ipairs(sd.param_groups) do
    if type(g) ~= "table" or type(g.params) ~= "table" then
      error(string.format("%s:load_state_dict: group %d has no list of parameters", self.__name, gi), 0)
    end
  end
  if #sd.param_groups ~= #self.param_groups then
    error(string.format("%s:load_state_dict: %d parameter groups in the state, %d in the optimizer", self.__name,
      #sd.param_groups, #self.param_groups), 0)
  end
  local index = 0
  for gi, g in ipairs(self.param_groups) do
    local src = sd.param_groups[gi]
    if #src.params ~= #g.params then
      error(string.format("%s:load_state_dict: group %d has %d parameters in the state, %d in the optimizer", self.__name, gi,
        #src.params, #g.params), 0)
    end
    local loaded = {}
    for k, v in pairs(g) do loaded[k] = v end
    for k, v in pairs(src) do if k ~= "params" then loaded[k] = v end end
    self:check_group(loaded)        -- a checkpoint's NaN lr is refused here, not trained with
    for k, v in pairs(loaded) do g[k] = v end
    for _, p in ipairs(g.params) do
      index = index + 1
      local s = sd.state[index] or sd.state[tostring(index)]
      if s then
        local mine = {}
        for k, v in pairs(s) do
          if nnr.is_tensor(v) and k ~= "step" then
            if nnr.shape_str(v:size()) ~= nnr.shape_str(p:size()) then
              error(string.format("%s:load_state_dict: state '%s' of parameter %d has shape %s, the parameter %s", self.__name,
                k, index, nnr.shape_str(v:size()), nnr.shape_str(p:size())), 0)
            end
            v = v:to(p.device, p.dtype):clone()
          elseif nnr.is_tensor(v) then
            v = v:item()
          end
          mine[k] = v
        end
        self.state[p] = mine
      else
        self.state[p] = nil
      end
    end
  end
end

return Optimizer
