-- nnr.models (lua/nnr/models.lua): the GPT and the recurrent language model of the second main job,
-- their configs, the key/value cache past the context, tied weights, the parameter groups, int8
-- (nnr.quant.dynamic, the attention's packed input projection included) and the errors.
local nnr = require "nnr"
local H = require "helpers"
local models = nnr.models
local function close(a, b, tol) H.assert_close(a, b:totable(), tol) end

local function small_gpt(extra)
  local cfg = { vocab_size = 13, context = 12, d_model = 16, n_head = 2, n_layer = 2 }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return models.GPT(cfg)
end

describe("nnr.models", function()
  before_each(function() H.reseed(17) end)

  it("GPT: logits for every position, causal, its head tied to the embedding, rebuilt from its config", function()
    local m = small_gpt()
    local ids = nnr.randint(1, 14, { 3, 7 })
    local y = m(ids)
    assert.are.same({ 3, 7, 13 }, y:size())
    -- position 4 sees positions 1..4 only: changing the later tokens leaves it as it was
    local other = ids:clone()
    other:narrow(2, 5, 3):fill_(1)
    close(y:narrow(2, 1, 4), m(other):narrow(2, 1, 4), 1e-6)
    assert.is_true(m.head.weight == m.tok.weight)
    assert.are.equal(#m:parameters(), #models.GPT(m:config()):parameters())
    local twin = models.build(m:config())
    twin:load_state_dict(m:state_dict())
    close(y, twin(ids), 0)
    -- GPT-2's initialisation: small weights, unit norms, zero biases
    assert(m.tok.weight:std():item() < 0.03)
    assert.are.equal(0, m.blocks.layers:get(1).linear1.bias:abs():max():item())
  end)

  it("GPT:step with a cache gives the whole context's logits, also past the context (a sliding window)", function()
    local m = small_gpt()
    m:eval()
    local ids = nnr.randint(1, 14, { 2, 10 })
    local full = m(ids)
    local logits, state = m:step(ids:narrow(2, 1, 6))
    close(logits, full:narrow(2, 1, 6), 1e-5)
    for t = 7, 10 do
      logits, state = m:step(ids:narrow(2, t, 1), state)
      close(logits:select(2, logits:size(2)), full:select(2, t), 1e-5)
    end
    -- past the context (12) it starts again from the last 6 tokens: the logits are those of that window
    local more = nnr.randint(1, 14, { 2, 3 })
    logits, state = m:step(more:narrow(2, 1, 1), state)                -- 11 positions
    logits, state = m:step(more:narrow(2, 2, 1), state)                -- 12
    local all = nnr.cat({ ids, more }, 2)
    logits, state = m:step(more:narrow(2, 3, 1), state)                -- 13: the window restarts
    assert.are.same({ 2, 1, 13 }, logits:size())
    close(logits:select(2, 1), m(all:narrow(2, 13 - 6 + 1, 6)):select(2, 6), 1e-5)
    assert.are.equal(6, state.past)
    local long = nnr.generate(m, ids, { max_tokens = 30, temperature = 0 })
    assert.are.same({ 2, 40 }, long:size())
  end)

  it("RecurrentLM: lstm, gru and rnn cells; step carries the states", function()
    for _, cell in ipairs { "lstm", "gru", "rnn" } do
      local m = models.RecurrentLM { vocab_size = 9, cell = cell, hidden = 8, num_layers = 2 }
      local ids = nnr.randint(1, 10, { 2, 6 })
      local full = m(ids)
      assert.are.same({ 2, 6, 9 }, full:size())
      local a, s = m:step(ids:narrow(2, 1, 4))
      local b = m:step(ids:narrow(2, 5, 2), s)
      close(b, full:narrow(2, 5, 2), 1e-5)
      close(a, full:narrow(2, 1, 4), 1e-5)
    end
    local tied = models.RecurrentLM { vocab_size = 9, hidden = 8, tie = true }
    assert.is_true(tied.head.weight == tied.emb.weight)
  end)

  it("param_groups: decay on matrices and embeddings, none on biases and norms, a tied weight once", function()
    local m = small_gpt()
    local g = models.param_groups(m, 0.1)
    local n = 0
    for _, p in ipairs(g[1].params) do assert(p:dim() >= 2); n = n + 1 end
    for _, p in ipairs(g[2].params) do assert(p:dim() == 1); n = n + 1 end
    assert.are.equal(#m:parameters(), n)
    assert.are.equal(0.1, g[1].weight_decay)
    assert.are.equal(0, g[2].weight_decay)
    -- groups with a betas option save (they share no table)
    local opt = nnr.optim.AdamW(g, { betas = { 0.9, 0.95 } })
    m(nnr.randint(1, 14, { 1, 4 })):sum():backward()
    opt:step()
    local path = os.tmpname()
    nnr.save_checkpoint(path, { optimizer = opt:state_dict() })
    os.remove(path)
  end)

  it("int8: the quantized GPT stays close, its attention input projection included, and generates", function()
    if not nnr.quant.available() then pending("the quant plugin is not loaded") return end
    local m = small_gpt({ context = 32 })
    m:eval()
    local q = nnr.quant.dynamic(m, nil, { quiet = true })
    local attn = q.blocks.layers:get(1).self_attn
    assert.is_not_nil(rawget(attn, "in_proj_int8"))
    assert.is_nil(rawget(attn, "in_proj_weight"))
    assert.is_nil(q:state_dict()["blocks.layers.1.self_attn.in_proj_weight"])
    local ids = nnr.randint(1, 14, { 2, 9 })
    local a, b = m(ids), q(ids)
    assert((a - b):abs():max():item() < 0.05 * a:abs():max():item(), "int8 too far from f32")
    local cached = nnr.generate(q, ids, { max_tokens = 6, temperature = 0 })
    local plain = nnr.generate(setmetatable({ step = false }, { __index = q, __call = function(_, ...) return q(...) end }), ids,
      { max_tokens = 6, temperature = 0 })
    assert.are.same(plain:totable(), cached:totable())
    -- stepping with gradients on (no weight of the int8 projection can require one): the decoding path
    local logits, state = q:step(ids:narrow(2, 1, 8))
    assert.is_true(attn:decodes(nnr.randn(2, 1, 16), {}))
    logits = q:step(ids:narrow(2, 9, 1), state)
    close(logits:select(2, 1), b:select(2, 9), 1e-5)
  end)

  it("names what is wrong", function()
    H.fails("GPT: vocab_size", function() models.GPT { context = 4 } end)
    H.fails("d_model 10 is not divisible by n_head 3", function() models.GPT { vocab_size = 5, context = 4, d_model = 10, n_head = 3 } end)
    H.fails("unknown option", function() models.GPT { vocab_size = 5, context = 4, layers = 2 } end)
    H.fails("tie needs embed == hidden", function() models.RecurrentLM { vocab_size = 5, embed = 4, hidden = 8, tie = true } end)
    H.fails("cell must be", function() models.RecurrentLM { vocab_size = 5, cell = "transformer" } end)
    H.fails("kind must be 'gpt' or 'rnn_lm'", function() models.build { kind = "cnn" } end)
    local m = small_gpt()
    H.fails("13 positions, more than the context of 12", function() m(nnr.randint(1, 14, { 1, 13 })) end)
    H.fails("expected token ids, an integer tensor %[batch, time%]", function() m(nnr.randn(2, 3)) end)
  end)
end)
