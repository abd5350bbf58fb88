-- nnr.prune: magnitude pruning (docs/quantization.md), PyTorch's torch.nn.utils.prune in Lua,
-- plus shrink(), which removes pruned neurons for real so the model gets smaller and faster.
--
--   prune.l1_unstructured(module, "weight", 0.3)          -- the 30% smallest |w| masked
--   prune.global_unstructured({{m1, "weight"}, {m2, "weight"}}, 0.5)
--   prune.ln_structured(module, "weight", 0.5, 2, 1)       -- half the output rows (dim 1), by L2 norm
--   prune.remove(module, "weight")                          -- bake the mask in
--   prune.sparsity(model), prune.shrink(model)
--
-- A pruned parameter becomes <name>_orig (the same tensor, so optimizers keep updating it) and a
-- <name>_mask buffer; before each forward the module's <name> is set to orig * mask, so the
-- masked weights stay zero through training and get no gradient. Pruning again combines masks.
local nnr = require "nnr"
local ffi = require "ffi"
local nn = nnr.nn

local M = {}

local function check_amount(fn, amount)
  if type(amount) ~= "number" or amount ~= amount or amount < 0 or amount > 1 then
    error(string.format("prune.%s: amount %s is outside [0, 1] (the fraction to prune)", fn, tostring(amount)), 3)
  end
end

local function param_of(fn, module, name)
  local orig = rawget(module, name .. "_orig")
  local t = orig or module[name]
  if not nnr.is_tensor(t) then
    error(string.format("prune.%s: %s has no parameter '%s'", fn, module.__name or "module", tostring(name)), 3)
  end
  return t, orig ~= nil
end

-- the weights as the model uses them now: orig * mask once pruned
local function effective(module, name)
  local orig = rawget(module, name .. "_orig")
  if orig then return orig:detach() * module[name .. "_mask"] end
  return module[name]:detach()
end

-- installs mask (combined with an existing one) and the forward that applies it
local function apply_mask(module, name, mask)
  local t, pruned = param_of("apply", module, name)
  if pruned then
    mask = mask * module[name .. "_mask"]
  else
    -- the parameter keeps its tensor (optimizers hold it) under <name>_orig
    local i
    for k, n in ipairs(module._params) do if n == name then i = k end end
    table.remove(module._params, i)
    module:register_parameter(name .. "_orig", t)
    local cls = getmetatable(module)
    rawset(module, "forward", function(m, ...)
      for _, n in ipairs(rawget(m, "_pruned") or {}) do rawset(m, n, m[n .. "_orig"] * m[n .. "_mask"]) end
      return cls.forward(m, ...)
    end)
    local list = rawget(module, "_pruned") or {}
    list[#list + 1] = name
    rawset(module, "_pruned", list)
  end
  module:register_buffer(name .. "_mask", mask:to(t.dtype):detach())
  rawset(module, name, t:detach() * module[name .. "_mask"])
  return module
end

-- a 0/1 mask (f32, flat) with exactly round(amount * n) zeros at the smallest scores (ties: lowest index)
local function mask_smallest(scores, amount)
  local v = scores:reshape(-1):to("cpu", "f64"):contiguous()
  -- before the loop below reads the values through FFI: a NaN's payload can read as another Lua value
  if v:isnan():any():item() then error("prune: the parameter holds NaN", 3) end
  local n = v:numel()
  local k = math.floor(amount * n + 0.5)
  local mask = nnr.ones(n, { dtype = "f64" })
  if k == 0 then return mask:float() end
  local p = ffi.cast("double *", v:data_ptr())
  local mp = ffi.cast("double *", mask:data_ptr())
  local list = {}
  for i = 0, n - 1 do
    list[i + 1] = p[i]
  end
  table.sort(list)
  local thr = list[k]
  local below = 0
  for i = 0, n - 1 do if p[i] < thr then below = below + 1 end end
  local equal_left = k - below
  for i = 0, n - 1 do
    if p[i] < thr then mp[i] = 0
    elseif p[i] == thr and equal_left > 0 then mp[i] = 0; equal_left = equal_left - 1 end
  end
  return mask:float()
end

function M.l1_unstructured(module, name, amount)
  check_amount("l1_unstructured", amount)
  param_of("l1_unstructured", module, name)
  local w = effective(module, name)
  local mask = mask_smallest(w:abs(), amount)
  return apply_mask(module, name, mask:view(w:size()):to(w.device))
end

-- the smallest |w| across several parameters: {{module, "weight"}, ...}
function M.global_unstructured(params, amount)
  check_amount("global_unstructured", amount)
  if type(params) ~= "table" or #params == 0 then error("prune.global_unstructured: expected a list of {module, name} pairs", 2) end
  local flats, sizes = {}, {}
  for i, p in ipairs(params) do
    param_of("global_unstructured", p[1], p[2])
    local w = effective(p[1], p[2])
    flats[i] = w:abs():reshape(-1):to("cpu", "f64")
    sizes[i] = w:numel()
  end
  local all = nnr.cat(flats)
  local mask = mask_smallest(all, amount)
  local at = 1
  for i, p in ipairs(params) do
    local w = p[1][p[2] .. "_orig"] or p[1][p[2]]
    apply_mask(p[1], p[2], mask:narrow(1, at, sizes[i]):contiguous():view(w:size()):to(w.device))
    at = at + sizes[i]
  end
end

-- whole slices along dim (1-based; 1 = output rows/channels) with the smallest L-n norm
function M.ln_structured(module, name, amount, n, dim)
  check_amount("ln_structured", amount)
  param_of("ln_structured", module, name)
  local check = require "nnr.check"
  n = check.number("prune.ln_structured", "n", n, { above = 0, inf = true, default = 2 })
  dim = check.integer("prune.ln_structured", "dim", dim or 1, 1)
  local w = effective(module, name)
  if dim > w:dim() then error(string.format("prune.ln_structured: dim %d for a %d-d parameter", dim, w:dim()), 0) end
  local moved = w:transpose(1, dim):contiguous()
  local rows = moved:reshape(moved:size(1), -1)
  local norms = n == math.huge and rows:abs():max(2) or rows:abs():pow(n):sum(2)
  local keep = mask_smallest(norms, amount)
  local shape = {}
  for i = 1, w:dim() do shape[i] = i == dim and w:size(dim) or 1 end
  local mask = keep:view(shape):expand(w:size()):contiguous()
  return apply_mask(module, name, mask:to(w.device))
end

-- bakes the mask in: <name> becomes a plain parameter again, zeros included
function M.remove(module, name)
  name = name or "weight"
  local orig = rawget(module, name .. "_orig")
  if not orig then error(string.format("prune.remove: %s.%s is not pruned", module.__name or "module", name), 2) end
  nnr.no_grad(function() orig:mul_(module[name .. "_mask"]) end)
  for k, n in ipairs(module._params) do if n == name .. "_orig" then table.remove(module._params, k) break end end
  for k, n in ipairs(module._buffers) do if n == name .. "_mask" then table.remove(module._buffers, k) break end end
  rawset(module, name .. "_orig", nil)
  rawset(module, name .. "_mask", nil)
  module:register_parameter(name, orig)
  local list = rawget(module, "_pruned")
  for k, n in ipairs(list) do if n == name then table.remove(list, k) break end end
  if #list == 0 then rawset(module, "forward", nil); rawset(module, "_pruned", nil) end
  return module
end

-- the fraction of zeros among the weights (parameters named weight) of Linear and Conv2d modules
function M.sparsity(model)
  local zeros, total = 0, 0
  for _, m in ipairs(model:modules()) do
    local mt = getmetatable(m)
    if (mt == nn.Linear or mt == nn.Conv2d) and (m.weight or rawget(m, "weight_orig")) then
      local w = effective(m, "weight")
      zeros = zeros + w:eq(0):sum():item()
      total = total + w:numel()
    end
  end
  return total > 0 and zeros / total or 0
end

-- Linears of a Sequential (in order), with what lies between them
local function linear_chain(seq)
  local list = {}
  for i, name in ipairs(seq._children) do
    local m = seq[name]
    if getmetatable(m) == nn.Linear then list[#list + 1] = { index = i, module = m } end
  end
  return list
end

-- Removes the neurons whose weight rows are all zero (after prune.remove, or through the masks)
-- from each Linear of a Sequential that feeds, through ReLU/Dropout/Identity, another Linear. A
-- removed neuron outputs the constant act(bias); its contribution is folded into the next
-- Linear's bias, so the outputs stay the same. Returns the model and the number of neurons removed.
function M.shrink(model)
  if getmetatable(model) ~= nn.Sequential then error("prune.shrink: expected an nn.Sequential", 2) end
  local removed = 0
  local chain = linear_chain(model)
  for c = 1, #chain - 1 do
    local a, b = chain[c].module, chain[c + 1].module
    -- only elementwise modules between them: ReLU, Dropout, Identity
    local act = nil
    for i = chain[c].index + 1, chain[c + 1].index - 1 do
      local name = model[model._children[i]].__name
      if name == "ReLU" then act = "relu"
      elseif name ~= "Dropout" and name ~= "Identity" then act = false break end
    end
    if act ~= false then
      for _, m in ipairs { a, b } do
        if rawget(m, "weight_orig") then M.remove(m, "weight") end
      end
      local wa = a.weight:detach()
      local alive = wa:ne(0):sum(2):gt(0)                    -- rows with any non-zero weight
      local keep, drop = {}, {}
      for i = 1, wa:size(1) do if alive[i] then keep[#keep + 1] = i else drop[#drop + 1] = i end end
      if #drop > 0 and #keep > 0 then
        nnr.no_grad(function()
          local wb = b.weight:detach()
          local bias_b = b.bias and b.bias:detach():clone() or nnr.zeros(wb:size(1), { device = wb.device })
          if a.bias then
            -- the dropped neurons' constant outputs, act(bias), pass through b's weights into its bias
            local di = nnr.tensor(drop, { dtype = "i64", device = wa.device })
            local const = a.bias:detach():index_select(1, di)
            if act == "relu" then const = const:relu() end
            bias_b = bias_b + wb:index_select(2, di):matmul(const)
          end
          local ki = nnr.tensor(keep, { dtype = "i64", device = wa.device })
          local new_a = nn.Linear(a.in_features, #keep, { bias = a.bias ~= nil, device = wa.device })
          new_a.weight:set_data_(wa:index_select(1, ki):contiguous())
          if a.bias then new_a.bias:set_data_(a.bias:detach():index_select(1, ki):contiguous()) end
          local new_b = nn.Linear(#keep, b.out_features, { bias = true, device = wb.device })
          new_b.weight:set_data_(wb:index_select(2, ki):contiguous())
          new_b.bias:set_data_(bias_b:contiguous())
          new_a.training, new_b.training = a.training, b.training
          model:add_module(model._children[chain[c].index], new_a)
          model:add_module(model._children[chain[c + 1].index], new_b)
          chain[c].module, chain[c + 1].module = new_a, new_b
        end)
        removed = removed + #drop
      end
    end
  end
  return model, removed
end

return M
