-- Transformer layers with PyTorch's structure and parameter names (state dicts move both ways):
--   nn.TransformerEncoderLayer(d_model, nhead[, {dim_feedforward = 2048, dropout = 0.1, activation = "relu" | "gelu",
--       layer_norm_eps = 1e-5, batch_first = false, norm_first = false, bias = true}])
--     layer(src[, {src_mask, src_key_padding_mask, is_causal}])
--   nn.TransformerDecoderLayer(d_model, nhead[, same options])
--     layer(tgt, memory[, {tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal, memory_is_causal}])
--   nn.TransformerEncoder(layer, num_layers[, {norm}]), nn.TransformerDecoder(layer, num_layers[, {norm}]): num_layers copies
--   nn.Transformer([{d_model = 512, nhead = 8, num_encoder_layers = 6, num_decoder_layers = 6, dim_feedforward = 2048,
--       dropout = 0.1, activation, layer_norm_eps, batch_first, norm_first, bias}]); m(src, tgt[, {src_mask, tgt_mask, ...}])
-- Self-attention runs without the weights (F.scaled_dot_product_attention: no [L, S] scores kept).
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local F = require "nnr.nn.functional"
local V = require "nnr.check"
local Linear = require "nnr.nn.linear"
local MHA = require("nnr.nn.attention").MultiheadAttention
local norm = require "nnr.nn.normalization"
local misc = require "nnr.nn.misc"
local containers = require "nnr.nn.containers"
local deep_copy = require("nnr.nn.utils").deep_copy
local binding = require "nnr.binding"
local C, ffi = binding.C, binding.ffi

local M = {}
local LAYER_OPTIONS = { dim_feedforward = true, dropout = true, activation = true, layer_norm_eps = true, batch_first = true,
                        norm_first = true, bias = true, dtype = true, device = true }

local function init_layer(self, who, d_model, nhead, opts, cross)
  Module.__init(self)
  opts = V.options(who, opts, LAYER_OPTIONS)
  local dff = V.integer(who, "dim_feedforward", opts.dim_feedforward or 2048, 1)
  local p = V.probability(who, "dropout", opts.dropout == nil and 0.1 or opts.dropout)
  self.activation = V.choice(who, "activation", opts.activation or "relu", { "relu", "gelu" })
  self.norm_first = V.boolean(who, "norm_first", opts.norm_first) or false
  self.batch_first = V.boolean(who, "batch_first", opts.batch_first) or false
  local eps = V.number(who, "layer_norm_eps", opts.layer_norm_eps, { above = 0, default = 1e-5 })
  local bias = opts.bias == nil or V.boolean(who, "bias", opts.bias)
  local o = { dtype = opts.dtype, device = opts.device }
  local mo = { dropout = p, bias = bias, batch_first = self.batch_first, dtype = o.dtype, device = o.device }
  self:add_module("self_attn", MHA(d_model, nhead, mo))
  if cross then self:add_module("multihead_attn", MHA(d_model, nhead, mo)) end
  self:add_module("linear1", Linear(d_model, dff, { bias = bias, dtype = o.dtype, device = o.device }))
  self:add_module("dropout", misc.Dropout(p))
  self:add_module("linear2", Linear(dff, d_model, { bias = bias, dtype = o.dtype, device = o.device }))
  for i = 1, cross and 3 or 2 do
    self:add_module("norm" .. i, norm.LayerNorm(d_model, { eps = eps, dtype = o.dtype, device = o.device }))
    self:add_module("dropout" .. i, misc.Dropout(p))
  end
end

local function feed_forward(self, x)
  local a = self.activation == "gelu" and F.gelu or F.relu
  local drop = rawget(self, "dropout3") or self.dropout2      -- the decoder's third, the encoder's second
  return drop(self.linear2(self.dropout(a(self.linear1(x)))))
end

local function attend(mha, drop, q, kv, mask, kpm, causal, cache)
  local o = mha(q, kv, kv, { attn_mask = mask, key_padding_mask = kpm, need_weights = false, is_causal = causal and mask == nil or nil,
                             cache = cache })
  return drop(o)
end

M.TransformerEncoderLayer = Module:extend("TransformerEncoderLayer")
-- false: decoding steps run the composed ops from Lua instead of nnr_decode_layer_step (for comparisons)
M.TransformerEncoderLayer.fused_decode = true
function M.TransformerEncoderLayer:__init(d_model, nhead, opts) init_layer(self, "TransformerEncoderLayer", d_model, nhead, opts, false) end
local ENCODER_LAYER_OPTIONS = { src_mask = true, src_key_padding_mask = true, is_causal = true, cache = true }

-- a Linear, a QuantizedLinear (nnr.quant.dynamic) or the attention's in-projection into a slot of the
-- C layer table; false for anything else
local function linear_slot(slot, m, weight, bias)
  if m and (rawget(m, "_hooks") or rawget(m, "forward")) then return false end      -- hooks or its own forward: as written
  if m and m.__name == "QuantizedLinear" then
    local packed, meta = rawget(m, "_packed"), rawget(m, "_meta")
    if not packed or not meta then return false end
    slot.packed, slot.meta, slot.kernel = packed.p, meta.p, m.kernel or 0
    return true
  end
  if m then
    if m.__name ~= "Linear" then return false end
    weight, bias = rawget(m, "weight"), rawget(m, "bias")
  end
  if not nnr.is_tensor(weight) then return false end
  slot.weight, slot.bias = weight.p, bias and bias.p or nil
  return true
end

-- the layer as nnr_decode_layer_step's table (core/ops/decode.c), or false where it has modules the C
-- step does not know (then the composed step runs). Built once per cache, that is once per generation:
-- the table points at the weights of that moment, and keeps them alive.
local function decode_table(self)
  local mha, n1, n2 = self.self_attn, self.norm1, self.norm2
  if n1.__name ~= "LayerNorm" or n2.__name ~= "LayerNorm" or #n1.shape ~= 1 or #n2.shape ~= 1 then return false end
  for _, m in ipairs { n1, n2 } do if rawget(m, "_hooks") or rawget(m, "forward") then return false end end
  local L = ffi.new("nnr_decode_layer")
  L.struct_size = ffi.sizeof(L)
  L.norm_first, L.gelu, L.heads = self.norm_first and 1 or 0, self.activation == "gelu" and 1 or 0, mha.num_heads
  local keep = { L }
  local function hold(t) if t ~= nil then keep[#keep + 1] = t end end
  local function norm(m)
    local w, b = rawget(m, "weight"), rawget(m, "bias")
    hold(w); hold(b)
    return w and w.p or nil, b and b.p or nil, m.eps
  end
  L.norm1_weight, L.norm1_bias, L.eps1 = norm(n1)
  L.norm2_weight, L.norm2_bias, L.eps2 = norm(n2)
  local qin = rawget(mha, "in_proj_int8")
  local ok = linear_slot(L.in_proj, qin, rawget(mha, "in_proj_weight"), rawget(mha, "in_proj_bias")) and
             linear_slot(L.out_proj, mha.out_proj) and linear_slot(L.linear1, self.linear1) and linear_slot(L.linear2, self.linear2)
  if not ok then return false end
  for _, m in ipairs { qin or false, mha.out_proj, self.linear1, self.linear2 } do
    if m then
      for _, k in ipairs { "weight", "bias", "_packed", "_meta" } do hold(rawget(m, k)) end
      keep.int8 = keep.int8 or rawget(m, "_packed") ~= nil
    end
  end
  hold(rawget(mha, "in_proj_weight")); hold(rawget(mha, "in_proj_bias"))
  return keep
end

-- the whole layer in one C call (nnr_decode_layer_step): the same ops as below without the Lua between
-- them; nil where it does not apply
local function decode_fused(self, x, cache)
  if not M.TransformerEncoderLayer.fused_decode then return nil end
  local t = cache._layer
  if t == nil then t = decode_table(self); cache._layer = t end
  if not t or not x:is_contiguous() then return nil end
  -- the int8 kernels take f32 on the cpu; QuantizedLinear converts other inputs, the composed step does that
  if t.int8 and (x.dtype ~= "f32" or x.device ~= "cpu") then return nil end
  local mha = self.self_attn
  local N, E = mha.batch_first and x:size(1) or x:size(2), mha.embed_dim
  local kb, vb, past = mha:decode_buffers(cache, N, x.dtype, x.device)
  if not kb then return nil end
  local x2 = x:view(N, E)             -- held in a local: a temporary's finalizer could run before the call
  local y = binding.call(C.nnr_decode_layer_step, t[1], x2.p, kb.p, vb.p, past)
  mha:decode_commit(cache, kb, vb, past)
  return y:view(x:size())
end

-- a token at a time against the cache (MultiheadAttention:decodes): the layer's arithmetic without
-- forward's option tables, closures and eval-mode dropouts; the sum x + ... is new, the rest in place
local function decode_layer(self, x, cache)
  local y = decode_fused(self, x, cache)
  if y then return y end
  local a = self.activation == "gelu" and F.gelu or F.relu
  local mha = self.self_attn
  if self.norm_first then
    x = x + mha:decode_step(self.norm1(x), cache)
    return x:add_(self.linear2(a(self.linear1(self.norm2(x)))))
  end
  x = self.norm1(x + mha:decode_step(x, cache))
  return self.norm2(x:add_(self.linear2(a(self.linear1(x)))))
end

function M.TransformerEncoderLayer:forward(src, opts)
  opts = V.options("TransformerEncoderLayer", opts, ENCODER_LAYER_OPTIONS)
  local x, m, kpm, c, kv = src, opts.src_mask, opts.src_key_padding_mask, opts.is_causal, opts.cache
  if kv ~= nil and m == nil and kpm == nil and self.self_attn:decodes(x, kv) then return decode_layer(self, x, kv) end
  if self.norm_first then
    local n = self.norm1(x)
    x = x + attend(self.self_attn, self.dropout1, n, n, m, kpm, c, kv)
    return x + feed_forward(self, self.norm2(x))
  end
  x = self.norm1(x + attend(self.self_attn, self.dropout1, x, x, m, kpm, c, kv))
  return self.norm2(x + feed_forward(self, x))
end

M.TransformerDecoderLayer = Module:extend("TransformerDecoderLayer")
function M.TransformerDecoderLayer:__init(d_model, nhead, opts) init_layer(self, "TransformerDecoderLayer", d_model, nhead, opts, true) end
function M.TransformerDecoderLayer:forward(tgt, memory, opts)
  opts = V.options("TransformerDecoderLayer", opts, { tgt_mask = true, memory_mask = true, tgt_key_padding_mask = true,
    memory_key_padding_mask = true, tgt_is_causal = true, memory_is_causal = true })
  local x = tgt
  local function sa(y) return attend(self.self_attn, self.dropout1, y, y, opts.tgt_mask, opts.tgt_key_padding_mask, opts.tgt_is_causal) end
  local function ca(y)
    return attend(self.multihead_attn, self.dropout2, y, memory, opts.memory_mask, opts.memory_key_padding_mask, opts.memory_is_causal)
  end
  if self.norm_first then
    x = x + sa(self.norm1(x))
    x = x + ca(self.norm2(x))
    return x + feed_forward(self, self.norm3(x))
  end
  x = self.norm1(x + sa(x))
  x = self.norm2(x + ca(x))
  return self.norm3(x + feed_forward(self, x))
end

-- num_layers copies of a layer, as "layers.0", "layers.1", ... (PyTorch's names), then an optional norm
local function stack(self, who, layer, num_layers, opts)
  Module.__init(self)
  opts = V.options(who, opts, { norm = true })
  self.num_layers = V.integer(who, "num_layers", num_layers, 1)
  local layers = {}
  for i = 1, num_layers do layers[i] = deep_copy(layer) end
  self:add_module("layers", containers.ModuleList(layers))
  if opts.norm ~= nil then self:add_module("norm", opts.norm) end
end

M.TransformerEncoder = Module:extend("TransformerEncoder")
function M.TransformerEncoder:__init(layer, num_layers, opts) stack(self, "TransformerEncoder", layer, num_layers, opts) end
-- opts as the layer's; opts.cache (a table, empty at the first call) keeps one key/value cache per layer
function M.TransformerEncoder:forward(src, opts)
  local x = src
  local cache = opts and opts.cache
  local o = opts
  if cache then                   -- the layers' options with each layer's own cache
    o = {}
    for k, v in pairs(opts) do o[k] = v end
  end
  -- a decoding step straight to each layer's decode (what its forward would do, without validating the
  -- same options once per layer), unless a layer has hooks or the profiler wants its scope
  local direct = cache and not Module._profiling.on
  if direct then for k in pairs(o) do direct = direct and (k == "cache" or k == "is_causal") end end
  for i = 1, self.num_layers do
    local layer = self.layers:get(i)
    if cache then
      cache[i] = cache[i] or {}
      o.cache = cache[i]
    end
    if direct and getmetatable(layer) == M.TransformerEncoderLayer and not rawget(layer, "_hooks") and layer.self_attn:decodes(x, cache[i]) then
      x = decode_layer(layer, x, cache[i])
    else
      x = layer(x, o)
    end
  end
  local n = rawget(self, "norm")
  return n and n(x) or x
end

M.TransformerDecoder = Module:extend("TransformerDecoder")
function M.TransformerDecoder:__init(layer, num_layers, opts) stack(self, "TransformerDecoder", layer, num_layers, opts) end
function M.TransformerDecoder:forward(tgt, memory, opts)
  local x = tgt
  for i = 1, self.num_layers do x = self.layers:get(i)(x, memory, opts) end
  local n = rawget(self, "norm")
  return n and n(x) or x
end

M.Transformer = Module:extend("Transformer")
function M.Transformer:__init(opts)
  Module.__init(self)
  local who = "Transformer"
  local known = { d_model = true, nhead = true, num_encoder_layers = true, num_decoder_layers = true }
  for k in pairs(LAYER_OPTIONS) do known[k] = true end
  opts = V.options(who, opts, known)
  local lo = {}
  for k in pairs(LAYER_OPTIONS) do lo[k] = opts[k] end
  local d, h = opts.d_model or 512, opts.nhead or 8
  local eps = opts.layer_norm_eps or 1e-5
  local no = { eps = eps, dtype = opts.dtype, device = opts.device }
  self:add_module("encoder", M.TransformerEncoder(M.TransformerEncoderLayer(d, h, lo), opts.num_encoder_layers or 6,
    { norm = norm.LayerNorm(d, no) }))
  self:add_module("decoder", M.TransformerDecoder(M.TransformerDecoderLayer(d, h, lo), opts.num_decoder_layers or 6,
    { norm = norm.LayerNorm(d, no) }))
end
-- m(src, tgt[, {src_mask, tgt_mask, memory_mask, src_key_padding_mask, tgt_key_padding_mask, memory_key_padding_mask,
-- src_is_causal, tgt_is_causal, memory_is_causal}])
function M.Transformer:forward(src, tgt, opts)
  opts = V.options("Transformer", opts, { src_mask = true, tgt_mask = true, memory_mask = true, src_key_padding_mask = true,
    tgt_key_padding_mask = true, memory_key_padding_mask = true, src_is_causal = true, tgt_is_causal = true, memory_is_causal = true })
  local memory = self.encoder(src, { src_mask = opts.src_mask, src_key_padding_mask = opts.src_key_padding_mask, is_causal = opts.src_is_causal })
  return self.decoder(tgt, memory, { tgt_mask = opts.tgt_mask, memory_mask = opts.memory_mask, tgt_key_padding_mask = opts.tgt_key_padding_mask,
    memory_key_padding_mask = opts.memory_key_padding_mask, tgt_is_causal = opts.tgt_is_causal, memory_is_causal = opts.memory_is_causal })
end

return M
