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

return M
