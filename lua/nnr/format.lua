-- Printing tensors the way PyTorch does: values (summarised past 1000
-- elements with 3 edge items per dimension), then shape, dtype and device.
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C

local M = {}
local THRESHOLD, EDGE, LINEWIDTH = 1000, 3, 80
local idx = ffi.new("int64_t[8]")
local out = ffi.new("double[1]")

local function shape_of(t)
  local s = {}
  for i = 1, C.nnr_tensor_ndim(t.p) do s[i] = tonumber(C.nnr_tensor_size(t.p, i - 1)) end
  return s
end

-- which indices of each dim are shown (false marks the "..." gap)
local function shown(size, summarise)
  local list = {}
  if summarise and size > 2 * EDGE then
    for i = 0, EDGE - 1 do list[#list + 1] = i end
    list[#list + 1] = false
    for i = size - EDGE, size - 1 do list[#list + 1] = i end
  else
    for i = 0, size - 1 do list[i + 1] = i end
  end
  return list
end

local function formatter(values, dtype)
  if dtype == C.NNR_BOOL then
    return function(v) return v ~= 0 and "true" or "false" end
  end
  if dtype >= C.NNR_I8 then
    return function(v) return string.format("%d", v) end
  end
  local all_int, maxabs, minabs = true, 0, math.huge
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      if v ~= math.floor(v) then all_int = false end
      local a = math.abs(v)
      if a > maxabs then maxabs = a end
      if a ~= 0 and a < minabs then minabs = a end
    end
  end
  local special = function(v)
    if v ~= v then return "nan" elseif v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
  end
  if all_int and maxabs < 1e8 then
    return function(v) return special(v) or string.format("%.0f.", v) end
  end
  if maxabs >= 1e8 or (minabs ~= math.huge and (minabs < 1e-4 or maxabs / minabs > 1000)) then
    return function(v) return special(v) or string.format("%.4e", v) end
  end
  return function(v) return special(v) or string.format("%.4f", v) end
end

function M.tensor(t)
  local shape = shape_of(t)
  local nd = #shape
  local numel = tonumber(C.nnr_tensor_numel(t.p))
  local summarise = numel > THRESHOLD
  local lists = {}
  if numel > 0 then for d = 1, nd do lists[d] = shown(shape[d], summarise) end end   -- an empty one shows no index
  -- fetch the shown values
  local values, flat = {}, {}
  local function fetch(d)
    if d > nd then
      if C.nnr_get(t.p, idx, out) ~= 0 then binding.raise() end
      local v = out[0]
      flat[#flat + 1] = v
      return v
    end
    local r = {}
    for k, i in ipairs(lists[d]) do
      if i then idx[d - 1] = i; r[k] = fetch(d + 1) else r[k] = false end
    end
    return r
  end
  local tree = numel > 0 and fetch(1) or {}
  local fmt = formatter(flat, C.nnr_tensor_dtype(t.p))
  local strs, width = {}, 0
  for i, v in ipairs(flat) do
    strs[i] = fmt(v)
    if #strs[i] > width then width = #strs[i] end
  end
  local pos = 0
  local function render(node, d, indent)
    if d > nd then
      pos = pos + 1
      return string.rep(" ", width - #strs[pos]) .. strs[pos]
    end
    local parts = {}
    for k, child in ipairs(node) do
      parts[k] = child == false and "..." or render(child, d + 1, indent .. " ")
    end
    if d == nd then
      -- wrap long rows
      local lines, line = {}, ""
      for k, p in ipairs(parts) do
        local piece = p .. (k < #parts and "," or "")
        if #line > 0 and #indent + #line + #piece + 1 > LINEWIDTH then
          lines[#lines + 1] = line
          line = piece
        else
          line = #line > 0 and (line .. " " .. piece) or piece
        end
      end
      lines[#lines + 1] = line
      return "[" .. table.concat(lines, "\n" .. indent .. " ") .. "]"
    end
    local sep = "," .. string.rep("\n", nd - d) .. indent .. " "
    return "[" .. table.concat(parts, sep) .. "]"
  end
  local body
  if nd == 0 then body = fmt(flat[1]) else body = render(tree, 1, string.rep(" ", 7)) end
  local dtype = binding.dtype_names[C.nnr_tensor_dtype(t.p)]
  local device = ffi.string(C.nnr_device_name(C.nnr_tensor_device(t.p)))
  return string.format("tensor(%s, shape=[%s], dtype=%s, device=%s)", body, table.concat(shape, ", "), dtype, device)
end

return M
