-- JSON text of Lua values, for the writers of logs and traces (nnr.logging, the profiler's trace):
--   json.encode({loss = 0.25, tags = {"a", "b"}})  -> {"loss":0.25,"tags":["a","b"]}
-- Numbers keep every bit (%.17g, integers as integers); NaN and the infinities are written NaN, Infinity
-- and -Infinity, as Python's json module and pandas read them (strict JSON has no spelling for them).
-- Tables with keys 1..n (and no others) are arrays, others objects with their keys sorted, so that the
-- same value always gives the same text; an empty table is {}. Strings are written as they are, with
-- quotes, backslashes and control characters escaped: text that is not UTF-8 stays not UTF-8.
local M = {}
M.null = setmetatable({}, { __tostring = function() return "json.null" end })
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

-- JSON text -> Lua values (null -> nil in objects, json.null in arrays is nil too), with NaN, Infinity
-- and -Infinity as M.encode writes them. Returns the value, or nil and "<what> at byte N".
local ESC = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local function utf8_char(c)
  if c < 0x80 then return string.char(c) end
  if c < 0x800 then return string.char(0xc0 + math.floor(c / 64), 0x80 + c % 64) end
  if c < 0x10000 then return string.char(0xe0 + math.floor(c / 4096), 0x80 + math.floor(c / 64) % 64, 0x80 + c % 64) end
  return string.char(0xf0 + math.floor(c / 262144), 0x80 + math.floor(c / 4096) % 64, 0x80 + math.floor(c / 64) % 64, 0x80 + c % 64)
end

function M.decode(text)
  local pos = 1
  local function fail(what) error({ json = what .. " at byte " .. pos }, 0) end
  local function ws() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local value
  local function str()
    local out, i = {}, pos + 1
    while true do
      local j = text:find('["\\%c]', i)
      if not j then pos = #text + 1; fail("an unterminated string") end
      out[#out + 1] = text:sub(i, j - 1)
      local c = text:sub(j, j)
      if c == '"' then pos = j + 1; return table.concat(out) end
      if c ~= "\\" then pos = j; fail("a control character in a string") end
      local e = text:sub(j + 1, j + 1)
      if e == "u" then
        local h = text:sub(j + 2, j + 5)
        if not h:match("^%x%x%x%x$") then pos = j; fail("a bad \\u escape") end
        local cp = tonumber(h, 16)
        if cp >= 0xd800 and cp < 0xdc00 and text:sub(j + 6, j + 7) == "\\u" then
          local lo = tonumber(text:sub(j + 8, j + 11), 16)
          if lo and lo >= 0xdc00 and lo < 0xe000 then cp = 0x10000 + (cp - 0xd800) * 1024 + (lo - 0xdc00); j = j + 6 end
        end
        out[#out + 1] = utf8_char(cp)
        i = j + 6
      elseif ESC[e] then out[#out + 1] = ESC[e]; i = j + 2
      else pos = j; fail("a bad escape") end
    end
  end
  value = function(depth)
    if depth > 200 then fail("nesting too deep") end
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1; ws()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws()
        if text:sub(pos, pos) ~= '"' then fail("an object key expected") end
        local k = str()
        ws()
        if text:sub(pos, pos) ~= ":" then fail("':' expected") end
        pos = pos + 1
        t[k] = value(depth + 1)
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return t end
        if d ~= "," then pos = pos - 1; fail("',' or '}' expected") end
      end
    elseif c == "[" then
      local t, n = {}, 0
      pos = pos + 1; ws()
      if text:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        n = n + 1
        t[n] = value(depth + 1)
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return t end
        if d ~= "," then pos = pos - 1; fail("',' or ']' expected") end
      end
    elseif c == '"' then return str()
    end
    for word, v in pairs({ ["true"] = true, ["false"] = false, null = M.null, NaN = 0 / 0, Infinity = math.huge, ["-Infinity"] = -math.huge }) do
      if text:sub(pos, pos + #word - 1) == word then pos = pos + #word; if v == M.null then return nil end return v end
    end
    local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if num and num ~= "" and num ~= "-" then
      local v = tonumber(num)
      if v then pos = pos + #num; return v end
    end
    fail(pos > #text and "the end of the text where a value was expected" or "a value expected")
  end
  local ok, v = pcall(function()
    local r = value(0)
    ws()
    if pos <= #text then fail("text after the value") end
    return r
  end)
  if ok then return v end
  if type(v) == "table" and v.json then return nil, v.json end
  error(v, 0)
end

return M
