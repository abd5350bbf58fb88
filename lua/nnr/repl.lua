-- What nnrun's REPL completes with Tab (core/host/repl.c calls complete on the word before the cursor):
--   complete("nnr.nn.Li")  -> {"nnr.nn.Linear"}       names under a table, its class chain too
--   complete("x:su")       -> {"x:sub", "x:sum", ...}   methods of a tensor or a module (functions only after ':')
--   complete("pri")        -> {"print"}                 globals and Lua's keywords
--   complete("cfg.lr")     -> {"cfg.lr"}                a table's fields
-- Only a chain of names is followed (a.b.c), never code: nothing is called but the objects' own
-- __index (which may load a module). A name that does not resolve completes nothing. Names that start
-- with an underscore are offered only to a word that does. The REPL runs each line as its own chunk; a
-- line that begins with `local` runs without the word (core/host/repl.c), so its names are globals here.
local M = {}

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in", "local", "nil",
                   "not", "or", "repeat", "return", "then", "true", "until", "while" }

local function add_keys(t, names, seen)
  for k in next, t do
    if type(k) == "string" and k:match("^[%a_][%w_]*$") and not seen[k] then seen[k] = true; names[#names + 1] = k end
  end
end

-- the names v answers to: its own keys, then those of its metatable's __index tables (a class and the
-- classes it extends); for a class whose __index is a function, the class table itself
local function names_of(v)
  local names, seen = {}, {}
  if type(v) == "cdata" then
    local T = package.loaded["nnr.tensor"]
    local nnr = package.loaded["nnr"]
    if T and nnr and nnr.is_tensor(v) then add_keys(T.methods, names, seen); add_keys(T.props, names, seen) end
    return names
  end
  if type(v) ~= "table" then
    if type(v) == "string" then add_keys(string, names, seen) end
    return names
  end
  add_keys(v, names, seen)
  local lazy = rawget(v, "_submodules")          -- nnr's submodules, loaded on first use
  if type(lazy) == "table" and v == package.loaded.nnr then
    for _, k in ipairs(lazy) do if not seen[k] then seen[k] = true; names[#names + 1] = k end end
  end
  local t, depth = v, 0
  while depth < 16 do
    local mt = getmetatable(t)
    if type(mt) ~= "table" then break end
    local idx = rawget(mt, "__index")
    local next_t = type(idx) == "table" and idx or mt
    if next_t == t then break end
    add_keys(next_t, names, seen)
    t, depth = next_t, depth + 1
  end
  return names
end

-- the value a.b.c names, or nil (a field that errors on reading, as nnr's misspelling check does, is nil)
local function resolve(path, env)
  local v = env
  for name in path:gmatch("[^%.]+") do
    if type(v) ~= "table" and type(v) ~= "cdata" then return nil end
    local ok, got = pcall(function() return v[name] end)
    if not ok or got == nil then return nil end
    v = got
  end
  return v
end

function M.complete(text, env)
  env = env or _G
  local base, sep, part = text:match("^(.-)([%.:])([%a_]?[%w_]*)$")
  local out = {}
  if base then
    if not base:match("^[%a_][%w_]*$") and not base:match("^[%a_][%w_]*[%.%w_]*[%w_]$") then return out end
    if base:find("%.%.") then return out end
    local v = resolve(base, env)
    if v == nil then return out end
    for _, n in ipairs(names_of(v)) do
      -- private names (_params, __init) only when asked for with a leading underscore
      if n:sub(1, #part) == part and (n:sub(1, 1) ~= "_" or part:sub(1, 1) == "_") then
        local ok, field = pcall(function() return v[n] end)
        if sep == "." or (ok and type(field) == "function") then out[#out + 1] = base .. sep .. n end
      end
    end
  else
    if not text:match("^[%a_]?[%w_]*$") then return out end
    local names = names_of(env)
    for _, k in ipairs(KEYWORDS) do names[#names + 1] = k end
    for _, n in ipairs(names) do
      if n:sub(1, #text) == text and (n:sub(1, 1) ~= "_" or text:sub(1, 1) == "_") then out[#out + 1] = n end
    end
  end
  table.sort(out)
  -- one name twice (a keyword that is also a global): once
  local dedup = {}
  for _, s in ipairs(out) do if dedup[#dedup] ~= s then dedup[#dedup + 1] = s end end
  return dedup
end

return M
