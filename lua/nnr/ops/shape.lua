-- Shape ops composed from views, narrow, index_select, cat and where, so that autograd comes with
-- them: tril / triu, repeat / tile / repeat_interleave, roll, flip, one_hot and functional pad.
-- Dimensions and class indices are 1-based (negative dimensions count from the end).
local T = require "nnr.tensor"
local V = require "nnr.check"
local U = require "nnr.ops.util"
local shape_str = U.shape_str
local type, max = type, math.max

local M = { methods = {}, functions = {}, functional = {} }
local methods = M.methods

local function shape(t) return shape_str(t:size()) end

-- a list of integers given as varargs or as one table
local function int_list(...)
  local first = ...
  if type(first) == "table" and not U.is_tensor(first) then return first end
  return { ... }
end

-- tril(k) / triu(k): the lower / upper triangle of the last two dims (batched); k shifts the diagonal
-- up (k > 0) or down (k < 0), as PyTorch's diagonal argument
local function triangle(op, lower)
  return function(t, k)
    U.tensor(op, t, "input")
    k = V.integer(op, "diagonal", k or 0)
    if t:dim() < 2 then error(op .. ": expected a tensor with at least 2 dimensions, got shape " .. shape(t), 0) end
    local s = t:size()
    local n, m = s[#s - 1], s[#s]
    local dev = t.device
    local diff = T.arange(m, { dtype = "i64", device = dev }):view(1, m) - T.arange(n, { dtype = "i64", device = dev }):view(n, 1)
    local keep = lower and diff:le(k) or diff:ge(k)
    return T.where(keep:expand(s), t, t.dtype == "bool" and false or 0)
  end
end
methods.tril, methods.triu = triangle("tril", true), triangle("triu", false)

-- repeat(r1, r2, ...): the tensor tiled r_i times along dim i (PyTorch's Tensor.repeat: at least as
-- many counts as dimensions; extra leading counts add leading dimensions). `repeat` is a reserved
-- word in Lua, so t:repeat(...) does not parse: call t:repeat_tensor(...) or t["repeat"](t, ...).
local function repeat_tensor(op, t, reps)
  local s = t:size()
  if #reps < #s then
    error(op .. ": " .. #reps .. " repeat counts for a tensor of shape " .. shape_str(s) .. " (give at least one per dimension, " .. #s .. ")", 0)
  end
  if #reps > 8 then error(op .. ": " .. #reps .. " repeat counts, a tensor has at most 8 dimensions", 0) end
  local pad = #reps - #s
  local lead = {}
  for i = 1, #reps do
    V.integer(op, "repeats[" .. i .. "]", reps[i], 0)
    lead[i] = i > pad and s[i - pad] or 1
  end
  local x, copied = t:reshape(lead), false
  for i = 1, #reps do
    local r = reps[i]
    if r ~= 1 then
      local before, merged = x:size(), x:size()
      table.insert(before, i, r)
      merged[i] = merged[i] * r
      x = x:unsqueeze(i):expand(before):reshape(merged)
      copied = true
    end
  end
  return copied and x or x:clone()          -- always new memory, as PyTorch's
end
methods["repeat"] = function(t, ...) U.tensor("repeat", t, "self"); return repeat_tensor("repeat", t, int_list(...)) end
methods.repeat_tensor = methods["repeat"]

-- tile(reps): as repeat, but fewer counts than dimensions are padded with leading 1s
function methods.tile(t, ...)
  U.tensor("tile", t, "input")
  local reps = int_list(...)
  local nd = t:dim()
  if #reps < nd then
    local full = {}
    for i = 1, nd - #reps do full[i] = 1 end
    for i = 1, #reps do full[#full + 1] = reps[i] end
    reps = full
  end
  return repeat_tensor("tile", t, reps)
end

-- repeat_interleave(repeats, dim): each element (slice along dim) repeated; repeats a number or a
-- tensor of counts (one per slice, or one for all); no dim: over the flattened tensor.
-- nnr.repeat_interleave(counts) alone: the 1-based indices 1 (counts[1] times), 2 (counts[2] times), ...
local function counts_of(op, r, n)
  if r:is_floating_point() or r.dtype == "bool" then
    error(op .. ": repeats must be an integer tensor, got " .. r.dtype, 0)
  end
  if r:dim() > 1 then error(op .. ": repeats must be a number or a 0-d or 1-d tensor, got shape " .. shape(r), 0) end
  local list = r:dim() == 0 and { r:item() } or r:totable()
  local total = 0
  for i = 1, #list do
    if list[i] < 0 then error(op .. ": repeats must be >= 0, got " .. V.show(list[i]) .. " at position " .. i, 0) end
    total = total + list[i]
  end
  if #list == 1 and n then total = total * n end
  if total > 2 ^ 31 then
    error(op .. ": the repeat counts add up to " .. V.show(total) .. " slices, more than the 2^31 a count tensor may give", 0)
  end
  if n and #list ~= n and #list ~= 1 then
    error(op .. ": " .. #list .. " repeat counts for a dimension of size " .. n .. " (give one per slice, or one for all)", 0)
  end
  return list
end

function methods.repeat_interleave(t, repeats, dim)
  local op = "repeat_interleave"
  U.tensor(op, t, "input")
  if repeats == nil and dim == nil then
    local list = counts_of(op, t)
    local idx = {}
    for i = 1, #list do for _ = 1, list[i] do idx[#idx + 1] = i - 1 end end
    return U.index(idx, t.device)
  end
  local x = t
  if dim == nil then x, dim = t:reshape(-1), 1 end
  local d = U.dim(op, x, dim)
  local n = x:size(d)
  if type(repeats) == "number" then
    V.integer(op, "repeats", repeats, 0)
    if repeats == 1 then return x:clone() end
    local before, merged = x:size(), x:size()
    table.insert(before, d + 1, repeats)
    merged[d] = merged[d] * repeats
    return x:unsqueeze(d + 1):expand(before):reshape(merged)
  end
  if not U.is_tensor(repeats) then error(op .. ": repeats must be a number or a tensor of counts, got " .. type(repeats), 0) end
  local list = counts_of(op, repeats, n)
  local idx = {}
  for i = 1, n do
    for _ = 1, (#list == 1 and list[1] or list[i]) do idx[#idx + 1] = i - 1 end
  end
  return x:index_select(d, U.index(idx, x.device))
end
M.functions.repeat_interleave = methods.repeat_interleave

-- roll(shifts, dims): elements shifted along dims, wrapping around; no dims: over the flattened
-- tensor, shape kept
function methods.roll(t, shifts, dims)
  local op = "roll"
  U.tensor(op, t, "input")
  if dims == nil then
    if type(shifts) == "table" and #shifts ~= 1 then
      error(op .. ": " .. #shifts .. " shifts without dims (give dims, or one shift to roll the flattened tensor)", 0)
    end
    local s = type(shifts) == "table" and shifts[1] or shifts
    return methods.roll(t:reshape(-1), s, 1):view(t:size())
  end
  shifts = type(shifts) == "table" and shifts or { shifts }
  local dl = U.dims(op, t, dims)
  if #shifts ~= #dl then
    error(op .. ": " .. #shifts .. " shifts for " .. #dl .. " dims (shifts and dims must pair up)", 0)
  end
  local x = t
  for i = 1, #dl do
    local d, n = dl[i], x:size(dl[i])
    local s = V.integer(op, "shifts[" .. i .. "]", shifts[i])
    if n > 0 then s = s % n end
    if n > 0 and s ~= 0 then x = T.cat({ x:narrow(d, n - s + 1, s), x:narrow(d, 1, n - s) }, d) end
  end
  if x == t then x = t:clone() end
  return x
end

-- flip(dims): the order of elements reversed along each of dims (a number, several, or a table)
function methods.flip(t, ...)
  local op = "flip"
  U.tensor(op, t, "input")
  local dl = U.dims(op, t, int_list(...))
  local x = t
  for _, d in ipairs(dl) do
    local n = x:size(d)
    if n > 1 then x = x:index_select(d, T.arange(n, 0, -1, { dtype = "i64", device = t.device })) end
  end
  if x == t then x = t:clone() end
  return x
end

-- one_hot(indices, num_classes): i64 [..., num_classes] with 1 at each 1-based class index;
-- num_classes nil (or -1): the largest index
function methods.one_hot(indices, num_classes)
  local op = "one_hot"
  U.tensor(op, indices, "indices")
  if indices:is_floating_point() or indices.dtype == "bool" then
    error(op .. ": indices must be an integer tensor of 1-based class indices, got " .. indices.dtype, 0)
  end
  if num_classes == -1 then num_classes = nil end
  V.integer(op, "num_classes", num_classes, 0, nil, true)
  local n = indices:numel()
  local lo, hi = 1, 0
  if n > 0 then lo, hi = indices:min():item(), indices:max():item() end
  if num_classes == nil then
    if n == 0 then error(op .. ": cannot infer the number of classes of an empty tensor (give num_classes)", 0) end
    num_classes = hi
  end
  if n > 0 and lo < 1 then
    error(op .. ": class index " .. V.show(lo) .. " is below 1 (classes are 1-based: 1.." .. num_classes .. ")", 0)
  end
  if n > 0 and hi > num_classes then
    error(op .. ": class index " .. V.show(hi) .. " is out of range for num_classes " .. num_classes .. " (1.." .. num_classes .. ")", 0)
  end
  local classes = T.arange(1, num_classes + 1, { dtype = "i64", device = indices.device })
  return indices:unsqueeze(-1):eq(classes):long()
end
M.functions.one_hot = methods.one_hot
M.functional.one_hot = methods.one_hot

-- nnr.nn.functional.pad(x, pad, mode, value): pad = {left, right} of the last dim, then {top,
-- bottom} of the one before, ... (PyTorch's order). "constant" pads with value (default 0; negative
-- padding crops); "reflect" mirrors without repeating the edge, "replicate" repeats the edge,
-- "circular" wraps around: these pad the last 1 to 3 dims of a tensor with 1 or 2 more dims.
local modes = { "constant", "reflect", "replicate", "circular" }

-- the 0-based source position of each output position -l .. n-1+r of a padded dim, as an i64
-- tensor (built with tensor ops: a huge pad fails as an allocation, not as a Lua loop that never ends)
local function source_index(mode, l, r, n, device)
  local i = T.arange(-l, n + r, { dtype = "i64", device = device })
  if mode == "reflect" then return ((i:abs() - (n - 1)):abs() * -1 + (n - 1)) end   -- (n-1) - |(n-1) - |i||
  if mode == "replicate" then return i:clamp(0, n - 1) end
  return T.where(i:lt(0), i + n, T.where(i:ge(n), i - n, i))                       -- circular: pads <= n
end

function M.functional.pad(x, pad, mode, value)
  local op, input = "pad", x
  U.tensor(op, x, "input")
  if type(pad) ~= "table" or U.is_tensor(pad) or #pad == 0 or #pad % 2 == 1 then
    error(op .. ": pad must be a table of an even number of integers {left, right, top, bottom, ...} (last dimension first), got " ..
      (type(pad) == "table" and (#pad .. " values") or type(pad)), 0)
  end
  for i = 1, #pad do V.integer(op, "pad[" .. i .. "]", pad[i]) end
  mode = V.choice(op, "mode", mode == nil and "constant" or mode, modes)
  local np, nd = #pad / 2, x:dim()
  if np > nd then
    error(op .. ": " .. #pad .. " padding values pad " .. np .. " dimensions, but the input of shape " .. shape(x) .. " has " .. nd, 0)
  end
  if mode == "constant" then
    if type(value) == "boolean" then value = value and 1 or 0 end
    value = V.number(op, "value", value, { default = 0, inf = true })
    local copied = false
    for k = 1, np do
      local d = nd - k + 1
      local l, r, n = pad[2 * k - 1], pad[2 * k], x:size(d)
      local start, len = max(-l, 0), n - max(-l, 0) - max(-r, 0)
      if len < 0 then
        error(op .. ": padding {" .. l .. ", " .. r .. "} crops more than dimension " .. d .. " of the input of shape " .. shape(x) .. " holds", 0)
      end
      if start > 0 or len < n then x = x:narrow(d, start + 1, len) end
      if l > 0 or r > 0 then
        local parts = {}
        local s = x:size()
        if l > 0 then s[d] = l; parts[#parts + 1] = T.full(s, value, { dtype = x.dtype, device = x.device }) end
        parts[#parts + 1] = x
        if r > 0 then s[d] = r; parts[#parts + 1] = T.full(s, value, { dtype = x.dtype, device = x.device }) end
        x = T.cat(parts, d)
        copied = true
      end
    end
    return copied and x or x:clone()        -- new memory even when nothing is padded, as PyTorch's
  end
  if value ~= nil then error(op .. ": mode '" .. mode .. "' takes no value (only 'constant' pads with a value)", 0) end
  if np > 3 then error(op .. ": mode '" .. mode .. "' pads at most the last 3 dimensions, got " .. #pad .. " padding values", 0) end
  if nd ~= np + 1 and nd ~= np + 2 then
    error(op .. ": mode '" .. mode .. "' with " .. #pad .. " padding values expects a " .. (np + 1) .. "-d or " .. (np + 2) ..
      "-d input, got shape " .. shape(x), 0)
  end
  for k = 1, np do
    local d = nd - k + 1
    local l, r, n = pad[2 * k - 1], pad[2 * k], x:size(d)
    if mode == "reflect" and (l >= n or r >= n) then
      error(op .. ": reflect padding {" .. l .. ", " .. r .. "} of dimension " .. d .. " must be less than its size " .. n ..
        " (input of shape " .. shape(x) .. ")", 0)
    end
    if mode == "circular" and (l > n or r > n) then
      error(op .. ": circular padding {" .. l .. ", " .. r .. "} of dimension " .. d .. " must be at most its size " .. n ..
        " (input of shape " .. shape(x) .. ")", 0)
    end
    if n == 0 or n + l + r < 1 then
      error(op .. ": mode '" .. mode .. "' cannot pad dimension " .. d .. " of size " .. n .. " by {" .. l .. ", " .. r ..
        "} (the result would be empty)", 0)
    end
    if l ~= 0 or r ~= 0 then
      x = x:index_select(d, source_index(mode, l, r, n, x.device) + 1)
    end
  end
  if x == input then x = x:clone() end
  return x
end

return M
