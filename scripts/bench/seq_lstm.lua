-- nnrun side of issue 17's LSTM benchmark: a character-level language model's training step (an
-- Embedding of 96 symbols into 512, nn.LSTM with 2 layers of hidden 512, a Linear head back to 96;
-- sequence 100, batch 32, cross-entropy, AdamW, gradient clipping at 1), and the LSTM alone, forward
-- and forward + backward. seq_lstm_torch.py runs the same in PyTorch.
-- Usage: nnrun scripts/bench/seq_lstm.lua [THREADS]. Prints one JSON object (median milliseconds,
-- tokens per second). No timing is asserted.
local nnr = require "nnr"
local nn = nnr.nn
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)

nnr.manual_seed(1)
local V, E, Hs, T, B = 96, 512, 512, 100, 32
local emb, lstm, head = nn.Embedding(V, E), nn.LSTM(E, Hs, { num_layers = 2 }), nn.Linear(Hs, V)
local params = {}
for _, m in ipairs { emb, lstm, head } do for _, p in ipairs(m:parameters()) do params[#params + 1] = p end end
local opt = nnr.optim.AdamW(params, { lr = 1e-3 })
local x, y = nnr.randint(1, V + 1, { T, B }), nnr.randint(1, V + 1, { T, B })
local onednn_before = tonumber(nnr.backends.cpu.onednn_calls)

local function step()
  opt:zero_grad()
  local h = lstm(emb(x))
  local loss = nnr.nn.functional.cross_entropy(head(h):view(T * B, V), y:view(T * B))
  loss:backward()
  nn.utils.clip_grad_norm(params, 1.0)
  opt:step()
end

local out = { threads = threads }
out.train_step_ms = timing.time_ms(step, 2, 7)
out.train_tokens_per_s = T * B / (out.train_step_ms / 1e3)
local xe = nnr.randn(T, B, E)
out.lstm_forward_ms = timing.time_ms(function() return nnr.no_grad(function() return lstm(xe) end) end, 2, 7)
out.lstm_fwdbwd_ms = timing.time_ms(function()
  for _, p in ipairs(lstm:parameters()) do p.grad = nil end
  lstm(xe):sum():backward()
end, 2, 7)
out.onednn = nnr.backends.cpu.onednn_version
out.onednn_calls = tonumber(nnr.backends.cpu.onednn_calls) - onednn_before
timing.print_json(out)
