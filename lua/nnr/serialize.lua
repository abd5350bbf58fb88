-- Checkpoints in safetensors (DESIGN.md decision 6).
--
-- nnr.save(path, {name = tensor, ...}[, metadata]) writes a plain safetensors
-- file that PyTorch's safetensors.torch.load_file reads (and the reverse:
-- nnr.load reads PyTorch's). nnr.save_checkpoint(path, tbl) stores a nested
-- table (model and optimizer state, epoch, RNG state, ...) in one such file:
-- tensors under "/"-joined paths, numbers, strings and booleans in the
-- metadata; nnr.load_checkpoint rebuilds the table. Both write atomically.
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C

local M = {}

local function is_tensor(x) return require("nnr").is_tensor(x) end

-- a string shown in a message: NUL and control bytes escaped
local function shown(v) return (tostring(v):gsub("%c", function(c) return string.format("\\%d", c:byte()) end)) end

-- the C side sees strings up to their first NUL: a path, name or value with one would be cut short
-- (two names differing after a NUL would merge), so it is refused
local function no_nul(who, what, v)
  if type(v) == "string" and v:find("\0", 1, true) then error(string.format("%s: %s '%s' contains a NUL byte", who, what, shown(v)), 0) end
  return v
end

local function check_path(who, path)
  if type(path) ~= "string" or path == "" then error(who .. ": the path must be a non-empty string, got " .. shown(path), 0) end
  return no_nul(who, "the path", path)
end

local function save_flat(path, names, tensors, meta)
  local n = #names
  local cnames = ffi.new("const char *[?]", math.max(n, 1))
  local cts = ffi.new("nnr_tensor *[?]", math.max(n, 1))
  for i = 1, n do cnames[i - 1] = names[i]; cts[i - 1] = tensors[i].p end
  local keys, values = {}, {}
  for k, v in pairs(meta or {}) do
    if type(k) ~= "string" then error("save: metadata keys must be strings, got " .. type(k), 0) end
    if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
      error("save: metadata '" .. shown(k) .. "' must be a string, number or boolean, got " .. type(v), 0)
    end
    no_nul("save", "metadata key", k)
    no_nul("save", "metadata value", v)
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local ck = ffi.new("const char *[?]", math.max(#keys, 1))
  local cv = ffi.new("const char *[?]", math.max(#keys, 1))
  for i, k in ipairs(keys) do
    values[i] = tostring(meta[k])
    ck[i - 1] = k
    cv[i - 1] = values[i]
  end
  binding.check(C.nnr_safetensors_save(path, n, cnames, cts, #keys, ck, cv))
end

function M.save(path, tensors, metadata)
  check_path("save", path)
  if type(tensors) ~= "table" then error("save: expected a table of tensors, got " .. type(tensors), 0) end
  if metadata ~= nil and type(metadata) ~= "table" then error("save: metadata must be a table, got " .. type(metadata), 0) end
  local names = {}
  for k, v in pairs(tensors) do
    if type(k) ~= "string" then error("save: tensor names must be strings, got " .. type(k), 0) end
    no_nul("save", "tensor name", k)
    if not is_tensor(v) then error("save: '" .. k .. "' is a " .. type(v) .. ", expected a tensor (use save_checkpoint for nested tables)", 0) end
    names[#names + 1] = k
  end
  table.sort(names)
  local list = {}
  for i, k in ipairs(names) do list[i] = tensors[k] end
  save_flat(path, names, list, metadata)
end

-- returns {name = tensor}, {key = value}
function M.load(path, opts)
  check_path("load", path)
  local f = C.nnr_safetensors_open(path)
  if f == nil then binding.raise() end
  f = ffi.gc(f, C.nnr_file_close)
  local device = binding.device_id(opts and opts.device, "load")
  local out, meta = {}, {}
  for i = 0, C.nnr_file_count(f) - 1 do
    out[ffi.string(C.nnr_file_name(f, i))] = binding.own(C.nnr_file_tensor(f, i, device))
  end
  for i = 0, C.nnr_file_metadata_count(f) - 1 do
    meta[ffi.string(C.nnr_file_metadata_key(f, i))] = ffi.string(C.nnr_file_metadata_value(f, i))
  end
  C.nnr_file_close(ffi.gc(f, nil))
  return out, meta
end

local function encode_key(k, prefix)
  if type(k) == "number" then return "#" .. string.format("%.17g", k) end
  if type(k) ~= "string" then error("save_checkpoint: keys must be strings or numbers, got " .. type(k), 0) end
  if k == "" then error("save_checkpoint: an empty key at '" .. shown(prefix) .. "' (it could not be read back)", 0) end
  no_nul("save_checkpoint", "key", k)
  if k:find("/", 1, true) or k:sub(1, 1) == "#" then error("save_checkpoint: key '" .. shown(k) .. "' may not contain '/' or start with '#'", 0) end
  return k
end

local function decode_key(k)
  if k:sub(1, 1) == "#" then return tonumber(k:sub(2)) end
  return k
end

function M.save_checkpoint(path, tbl)
  check_path("save_checkpoint", path)
  if type(tbl) ~= "table" then error("save_checkpoint: expected a table, got " .. type(tbl), 0) end
  local names, tensors, meta = {}, {}, { ["nnr.checkpoint"] = "1" }
  local seen = {}
  local function walk(t, prefix)
    if seen[t] then error("save_checkpoint: a table appears twice (a cycle?) at '" .. prefix .. "'", 0) end
    seen[t] = true
    for k, v in pairs(t) do
      local name = prefix .. encode_key(k, prefix)
      if is_tensor(v) then names[#names + 1] = name; tensors[name] = v
      elseif type(v) == "table" then
        if next(v) == nil then meta["nnr:t:" .. name] = "{}" else walk(v, name .. "/") end
      elseif type(v) == "number" then meta["nnr:n:" .. name] = string.format("%.17g", v)
      elseif type(v) == "string" then meta["nnr:s:" .. name] = no_nul("save_checkpoint", "the string at '" .. shown(name) .. "'", v)
      elseif type(v) == "boolean" then meta["nnr:b:" .. name] = tostring(v)
      else error("save_checkpoint: cannot store a " .. type(v) .. " at '" .. name .. "'", 0) end
    end
  end
  walk(tbl, "")
  table.sort(names)
  local list = {}
  for i, n in ipairs(names) do list[i] = tensors[n] end
  save_flat(path, names, list, meta)
end

function M.load_checkpoint(path, opts)
  check_path("load_checkpoint", path)
  local tensors, meta = M.load(path, opts)
  if meta["nnr.checkpoint"] ~= "1" then error("load_checkpoint " .. path .. ": not an nnrun checkpoint (use nnr.load for plain safetensors files)", 0) end
  local root, made = {}, {}     -- made: the tables built here (a tensor or a number is never walked into)
  local function bad(name, why) error(string.format("load_checkpoint %s: entry '%s' %s", path, shown(name), why), 0) end
  local function put(name, value)
    local node, parts = root, {}
    for part in name:gmatch("[^/]+") do parts[#parts + 1] = decode_key(part) end
    if #parts == 0 then bad(name, "has an empty name") end
    for i = 1, #parts - 1 do
      local p = parts[i]
      if p == nil then bad(name, "has a key that is not a number after '#'") end
      if node[p] == nil then node[p] = {}; made[node[p]] = true end
      if not made[node[p]] then
        bad(name, string.format("lies under '%s', which holds a %s", shown(table.concat(parts, "/", 1, i)), is_tensor(node[p]) and "tensor" or type(node[p])))
      end
      node = node[p]
    end
    local last = parts[#parts]
    if last == nil then bad(name, "has a key that is not a number after '#'") end
    if node[last] ~= nil and not (made[node[last]] and type(value) == "table" and next(value) == nil) then
      bad(name, "is given twice (a value and a table, or two values)")
    end
    if node[last] == nil then
      node[last] = value
      if type(value) == "table" then made[value] = true end
    end
  end
  for name, t in pairs(tensors) do put(name, t) end
  for k, v in pairs(meta) do
    local kind, name = k:match("^nnr:(%a):(.+)$")
    if kind == "n" then
      local x = tonumber(v)
      if x == nil and v ~= "nan" and v ~= "-nan" then bad(name, "should be a number, got '" .. shown(v) .. "'") end
      put(name, x or (0 / 0))
    elseif kind == "s" then put(name, v)
    elseif kind == "b" then put(name, v == "true")
    elseif kind == "t" then put(name, {}) end
  end
  return root
end

function M.load_idx(path)
  check_path("load_idx", path)
  return binding.own(C.nnr_load_idx(path))
end

return M
