-- Did-you-mean: an unknown name on nnr, nnr.nn, nnr.optim, nnr.data, a module or a tensor is an
-- error naming the closest existing names (nn.Linaer -> "nnr.nn has no 'Linaer'; did you mean
-- Linear?"), not LuaJIT's "attempt to call a nil value" further on.
local M = {}

-- the optimal string alignment distance (Levenshtein with adjacent transpositions), case-folded
local function distance(a, b)
  a, b = a:lower(), b:lower()
  local la, lb = #a, #b
  if math.abs(la - lb) > 3 then return math.abs(la - lb) end
  local prev2, prev, cur = {}, {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, lb do
      local cb = b:byte(j)
      local cost = ca == cb and 0 or 1
      local v = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if i > 1 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == cb then v = math.min(v, prev2[j - 2] + 1) end
      cur[j] = v
    end
    prev2, prev = prev, cur
  end
  return prev[lb]
end
M.distance = distance

-- up to three of candidates (a list or a set of names) closest to name: within a third of its length
-- (at least 2 edits), or holding it (or held by it) when it is at least 3 characters long
function M.closest(name, candidates)
  local scored, seen = {}, {}
  local limit = math.max(2, math.floor(#name / 3))
  local lname = name:lower()
  local function consider(c)
    if type(c) ~= "string" or seen[c] or c:sub(1, 1) == "_" then return end
    seen[c] = true
    local d = distance(name, c)
    local lc = c:lower()
    if d > limit and #name >= 3 and (lc:find(lname, 1, true) or lname:find(lc, 1, true)) and #c >= 3 then d = limit end
    if d <= limit then scored[#scored + 1] = { c, d } end
  end
  if #candidates > 0 then for _, c in ipairs(candidates) do consider(c) end
  else for c in pairs(candidates) do consider(c) end end
  table.sort(scored, function(x, y) if x[2] ~= y[2] then return x[2] < y[2] end return x[1] < y[1] end)
  local out = {}
  for i = 1, math.min(3, #scored) do out[i] = scored[i][1] end
  return out
end

-- the error for name missing on what (e.g. "nnr.nn", "Linear", "tensor"), with the closest names
function M.unknown(what, name, candidates, level)
  local near = M.closest(name, candidates)
  local msg = what .. " has no '" .. name .. "'"
  if #near > 0 then msg = msg .. "; did you mean " .. table.concat(near, ", ", 1, #near - 1) .. (#near > 1 and " or " or "") .. near[#near] .. "?" end
  error(msg, level or 3)
end

-- a name a module instance lacks: nil, or an error when it is a near miss (one edit, two for names
-- of 8 characters or more; names of at least 4) of one of the module's methods or declared
-- parameters, buffers and children; a declared one that is nil (bias = false) and private names (_x) read as nil
-- the names already found to be no misspelling, by module: an optional field read at every call (a Linear
-- without bias) pays the search once. Parameters, buffers and children are only ever appended, so their
-- counts tell when the answer may have changed; a method defined on the class later is not seen.
local misses = setmetatable({}, { __mode = "k" })

function M.misspelt(obj, cls, k)
  if #k < 4 or k:sub(1, 1) == "_" then return nil end
  local lp, lb, lc = rawget(obj, "_params"), rawget(obj, "_buffers"), rawget(obj, "_children")
  local sig = ((lp and #lp or 0) * 65536 + (lb and #lb or 0)) * 65536 + (lc and #lc or 0)
  local known = misses[obj]
  if known and known.sig == sig and known[k] then return nil end
  local declared = {}
  for _, list in ipairs { rawget(obj, "_params"), rawget(obj, "_buffers"), rawget(obj, "_children") } do
    for _, n in ipairs(list or {}) do
      if n == k then return nil end
      declared[#declared + 1] = n
    end
  end
  local t, depth = cls, 0
  while type(t) == "table" and depth < 16 do
    for n, v in pairs(t) do if type(n) == "string" and type(v) == "function" then declared[#declared + 1] = n end end
    local mt = getmetatable(t)
    t = mt and type(mt.__index) == "table" and mt.__index or nil
    depth = depth + 1
  end
  local limit = #k < 8 and 1 or 2
  local near = {}
  for _, n in ipairs(declared) do
    if n:sub(1, 1) ~= "_" and distance(k, n) <= limit then near[#near + 1] = n end
  end
  if #near == 0 then
    if not known or known.sig ~= sig then known = { sig = sig }; misses[obj] = known end
    known[k] = true
    return nil
  end
  M.unknown(rawget(cls, "__name") or "module", k, near, 4)
end

-- the names reachable through t: its own keys and those of the tables its __index chain leads to
function M.names_of(t, out)
  out = out or {}
  local depth = 0
  while type(t) == "table" and depth < 16 do
    for k in pairs(t) do if type(k) == "string" then out[k] = true end end
    local mt = getmetatable(t)
    t = mt and type(mt.__index) == "table" and mt.__index or nil
    depth = depth + 1
  end
  return out
end

-- a namespace table (nnr.nn, nnr.optim, nnr.data): reading a name it lacks is an error naming the
-- closest ones (assignments are unaffected)
function M.guard(t, what)
  local mt = getmetatable(t)
  if mt and mt.__index then return t end
  mt = mt or {}
  mt.__index = function(tbl, k)
    if type(k) ~= "string" or k:sub(1, 1) == "_" then return nil end
    M.unknown(what, k, M.names_of(tbl))
  end
  return setmetatable(t, mt)
end

return M
