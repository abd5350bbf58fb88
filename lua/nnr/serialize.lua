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

local function save_flat(path, names, tensors, meta)
  local n = #names
  local cnames = ffi.new("const char *[?]", math.max(n, 1))
  local cts = ffi.new("nnr_tensor *[?]", math.max(n, 1))
  for i = 1, n do cnames[i - 1] = names[i]; cts[i - 1] = tensors[i].p end
  local keys, values = {}, {}
  for k, v in pairs(meta or {}) do keys[#keys + 1] = k end
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
  local names = {}
  for k, v in pairs(tensors) do
    if type(k) ~= "string" then error("save: tensor names must be strings, got " .. type(k), 0) end
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

local function encode_key(k)
  if type(k) == "number" then return "#" .. string.format("%.17g", k) end
  if type(k) ~= "string" then error("save_checkpoint: keys must be strings or numbers, got " .. type(k), 0) end
  if k:find("/", 1, true) or k:sub(1, 1) == "#" then error("save_checkpoint: key '" .. k .. "' may not contain '/' or start with '#'", 0) end
  return k
end

local function decode_key(k)
  if k:sub(1, 1) == "#" then return tonumber(k:sub(2)) end
  return k
end

function M.save_checkpoint(path, tbl)
  local names, tensors, meta = {}, {}, { ["nnr.checkpoint"] = "1" }
  local seen = {}
  local function walk(t, prefix)
    if seen[t] then error("save_checkpoint: a table appears twice (a cycle?) at '" .. prefix .. "'", 0) end
    seen[t] = true
    for k, v in pairs(t) do
      local name = prefix .. encode_key(k)
      if is_tensor(v) then names[#names + 1] = name; tensors[name] = v
      elseif type(v) == "table" then
        if next(v) == nil then meta["nnr:t:" .. name] = "{}" else walk(v, name .. "/") end
      elseif type(v) == "number" then meta["nnr:n:" .. name] = string.format("%.17g", v)
      elseif type(v) == "string" then meta["nnr:s:" .. name] = v
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
  local tensors, meta = M.load(path, opts)
  if meta["nnr.checkpoint"] ~= "1" then error("load_checkpoint " .. path .. ": not an nnrun checkpoint (use nnr.load for plain safetensors files)", 0) end
  local root = {}
  local function put(name, value)
    local node, parts = root, {}
    for part in name:gmatch("[^/]+") do parts[#parts + 1] = decode_key(part) end
    for i = 1, #parts - 1 do
      node[parts[i]] = node[parts[i]] or {}
      node = node[parts[i]]
    end
    node[parts[#parts]] = value
  end
  for name, t in pairs(tensors) do put(name, t) end
  for k, v in pairs(meta) do
    local kind, name = k:match("^nnr:(%a):(.+)$")
    if kind == "n" then put(name, tonumber(v))
    elseif kind == "s" then put(name, v)
    elseif kind == "b" then put(name, v == "true")
    elseif kind == "t" then put(name, {}) end
  end
  return root
end

function M.load_idx(path)
  return binding.own(C.nnr_load_idx(path))
end

return M
