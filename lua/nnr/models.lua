-- nnr.models: ready-made language models (docs/sequence.md, "Language models"), the ones the second
-- main job trains (scripts/train_charlm.lua) and scripts/generate.lua samples from.
--
--   local m = nnr.models.GPT { vocab_size = 96, context = 128 }          -- d_model 256, 4 heads, 4 layers
--   local logits = m(ids)                       -- ids i64 [B, T] (1-based), logits [B, T, vocab_size]
--   local m2 = nnr.models.RecurrentLM { vocab_size = 96, cell = "lstm" }  -- hidden 512, 2 layers
--   local m3 = nnr.models.build(m:config())     -- the same architecture from its plain-table config
--
-- GPT{vocab_size, context, d_model = 256, n_head = 4, n_layer = 4, d_ff = 4 d_model, dropout = 0,
--     activation = "gelu", tie = true}: token and learned position embeddings, n_layer pre-norm
--   nn.TransformerEncoderLayers with causal self-attention, a final LayerNorm, and a head without bias
--   whose weight is the token embedding's (tie = false: a head of its own). GPT-2's initialisation:
--   weights N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2 n_layer)), biases 0.
-- RecurrentLM{vocab_size, cell = "lstm" | "gru" | "rnn", embed = hidden, hidden = 512, num_layers = 2,
--   dropout = 0, tie = false}: an embedding, nn.LSTM / GRU / RNN (batch_first), a linear head
--   (tie needs embed == hidden).
-- Both have model:step(ids [B, n], state) -> logits [B, n, V], state for nnr.generate: the GPT keeps
-- one key/value cache per layer; past its context it starts again from the last context / 2 tokens
-- (a sliding window, recomputed every context / 2 tokens; the logits are then those of the tokens run,
-- at most n); the recurrent model carries its states.
local nnr = require "nnr"
local Module = require "nnr.nn.module"
local V = require "nnr.check"

local M = {}

-- GPT ------------------------------------------------------------------------------------------------
local GPT_OPTIONS = { kind = true, vocab_size = true, context = true, d_model = true, n_head = true, n_layer = true, d_ff = true,
                      dropout = true, activation = true, tie = true }

local function gpt_config(cfg)
  local who = "GPT"
  cfg = V.options(who, cfg, GPT_OPTIONS)
  if cfg.kind ~= nil and cfg.kind ~= "gpt" then error(who .. ": kind must be 'gpt', got " .. V.show(cfg.kind), 0) end
  local c = { kind = "gpt" }
  c.vocab_size = V.integer(who, "vocab_size", cfg.vocab_size, 1, 2 ^ 31 - 1)
  c.context = V.integer(who, "context", cfg.context, 1, 2 ^ 31 - 1)
  c.d_model = V.integer(who, "d_model", cfg.d_model or 256, 1, 2 ^ 31 - 1)
  c.n_head = V.integer(who, "n_head", cfg.n_head or 4, 1, c.d_model)
  if c.d_model % c.n_head ~= 0 then error(string.format("%s: d_model %d is not divisible by n_head %d", who, c.d_model, c.n_head), 0) end
  c.n_layer = V.integer(who, "n_layer", cfg.n_layer or 4, 1, 10000)
  c.d_ff = V.integer(who, "d_ff", cfg.d_ff or 4 * c.d_model, 1, 2 ^ 31 - 1)
  c.dropout = V.probability(who, "dropout", cfg.dropout or 0)
  c.activation = V.choice(who, "activation", cfg.activation or "gelu", { "gelu", "relu" })
  c.tie = cfg.tie == nil or V.boolean(who, "tie", cfg.tie)
  return c
end

M.GPT = Module:extend("GPT")

function M.GPT:__init(cfg)
  Module.__init(self)
  local c = gpt_config(cfg)
  rawset(self, "cfg", c)
  local nn = nnr.nn
  self:add_module("tok", nn.Embedding(c.vocab_size, c.d_model))
  self:add_module("pos", nn.Embedding(c.context, c.d_model))
  self:add_module("drop", nn.Dropout(c.dropout))
  local layer = nn.TransformerEncoderLayer(c.d_model, c.n_head, { dim_feedforward = c.d_ff, dropout = c.dropout, activation = c.activation,
                                                                   batch_first = true, norm_first = true })
  self:add_module("blocks", nn.TransformerEncoder(layer, c.n_layer))
  self:add_module("ln_f", nn.LayerNorm(c.d_model))
  self:add_module("head", nn.Linear(c.d_model, c.vocab_size, { bias = false }))
  -- GPT-2's initialisation: the defaults of nn.Embedding (N(0, 1)) would give a tied head logits of std 16
  nnr.no_grad(function()
    local resid = 0.02 / math.sqrt(2 * c.n_layer)
    for _, np in ipairs(self:named_parameters()) do
      local name, p = np[1], np[2]
      if name:match("bias$") then p:zero_()
      elseif name:match("^blocks%..*norm%d%.weight$") or name == "ln_f.weight" then p:fill_(1)
      elseif name:match("out_proj%.weight$") or name:match("linear2%.weight$") then p:normal_(0, resid)
      else p:normal_(0, 0.02) end
    end
  end)
  if c.tie then self.head.weight = self.tok.weight end
end

function M.GPT:config() local c = {}; for k, v in pairs(self.cfg) do c[k] = v end; return c end

local function check_ids(who, ids)
  if not nnr.is_tensor(ids) or ids:dim() ~= 2 or ids:is_floating_point() then
    error(who .. ": expected token ids, an integer tensor [batch, time]" .. (nnr.is_tensor(ids) and (", got " .. ids.dtype .. " "
      .. nnr.shape_str(ids:size())) or ""), 0)
  end
end

local function gpt_run(self, ids, past, cache)
  local c = self.cfg
  local n = ids:size(2)
  if past + n > c.context then
    error(string.format("GPT: %d positions%s, more than the context of %d", past + n, past > 0 and string.format(" (%d cached)", past) or "",
      c.context), 0)
  end
  local positions = nnr.arange(past + 1, past + n + 1, 1, { dtype = "i64", device = ids.device })
  local h = self.drop(self.tok(ids) + self.pos(positions))
  return self.head(self.ln_f(self.blocks(h, { is_causal = true, cache = cache })))
end

function M.GPT:forward(ids)
  check_ids("GPT", ids)
  return gpt_run(self, ids, 0, nil)
end

-- state: {cache = per-layer key/value caches, past = positions cached, ids = the last tokens (for the window)}
function M.GPT:step(ids, state)
  check_ids("GPT:step", ids)
  local c = self.cfg
  local n = ids:size(2)
  if state and state.past + n > c.context then
    -- past the context: start again from the last half of it, this step's tokens included
    local all = nnr.cat({ state.ids, ids }, 2)
    local keep = math.max(1, math.floor(c.context / 2))
    ids, state = all:narrow(2, all:size(2) - keep + 1, keep), nil
  end
  if ids:size(2) > c.context then ids = ids:narrow(2, ids:size(2) - c.context + 1, c.context) end
  state = state or { cache = {}, past = 0 }
  local logits = gpt_run(self, ids, state.past, state.cache)
  state.past = state.past + ids:size(2)
  state.ids = state.ids and nnr.cat({ state.ids, ids }, 2) or ids
  if state.ids:size(2) > c.context then state.ids = state.ids:narrow(2, state.ids:size(2) - c.context + 1, c.context) end
  -- the logits of this call's tokens (of the last ones run, when the window dropped some of them)
  if logits:size(2) > n then logits = logits:narrow(2, logits:size(2) - n + 1, n) end
  return logits, state
end

function M.GPT:extra_repr()
  local c = self.cfg
  return string.format("vocab_size=%d, context=%d, d_model=%d, n_head=%d, n_layer=%d, tie=%s", c.vocab_size, c.context, c.d_model, c.n_head,
    c.n_layer, tostring(c.tie))
end

-- a recurrent language model ---------------------------------------------------------------------------
local RNN_OPTIONS = { kind = true, vocab_size = true, cell = true, embed = true, hidden = true, num_layers = true, dropout = true, tie = true }

local function rnn_config(cfg)
  local who = "RecurrentLM"
  cfg = V.options(who, cfg, RNN_OPTIONS)
  if cfg.kind ~= nil and cfg.kind ~= "rnn_lm" then error(who .. ": kind must be 'rnn_lm', got " .. V.show(cfg.kind), 0) end
  local c = { kind = "rnn_lm" }
  c.vocab_size = V.integer(who, "vocab_size", cfg.vocab_size, 1, 2 ^ 31 - 1)
  c.cell = V.choice(who, "cell", cfg.cell or "lstm", { "lstm", "gru", "rnn" })
  c.hidden = V.integer(who, "hidden", cfg.hidden or 512, 1, 2 ^ 31 - 1)
  c.embed = V.integer(who, "embed", cfg.embed or c.hidden, 1, 2 ^ 31 - 1)
  c.num_layers = V.integer(who, "num_layers", cfg.num_layers or 2, 1, 10000)
  c.dropout = V.probability(who, "dropout", cfg.dropout or 0)
  c.tie = cfg.tie ~= nil and V.boolean(who, "tie", cfg.tie) or false
  if c.tie and c.embed ~= c.hidden then
    error(string.format("%s: tie needs embed == hidden, got %d and %d", who, c.embed, c.hidden), 0)
  end
  return c
end

M.RecurrentLM = Module:extend("RecurrentLM")

function M.RecurrentLM:__init(cfg)
  Module.__init(self)
  local c = rnn_config(cfg)
  rawset(self, "cfg", c)
  local nn = nnr.nn
  local cls = ({ lstm = nn.LSTM, gru = nn.GRU, rnn = nn.RNN })[c.cell]
  self:add_module("emb", nn.Embedding(c.vocab_size, c.embed))
  self:add_module("drop", nn.Dropout(c.dropout))
  self:add_module("rnn", cls(c.embed, c.hidden, { num_layers = c.num_layers, dropout = c.dropout, batch_first = true }))
  self:add_module("head", nn.Linear(c.hidden, c.vocab_size))
  if c.tie then self.head.weight = self.emb.weight end
end

function M.RecurrentLM:config() local c = {}; for k, v in pairs(self.cfg) do c[k] = v end; return c end

function M.RecurrentLM:forward(ids)
  check_ids("RecurrentLM", ids)
  local y = self.rnn(self.drop(self.emb(ids)))
  return self.head(self.drop(y))
end

function M.RecurrentLM:step(ids, state)
  check_ids("RecurrentLM:step", ids)
  local y, s = self.rnn(self.drop(self.emb(ids)), state)
  return self.head(self.drop(y)), s
end

function M.RecurrentLM:extra_repr()
  local c = self.cfg
  return string.format("vocab_size=%d, cell=%s, embed=%d, hidden=%d, num_layers=%d", c.vocab_size, c.cell, c.embed, c.hidden, c.num_layers)
end

-- a model from its config (model:config(), as a checkpoint keeps it) ---------------------------------------
function M.build(cfg)
  if type(cfg) ~= "table" then error("nnr.models.build: expected a config table, got " .. type(cfg), 0) end
  if cfg.kind == "gpt" then return M.GPT(cfg) end
  if cfg.kind == "rnn_lm" then return M.RecurrentLM(cfg) end
  error("nnr.models.build: kind must be 'gpt' or 'rnn_lm', got " .. V.show(cfg.kind), 0)
end

-- AdamW's parameter groups as nanoGPT makes them: weight decay on the matrices and embeddings (every
-- parameter of two or more dims), none on biases and norms; a tied weight counts once
function M.param_groups(model, weight_decay)
  local decay, rest = {}, {}
  for _, p in ipairs(model:parameters()) do
    if p:dim() >= 2 then decay[#decay + 1] = p else rest[#rest + 1] = p end
  end
  return { { params = decay, weight_decay = V.number("param_groups", "weight_decay", weight_decay, { min = 0 }) },
           { params = rest, weight_decay = 0 } }
end

-- the language-model loss: cross-entropy of logits [B, T, V] against targets [B, T]
function M.lm_loss(logits, targets)
  local nv = logits:size(logits:dim())
  return nnr.nn.functional.cross_entropy(logits:reshape(-1, nv), targets:reshape(-1))
end

return require("nnr.names").guard(M, "nnr.models")
