-- One validator for numeric options: every module, optimizer, scheduler, dataset, transform, loader
-- and script option goes through it, so that NaN, infinities, fractions where a whole number is
-- needed and out-of-range values are refused with one kind of message, naming who and what:
--   "SGD: lr must be a finite number >= 0, got nan"
-- Comparisons are written so that NaN fails them (`not (v >= lo)`, never `v < lo`).
local type, tostring, floor, huge = type, tostring, math.floor, math.huge
local format = string.format

local M = {}

-- the largest integer a Lua number holds exactly
M.MAX_INT = 2 ^ 53

local function show(v)
  if type(v) == "number" then
    if v ~= v then return "nan" end
    if v == huge then return "inf" end
    if v == -huge then return "-inf" end
    if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
    local short = format("%.14g", v)
    return tonumber(short) == v and short or format("%.17g", v)
  end
  if type(v) == "string" then return "'" .. v .. "'" end
  return tostring(v)
end
M.show = show

-- the range part of a message: ">= 0", "in [0, 1)", "> 0"
local function range_text(s)
  local lo, hi
  if s.above ~= nil then lo = "> " .. show(s.above) elseif s.min ~= nil then lo = ">= " .. show(s.min) end
  if s.below ~= nil then hi = "< " .. show(s.below) elseif s.max ~= nil then hi = "<= " .. show(s.max) end
  if lo and hi then
    local l = s.above ~= nil and "(" .. show(s.above) or "[" .. show(s.min)
    local h = s.below ~= nil and show(s.below) .. ")" or show(s.max) .. "]"
    return " in " .. l .. ", " .. h
  end
  if lo then return " " .. lo end
  if hi then return " " .. hi end
  return ""
end

-- v as a number that is finite (unless s.inf), whole (if s.integer) and in range:
--   s.min / s.max inclusive, s.above / s.below exclusive; s.optional: nil passes (returns s.default)
-- who: the module, function or script ("SGD", "DataLoader", "--lr"); name: the option ("lr")
function M.number(who, name, v, s)
  s = s or {}
  if v == nil and (s.optional or s.default ~= nil) then return s.default end
  local what = s.integer and "an integer" or (s.inf and "a number" or "a finite number")
  local ok = type(v) == "number" and v == v and (s.inf or (v > -huge and v < huge))
  if ok and s.integer then ok = v == floor(v) and v > -huge and v < huge end
  if ok and s.min ~= nil and not (v >= s.min) then ok = false end
  if ok and s.max ~= nil and not (v <= s.max) then ok = false end
  if ok and s.above ~= nil and not (v > s.above) then ok = false end
  if ok and s.below ~= nil and not (v < s.below) then ok = false end
  if not ok then
    local prefix = who and who ~= "" and (who .. ": ") or ""
    error(format("%s%s must be %s%s, got %s", prefix, name, what, range_text(s), show(v)), 0)
  end
  return v
end

-- a whole number in [min, max]; at most 2^53 (the largest a Lua number holds exactly) in any case
function M.integer(who, name, v, min, max, optional)
  M.number(who, name, v, { integer = true, min = min, max = max, optional = optional })
  if v ~= nil and (v > M.MAX_INT or v < -M.MAX_INT) then
    error(format("%s: %s must be an integer of magnitude at most 2^53, got %s", who, name, show(v)), 0)
  end
  return v
end

-- a count or size: a whole number >= min (default 0)
function M.count(who, name, v, min) return M.integer(who, name, v, min or 0) end

-- a probability in [0, 1) (dropout) or [0, 1] (inclusive = true)
function M.probability(who, name, v, inclusive)
  return M.number(who, name, v, inclusive and { min = 0, max = 1 } or { min = 0, below = 1 })
end

-- a boolean option (nil is false unless required)
function M.boolean(who, name, v, required)
  if v == nil and not required then return false end
  if type(v) ~= "boolean" then
    error(format("%s: %s must be true or false, got %s", who, name, show(v)), 0)
  end
  return v
end

-- one of a list of strings
function M.choice(who, name, v, choices)
  for _, c in ipairs(choices) do if v == c then return v end end
  error(format("%s: %s must be one of '%s', got %s", who, name, table.concat(choices, "', '"), show(v)), 0)
end

-- an options table whose keys are all known: no option is silently ignored
function M.options(who, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(format("%s: options must be a table, got %s", who, type(opts)), 0) end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      error(format("%s: unknown option '%s' (known: %s)", who, tostring(k), table.concat(names, ", ")), 0)
    end
  end
  return opts
end

-- a file or folder path as C will see it: a non-empty string without NUL bytes (C would cut it
-- at the first one and read or write another file)
function M.path(who, name, v)
  if type(v) ~= "string" then error(format("%s: %s must be a path (a string), got %s", who, name, type(v)), 0) end
  if v == "" then error(format("%s: %s is empty", who, name), 0) end
  if v:find("\0", 1, true) then error(format("%s: %s %s holds a NUL byte", who, name, format("%q", v):gsub("\\0", "\\0"):sub(1, 80)), 0) end
  return v
end

-- a file a run will write, checked before any work (not at its first write, minutes later): with append the
-- file itself is opened to append (and made, empty, if missing); else a probe is made and removed beside it
-- (the file is replaced whole later, by a rename). who names it: "--metrics m.jsonl: cannot write: ..."
function M.writable(who, path, append)
  M.path(who, "the path", path)
  local probe = append and path or string.format("%s.probe-%d-%d", path, os.time(), math.random(1e9))
  local f, err = io.open(probe, append and "a" or "w")
  if not f then error(format("%s %s: cannot write%s: %s", who, path, append and "" or " there", tostring(err)), 0) end
  f:close()
  if not append then os.remove(probe) end
  return path
end

-- a command-line value: the number a string spells (hex, "1e3", ...) checked as M.number
function M.parse_number(who, name, text, s)
  local v = tonumber(text)
  if v == nil then error(format("%s%s must be a number, got '%s'", who and who ~= "" and who .. ": " or "", name, tostring(text)), 0) end
  return M.number(who, name, v, s)
end

return M
