-- nnr.onnx.export(model, example_input, path[, opts]): records a forward pass of the model, module by module,
-- and writes it as an ONNX model (core/data/onnx_write.c: protobuf-c, written atomically).
--   opts: input_name = "x", output_name = "y", opset = 17, dynamic_batch = true (the first dimension of the
--   input and output is named "batch", so any batch size runs), dynamic = {"batch", "seq"} (names for the
--   leading dimensions instead: a sequence model's length too)
-- Every leaf module (one without children) is hooked while the model runs once in eval mode on the example;
-- each call becomes ONNX nodes (Linear -> Gemm or MatMul + Add, Conv2d -> Conv, BatchNorm -> BatchNormalization,
-- ...), its parameters the initializers. What the model computes between its modules (an addition, a reshape
-- in a forward written in Lua) is not recorded: a module whose input did not come from the model's input or
-- from another module is an error naming it, as is a module type with no ONNX form here.
local nnr = require "nnr"
local ffi = require "ffi"
local binding = require "nnr.binding"
local json = require "nnr.json"
local V = require "nnr.check"
local nn = nnr.nn
local C = binding.C

local M = {}

local ONNX_TYPE = {}          -- nnrun's dtype -> ONNX's type number (the reader's table, turned round)
for number, dtype in pairs(require("nnr.onnx_ops").DTYPES) do ONNX_TYPE[dtype] = number end

local function key(t) return tostring(ffi.cast("uintptr_t", t.p)) end

-- the recording: values (tensor -> name), nodes, initializers
local Rec = {}
Rec.__index = Rec

function Rec:value(t, who)
  local name = self.names[key(t)]
  if not name then
    error(string.format("onnx.export: the input of %s was computed outside the model's modules (by code in a forward); "
      .. "export records module calls only", who), 0)
  end
  return name
end

function Rec:init(t, hint)
  local k = key(t)
  if self.inits[k] then return self.inits[k] end
  local name = hint or ("const_" .. (#self.tensors + 1))
  if self.taken[name] then name = name .. "_" .. (#self.tensors + 1) end
  self.taken[name] = true
  self.inits[k] = name
  -- (src kept alive to the end: the key is its address, which a freed temporary would hand to the next one)
  self.tensors[#self.tensors + 1] = { name = name, t = t:detach():contiguous():cpu(), src = t }
  return name
end

function Rec:const(values, dtype) return self:init(nnr.tensor(values, { dtype = dtype or "f32" })) end

function Rec:node(op, inputs, attrs, out)
  self.count = self.count + 1
  local name = out or string.format("%s_%d", op, self.count)
  local a = {}
  for _, kv in ipairs(attrs or {}) do a[#a + 1] = kv end
  self.nodes[#self.nodes + 1] = { op = op, name = op .. "_" .. self.count, inputs = inputs, outputs = { name }, attrs = a }
  return name
end

local function I(name, v) return { name = name, i = v } end
local function Fl(name, v) return { name = name, f = v } end
local function Is(name, v) return { name = name, ints = v } end
local function pair(v) if type(v) == "table" then return v[1], v[2] end return v, v end

-- module type -> function(rec, module, input name, input tensor, prefix) -> output name
local emit = {}
local function simple(op) return function(rec, _, x) return rec:node(op, { x }) end end
emit.ReLU, emit.Sigmoid, emit.Tanh, emit.Identity = simple("Relu"), simple("Sigmoid"), simple("Tanh"), simple("Identity")
emit.Dropout, emit.Dropout2d = simple("Identity"), simple("Identity")

emit.Linear = function(rec, m, x, t, prefix)
  local b = m.bias and rec:init(m.bias, prefix .. ".bias")
  if t:dim() == 2 then return rec:node("Gemm", { x, rec:init(m.weight, prefix .. ".weight"), b }, { I("transB", 1) }) end
  local y = rec:node("MatMul", { x, rec:init(m.weight:t(), prefix .. ".weight_t") })
  return b and rec:node("Add", { y, b }) or y
end

emit.Conv2d = function(rec, m, x, _, prefix)
  local sh, sw = pair(m.stride)
  local ph, pw = pair(m.padding)
  local dh, dw = pair(m.dilation)
  if type(m.padding) == "string" then error("onnx.export: " .. prefix .. ": padding '" .. m.padding .. "' (give numbers)", 0) end
  return rec:node("Conv", { x, rec:init(m.weight, prefix .. ".weight"), m.bias and rec:init(m.bias, prefix .. ".bias") },
    { Is("kernel_shape", { m.kh, m.kw }), Is("strides", { sh, sw }), Is("pads", { ph, pw, ph, pw }), Is("dilations", { dh, dw }),
      I("group", m.groups or 1) })
end

local function batch_norm(rec, m, x, _, prefix)
  local n = m.num_features
  local w = m.weight and rec:init(m.weight, prefix .. ".weight") or rec:init(nnr.ones(n))
  local b = m.bias and rec:init(m.bias, prefix .. ".bias") or rec:init(nnr.zeros(n))
  if not m.running_mean then error("onnx.export: " .. prefix .. ": a batch norm without running statistics", 0) end
  return rec:node("BatchNormalization", { x, w, b, rec:init(m.running_mean, prefix .. ".running_mean"),
    rec:init(m.running_var, prefix .. ".running_var") }, { Fl("epsilon", m.eps) })
end
emit.BatchNorm2d, emit.BatchNorm1d = batch_norm, batch_norm

emit.LayerNorm = function(rec, m, x, _, prefix)
  if rec.opset < 17 then error("onnx.export: " .. prefix .. ": LayerNorm needs opset 17 (LayerNormalization)", 0) end
  local shape = m.shape
  local w = m.weight and rec:init(m.weight, prefix .. ".weight") or rec:init(nnr.ones(shape))
  local b = m.bias and rec:init(m.bias, prefix .. ".bias") or rec:init(nnr.zeros(shape))
  return rec:node("LayerNormalization", { x, w, b }, { I("axis", -#shape), Fl("epsilon", m.eps) })
end

local function pool_attrs(m, count_pad)
  local o = m.opts or {}
  local kh, kw = pair(m.kernel_size)
  local sh, sw = pair(o.stride or m.kernel_size)
  local ph, pw = pair(o.padding or 0)
  local a = { Is("kernel_shape", { kh, kw }), Is("strides", { sh, sw }), Is("pads", { ph, pw, ph, pw }), I("ceil_mode", o.ceil_mode and 1 or 0) }
  if count_pad then a[#a + 1] = I("count_include_pad", o.count_include_pad == false and 0 or 1) end
  if not count_pad and o.dilation then local dh, dw = pair(o.dilation); a[#a + 1] = Is("dilations", { dh, dw }) end
  return a
end
emit.MaxPool2d = function(rec, m, x) return rec:node("MaxPool", { x }, pool_attrs(m, false)) end
emit.AvgPool2d = function(rec, m, x) return rec:node("AveragePool", { x }, pool_attrs(m, true)) end
emit.AdaptiveAvgPool2d = function(rec, m, x, _, prefix)
  local a, b = pair(m.output_size)
  if a ~= 1 or b ~= 1 then error("onnx.export: " .. prefix .. ": AdaptiveAvgPool2d to a size other than 1", 0) end
  return rec:node("GlobalAveragePool", { x })
end

emit.Flatten = function(rec, m, x, t, prefix)
  local r = t:dim()
  local s, e = m.start_dim or 2, m.end_dim or -1
  if e < 0 then e = e + r + 1 end
  if s < 0 then s = s + r + 1 end
  -- ONNX's Flatten makes 2 dimensions: nnrun's only from the second dimension to the last
  if e ~= r or s ~= 2 then error("onnx.export: " .. prefix .. ": a Flatten other than from dimension 2 to the last", 0) end
  return rec:node("Flatten", { x }, { I("axis", 1) })
end

local function axis(m, default) local d = m.arg or default; return d < 0 and d or d - 1 end
emit.Softmax = function(rec, m, x) return rec:node("Softmax", { x }, { I("axis", axis(m, -1)) }) end
emit.LogSoftmax = function(rec, m, x) return rec:node("LogSoftmax", { x }, { I("axis", axis(m, -1)) }) end
emit.LeakyReLU = function(rec, m, x) return rec:node("LeakyRelu", { x }, { Fl("alpha", m.arg or 0.01) }) end
emit.ELU = function(rec, m, x) return rec:node("Elu", { x }, { Fl("alpha", m.arg or 1) }) end
emit.SiLU = function(rec, _, x) return rec:node("Mul", { x, rec:node("Sigmoid", { x }) }) end
emit.GELU = function(rec, m, x)
  if m.approximate == "tanh" then error("onnx.export: GELU with approximate = 'tanh' has no ONNX form before opset 20", 0) end
  -- x * 0.5 * (1 + erf(x / sqrt(2))), as PyTorch exports it before Gelu (opset 20)
  local e = rec:node("Erf", { rec:node("Div", { x, rec:const(math.sqrt(2)) }) })
  return rec:node("Mul", { rec:node("Mul", { x, rec:node("Add", { e, rec:const(1) }) }), rec:const(0.5) })
end
-- nnrun's ids count from 1, ONNX's Gather from 0: the exported model takes nnrun's ids
emit.Embedding = function(rec, m, x, _, prefix)
  return rec:node("Gather", { rec:init(m.weight, prefix .. ".weight"), rec:node("Sub", { x, rec:const(1, "i64") }) }, { I("axis", 0) })
end

-- LSTM and GRU: one ONNX node a layer (time-major; batch_first transposed around them), the gates reordered
-- from PyTorch's (LSTM i f g o, GRU r z n) to ONNX's (i o f c; z r h), both biases in one B
local REORDER = { LSTM = { 1, 4, 2, 3 }, GRU = { 2, 1, 3 } }
local function recurrent(op)
  return function(rec, m, x, t, prefix)
    if (m.proj_size or 0) > 0 then error("onnx.export: " .. prefix .. ": an LSTM with proj_size has no ONNX form", 0) end
    if t:dim() ~= 3 then error("onnx.export: " .. prefix .. ": give the " .. op .. " a batched input (3 dimensions)", 0) end
    local H, D, G = m.hidden_size, m.bidirectional and 2 or 1, #REORDER[op]
    local function gates(w)
      local parts = {}
      for i, g in ipairs(REORDER[op]) do parts[i] = w:narrow(1, (g - 1) * H + 1, H) end
      return nnr.cat(parts, 1)
    end
    local cur = m.batch_first and rec:node("Transpose", { x }, { Is("perm", { 1, 0, 2 }) }) or x
    for l = 0, m.num_layers - 1 do
      local W, R, B = {}, {}, {}
      for d = 1, D do
        local sfx = l .. (d == 2 and "_reverse" or "")
        W[d], R[d] = gates(m["weight_ih_l" .. sfx]), gates(m["weight_hh_l" .. sfx])
        if m["bias_ih_l" .. sfx] then B[d] = nnr.cat({ gates(m["bias_ih_l" .. sfx]), gates(m["bias_hh_l" .. sfx]) }, 1) end
      end
      local ins = { cur, rec:init(nnr.stack(W, 1), prefix .. ".W_l" .. l), rec:init(nnr.stack(R, 1), prefix .. ".R_l" .. l) }
      if #B > 0 then ins[4] = rec:init(nnr.stack(B, 1), prefix .. ".B_l" .. l) end
      local attrs = { I("hidden_size", H), { name = "direction", s = D == 2 and "bidirectional" or "forward" } }
      if op == "GRU" then attrs[#attrs + 1] = I("linear_before_reset", 1) end
      local y = rec:node(op, ins, attrs)                                            -- [T, D, B, H]
      cur = rec:node("Reshape", { rec:node("Transpose", { y }, { Is("perm", { 0, 2, 1, 3 }) }), rec:const({ 0, 0, -1 }, "i64") })
    end
    return m.batch_first and rec:node("Transpose", { cur }, { Is("perm", { 1, 0, 2 }) }) or cur
  end
end
emit.LSTM, emit.GRU = recurrent("LSTM"), recurrent("GRU")

-- nnr.models.GPT as one unit (its forward adds the position embedding, its blocks the residuals):
-- token and position embeddings, pre- or post-norm blocks of causal self-attention (the heads as
-- [B, heads, T, head_dim] products, a -inf mask above the diagonal cut to the length) and feed-forward,
-- the final norm and the head. The length is read from the ids, so it may vary up to the context.
local function as3() return { dim = function() return 3 end } end      -- (Linear's emitter asks the input's rank)
local function block(rec, L, h, mask, prefix)
  local mha, E = L.self_attn, L.self_attn.embed_dim
  local nh, hd = mha.num_heads, mha.head_dim
  local W, b = mha.in_proj_weight, rawget(mha, "in_proj_bias")
  local function proj(i, perm)
    local y = rec:node("MatMul", { h, rec:init(W:narrow(1, (i - 1) * E + 1, E):t(), string.format("%s.self_attn.in_proj_%d_t", prefix, i)) })
    if b then y = rec:node("Add", { y, rec:init(b:narrow(1, (i - 1) * E + 1, E), string.format("%s.self_attn.in_proj_bias_%d", prefix, i)) }) end
    return rec:node("Transpose", { rec:node("Reshape", { y, rec:const({ 0, 0, nh, hd }, "i64") }) }, { Is("perm", perm) })
  end
  local function attention(x)
    h = x
    local q, k, v = proj(1, { 0, 2, 1, 3 }), proj(2, { 0, 2, 3, 1 }), proj(3, { 0, 2, 1, 3 })
    local scores = rec:node("Add", { rec:node("Mul", { rec:node("MatMul", { q, k }), rec:const(1 / math.sqrt(hd)) }), mask })
    local o = rec:node("MatMul", { rec:node("Softmax", { scores }, { I("axis", -1) }), v })
    o = rec:node("Reshape", { rec:node("Transpose", { o }, { Is("perm", { 0, 2, 1, 3 }) }), rec:const({ 0, 0, E }, "i64") })
    return emit.Linear(rec, mha.out_proj, o, as3(), prefix .. ".self_attn.out_proj")
  end
  local function feed_forward(x)
    local a = emit.Linear(rec, L.linear1, x, as3(), prefix .. ".linear1")
    a = L.activation == "gelu" and emit.GELU(rec, {}, a) or rec:node("Relu", { a })
    return emit.Linear(rec, L.linear2, a, as3(), prefix .. ".linear2")
  end
  local x = h
  if L.norm_first then
    x = rec:node("Add", { x, attention(emit.LayerNorm(rec, L.norm1, x, nil, prefix .. ".norm1")) })
    return rec:node("Add", { x, feed_forward(emit.LayerNorm(rec, L.norm2, x, nil, prefix .. ".norm2")) })
  end
  x = emit.LayerNorm(rec, L.norm1, rec:node("Add", { x, attention(x) }), nil, prefix .. ".norm1")
  return emit.LayerNorm(rec, L.norm2, rec:node("Add", { x, feed_forward(x) }), nil, prefix .. ".norm2")
end

emit.GPT = function(rec, m, x, _, prefix)
  local ctx = m.cfg.context
  local ids = rec:node("Sub", { x, rec:const(1, "i64") })
  local T = rec:node("Gather", { rec:node("Shape", { x }), rec:const(1, "i64") }, { I("axis", 0) })          -- a scalar
  local pos = rec:node("Gather", { rec:init(m.pos.weight, prefix .. ".pos.weight"),
    rec:node("Range", { rec:const(0, "i64"), T, rec:const(1, "i64") }) }, { I("axis", 0) })
  local h = rec:node("Add", { rec:node("Gather", { rec:init(m.tok.weight, prefix .. ".tok.weight"), ids }, { I("axis", 0) }), pos })
  local full = nnr.zeros(ctx, ctx):masked_fill(nnr.ones(ctx, ctx):triu(1):ne(0), -math.huge)
  local TT = rec:node("Concat", { rec:node("Unsqueeze", { T, rec:const({ 0 }, "i64") }), rec:node("Unsqueeze", { T, rec:const({ 0 }, "i64") }) },
    { I("axis", 0) })
  local mask = rec:node("Slice", { rec:init(full, prefix .. ".causal_mask"), rec:const({ 0, 0 }, "i64"), TT })
  for _, kv in ipairs(m.blocks.layers:named_children()) do h = block(rec, kv[2], h, mask, prefix .. ".blocks.layers." .. kv[1]) end
  h = emit.LayerNorm(rec, m.ln_f, h, nil, prefix .. ".ln_f")
  return emit.Linear(rec, m.head, h, as3(), prefix .. ".head")
end

local function leaves(model)
  local out = {}
  local function walk(m, prefix)
    local kids = m:named_children()
    if #kids == 0 or (emit[m.__name] and #kids > 0) then out[#out + 1] = { m, prefix } return end
    for _, kv in ipairs(kids) do walk(kv[2], prefix == "" and kv[1] or (prefix .. "." .. kv[1])) end
  end
  walk(model, "")
  return out
end

function M.export(model, x, path, opts)
  local who = "onnx.export"
  opts = V.options(who, opts, { input_name = true, output_name = true, opset = true, dynamic_batch = true, dynamic = true })
  if type(model) ~= "table" or type(model.forward) ~= "function" then error(who .. ": model must be an nn.Module", 0) end
  if not nnr.is_tensor(x) then error(who .. ": example_input must be a tensor, got " .. type(x), 0) end
  V.path(who, "path", path)
  local opset = V.integer(who, "opset", opts.opset or 17, 13, 17)
  local in_name, out_name = opts.input_name or "x", opts.output_name or "y"
  local rec = setmetatable({ names = {}, inits = {}, tensors = {}, taken = {}, nodes = {}, count = 0, opset = opset }, Rec)
  local list, missing = leaves(model), {}
  for _, e in ipairs(list) do
    if not emit[e[1].__name] then missing[#missing + 1] = string.format("%s (%s)", e[1].__name, e[2] ~= "" and e[2] or "the model") end
  end
  if #missing > 0 then error(who .. ": no ONNX form for " .. table.concat(missing, ", "), 0) end
  rec.names[key(x)] = in_name
  local handles, failure = {}, nil
  for _, e in ipairs(list) do
    local m, prefix = e[1], e[2]
    handles[#handles + 1] = m:register_forward_hook(function(_, args, out)
      if failure then return end
      local ok, err = pcall(function()
        local t = args[1]
        if type(out) == "table" and not nnr.is_tensor(out) then out = out[1] end      -- (an LSTM's output; its states are not recorded)
        if not nnr.is_tensor(t) or not nnr.is_tensor(out) then error(who .. ": " .. prefix .. " takes or gives something other than a tensor", 0) end
        if args.n > 1 and args[2] ~= nil then error(who .. ": " .. prefix .. " was given more than its input (a state?); export records one", 0) end
        local name = emit[m.__name](rec, m, rec:value(t, string.format("%s (%s)", prefix, m.__name)), t, prefix ~= "" and prefix or m.__name)
        rec.names[key(out)] = name
        rec.keep = rec.keep or {}
        rec.keep[#rec.keep + 1] = out        -- alive until the end, so no other tensor takes its address
      end)
      if not ok then failure = err end
    end)
  end
  local was_training = model.training
  model:eval()
  local ok, y = pcall(nnr.no_grad, function() return model(x) end)
  for _, h in ipairs(handles) do h:remove() end
  model:train(was_training)
  if not ok then error(y, 0) end
  if failure then error(failure, 0) end
  if not nnr.is_tensor(y) then error(who .. ": the model must return one tensor", 0) end
  local last = rec.names[key(y)]
  if not last or last == in_name then error(who .. ": the model's output was not made by one of its modules", 0) end
  for _, nd in ipairs(rec.nodes) do      -- the output's value takes the output's name
    for i, v in ipairs(nd.inputs) do if v == last then nd.inputs[i] = out_name end end
    if nd.outputs[1] == last then nd.outputs[1] = out_name end
  end
  -- the leading dimensions named (dynamic): {"batch"} by default, {"batch", "seq"} for a sequence model
  local dynamic = opts.dynamic or (opts.dynamic_batch == false and {} or { "batch" })
  if type(dynamic) ~= "table" then error(who .. ": dynamic must be a list of names for the leading dimensions", 0) end
  for i, d in ipairs(dynamic) do if type(d) ~= "string" or d == "" then error(string.format("%s: dynamic[%d] must be a name", who, i), 0) end end
  local function shape(t)
    local s = {}
    for i = 1, t:dim() do s[i] = dynamic[i] or t:size(i) end
    return s
  end
  local desc = { opset = opset, name = model.__name, producer_version = ffi.string(C.nnr_version()),
                 inputs = { { name = in_name, dtype = ONNX_TYPE[x.dtype], shape = shape(x) } },
                 outputs = { { name = out_name, dtype = ONNX_TYPE[y.dtype], shape = shape(y) } }, nodes = rec.nodes }
  local n = #rec.tensors
  local names, tensors = ffi.new("const char *[?]", math.max(n, 1)), ffi.new("nnr_tensor *[?]", math.max(n, 1))
  for i, e in ipairs(rec.tensors) do names[i - 1], tensors[i - 1] = e.name, e.t.p end
  binding.check(C.nnr_onnx_save(path, json.encode(desc), n, names, tensors))
  return path
end

return M
