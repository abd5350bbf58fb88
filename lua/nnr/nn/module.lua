-- nn.Module: the base of every layer. A module holds parameters, buffers
-- and child modules in registration order; a subclass writes forward() and
-- gets the rest (parameters, state_dict, train/eval, to, summary).
--
--   local MyLayer = nn.Module:extend("MyLayer")
--   function MyLayer:__init(n) nn.Module.__init(self); self:register_parameter("w", nnr.randn(n)) end
--   function MyLayer:forward(x) return x * self.w end
local nnr = require "nnr"
local is_dtype = require("nnr.binding").is_dtype

local Module = {}

-- to("f64"), to("cuda:0"), to("cuda", "f16"): which is the dtype and which the device
local function split_to_args(a, b)
  local dtype, device
  for _, x in ipairs { a or false, b or false } do
    if x then if is_dtype(x) then dtype = x else device = x end end
  end
  return dtype, device
end
Module.__index = Module
Module.__name = "Module"

-- a subclass; calling it constructs an instance through __init
function Module:extend(name)
  local cls = setmetatable({}, { __index = self, __call = function(c, ...)
    local obj = setmetatable({}, c)
    obj:__init(...)
    return obj
  end })
  -- an instance's names: its own, then the class chain's. A missing name reads as nil (modules keep
  -- optional settings that way), unless it is a misspelling of a method, parameter, buffer or child
  -- (m:forwrd(x), m.wieght): then it is an error naming the closest
  cls.__index = function(obj, k)
    local v = cls[k]
    if v ~= nil or type(k) ~= "string" then return v end
    return require("nnr.names").misspelt(obj, cls, k)
  end
  cls.__name = name
  cls.__tostring = self.__tostring
  cls.__call = self.__call
  cls.super = self
  return cls
end

function Module:__init()
  rawset(self, "_params", {})       -- names, in order
  rawset(self, "_buffers", {})
  rawset(self, "_children", {})
  rawset(self, "training", true)
end

function Module:register_parameter(name, t)
  if t ~= nil and not nnr.is_tensor(t) then error(self.__name .. ": parameter '" .. name .. "' must be a tensor", 0) end
  if t and not t.requires_grad and t:is_floating_point() then t:requires_grad_(true) end
  if rawget(self, name) == nil or not self:_has(self._params, name) then table.insert(self._params, name) end
  rawset(self, name, t)
  return t
end

function Module:register_buffer(name, t)
  if not self:_has(self._buffers, name) then table.insert(self._buffers, name) end
  rawset(self, name, t)
  return t
end

function Module:add_module(name, m)
  if type(m) ~= "table" or type(m.__call) ~= "function" then
    error(string.format("%s: child '%s' must be a module, got %s", self.__name, tostring(name), type(m)), 0)
  end
  if not self:_has(self._children, name) then table.insert(self._children, name) end
  rawset(self, name, m)
  return m
end

function Module:_has(list, name)
  for _, n in ipairs(list) do if n == name then return true end end
  return false
end

function Module:forward()
  error(self.__name .. ": forward is not implemented", 0)
end

-- Fusion, as nn.Sequential asks for it. A module that can absorb the module after it into one op
-- returns, from fuse_next(next), a function(x) computing next(self(x)); others return nil. An
-- activation says what it is with fusable_activation() ("relu"), so that a layer can recognise it
-- without knowing its class; a subclass or an instance with its own forward says nil and runs as written.
function Module:fuse_next(next_module) return nil end
function Module:fusable_activation() return nil end

-- While nnr.profiler runs, each module call is a scope: its ops nest under it in the profile.
local profiling = { on = false, names = {} }
Module._profiling = profiling
local function scoped(ok, ...)
  require("nnr.binding").C.nnr_profiler_pop()
  if not ok then error((...), 0) end
  return ...
end
-- fn(...) as a profiler scope named name (a module's call; Sequential's fused pairs)
function Module._in_scope(name, fn, ...)
  local p = profiling.names[name]
  if not p then
    p = require("nnr.binding").C.nnr_profiler_intern(name)
    profiling.names[name] = p
  end
  require("nnr.binding").C.nnr_profiler_push(p)
  return scoped(pcall(fn, ...))
end
local function profiled_call(self, ...)
  return Module._in_scope(rawget(self, "_prof_name") or self.__name, self.forward, self, ...)
end
-- ---------------------------------------------------------------- hooks
-- register_forward_pre_hook(fn(module, args) -> nil | new args (a list, or one value)),
-- register_forward_hook(fn(module, args, output) -> nil | new output),
-- register_full_backward_hook(fn(module, grad_input, grad_output) -> nil | new grad_input):
-- each returns a handle whose remove() takes the hook off. args, grad_input and grad_output are
-- lists (with n); a gradient that did not arrive is nil. A module with hooks is never fused with the
-- next one by Sequential, so that its hooks see it.
local function pack(...) return { n = select("#", ...), ... } end
local HookHandle = {}
HookHandle.__index = HookHandle
function HookHandle:remove()
  local list = self.list
  for i = #list, 1, -1 do if list[i] == self.entry then table.remove(list, i) end end
  local h = rawget(self.module, "_hooks")
  if h and #h.pre == 0 and #h.forward == 0 and #h.backward == 0 then rawset(self.module, "_hooks", nil) end
end

local function add_hook(self, kind, fn, what)
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    error(self.__name .. ": " .. what .. ": expected a function, got " .. type(fn), 0)
  end
  local h = rawget(self, "_hooks")
  if not h then h = { pre = {}, forward = {}, backward = {} }; rawset(self, "_hooks", h) end
  local entry = { fn = fn }
  table.insert(h[kind], entry)
  return setmetatable({ module = self, list = h[kind], entry = entry }, HookHandle)
end
function Module:register_forward_pre_hook(fn) return add_hook(self, "pre", fn, "register_forward_pre_hook") end
function Module:register_forward_hook(fn) return add_hook(self, "forward", fn, "register_forward_hook") end
function Module:register_full_backward_hook(fn) return add_hook(self, "backward", fn, "register_full_backward_hook") end
function Module:has_hooks() return rawget(self, "_hooks") ~= nil end

-- Full backward hooks, as PyTorch's: the tensor inputs pass through an identity Function whose
-- backward sees the gradients of the inputs (and calls the hooks); the outputs through another whose
-- backward records the gradients of the outputs. With no input requiring grad, the hooks run from
-- the outputs' side with an empty grad_input.
local hook_functions
local function backward_hook_functions()
  if hook_functions then return hook_functions end
  local Function = nnr.autograd.Function
  local function call_hooks(state, grads)
    local grad_input = grads
    for _, e in ipairs(state.hooks) do
      local r = e.fn(state.module, grad_input, state.grad_output or pack())
      if r ~= nil then
        if type(r) ~= "table" or nnr.is_tensor(r) then r = pack(r) end
        grad_input = pack(unpack(r, 1, r.n or table.maxn(r)))
      end
    end
    return grad_input
  end
  hook_functions = {
    inputs = Function { name = "BackwardHookInputs",
      forward = function(ctx, state, ...) ctx.state = state; ctx:set_materialize_grads(false); return ... end,
      backward = function(ctx, ...)
        local g = call_hooks(ctx.state, pack(...))
        return nil, unpack(g, 1, g.n)
      end },
    outputs = Function { name = "BackwardHookOutputs",
      forward = function(ctx, state, ...) ctx.state = state; ctx:set_materialize_grads(false); return ... end,
      backward = function(ctx, ...)
        ctx.state.grad_output = pack(...)
        if not ctx.state.inputs_tracked then call_hooks(ctx.state, pack()) end
        return nil, ...
      end },
  }
  return hook_functions
end

local function forward_plain(self, ...)
  if profiling.on then return profiled_call(self, ...) end
  return self:forward(...)
end

local function hooked_call(self, ...)
  local h = rawget(self, "_hooks")
  local args = pack(...)
  for _, e in ipairs(h.pre) do
    local r = e.fn(self, args)
    if r ~= nil then
      if type(r) ~= "table" or nnr.is_tensor(r) then args = pack(r) else args = pack(unpack(r, 1, r.n or table.maxn(r))) end
    end
  end
  local state
  if #h.backward > 0 and nnr.is_grad_enabled() then
    local fns = backward_hook_functions()
    state = { module = self, hooks = h.backward }
    local at, ts = {}, {}
    for i = 1, args.n do
      if nnr.is_tensor(args[i]) and args[i].requires_grad then at[#at + 1] = i; ts[#ts + 1] = args[i] end
    end
    if #ts > 0 then
      state.inputs_tracked = true
      local wrapped = pack(fns.inputs(state, unpack(ts)))
      args = pack(unpack(args, 1, args.n))
      for k, i in ipairs(at) do args[i] = wrapped[k] end
    end
  end
  local out = pack(forward_plain(self, unpack(args, 1, args.n)))
  for _, e in ipairs(h.forward) do
    local r = e.fn(self, args, out.n == 1 and out[1] or out)
    if r ~= nil then out = (type(r) == "table" and not nnr.is_tensor(r) and r.n) and r or pack(r) end
  end
  if state then
    local tracked = false
    for i = 1, out.n do tracked = tracked or (nnr.is_tensor(out[i]) and out[i].requires_grad) end
    if tracked then out = pack(backward_hook_functions().outputs(state, unpack(out, 1, out.n))) end
  end
  return unpack(out, 1, out.n)
end

Module.__call = function(self, ...)
  if rawget(self, "_hooks") then return hooked_call(self, ...) end
  if profiling.on then return profiled_call(self, ...) end
  return self:forward(...)
end

-- {name, module} of the direct children
function Module:named_children()
  local out = {}
  for _, n in ipairs(self._children) do out[#out + 1] = { n, self[n] } end
  return out
end

function Module:children()
  local out = {}
  for _, nc in ipairs(self:named_children()) do out[#out + 1] = nc[2] end
  return out
end

-- this module and every descendant, depth first
function Module:modules(out)
  out = out or {}
  out[#out + 1] = self
  for _, c in ipairs(self:children()) do c:modules(out) end
  return out
end

-- {name, tensor} for every parameter; a tensor shared by two modules appears once
function Module:named_parameters(prefix, seen, out)
  prefix, seen, out = prefix or "", seen or {}, out or {}
  for _, n in ipairs(self._params) do
    local p = self[n]
    if p and not seen[p] then
      seen[p] = true
      out[#out + 1] = { prefix .. n, p }
    end
  end
  for _, nc in ipairs(self:named_children()) do nc[2]:named_parameters(prefix .. nc[1] .. ".", seen, out) end
  return out
end

function Module:parameters()
  local out = {}
  for _, np in ipairs(self:named_parameters()) do out[#out + 1] = np[2] end
  return out
end

function Module:named_buffers(prefix, out)
  prefix, out = prefix or "", out or {}
  for _, n in ipairs(self._buffers) do
    if self[n] then out[#out + 1] = { prefix .. n, self[n] } end
  end
  for _, nc in ipairs(self:named_children()) do nc[2]:named_buffers(prefix .. nc[1] .. ".", out) end
  return out
end

function Module:train(mode)
  if mode == nil then mode = true end
  for _, m in ipairs(self:modules()) do rawset(m, "training", mode) end
  return self
end

function Module:eval() return self:train(false) end

-- gradients to nil (the default) or zero
function Module:zero_grad(set_to_zero)
  for _, p in ipairs(self:parameters()) do
    if set_to_zero and p.grad then p.grad:zero_() else p.grad = nil end
  end
end

function Module:apply(fn)
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

-- moves or casts every parameter and buffer; references to parameters stay valid
-- (the tensors are updated in place, as PyTorch's module.to does)
function Module:to(a, b)
  nnr.no_grad(function()
    for _, m in ipairs(self:modules()) do
      for _, n in ipairs(m._params) do
        local p = m[n]
        if p then
          local moved = p:to(a, b)
          if moved ~= p then p:set_data_(moved) end
        end
      end
      for _, n in ipairs(m._buffers) do
        local t = m[n]
        if t then
          local dtype, device = split_to_args(a, b)
          if not t:is_floating_point() then dtype = nil end   -- counters stay integers
          rawset(m, n, t:to({ dtype = dtype, device = device }))
        end
      end
    end
  end)
  return self
end

function Module:float() return self:to("f32") end
function Module:double() return self:to("f64") end
function Module:cuda(i) return self:to("cuda:" .. (i or 0)) end
function Module:cpu() return self:to("cpu") end

-- every parameter under every name it has: a tensor two modules share (tied weights) once per
-- module, as PyTorch's state_dict lists it
local function all_parameters(m, prefix, out)
  for _, n in ipairs(m._params) do
    local p = m[n]
    if p then out[#out + 1] = { prefix .. n, p } end
  end
  for _, nc in ipairs(m:named_children()) do all_parameters(nc[2], prefix .. nc[1] .. ".", out) end
  return out
end

-- name -> tensor for parameters and buffers (PyTorch's key names; a shared tensor under each name)
function Module:state_dict()
  local sd, order = {}, {}
  for _, np in ipairs(all_parameters(self, "", {})) do sd[np[1]] = np[2]; order[#order + 1] = np[1] end
  for _, nb in ipairs(self:named_buffers()) do sd[nb[1]] = nb[2]; order[#order + 1] = nb[1] end
  return setmetatable(sd, { __index = { _order = order } })
end

-- copies values in; strict (the default) wants exactly the same keys
function Module:load_state_dict(sd, strict)
  if type(sd) ~= "table" then
    error(string.format("%s:load_state_dict: expected a table of tensors (what state_dict() returns), got %s", self.__name, type(sd)), 0)
  end
  if strict == nil then strict = true end
  local mine = self:state_dict()
  local missing, unexpected = {}, {}
  for _, k in ipairs(mine._order) do if sd[k] == nil then missing[#missing + 1] = k end end
  for k in pairs(sd) do if mine[k] == nil then unexpected[#unexpected + 1] = k end end
  table.sort(unexpected)
  if strict and (#missing > 0 or #unexpected > 0) then
    error(string.format("%s:load_state_dict: missing keys {%s}, unexpected keys {%s}", self.__name,
      table.concat(missing, ", "), table.concat(unexpected, ", ")), 0)
  end
  nnr.no_grad(function()
    for _, k in ipairs(mine._order) do
      local src = sd[k]
      if src ~= nil then
        local dst = mine[k]
        if nnr.shape_str(src:size()) ~= nnr.shape_str(dst:size()) then
          error(string.format("%s:load_state_dict: '%s' has shape %s in the checkpoint, %s in the model", self.__name, k,
            nnr.shape_str(src:size()), nnr.shape_str(dst:size())), 0)
        end
        dst:copy_(src)
      end
    end
  end)
  -- modules that derive state from what was loaded (QuantizedLinear repacks its weights)
  for _, m in ipairs(self:modules()) do if m.after_load then m:after_load() end end
  return missing, unexpected
end

-- bytes of the state dict (parameters and buffers), what a checkpoint of the model holds
function Module:size_bytes()
  local bytes = 0
  for _, t in pairs(self:state_dict()) do bytes = bytes + t:numel() * nnr.dtype_size(t.dtype) end
  return bytes
end

function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

-- one line for a leaf module; subclasses give extra_repr()
function Module:extra_repr() return "" end

Module.__tostring = function(self)
  local children = self:named_children()
  if #children == 0 then return self.__name .. "(" .. self:extra_repr() .. ")" end
  local lines = { self.__name .. "(" }
  for _, nc in ipairs(children) do
    local s = tostring(nc[2]):gsub("\n", "\n  ")
    lines[#lines + 1] = "  (" .. nc[1] .. "): " .. s
  end
  lines[#lines + 1] = ")"
  return table.concat(lines, "\n")
end

-- a table of layers with their output shapes and parameter counts, from one
-- forward pass on zeros of input_shape (in eval mode, without recording)
function Module:summary(input_shape, opts)
  opts = opts or {}
  local rows, depth = {}, 0
  local originals = {}
  for _, m in ipairs(self:modules()) do
    local fwd = m.forward
    originals[m] = rawget(m, "forward")
    rawset(m, "forward", function(mod, ...)
      depth = depth + 1
      local row = { depth = depth }
      rows[#rows + 1] = row
      local out = fwd(mod, ...)
      depth = depth - 1
      local own_params = 0
      for _, n in ipairs(mod._params) do if mod[n] then own_params = own_params + mod[n]:numel() end end
      if mod.num_weights then own_params = own_params + mod:num_weights() end   -- weights kept as buffers (int8)
      row.name = mod.__name
      row.shape = nnr.is_tensor(out) and nnr.shape_str(out:size()) or "-"
      row.params = own_params
      return out
    end)
  end
  local was_training = self.training
  self:eval()
  local ok, err = pcall(function()
    nnr.no_grad(function() self:forward(nnr.zeros(input_shape, { dtype = opts.dtype, device = opts.device })) end)
  end)
  for m, f in pairs(originals) do rawset(m, "forward", f) end
  self:train(was_training)
  if not ok then error(err, 0) end
  local lines = { string.format("%-40s %-22s %12s", "layer", "output shape", "parameters") }
  local total = 0
  for _, r in ipairs(rows) do
    lines[#lines + 1] = string.format("%-40s %-22s %12d", string.rep("  ", r.depth - 1) .. r.name, r.shape, r.params)
    total = total + r.params
  end
  lines[#lines + 1] = string.format("total parameters: %d, size %.1f kB (parameters and buffers as saved)", total,
    self:size_bytes() / 1024)
  return table.concat(lines, "\n")
end

return Module
