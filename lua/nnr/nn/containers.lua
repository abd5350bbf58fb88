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

-- A Linear or Conv2d followed by a ReLU runs as one fused op (F.linear_relu, F.conv2d_relu:
-- the relu is applied while the output is still in cache, and the backward reads the mask
-- from the output). Only the library's own classes fuse, so a subclass with its own forward
-- runs as written.
local Linear, Conv2d, ReLU
local function fusable(a, b)
  if not Linear then
    local nn = require "nnr.nn"
    Linear, Conv2d, ReLU = nn.Linear, nn.Conv2d, nn.ReLU
  end
  local ma = getmetatable(a)
  if b == nil or getmetatable(b) ~= ReLU or rawget(b, "forward") ~= nil or rawget(a, "forward") ~= nil then return false end
  -- any module with forward_relu(x) (nnr.quant's QuantizedLinear) fuses the same way
  return ma == Linear or ma == Conv2d or type(a.forward_relu) == "function"
end

local function fused(m, x)
  local F = require "nnr.nn.functional"
  local run
  if getmetatable(m) == Conv2d then
    run = function() return m:_forward(x, true) end
  elseif type(m.forward_relu) == "function" then
    run = function() return m:forward_relu(x) end
  else
    if x:dim() < 1 or x:size(-1) ~= m.in_features then return m:forward(x) end      -- the Linear's own error
    run = function() return F.linear_relu(x, m.weight, m.bias) end
  end
  if not Module._profiling.on then return run() end
  -- profiled: one scope for the pair, "2 (Linear)+ReLU"
  return Module._in_scope((rawget(m, "_prof_name") or m.__name) .. "+ReLU", run)
end

function Sequential:forward(x)
  local children = self._children
  local skip = false
  for i, name in ipairs(children) do
    if skip then skip = false; goto continue end
    local child = self[name]
    local fuse = fusable(child, self[children[i + 1] or ""])
    local ok, out
    if fuse then
      ok, out = pcall(fused, child, x)
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
