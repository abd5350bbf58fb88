-- nnr.generate (lua/nnr/generate.lua): a transformer with key/value caches and an LSTM with carried
-- states give what recomputing the whole context gives; sampling options; the errors.
local nnr = require "nnr"
local H = require "helpers"
local nn = nnr.nn

local V, D, T = 11, 16, 40

-- a small GPT: model(ids) over the whole context, model:step(ids, state) with one cache per layer
local GPT = nn.Module:extend("TinyGPT")
function GPT:__init()
  nn.Module.__init(self)
  self:add_module("tok", nn.Embedding(V, D))
  self:add_module("pos", nn.Embedding(T, D))
  self:add_module("blocks", nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 2, { dim_feedforward = 32, dropout = 0,
    batch_first = true, norm_first = true, activation = "gelu" }), 2))
  self:add_module("head", nn.Linear(D, V))
end
local function run(self, ids, past, cache)
  local n = ids:size(2)
  local h = self.tok(ids) + self.pos(nnr.arange(past + 1, past + n + 1, 1, { dtype = "i64" }))
  return self.head(self.blocks(h, { is_causal = true, cache = cache }))
end
function GPT:forward(ids) return run(self, ids, 0, nil) end
function GPT:step(ids, state)
  state = state or { cache = {}, past = 0 }
  local logits = run(self, ids, state.past, state.cache)
  state.past = state.past + ids:size(2)
  return logits, state
end

local LM = nn.Module:extend("TinyLSTM")
function LM:__init()
  nn.Module.__init(self)
  self:add_module("emb", nn.Embedding(V, D))
  self:add_module("rnn", nn.LSTM(D, D, { num_layers = 2, batch_first = true }))
  self:add_module("head", nn.Linear(D, V))
end
function LM:forward(ids) return self.head((self.rnn(self.emb(ids)))) end
function LM:step(ids, state)
  local y, s = self.rnn(self.emb(ids), state)
  return self.head(y), s
end

describe("nnr.generate", function()
  before_each(function() H.reseed(41) end)

  it("gives with a key/value cache, or carried states, what recomputing the context gives", function()
    for _, cls in ipairs { GPT, LM } do
      local m = cls()
      local prompt = nnr.randint(1, V + 1, { 2, 5 })
      local cached = nnr.generate(m, prompt, { max_tokens = 12, temperature = 0 })
      local plain = nnr.generate(setmetatable({ step = false }, { __index = m, __call = function(_, ...) return m(...) end }),
        prompt, { max_tokens = 12, temperature = 0 })
      assert.are.same({ 2, 17 }, cached:size())
      assert.are.same(prompt:totable(), cached:narrow(2, 1, 5):totable())
      assert.are.same(plain:totable(), cached:totable())
    end
  end)

  it("samples reproducibly for a seed and leaves the global generator alone; top_k 1 and a tiny top_p are greedy", function()
    local m = GPT()
    local prompt = nnr.tensor({ 3, 1, 4 }, { dtype = "i64" })
    local state = nnr.get_rng_state()
    local a = nnr.generate(m, prompt, { max_tokens = 10, seed = 7, temperature = 1.5 })
    local b = nnr.generate(m, prompt, { max_tokens = 10, seed = 7, temperature = 1.5 })
    assert.are.same(a:totable(), b:totable())
    assert.are.same(state, nnr.get_rng_state())
    local greedy = nnr.generate(m, prompt, { max_tokens = 10, temperature = 0 }):totable()
    assert.are.same(greedy, nnr.generate(m, prompt, { max_tokens = 10, top_k = 1, seed = 3 }):totable())
    assert.are.same(greedy, nnr.generate(m, prompt, { max_tokens = 10, top_p = 1e-9, seed = 3 }):totable())
    local s = nnr.generate(m, prompt, { max_tokens = 30, top_k = 3, seed = 5 })
    assert(s:min():item() >= 1 and s:max():item() <= V, "an id outside the vocabulary")
  end)

  it("decodes a transformer layer in one C call, f32 and int8, with the tokens of the composed step", function()
    -- nnr_decode_layer_step (core/ops/decode.c) against the Lua step (TransformerEncoderLayer.fused_decode
    -- = false), on the models nnr.generate is timed with: post-norm and ReLU too, and the quant plugin's
    -- int8 linears where it is loaded
    local models = {}
    for _, cfg in ipairs { { norm_first = true, activation = "gelu" }, { norm_first = false, activation = "relu" } } do
      local m = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 2, { dim_feedforward = 32, dropout = 0, batch_first = true,
        norm_first = cfg.norm_first, activation = cfg.activation }), 2)
      local g = GPT()
      g.blocks = m
      models[#models + 1] = g
    end
    models[#models + 1] = nnr.models.GPT { vocab_size = V, context = T, d_model = D, n_head = 2, n_layer = 2 }
    for _, m in ipairs(models) do       -- the norms away from 1 and 0 too, so that each weight is seen where it belongs
      nnr.no_grad(function() for _, p in ipairs(m:parameters()) do p:copy_(nnr.randn(p:size()) * 0.3 + 0.1) end end)
    end
    if nnr.quant.available() then models[#models + 1] = nnr.quant.dynamic(models[3], nil, { quiet = true }) end
    local prompt, nxt = nnr.randint(1, V + 1, { 2, 4 }), nnr.randint(1, V + 1, { 2, 1 })
    -- the logits of a token after the prompt, and the state they leave
    local function second_step(m)
      return nnr.no_grad(function()
        m:eval()
        local _, state = m:step(prompt, nil)
        return m:step(nxt, state)
      end)
    end
    for i, m in ipairs(models) do
      local fused = nnr.generate(m, prompt, { max_tokens = 10, seed = 3, temperature = 1 })
      local logits_f, state = second_step(m)
      assert.are.equal("table", type(state.cache[1]._layer), "model " .. i .. ": the C step ran")
      nn.TransformerEncoderLayer.fused_decode = false
      local ok, composed, logits_c = pcall(function()
        return nnr.generate(m, prompt, { max_tokens = 10, seed = 3, temperature = 1 }), (second_step(m))
      end)
      nn.TransformerEncoderLayer.fused_decode = true
      assert(ok, composed)
      assert.are.same(composed:totable(), fused:totable(), "model " .. i)
      assert.are.same(logits_c:totable(), logits_f:totable(), "model " .. i)
    end
    -- a hook on a layer's module keeps that layer on the composed step, where the hook runs
    local m = models[3]
    local seen = 0
    local h = m.blocks.layers:get(2).linear1:register_forward_hook(function() seen = seen + 1 end)
    local _, state = second_step(m)
    h:remove()
    assert.are.equal("table", type(state.cache[1]._layer))
    assert.is_false(state.cache[2]._layer)
    assert.are.equal(2, seen)            -- the prompt's forward and the one decoding step
  end)

  it("names what is wrong", function()
    local m = GPT()
    H.fails("the prompt has token id 12, outside the vocabulary 1..11", function()
      nnr.generate(m, nnr.tensor({ 1, 12 }, { dtype = "i64" }), { max_tokens = 2, vocab_size = V })
    end)
    H.fails("the prompt has token id 0", function() nnr.generate(m, nnr.tensor({ 0, 2 }, { dtype = "i64" }), { max_tokens = 2 }) end)
    H.fails("prompt must be a non%-empty integer tensor", function() nnr.generate(m, nnr.randn(3), { max_tokens = 2 }) end)
    H.fails("max_tokens", function() nnr.generate(m, nnr.tensor({ 1 }, { dtype = "i64" }), {}) end)
    H.fails("unknown option", function() nnr.generate(m, nnr.tensor({ 1 }, { dtype = "i64" }), { max_tokens = 1, topk = 2 }) end)
    H.fails("the model gives 11 logits per token, vocab_size is 12", function()
      nnr.generate(m, nnr.tensor({ 1 }, { dtype = "i64" }), { max_tokens = 1, vocab_size = 12 })
    end)
  end)
end)
