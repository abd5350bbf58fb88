-- JSON text of Lua values, for the writers of logs and traces (nnr.logging, the profiler's trace):
--   json.encode({loss = 0.25, tags = {"a", "b"}})  -> {"loss":0.25,"tags":["a","b"]}
-- Numbers keep every bit (%.17g, integers as integers); NaN and the infinities are written NaN, Infinity
-- and -Infinity, as Python's json module and pandas read them (strict JSON has no spelling for them).
-- Tables with keys 1..n (and no others) are arrays, others objects with their keys sorted, so that the
-- same value always gives the same text; an empty table is {}. Strings are written as they are, with
-- quotes, backslashes and control characters escaped: text that is not UTF-8 stays not UTF-8.
local M = {}
local format, floor, huge = string.format, math.floor, math.huge

function M.string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" elseif c == "\n" then return "\\n" elseif c == "\t" then return "\\t" end
    return format("\\u%04x", c:byte())
  end) .. '"'
end

function M.number(v)
  if v ~= v then return "NaN" end
  if v == huge then return "Infinity" end
  if v == -huge then return "-Infinity" end
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
    if v == 0 and 1 / v < 0 then return "-0.0" end
    return format("%d", v)
  end
  local s = format("%.15g", v)
  if tonumber(s) ~= v then s = format("%.17g", v) end
  return s
end

local encode
local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do if t[i] == nil then return false end end
  return n > 0
end

encode = function(v, depth)
  local kind = type(v)
  if v == nil then return "null"
  elseif kind == "boolean" then return v and "true" or "false"
  elseif kind == "number" then return M.number(v)
  elseif kind == "string" then return M.string(v)
  elseif kind == "table" then
    if depth > 100 then error("json: a table nested more than 100 deep (a cycle?)", 0) end
    local parts = {}
    if is_array(v) then
      for i = 1, #v do parts[i] = encode(v[i], depth + 1) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" and type(k) ~= "number" then error("json: an object key must be a string or a number, got " .. type(k), 0) end
      keys[#keys + 1] = k
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for i, k in ipairs(keys) do parts[i] = M.string(tostring(k)) .. ":" .. encode(v[k], depth + 1) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("json: cannot write a " .. kind, 0)
end

function M.encode(v) return encode(v, 0) end

return M
