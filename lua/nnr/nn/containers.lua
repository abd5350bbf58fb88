-- Containers: Sequential runs its children in order; ModuleList, ModuleDict and
-- ParameterList hold modules or parameters for a forward the user writes. An
-- error inside a child names the child.
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local V = require "nnr.check"

local M = {}

local Sequential = Module:extend("Sequential")
M.Sequential = Sequential

function Sequential:__init(...)
  Module.__init(self)
  local mods = { ... }
  if #mods == 1 and type(mods[1]) == "table" and getmetatable(mods[1]) == nil then mods = mods[1] end
  for i, m in ipairs(mods) do self:add_module(tostring(i), m) end
end

function Sequential:add(m)
  self:add_module(tostring(#self._children + 1), m)
  return self
end

function Sequential:__len() return #self._children end

function Sequential:get(i) return self[tostring(i)] end

-- A child that can absorb the next one into a single op (Module:fuse_next: Linear, Conv2d and
-- QuantizedLinear take a following ReLU) runs the pair as that op. Sequential asks the modules;
-- it knows no classes.
local function run_fused(child, nxt, fused, x)
  if not Module._profiling.on then return fused(x) end
  -- profiled: one scope for the pair, "2 (Linear)+ReLU"
  return Module._in_scope((rawget(child, "_prof_name") or child.__name) .. "+" .. nxt.__name, fused, x)
end

function Sequential:forward(x)
  local children = self._children
  local skip = false
  for i, name in ipairs(children) do
    if skip then skip = false; goto continue end
    local child = self[name]
    local nxt = self[children[i + 1] or ""]
    local fused = nxt and type(child.fuse_next) == "function" and type(nxt.fusable_activation) == "function" and
      not rawget(child, "_hooks") and not rawget(nxt, "_hooks") and child:fuse_next(nxt)
    local ok, out
    if fused then
      ok, out = pcall(run_fused, child, nxt, fused, x)
      skip = true
    else
      ok, out = pcall(child.__call, child, x)
    end
    if not ok then
      local msg = tostring(out)
      if not msg:find("^Sequential%[") and not msg:find("^" .. child.__name) then msg = child.__name .. ": " .. msg end
      error(string.format("Sequential[%d] %s", i, msg), 0)
    end
    x = out
    ::continue::
  end
  return x
end

local ModuleList = Module:extend("ModuleList")
M.ModuleList = ModuleList

function ModuleList:__init(mods)
  Module.__init(self)
  for i, m in ipairs(mods or {}) do self:add_module(tostring(i), m) end
end

function ModuleList:append(m) self:add_module(tostring(#self._children + 1), m); return self end
function ModuleList:get(i) return self[tostring(i)] end
function ModuleList:__len() return #self._children end
function ModuleList:ipairs()
  local i = 0
  return function()
    i = i + 1
    local m = self[tostring(i)]
    if m then return i, m end
  end
end

-- ModuleDict{name = module, ...} or ModuleDict{{name, module}, ...} (that order kept; a plain table's
-- keys are taken in sorted order). md.name or md:get(name) reads; names are the state dict's prefixes.
local ModuleDict = Module:extend("ModuleDict")
M.ModuleDict = ModuleDict

-- the {name, value} pairs of a constructor or update() argument, in a defined order
local function ordered_pairs(who, t)
  if t == nil then return {} end
  if type(t) ~= "table" or getmetatable(t) ~= nil then error(who .. ": expected a table of {name = value} or {{name, value}, ...}, got " .. type(t), 0) end
  local out = {}
  if #t > 0 then
    for i, kv in ipairs(t) do
      if type(kv) ~= "table" or getmetatable(kv) ~= nil or #kv ~= 2 then error(string.format("%s: entry %d must be a pair {name, value}", who, i), 0) end
      out[i] = kv
    end
    return out
  end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do out[i] = { k, t[k] } end
  return out
end

-- a key may not shadow a method or field ("forward", "train", "training", ...)
local function check_key(who, cls, key)
  if type(key) ~= "string" or key == "" or key:find(".", 1, true) then
    error(string.format("%s: key must be a non-empty string without '.', got %s", who, V.show(key)), 0)
  end
  if cls[key] ~= nil or key:sub(1, 1) == "_" or key == "training" then
    error(string.format("%s: key '%s' is the name of an attribute or method; choose another", who, key), 0)
  end
end

function ModuleDict:__init(modules)
  Module.__init(self)
  self:update(modules)
end
function ModuleDict:set(key, m)
  check_key("ModuleDict", ModuleDict, key)
  return self:add_module(key, m)
end
function ModuleDict:get(key) return rawget(self, key) end
function ModuleDict:contains(key) return self:_has(self._children, key) end
function ModuleDict:update(modules)
  for _, kv in ipairs(ordered_pairs("ModuleDict", modules)) do self:set(kv[1], kv[2]) end
  return self
end
function ModuleDict:pop(key)
  local m = rawget(self, key)
  if not self:contains(key) then error("ModuleDict: no key '" .. tostring(key) .. "'", 0) end
  for i, n in ipairs(self._children) do if n == key then table.remove(self._children, i); break end end
  rawset(self, key, nil)
  return m
end
function ModuleDict:keys() local out = {}; for i, n in ipairs(self._children) do out[i] = n end; return out end
function ModuleDict:values() local out = {}; for i, n in ipairs(self._children) do out[i] = self[n] end; return out end
function ModuleDict:items() return self:named_children() end
function ModuleDict:len() return #self._children end
ModuleDict.__len = ModuleDict.len

-- ParameterList{t1, t2, ...}: parameters named "1", "2", ... (nnrun counts from 1, as Sequential's
-- children; PyTorch's names are "0", "1", ...)
local ParameterList = Module:extend("ParameterList")
M.ParameterList = ParameterList
function ParameterList:__init(params)
  Module.__init(self)
  if params ~= nil and (type(params) ~= "table" or getmetatable(params) ~= nil) then
    error("ParameterList: expected a table of tensors {t1, t2, ...}, got " .. type(params), 0)
  end
  for _, p in ipairs(params or {}) do self:append(p) end
end
function ParameterList:append(p)
  if not nnr.is_tensor(p) then error("ParameterList: a parameter must be a tensor, got " .. type(p), 0) end
  self:register_parameter(tostring(#self._params + 1), p)
  return self
end
-- extend{t, ...} appends; extend("Name") (a string) still makes a subclass, as for every module
function ParameterList:extend(params)
  if type(params) == "string" then return Module.extend(self, params) end
  for _, p in ipairs(params) do self:append(p) end
  return self
end
function ParameterList:get(i)
  V.integer("ParameterList", "index", i, -#self._params, #self._params)
  if i < 0 then i = #self._params + 1 + i end
  if i == 0 then error("ParameterList: index 0 is not an index (they count from 1)", 0) end
  return self[tostring(i)]
end
function ParameterList:len() return #self._params end
ParameterList.__len = ParameterList.len
function ParameterList:ipairs()
  local i = 0
  return function()
    i = i + 1
    local p = rawget(self, tostring(i))
    if p then return i, p end
  end
end
function ParameterList:forward() error("ParameterList: a container has no forward; use its parameters in yours", 0) end
function ParameterList:extra_repr() return #self._params .. " parameters" end

return M
