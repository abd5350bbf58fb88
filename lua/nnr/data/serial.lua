-- Sends Lua values to the loader's worker states (lua/nnr/data/worker.lua).
--
-- encode(value) returns Lua source that rebuilds the value in another state,
-- plus the tensors and C datasets it refers to. Tables (cycles and shared
-- references kept, metatables too), strings, numbers and booleans are
-- copied; functions travel as bytecode (string.dump) with their upvalues
-- copied by value; tensors and C datasets travel by pointer (the pool keeps a
-- reference); modules and the values they export (anything reachable as
-- require(name)[key]) are looked up again on the other side instead of copied.
local ffi = require "ffi"

local M = {}

-- value -> "require(name)" / "require(name)[key]" for every loaded module
local function known_values()
  local known = {}
  for name, mod in pairs(package.loaded) do
    if type(name) == "string" and (type(mod) == "table" or type(mod) == "function") and known[mod] == nil then
      known[mod] = string.format("R(%q)", name)
    end
  end
  for name, mod in pairs(package.loaded) do
    if type(name) == "string" and type(mod) == "table" and name ~= "_G" then
      for k, v in pairs(mod) do
        if type(k) == "string" and (type(v) == "table" or type(v) == "function") and known[v] == nil then
          known[v] = string.format("R(%q)[%q]", name, k)
        end
      end
    end
  end
  for k, v in pairs(_G) do
    if type(k) == "string" and (type(v) == "table" or type(v) == "function") and known[v] == nil then
      known[v] = string.format("_G[%q]", k)
    end
  end
  return known
end

local function number(n)
  if n ~= n then return "(0/0)" end
  if n == math.huge then return "(1/0)" end
  if n == -math.huge then return "(-1/0)" end
  if n == math.floor(n) and math.abs(n) < 2 ^ 53 then return string.format("%d", n) end
  return string.format("%.17g", n)
end

-- is_tensor(v), dataset_handle(v) -> nnr_dataset* or nil
function M.encode(root, is_tensor, dataset_handle)
  local known = known_values()
  local out, ids, nid = { "local R, T, D, F = ...\nlocal v = {}\n" }, {}, 0
  local tensors, tensor_ids, datasets, dataset_ids = {}, {}, {}, {}
  local later = {}          -- upvalue assignments, after every value exists
  local path = {}

  local function fail(what)
    error(string.format("DataLoader: cannot send %s to the worker states (at %s); keep it out of the dataset or create it inside get()",
      what, #path > 0 and table.concat(path, ".") or "the dataset"), 0)
  end

  local ref
  local function new_id() nid = nid + 1; return nid end

  ref = function(x)
    local t = type(x)
    if t == "nil" then return "nil" end
    if t == "number" then return number(x) end
    if t == "boolean" then return tostring(x) end
    if t == "string" then return string.format("%q", x) end
    if known[x] then return known[x] end
    if ids[x] then return "v[" .. ids[x] .. "]" end
    if is_tensor(x) then
      if not tensor_ids[x] then tensors[#tensors + 1] = x; tensor_ids[x] = #tensors end
      return "T[" .. tensor_ids[x] .. "]"
    end
    local h = dataset_handle(x)
    if h ~= nil then
      local key = tostring(ffi.cast("uintptr_t", h))
      if not dataset_ids[key] then datasets[#datasets + 1] = x; dataset_ids[key] = #datasets end
      -- the C dataset is wrapped again on the other side, with its Lua fields copied
      local id = new_id()
      ids[x] = id
      out[#out + 1] = string.format("v[%d] = D(%d)\n", id, dataset_ids[key])
      return "v[" .. id .. "]"
    end
    if t == "table" then
      local id = new_id()
      ids[x] = id
      out[#out + 1] = string.format("v[%d] = {}\n", id)
      for k, val in pairs(x) do
        path[#path + 1] = tostring(k)
        local ks, vs = ref(k), ref(val)
        out[#out + 1] = string.format("v[%d][%s] = %s\n", id, ks, vs)
        path[#path] = nil
      end
      local mt = getmetatable(x)
      if mt ~= nil then
        path[#path + 1] = "(metatable)"
        local ms = ref(mt)
        out[#out + 1] = string.format("setmetatable(v[%d], %s)\n", id, ms)
        path[#path] = nil
      end
      return "v[" .. id .. "]"
    end
    if t == "function" then
      local ok, code = pcall(string.dump, x)
      if not ok then fail("a C function") end
      local id = new_id()
      ids[x] = id
      out[#out + 1] = string.format("v[%d] = F(%q)\n", id, code)
      local i = 1
      while true do
        local name, val = debug.getupvalue(x, i)
        if not name then break end
        path[#path + 1] = "upvalue " .. name
        local vs = ref(val)
        later[#later + 1] = string.format("debug.setupvalue(v[%d], %d, %s)\n", id, i, vs)
        path[#path] = nil
        i = i + 1
      end
      return "v[" .. id .. "]"
    end
    if t == "cdata" then fail("a cdata value (" .. tostring(ffi.typeof(x)) .. ")") end
    fail("a " .. t)
  end

  local top = ref(root)
  for _, line in ipairs(later) do out[#out + 1] = line end
  -- statements in functions of at most 500, so that no function outgrows LuaJIT's limits; each call
  -- starts with ";" (a line opening with "(" after a call is ambiguous to Lua 5.1's parser)
  local chunks = { out[1] }
  for i = 2, #out, 500 do
    chunks[#chunks + 1] = ";(function()\n" .. table.concat(out, "", i, math.min(i + 499, #out)) .. "end)()\n"
  end
  chunks[#chunks + 1] = "return " .. top .. "\n"
  return table.concat(chunks), tensors, datasets
end

-- the other side of encode, in the receiving state: the value rebuilt from payload, with the
-- tensors (ntensors pointers at tensors_ud, each taken with a reference of this state's own) and
-- dataset(i) giving the C datasets; name labels errors in the payload
function M.decode(payload, name, tensors_ud, ntensors, dataset)
  local binding = require "nnr.binding"
  local C = binding.C
  local tp = ffi.cast("nnr_tensor **", tensors_ud)
  local T = {}
  for i = 1, ntensors do
    C.nnr_tensor_retain(tp[i - 1])
    T[i] = binding.own(tp[i - 1])
  end
  local function F(code) return assert(loadstring(code)) end
  return assert(loadstring(payload, "=" .. name))(require, T, dataset, F)
end

return M
