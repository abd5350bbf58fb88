-- Containers: Sequential runs its children in order; ModuleList holds modules
-- for a forward the user writes. An error inside a child names the child.
local Module = require "nnr.nn.module"

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

function Sequential:forward(x)
  for i, name in ipairs(self._children) do
    local child = self[name]
    local ok, out = pcall(child.__call, child, x)
    if not ok then
      local msg = tostring(out)
      if not msg:find("^Sequential%[") and not msg:find("^" .. child.__name) then msg = child.__name .. ": " .. msg end
      error(string.format("Sequential[%d] %s", i, msg), 0)
    end
    x = out
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

return M
