-- nnrun side of issue 17's GPT benchmark: a character-level GPT's training step (token and learned
-- position embeddings, 4 pre-norm Transformer layers of d_model 256, 4 heads, feed-forward 1024,
-- GELU, causal self-attention, a final LayerNorm and a head tied to the token embedding; context
-- 128, batch 32, 96 symbols; cross-entropy, AdamW, clipping at 1). seq_gpt_torch.py is its twin.
-- Usage: nnrun scripts/bench/seq_gpt.lua [THREADS]. Prints one JSON object. No timing is asserted.
local nnr = require "nnr"
local nn = nnr.nn
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)

nnr.manual_seed(1)
local V, D, Hh, L, T, B = 96, 256, 4, 4, 128, 32
local tok, pos = nn.Embedding(V, D), nn.Embedding(T, D)
local layer = nn.TransformerEncoderLayer(D, Hh, { dim_feedforward = 4 * D, dropout = 0, activation = "gelu", batch_first = true,
                                                  norm_first = true })
local blocks, ln_f, head = nn.TransformerEncoder(layer, L), nn.LayerNorm(D), nn.Linear(D, V, { bias = false })
head.weight = tok.weight
local model = nn.ModuleDict { { "tok", tok }, { "pos", pos }, { "blocks", blocks }, { "ln_f", ln_f }, { "head", head } }
local params = model:parameters()
local opt = nnr.optim.AdamW(params, { lr = 3e-4 })
local x, y = nnr.randint(1, V + 1, { B, T }), nnr.randint(1, V + 1, { B, T })
local positions = nnr.arange(1, T + 1, 1, { dtype = "i64" })

local function forward(ids)
  local h = tok(ids) + pos(positions)
  return head(ln_f(blocks(h, { is_causal = true })))
end

local function step()
  opt:zero_grad()
  local loss = nnr.nn.functional.cross_entropy(forward(x):view(B * T, V), y:view(B * T))
  loss:backward()
  nn.utils.clip_grad_norm(params, 1.0)
  opt:step()
end

local out = { threads = threads }
out.train_step_ms = timing.time_ms(step, 2, 9)
out.train_tokens_per_s = B * T / (out.train_step_ms / 1e3)
out.forward_ms = timing.time_ms(function() return nnr.no_grad(forward, x) end, 2, 9)
timing.print_json(out)
