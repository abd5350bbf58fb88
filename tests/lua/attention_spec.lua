-- Attention (core/ops/attention.c, lua/nnr/nn/attention.lua, transformer.lua): float64 gradient checks,
-- the blocked path against the plain composition, its memory, MultiheadAttention's two paths, the
-- Transformer stacks, and the errors. tests/torch_compare/attention.py compares with PyTorch.
local nnr = require "nnr"
local H = require "helpers"
local nn, F = nnr.nn, nnr.nn.functional

local d64 = { dtype = "f64" }
local function leaf(shape) return nnr.randn(shape, d64):requires_grad_() end
local memcheck = os.getenv("NNR_MEMCHECK")     -- valgrind and ASan runs: no big problems
local function close(a, b, tol, what)
  local e = (a - b):abs():max():item()
  assert(e <= tol, (what or "") .. " differs by " .. e)
end

-- softmax(q k^T * scale + mask) v as plain ops (the [L, S] scores kept)
local function naive(q, k, v, mask, causal, scale)
  local s = q:matmul(k:transpose(-2, -1)) * (scale or 1 / math.sqrt(q:size(-1)))
  if causal then mask = nnr.ones(q:size(-2), k:size(-2), { dtype = "bool" }):tril() end
  if mask then s = mask.dtype == "bool" and s:masked_fill(mask:logical_not(), -math.huge) or s + mask end
  return F.softmax(s, -1):matmul(v)
end

describe("scaled_dot_product_attention", function()
  before_each(function() H.reseed(23) end)

  it("passes gradcheck: plain, causal (also with more queries than keys), masks, broadcast heads, a scale", function()
    local bm = nnr.rand(5, 7):gt(0.3)
    bm:select(2, 1):fill_(true)
    local fm = nnr.randn({ 5, 7 }, d64)
    local cases = {
      { { 2, 3, 5, 4 }, { 2, 3, 7, 4 }, { 2, 3, 7, 6 }, {} },
      { { 2, 6, 4 }, { 2, 6, 4 }, { 2, 6, 3 }, { is_causal = true } },
      { { 1, 7, 3 }, { 1, 4, 3 }, { 1, 4, 2 }, { is_causal = true } },
      { { 2, 2, 5, 3 }, { 2, 1, 7, 3 }, { 2, 1, 7, 5 }, { attn_mask = bm } },
      { { 2, 5, 3 }, { 2, 7, 3 }, { 2, 7, 3 }, { attn_mask = fm, scale = 0.3 } },
    }
    for i, c in ipairs(cases) do
      local ok, msg = nnr.autograd.gradcheck(function(q, k, v) return F.scaled_dot_product_attention(q, k, v, c[4]) end,
        { leaf(c[1]), leaf(c[2]), leaf(c[3]) })
      assert(ok, "case " .. i .. ": " .. tostring(msg))
    end
  end)

  it("gives the plain composition's values and gradients over blocks of query rows", function()
    if memcheck then pending("a 2100 x 2100 problem; the release run checks it") return end
    for _, causal in ipairs { true, false } do
      local L, E = 2100, 6
      local q, k, v = leaf({ 1, L, E }), leaf({ 1, L, E }), leaf({ 1, L, 5 })
      local mask = not causal and nnr.randn({ L, L }, d64) or nil
      local g = nnr.randn({ 1, L, 5 }, d64)
      local a = F.scaled_dot_product_attention(q, k, v, { is_causal = causal, attn_mask = mask })
      ;(a * g):sum():backward()
      local ga = { q.grad, k.grad, v.grad }
      q.grad, k.grad, v.grad = nil, nil, nil
      local b = naive(q, k, v, mask, causal)
      ;(b * g):sum():backward()
      close(a, b, 1e-10, "values")
      for i, t in ipairs { q, k, v } do close(ga[i], t.grad, 1e-9, "gradient " .. i) end
    end
  end)

  it("keeps no [L, S] scores: its working memory at context 4096 is a few percent of them", function()
    if memcheck then pending("measured in the release run") return end
    local T, d = 4096, 64
    local q, k, v = nnr.randn(1, T, d):requires_grad_(), nnr.randn(1, T, d):requires_grad_(), nnr.randn(1, T, d):requires_grad_()
    collectgarbage(); collectgarbage()
    nnr.empty_cache()
    nnr.reset_peak_memory()
    local before = nnr.device_memory().live
    F.scaled_dot_product_attention(q, k, v, { is_causal = true }):sum():backward()
    local extra = nnr.device_memory().peak - before
    -- allowed: the O(T d) tensors any implementation has (output, its gradient, three input gradients
    -- and one transient), plus 10% of the T x T scores
    local allowed = 6 * T * d * 4 + 0.10 * T * T * 4
    assert(extra < allowed, string.format("peak extra %.1f MiB, allowed %.1f MiB", extra / 2 ^ 20, allowed / 2 ^ 20))
  end)

  it("drops out probabilities in the composed form, and refuses a second-order backward", function()
    local q, k, v = nnr.randn(2, 9, 4), nnr.randn(2, 9, 4), nnr.randn(2, 9, 4)
    local a = F.scaled_dot_product_attention(q, k, v, { dropout_p = 0.5 })
    local b = F.scaled_dot_product_attention(q, k, v)
    assert((a - b):abs():max():item() > 1e-3, "no dropout")
    local x = leaf({ 1, 3, 2 })
    local y = F.scaled_dot_product_attention(x, x, x)
    H.fails("ScaledDotProductAttentionBackward", function() nnr.autograd.grad(y:sum(), { x }, { create_graph = true }) end)
  end)

  it("names what is wrong", function()
    local q, k, v = nnr.randn(2, 3, 4), nnr.randn(2, 5, 4), nnr.randn(2, 5, 6)
    H.fails("query %[2, 3, 4%], key %[2, 5, 6%] and value", function() F.scaled_dot_product_attention(q, v, v) end)
    H.fails("give attn_mask or is_causal, not both", function()
      F.scaled_dot_product_attention(q, k, v, { is_causal = true, attn_mask = nnr.ones(3, 5, { dtype = "bool" }) })
    end)
    H.fails("attn_mask: shapes %[4, 5%] and %[2, 3, 5%] cannot broadcast", function() F.scaled_dot_product_attention(q, k, v, { attn_mask = nnr.zeros(4, 5) }) end)
    H.fails("attn_mask must be bool or the query's dtype", function()
      F.scaled_dot_product_attention(q, k, v, { attn_mask = nnr.zeros({ 3, 5 }, { dtype = "i64" }) })
    end)
    H.fails("must be one dtype, f32 or f64", function() F.scaled_dot_product_attention(q, k:double(), v) end)
    H.fails("unknown option", function() F.scaled_dot_product_attention(q, k, v, { causal = true }) end)
    H.fails("attn_mask that requires grad", function()
      F.scaled_dot_product_attention(q, k, v, { attn_mask = nnr.zeros(3, 5):requires_grad_() })
    end)
  end)
end)

describe("MultiheadAttention and the Transformer layers", function()
  before_each(function() H.reseed(29) end)

  it("give the same output with and without the attention weights (composed and fused paths)", function()
    local m = nn.MultiheadAttention(8, 2):double()
    local x = nnr.randn({ 5, 3, 8 }, d64)
    local kpm = nnr.rand(3, 5):gt(0.7)
    kpm:select(2, 1):fill_(false)
    local a, w = m(x, x, x, { key_padding_mask = kpm })
    local b, none = m(x, x, x, { key_padding_mask = kpm, need_weights = false })
    close(a, b, 1e-12)
    assert.are.same({ 3, 5, 5 }, w:size())
    assert.is_nil(none)
    local ok, msg = nnr.autograd.gradcheck(function(xx) return (m(xx, xx, xx, { need_weights = false })) end, { leaf({ 4, 2, 8 }) })
    assert(ok, msg)
  end)

  it("decode a token at a time with a cache as the whole causal sequence does, in every layout", function()
    -- TransformerEncoderLayer's decoding path (MultiheadAttention:decode_step) against the general one
    for _, bf in ipairs { true, false } do
      for _, nf in ipairs { true, false } do
        for _, act in ipairs { "relu", "gelu" } do
          local enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 12, dropout = 0.2, batch_first = bf,
            norm_first = nf, activation = act }), 2):double()
          enc:eval()
          nnr.no_grad(function() for _, p in ipairs(enc:parameters()) do p:copy_(nnr.randn(p:size(), d64) * 0.3 + 0.1) end end)
          for _, N in ipairs { 1, 3 } do
            local T = 6
            local x = nnr.randn(bf and { N, T, 8 } or { T, N, 8 }, d64)
            local tdim = bf and 2 or 1
            local full = enc(x, { is_causal = true })
            local cache = {}
            local first = enc(x:narrow(tdim, 1, 2), { is_causal = true, cache = cache })      -- two positions: the general path
            close(first, full:narrow(tdim, 1, 2), 1e-12, "prompt")
            local mha = enc.layers:get(1).self_attn
            local ys = {}
            for t = 3, T do
              local xt = x:narrow(tdim, t, 1)
              local y = nnr.no_grad(function()
                assert.is_true(mha:decodes(xt, cache[1]))
                return enc(xt, { is_causal = true, cache = cache })
              end)
              ys[t] = y
              close(y, full:narrow(tdim, t, 1), 1e-12, string.format("batch_first=%s norm_first=%s %s N=%d t=%d", bf, nf, act, N, t))
            end
            assert.are.equal(T, cache[2].k:size(2))
            assert.is_true(cache[1]._fused, "the cpu backend runs ATTN_DECODE")
            assert.are.equal("table", type(cache[1]._layer), "the layer decodes in one C call (nnr_decode_layer_step)")
            -- the C step runs the composed step's ops: the same bits
            local composed = {}
            enc(x:narrow(tdim, 1, 2), { is_causal = true, cache = composed })
            nn.TransformerEncoderLayer.fused_decode = false
            local ok, err = pcall(function()
              for t = 3, T do
                local xt = x:narrow(tdim, t, 1)
                local a = nnr.no_grad(function() return enc(xt, { is_causal = true, cache = composed }) end)
                assert.are.same(ys[t]:totable(), a:totable())
              end
            end)
            nn.TransformerEncoderLayer.fused_decode = true
            assert(ok, err)
            assert.is_nil(composed[1]._layer)
            assert.are.same(cache[2].k:totable(), composed[2].k:totable())
            assert.are.same(cache[2].v:totable(), composed[2].v:totable())
          end
          -- in training mode, or recording gradients, the general path runs
          local xt = nnr.randn({ 1, 1, 8 }, d64)
          local mha = enc.layers:get(1).self_attn
          assert.is_false(nnr.no_grad(function() enc:train(); return mha:decodes(xt, {}) end))
          enc:eval()
          assert.is_false(mha:decodes(xt, {}))                          -- the weights require gradients
          assert.is_false(nnr.no_grad(function() return mha:decodes(nnr.randn(bf and { 1, 2, 8 } or { 2, 1, 8 }, d64), {}) end))
        end
      end
    end
  end)

  it("attention_decode: writes the new keys and values and attends as scaled_dot_product_attention", function()
    for _, dt in ipairs { "f64", "f32" } do
      for _, c in ipairs { { N = 1, H = 4, d = 16, cap = 40, pos = 1 }, { N = 3, H = 2, d = 5, cap = 9, pos = 7 }, { N = 2, H = 1, d = 33, cap = 300, pos = 300 },
                           { N = 1, H = 2, d = 64, cap = 20, pos = 19 }, { N = 1, H = 1, d = 130, cap = 10, pos = 3 } } do
        local E = c.H * c.d
        local qkv = nnr.randn({ c.N, 3 * E }, { dtype = dt })
        local kc, vc = nnr.randn({ c.N * c.H, c.cap, c.d }, { dtype = dt }), nnr.randn({ c.N * c.H, c.cap, c.d }, { dtype = dt })
        local k0, v0 = kc:clone(), vc:clone()
        local scale = c.pos == 7 and 0.3 or nil
        local o = F.attention_decode(qkv, kc, vc, c.pos, c.H, scale)
        assert.are.same({ c.N, E }, o:size())
        -- the caches: position pos holds the new keys and values, the rest is untouched
        local nk = qkv:narrow(2, E + 1, E):reshape(c.N * c.H, c.d)
        local nv = qkv:narrow(2, 2 * E + 1, E):reshape(c.N * c.H, c.d)
        close(kc:select(2, c.pos), nk, 0, "new keys")
        close(vc:select(2, c.pos), nv, 0, "new values")
        k0:select(2, c.pos):copy_(nk)
        v0:select(2, c.pos):copy_(nv)
        close(kc, k0, 0, "the other keys")
        close(vc, v0, 0, "the other values")
        local q = qkv:narrow(2, 1, E):reshape(c.N * c.H, 1, c.d)
        local ref = F.scaled_dot_product_attention(q, kc:narrow(2, 1, c.pos), vc:narrow(2, 1, c.pos), { scale = scale })
        close(o, ref:reshape(c.N, E), dt == "f64" and 1e-12 or 1e-5, dt .. " output")
      end
    end
    local qkv, kc, vc = nnr.randn(2, 24), nnr.randn(4, 5, 4), nnr.randn(4, 5, 4)
    H.fails("position 5 is outside the caches' capacity of 5", function() return F.attention_decode(qkv, kc, vc, 6, 2) end)
    H.fails("pos must be", function() return F.attention_decode(qkv, kc, vc, 0, 2) end)
    H.fails("E divisible by the 3 heads", function() return F.attention_decode(nnr.randn(2, 24), kc, vc, 1, 3) end)
    H.fails("caches must both be %[N %* heads, capacity, head_dim%] = %[4, %*, 4%], got %[4, 5, 4%] and %[4, 6, 4%]", function()
      return F.attention_decode(qkv, kc, nnr.randn(4, 6, 4), 1, 2)
    end)
    H.fails("the caches must be f32 like qkv", function() return F.attention_decode(qkv, kc:double(), vc, 1, 2) end)
    H.fails("must be contiguous", function() return F.attention_decode(nnr.randn(24, 2):t(), kc, vc, 1, 2) end)
    H.fails("scale", function() return F.attention_decode(qkv, kc, vc, 1, 2, 0 / 0) end)
    H.fails("records no gradient", function() return F.attention_decode(qkv:clone():requires_grad_(), kc, vc, 1, 2) end)
    H.fails("qkv must be a tensor", function() return F.attention_decode("x", kc, vc, 1, 2) end)
  end)

  it("stack layers under PyTorch's names, counted from 1 as nnrun's containers are", function()
    local layer = nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 16, dropout = 0 })
    local enc = nn.TransformerEncoder(layer, 2, { norm = nn.LayerNorm(8) })
    local sd = enc:state_dict()
    for _, key in ipairs { "layers.1.self_attn.in_proj_weight", "layers.2.linear2.bias", "layers.2.norm2.weight", "norm.weight",
                           "layers.1.self_attn.out_proj.weight" } do
      assert(sd[key], "no " .. key)
    end
    local y = enc(nnr.randn(6, 2, 8), { is_causal = true })
    assert.are.same({ 6, 2, 8 }, y:size())
    local t = nn.Transformer { d_model = 8, nhead = 2, num_encoder_layers = 1, num_decoder_layers = 2, dim_feedforward = 8, dropout = 0 }
    assert.are.same({ 4, 2, 8 }, t(nnr.randn(5, 2, 8), nnr.randn(4, 2, 8), { tgt_is_causal = true }):size())
  end)

  it("name what is wrong", function()
    H.fails("embed_dim %(10%) must be divisible by num_heads %(3%)", function() nn.MultiheadAttention(10, 3) end)
    local m = nn.MultiheadAttention(8, 2)
    H.fails("do not fit embed_dim 8", function() m(nnr.randn(3, 2, 6), nnr.randn(3, 2, 6), nnr.randn(3, 2, 6)) end)
    H.fails("key_padding_mask of shape %[2, 4%], expected %[2, 3%]", function()
      local x = nnr.randn(3, 2, 8)
      m(x, x, x, { key_padding_mask = nnr.zeros({ 2, 4 }, { dtype = "bool" }) })
    end)
    H.fails("activation must be one of 'relu', 'gelu'", function() nn.TransformerEncoderLayer(8, 2, { activation = "tanh" }) end)
    H.fails("unknown option", function() nn.TransformerDecoderLayer(8, 2, { dim_feedfoward = 4 }) end)
  end)
end)

describe("the fused layer norm", function()
  before_each(function() H.reseed(31) end)

  it("passes gradcheck and gradgradcheck, and gives the composition's values in f32", function()
    local x, w, b = leaf({ 3, 4, 5 }), leaf({ 4, 5 }), leaf({ 4, 5 })
    assert(nnr.autograd.gradcheck(function(xx, ww, bb) return F.layer_norm(xx, { 4, 5 }, ww, bb) end, { x, w, b }))
    assert(nnr.autograd.gradcheck(function(xx) return F.layer_norm(xx, 1, nil, nil, 1e-3) end, { x }))
    assert(nnr.autograd.gradgradcheck(function(xx, ww, bb) return F.layer_norm(xx, { 5 }, ww, bb) end, { x, leaf({ 5 }), leaf({ 5 }) }))
    local xf, wf, bf = nnr.randn(64, 300):mul(5):add(3), nnr.randn(300), nnr.randn(300)
    local y = F.layer_norm(xf, 1, wf, bf)
    local m, v = xf:mean(2, true), xf:var(2, true, 0)
    close(y, (xf - m) / (v + 1e-5):sqrt() * wf + bf, 2e-5, "f32 layer norm")
  end)

  it("names what is wrong", function()
    H.fails("give weight and bias, or neither", function() F.layer_norm(nnr.randn(2, 3), 1, nnr.ones(3)) end)
    H.fails("normalized_shape %[4%] does not match", function() F.layer_norm(nnr.randn(2, 3), { 4 }) end)
    H.fails("weight of shape %[2%]", function() F.layer_norm(nnr.randn(2, 3), 1, nnr.ones(2), nnr.ones(2)) end)
  end)
end)

describe("positions and tied weights", function()
  before_each(function() H.reseed(37) end)

  it("rotates so that a query-key product depends on their distance only, with gradients", function()
    local r = nn.RotaryEmbedding(8)
    local q, k = nnr.randn({ 1, 1, 8 }, d64), nnr.randn({ 1, 1, 8 }, d64)
    local function dot(m, n) return (r(q, m) * r(k, n)):sum():item() end
    assert(math.abs(dot(3, 1) - dot(10, 8)) < 1e-12 and math.abs(dot(0, 2) - dot(7, 9)) < 1e-12, "not relative")
    local x = leaf({ 2, 5, 8 })
    assert(nnr.autograd.gradcheck(function(xx) return r(xx, 2) end, { x }))
    local y = r(x, 2)                                   -- position 2 + 3 = 5, pair 2 (from 0): angle 5 * 10000^(-4/8)
    local th, a, b = 5 * 10000 ^ (-0.5), x[{ 1, 4, 3 }], x[{ 1, 4, 7 }]
    assert(math.abs(y[{ 1, 4, 3 }] - (a * math.cos(th) - b * math.sin(th))) < 1e-12)
    assert(math.abs(y[{ 1, 4, 7 }] - (b * math.cos(th) + a * math.sin(th))) < 1e-12)
    H.fails("dim must be even", function() nn.RotaryEmbedding(7) end)
    H.fails("input must be a tensor %[..., T, 8%]", function() r(nnr.randn(3, 6)) end)
  end)

  it("list a weight tied between two modules under both names, as PyTorch's state dicts do", function()
    local m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, { bias = false }))
    m:get(2).weight = m:get(1).weight
    local sd = m:state_dict()
    assert(sd["1.weight"] and rawequal(sd["1.weight"], sd["2.weight"]), "the tied weight is not under both names")
    assert.are.equal(1, #m:parameters())
    local w = nnr.randn(10, 4)
    m:load_state_dict({ ["1.weight"] = w, ["2.weight"] = w })
    assert.are.equal(0, (m:get(2).weight - w):abs():max():item())
  end)
end)
