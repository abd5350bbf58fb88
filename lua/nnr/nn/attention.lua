-- Attention: F.scaled_dot_product_attention (one op in C over blocks of query rows: no [L, S] score
-- matrix is kept; core/ops/attention.c) and nn.MultiheadAttention (PyTorch's packed in-projection).
-- The Transformer layers built on it are in lua/nnr/nn/transformer.lua.
--   F.scaled_dot_product_attention(q, k, v[, {attn_mask, dropout_p = 0, is_causal = false, scale}])
-- q [..., L, E], k [..., S, E], v [..., S, Ev] -> [..., L, Ev]. attn_mask: bool (true takes part) or
-- additive (q's dtype), broadcast to [..., L, S]. dropout_p > 0 drops probabilities (always, as
-- PyTorch's functional form does; modules pass 0 in eval): that form runs composed, keeping the scores.
local nnr = require "nnr"
local binding = require "nnr.binding"
local F = require "nnr.nn.functional"
local V = require "nnr.check"
local C = binding.C
local ffi = binding.ffi
local tp = require("nnr.tensor").tp

local Module = require "nnr.nn.module"
local Linear = require "nnr.nn.linear"

local M = {}
local sdpa_options = { attn_mask = true, dropout_p = true, is_causal = true, scale = true }

-- the composed form (dropout): softmax(q k^T * scale + mask), dropped out, times v
local function composed(q, k, v, mask, p, causal, scale)
  local s = q:matmul(k:transpose(-2, -1)) * scale
  if causal then
    local L, S = q:size(-2), k:size(-2)
    mask = nnr.ones(L, S, { dtype = "bool", device = q.device }):tril()
  end
  if mask ~= nil then
    if mask.dtype == "bool" then s = s:masked_fill(mask:logical_not(), -math.huge) else s = s + mask end
  end
  return F.dropout(F.softmax(s, -1), p, true):matmul(v)
end

function F.scaled_dot_product_attention(q, k, v, opts)
  local who = "scaled_dot_product_attention"
  opts = V.options(who, opts, sdpa_options)
  local p = V.probability(who, "dropout_p", opts.dropout_p or 0)
  local causal = V.boolean(who, "is_causal", opts.is_causal) or false
  local scale = opts.scale ~= nil and V.number(who, "scale", opts.scale) or nil
  local mask = opts.attn_mask
  if mask ~= nil and not nnr.is_tensor(mask) then error(who .. ": attn_mask must be a tensor, got " .. type(mask), 0) end
  if p > 0 then
    if mask ~= nil and causal then error(who .. ": give attn_mask or is_causal, not both", 0) end
    return composed(q, k, v, mask, p, causal, scale or 1 / math.sqrt(q:size(-1)))
  end
  return binding.call(C.nnr_scaled_dot_product_attention, tp(who, q, "query"), tp(who, k, "key"), tp(who, v, "value"),
    mask and mask.p or nil, causal and 1 or 0, scale or 0 / 0)
end

-- ---------------------------------------------------------------- nn.MultiheadAttention
-- nn.MultiheadAttention(embed_dim, num_heads[, {dropout = 0, bias = true, kdim, vdim, batch_first = false}])
-- m(query, key, value[, {key_padding_mask, need_weights = true, attn_mask, average_attn_weights = true,
--   is_causal = false, cache}]) -> output, weights (nil unless need_weights). cache: a table (empty at the
--   first call) that keeps the projected keys and values, for decoding a token at a time. PyTorch's parameters: in_proj_weight
-- [3E, E] and in_proj_bias [3E] (q_proj_weight, k_proj_weight, v_proj_weight when kdim or vdim differ
-- from E), out_proj.weight and out_proj.bias. As in PyTorch, a bool key_padding_mask [N, S] or
-- attn_mask [L, S] / [N * heads, L, S] is true where a position must NOT be attended; a float one is
-- added. Without need_weights the heads run through F.scaled_dot_product_attention.
local MHA = Module:extend("MultiheadAttention")
M.MultiheadAttention = MHA

local function xavier_(t)
  local fan_out, fan_in = t:size(1), t:size(2)
  local b = math.sqrt(6 / (fan_in + fan_out))
  return t:uniform_(-b, b)
end

function MHA:__init(embed_dim, num_heads, opts)
  Module.__init(self)
  local who = "MultiheadAttention"
  opts = V.options(who, opts, { dropout = true, bias = true, kdim = true, vdim = true, batch_first = true, dtype = true, device = true })
  self.embed_dim = V.integer(who, "embed_dim", embed_dim, 1)
  self.num_heads = V.integer(who, "num_heads", num_heads, 1)
  if embed_dim % num_heads ~= 0 then error(string.format("%s: embed_dim (%d) must be divisible by num_heads (%d)", who, embed_dim, num_heads), 0) end
  self.head_dim = math.floor(embed_dim / num_heads)
  self.kdim = V.integer(who, "kdim", opts.kdim or embed_dim, 1)
  self.vdim = V.integer(who, "vdim", opts.vdim or embed_dim, 1)
  self.dropout = V.probability(who, "dropout", opts.dropout or 0)
  self.batch_first = V.boolean(who, "batch_first", opts.batch_first) or false
  local bias = opts.bias == nil or V.boolean(who, "bias", opts.bias)
  local o = { dtype = opts.dtype, device = opts.device }
  local E = embed_dim
  self._same = self.kdim == E and self.vdim == E
  if self._same then
    self:register_parameter("in_proj_weight", xavier_(nnr.empty(3 * E, E, o)))
  else
    self:register_parameter("q_proj_weight", xavier_(nnr.empty(E, E, o)))
    self:register_parameter("k_proj_weight", xavier_(nnr.empty(E, self.kdim, o)))
    self:register_parameter("v_proj_weight", xavier_(nnr.empty(E, self.vdim, o)))
  end
  if bias then self:register_parameter("in_proj_bias", nnr.zeros(3 * E, o)) end
  self:add_module("out_proj", Linear(E, E, { bias = bias, dtype = opts.dtype, device = opts.device }))
  if bias then nnr.no_grad(function() self.out_proj.bias:zero_() end) end
end

-- x [T, N, e] projected by rows [r0, r0 + E) of the packed weight (or its own), as [N * heads, T, head_dim]
local project_packed
local function project(self, x, which)
  local E, h, d = self.embed_dim, self.num_heads, self.head_dim
  if rawget(self, "in_proj_int8") then return (select(which, project_packed(self, x))) end   -- int8 (nnr.quant.dynamic)
  local w = self._same and self.in_proj_weight:narrow(1, (which - 1) * E + 1, E)
            or rawget(self, ({ "q_proj_weight", "k_proj_weight", "v_proj_weight" })[which])
  local b = rawget(self, "in_proj_bias")
  local y = F.linear(x, w, b and b:narrow(1, (which - 1) * E + 1, E))
  local T, N = y:size(1), y:size(2)
  return y:reshape(T, N * h, d):transpose(1, 2)
end

-- self-attention's three projections as one product (x [T, N, E] by the whole packed weight), each
-- [N * heads, T, head_dim]: one call instead of three where the calls, not the arithmetic, cost
function project_packed(self, x)
  local E, h, d = self.embed_dim, self.num_heads, self.head_dim
  local qin = rawget(self, "in_proj_int8")
  local y = qin and qin(x) or F.linear(x, self.in_proj_weight, rawget(self, "in_proj_bias"))
  local T, N = y:size(1), y:size(2)
  local function part(i) return y:narrow(3, (i - 1) * E + 1, E):reshape(T, N * h, d):transpose(1, 2) end
  return part(1), part(2), part(3)
end

-- the cache's buffers [N * heads, capacity, d] holding its past positions, with room for need (they
-- grow by doubling); buffers only while cache.k and cache.v are still the views left there (a caller
-- that replaced or trimmed them gets new buffers made from what they hold now).
local function cache_buffers(cache, past, need, rows, d, dtype, device)
  local kb, vb = cache._kbuf, cache._vbuf
  if kb and not (rawequal(cache.k, cache._kview) and rawequal(cache.v, cache._vview)) then kb, vb = nil, nil end
  if not kb or kb:size(2) < need then
    local cap = math.max(need, 2 * (kb and kb:size(2) or 0), 32)
    local o = { dtype = dtype, device = device }
    local nk, nv = nnr.empty(rows, cap, d, o), nnr.empty(rows, cap, d, o)
    if past > 0 then
      nk:narrow(2, 1, past):copy_(cache.k)
      nv:narrow(2, 1, past):copy_(cache.v)
    end
    kb, vb = nk, nv
    cache._kbuf, cache._vbuf = kb, vb
  end
  return kb, vb
end

-- the key/value cache: the new keys and values [N * heads, n, d] join the kept ones. Without gradients
-- they are written into buffers that grow by doubling, so that a token costs its own keys and not a copy
-- of all the earlier ones; with gradients (training through a cache) they are concatenated, so that
-- the new ones stay in the graph. cache.k and cache.v are the keys and values so far; returns the
-- positions cached before this call and the keys and values to attend to.
local function check_cache(cache, past, rows, n, d, dtype, device)
  if past > 0 and (cache.k:size(1) ~= rows or cache.k:size(3) ~= d or cache.k.dtype ~= dtype or cache.k.device ~= device) then
    error(string.format("MultiheadAttention: the cache holds keys %s (%s on %s), the new ones are %s (%s on %s): a cache serves one batch of one model",
      nnr.shape_str(cache.k:size()), cache.k.dtype, cache.k.device, nnr.shape_str({ rows, n, d }), dtype, device), 0)
  end
end

local function cache_append(cache, k, v)
  local past = cache.k and cache.k:size(2) or 0
  check_cache(cache, past, k:size(1), k:size(2), k:size(3), k.dtype, k.device)
  local n = k:size(2)
  if nnr.is_grad_enabled() and (k.requires_grad or v.requires_grad) then
    if past > 0 then k, v = nnr.cat({ cache.k, k }, 2), nnr.cat({ cache.v, v }, 2) end
    cache.k, cache.v, cache._kbuf, cache._vbuf = k:detach(), v:detach(), nil, nil
    return past, k, v
  end
  local kb, vb = cache_buffers(cache, past, past + n, k:size(1), k:size(3), k.dtype, k.device)
  kb:narrow(2, past + 1, n):copy_(k)
  vb:narrow(2, past + 1, n):copy_(v)
  cache.k, cache.v = kb:narrow(2, 1, past + n), vb:narrow(2, 1, past + n)
  cache._kview, cache._vview = cache.k, cache.v
  return past, cache.k, cache.v
end

-- PyTorch's masks (true = masked out, or additive) as one additive float mask [N * heads or 1, L, S], or nil
local function merged_mask(self, attn_mask, kpm, N, L, S, dtype, device)
  local h, m = self.num_heads, nil
  local function additive(t, what)
    if not nnr.is_tensor(t) then error("MultiheadAttention: " .. what .. " must be a tensor, got " .. type(t), 0) end
    if t.dtype == "bool" then return nnr.zeros(t:size(), { dtype = dtype, device = device }):masked_fill(t, -math.huge) end
    return t:to(dtype)
  end
  if attn_mask ~= nil then
    m = additive(attn_mask, "attn_mask")
    if m:dim() == 2 then
      if m:size(1) ~= L or m:size(2) ~= S then error(string.format("MultiheadAttention: attn_mask of shape %s, expected [%d, %d]", nnr.shape_str(m:size()), L, S), 0) end
      m = m:unsqueeze(1)
    elseif m:dim() ~= 3 or m:size(1) ~= N * h or m:size(2) ~= L or m:size(3) ~= S then
      error(string.format("MultiheadAttention: attn_mask of shape %s, expected [%d, %d] or [%d, %d, %d]", nnr.shape_str(m:size()), L, S, N * h, L, S), 0)
    end
  end
  if kpm ~= nil then
    local k = additive(kpm, "key_padding_mask")
    if k:dim() ~= 2 or k:size(1) ~= N or k:size(2) ~= S then
      error(string.format("MultiheadAttention: key_padding_mask of shape %s, expected [%d, %d]", nnr.shape_str(k:size()), N, S), 0)
    end
    k = k:view(N, 1, 1, S):expand(N, h, 1, S):reshape(N * h, 1, S)
    m = m and (m + k) or k
  end
  return m
end

function MHA:forward(query, key, value, opts)
  local who = "MultiheadAttention"
  opts = V.options(who, opts, { key_padding_mask = true, need_weights = true, attn_mask = true, average_attn_weights = true, is_causal = true,
                                cache = true })
  for _, t in ipairs { { query, "query" }, { key, "key" }, { value, "value" } } do
    if not nnr.is_tensor(t[1]) then error(who .. ": " .. t[2] .. " must be a tensor, got " .. type(t[1]), 0) end
  end
  local self_attention = query == key and key == value
  local unbatched = query:dim() == 2
  if unbatched then query, key, value = query:unsqueeze(2), key:unsqueeze(2), value:unsqueeze(2)
  elseif self.batch_first then query, key, value = query:transpose(1, 2), key:transpose(1, 2), value:transpose(1, 2) end
  if query:dim() ~= 3 or query:size(3) ~= self.embed_dim or key:dim() ~= 3 or key:size(3) ~= self.kdim or value:dim() ~= 3
     or value:size(3) ~= self.vdim or key:size(1) ~= value:size(1) or key:size(2) ~= query:size(2) or value:size(2) ~= query:size(2) then
    error(string.format("%s: query %s, key %s and value %s do not fit embed_dim %d, kdim %d, vdim %d", who, nnr.shape_str(query:size()),
      nnr.shape_str(key:size()), nnr.shape_str(value:size()), self.embed_dim, self.kdim, self.vdim), 0)
  end
  local L, N, S, h, d = query:size(1), query:size(2), key:size(1), self.num_heads, self.head_dim
  local cache = opts.cache
  if cache ~= nil and type(cache) ~= "table" then error(who .. ": cache must be a table (empty at the first call), got " .. type(cache), 0) end
  local kpm = opts.key_padding_mask
  if unbatched and kpm ~= nil then kpm = kpm:unsqueeze(1) end
  local need = opts.need_weights == nil or V.boolean(who, "need_weights", opts.need_weights)
  local causal = V.boolean(who, "is_causal", opts.is_causal) or false
  local q, k, v
  if self._same and self_attention and (L * N <= 64 or rawget(self, "in_proj_int8")) then
    q, k, v = project_packed(self, query)    -- decoding: one product for the three
  else
    q, k, v = project(self, query, 1), project(self, key, 2), project(self, value, 3)
  end
  local past = 0
  if cache then past, k, v = cache_append(cache, k, v); S = k:size(2) end
  local mask = merged_mask(self, opts.attn_mask, kpm, N, L, S, q.dtype, q.device)
  -- is_causal alone runs as SDPA's causal form (it skips the keys a block may not see); with other
  -- masks, or when the weights are asked for, it becomes one more additive mask
  -- with a cache the new queries are the last L positions: query i sees keys up to past + i (one new
  -- query sees them all)
  local fused_causal = causal and mask == nil and not need and past == 0
  if causal and not fused_causal and not (past > 0 and L == 1) then
    local c = nnr.zeros(L, S, { dtype = q.dtype, device = q.device }):masked_fill(nnr.ones(L, S, { dtype = "bool" }):tril(past):logical_not(), -math.huge)
    mask = mask and (mask + c) or c:unsqueeze(1)
  end
  local p = self.training and self.dropout or 0
  local o, weights
  if need then        -- the probabilities are asked for: composed
    local s = q:matmul(k:transpose(2, 3)) * (1 / math.sqrt(d))
    if mask then s = s + mask end
    local a = F.softmax(s, -1)
    weights = a:view(N, h, L, S)
    if opts.average_attn_weights == nil or V.boolean(who, "average_attn_weights", opts.average_attn_weights) then weights = weights:mean(2) end
    o = F.dropout(a, p, p > 0):matmul(v)
  else
    o = F.scaled_dot_product_attention(q, k, v, { attn_mask = mask, dropout_p = p, is_causal = fused_causal })
  end
  local out = self.out_proj(o:transpose(1, 2):reshape(L, N, self.embed_dim))
  if unbatched then
    out = out:squeeze(2)
    if weights then weights = weights:squeeze(1) end
  elseif self.batch_first then
    out = out:transpose(1, 2)
  end
  return out, weights
end

-- Decoding: self-attention of one new position per sequence against a cache, in eval mode without
-- gradients, masks or weights. It is what forward gives for such a call (one query sees every cached key,
-- so causal or not is the same), in the few ops the arithmetic needs: forward's checks, mask merging and
-- layout changes cost more than a batch-1 token's products (issue 17's generation). x: [N, 1, E] when
-- batch_first, else [1, N, E]. MHA:decodes(x) says whether a call fits; the transformer layers ask it.
function MHA:decodes(x, cache)
  if not self._same or self.training or type(cache) ~= "table" or not nnr.is_tensor(x) or x:dim() ~= 3 or x:size(3) ~= self.embed_dim
     or x:size(self.batch_first and 2 or 1) ~= 1 then
    return false
  end
  local w = rawget(self, "in_proj_weight")           -- gone when nnr.quant.dynamic made the projection int8
  return not nnr.is_grad_enabled() or not (x.requires_grad or (w and w.requires_grad))
end

local function sdpa_plain(q, k, v)
  return binding.call(C.nnr_scaled_dot_product_attention, q.p, k.p, v.p, nil, 0, 0 / 0)
end

-- whether the backend of these operands runs ATTN_DECODE itself (asked once per cache)
local sup_in, sup_out, sup_params = ffi.new("nnr_tensor *[1]"), ffi.new("nnr_tensor *[3]"), ffi.new("nnr_op_params")
local function fused_decode_supported(qkv, o, kb, vb, past, heads)
  sup_in[0], sup_out[0], sup_out[1], sup_out[2] = qkv.p, o.p, kb.p, vb.p
  sup_params.struct_size = ffi.sizeof(sup_params)
  sup_params.i[0], sup_params.i[1] = past, heads
  return C.nnr_op_supported(C.NNR_OP_ATTN_DECODE, 1, sup_in, 3, sup_out, sup_params) ~= 0
end

-- F.attention_decode(qkv, k_cache, v_cache, pos, num_heads[, scale]): decoding attention in one op.
-- qkv [N, 3E] (each row the new query, key and value of one sequence, num_heads heads of E / num_heads),
-- k_cache and v_cache [N * num_heads, capacity, E / num_heads], contiguous: position pos (1-based) of the
-- caches gets the new keys and values, and each head's query attends to positions 1..pos -> [N, E].
-- scale defaults to 1 / sqrt(head_dim). Inference only: no gradient is recorded (an error if one would
-- be). On a backend without the op it runs on the cpu backend.
function F.attention_decode(qkv, k, v, pos, heads, scale)
  local who = "attention_decode"
  pos = V.integer(who, "pos", pos, 1)
  heads = V.integer(who, "num_heads", heads, 1)
  scale = scale ~= nil and V.number(who, "scale", scale) or 0 / 0
  return binding.call(C.nnr_attention_decode, tp(who, qkv, "qkv"), tp(who, k, "k_cache"), tp(who, v, "v_cache"), pos - 1, heads, scale)
end

-- the caches' buffers for one more position of N sequences, for the fused step (ATTN_DECODE, on the
-- backend of dtype and device): kb, vb [N * heads, capacity, head_dim] and the positions cached; nil where
-- the backend lacks the op (asked once per cache; then the composed step runs). MHA:decode_commit(cache,
-- kb, vb, past) records the position once the step wrote it. The transformer layers' fused step uses both.
function MHA:decode_buffers(cache, N, dtype, device)
  if cache._fused == false then return nil end
  local h, d, E = self.num_heads, self.head_dim, self.embed_dim
  local past = cache.k and cache.k:size(2) or 0
  check_cache(cache, past, N * h, 1, d, dtype, device)
  local kb, vb = cache_buffers(cache, past, past + 1, N * h, d, dtype, device)
  if cache._fused == nil then
    local o = { dtype = dtype, device = device }
    cache._fused = fused_decode_supported(nnr.empty(N, 3 * E, o), nnr.empty(N, E, o), kb, vb, past, h)
    if not cache._fused then return nil end
  end
  return kb, vb, past
end

function MHA:decode_commit(cache, kb, vb, past)
  cache.k, cache.v = kb:narrow(2, 1, past + 1), vb:narrow(2, 1, past + 1)
  cache._kview, cache._vview = cache.k, cache.v
end

-- the fused step: the new keys and values written into the cache's buffers and attended to in one op
-- (ATTN_DECODE); nil where the backend lacks it (then the composed step runs)
local function fused_decode(self, cache, y, N, h, E)
  local kb, vb, past = self:decode_buffers(cache, N, y.dtype, y.device)
  if not kb then return nil end
  local y2 = y:view(N, 3 * E)          -- held in a local: a temporary's finalizer could run before the call
  local o = binding.call(C.nnr_attention_decode, y2.p, kb.p, vb.p, past, h, 0 / 0)
  self:decode_commit(cache, kb, vb, past)
  return o
end

function MHA:decode_step(x, cache)
  local E, h, d = self.embed_dim, self.num_heads, self.head_dim
  local N = self.batch_first and x:size(1) or x:size(2)
  local qin = rawget(self, "in_proj_int8")
  local y = qin and qin(x) or F.linear(x, self.in_proj_weight, rawget(self, "in_proj_bias"))   -- N rows of [q k v]
  local fo = y:is_contiguous() and fused_decode(self, cache, y, N, h, E)
  if fo then return self.out_proj(self.batch_first and fo:view(N, 1, E) or fo:view(1, N, E)) end
  local q = y:narrow(3, 1, E):reshape(N * h, 1, d)
  local _, k, v = cache_append(cache, y:narrow(3, E + 1, E):reshape(N * h, 1, d), y:narrow(3, 2 * E + 1, E):reshape(N * h, 1, d))
  local o = sdpa_plain(q, k, v)                                   -- [N * heads, 1, d]: row n holds sequence n's heads
  return self.out_proj(self.batch_first and o:view(N, 1, E) or o:view(1, N, E))
end

function MHA:extra_repr()
  return string.format("embed_dim=%d, num_heads=%d%s", self.embed_dim, self.num_heads, self.batch_first and ", batch_first=true" or "")
end

-- ---------------------------------------------------------------- rotary position embedding
-- nn.RotaryEmbedding(dim[, {base = 10000}]): rope(x[, offset = 0]) rotates the last dim of x [..., T, dim]
-- by position offset + t (t = 0 .. T-1 along the second-to-last dim), in pairs (i, i + dim/2) at
-- frequency base^(-2i/dim) (the GPT-NeoX / LLaMA "half" layout): the dot product of a rotated query
-- at position m and a rotated key at n depends on m - n only. No parameters; the cos and sin tables
-- grow as needed. Composed of differentiable ops.
local Rotary = Module:extend("RotaryEmbedding")
M.RotaryEmbedding = Rotary

function Rotary:__init(dim, opts)
  Module.__init(self)
  local who = "RotaryEmbedding"
  opts = V.options(who, opts, { base = true })
  self.dim = V.integer(who, "dim", dim, 2)
  if dim % 2 ~= 0 then error(who .. ": dim must be even, got " .. dim, 0) end
  self.base = V.number(who, "base", opts.base, { above = 1, default = 10000 })
  self._cache = {}                       -- by dtype and device: { n = positions, cos, sin [n, dim] }
end

local function tables(self, n, dtype, device)
  local key = dtype .. "@" .. tostring(device)
  local c = self._cache[key]
  if c and c.n >= n then return c end
  local half = self.dim / 2
  local inv = (nnr.arange(0, half, 1, { dtype = "f64" }) * (-2 * math.log(self.base) / self.dim)):exp()    -- base^(-2i/dim)
  local ang = nnr.arange(0, n, 1, { dtype = "f64" }):unsqueeze(2) * inv:unsqueeze(1)   -- [n, half]
  ang = nnr.cat({ ang, ang }, 2)
  c = { n = n, cos = ang:cos():to(dtype):to(device), sin = ang:sin():to(dtype):to(device) }
  self._cache[key] = c
  return c
end

function Rotary:forward(x, offset)
  local who = "RotaryEmbedding"
  if not nnr.is_tensor(x) or x:dim() < 2 or x:size(-1) ~= self.dim then
    error(string.format("%s: input must be a tensor [..., T, %d], got %s", who, self.dim, nnr.is_tensor(x) and nnr.shape_str(x:size()) or type(x)), 0)
  end
  offset = V.integer(who, "offset", offset or 0, 0)
  local T, half = x:size(-2), self.dim / 2
  local t = tables(self, offset + T, x.dtype, x.device)
  local cos, sin = t.cos:narrow(1, offset + 1, T), t.sin:narrow(1, offset + 1, T)
  local x1, x2 = x:narrow(-1, 1, half), x:narrow(-1, half + 1, half)
  return x * cos + nnr.cat({ -x2, x1 }, -1) * sin
end

function Rotary:extra_repr() return string.format("dim=%d, base=%g", self.dim, self.base) end

return M
