-- nnr.generate(model, prompt, opts): token ids sampled one at a time from a language model.
--   prompt: 1-based ids, i64 [T] or [B, T]; opts: max_tokens (required), temperature = 1 (0: the most
--   likely token), top_k, top_p (nucleus), seed (the global generator is left as it was), vocab_size
--   (prompt ids checked against it; default: the logits' size), context (the most tokens a model
--   without a cache is shown).
-- The model either has model:step(ids [B, n], state) -> logits [B, n, V], state (state nil at the first
-- call: a transformer's key/value caches, a recurrent model's hidden states), fed the prompt and then
-- one token per step; or it is called as model(ids [B, T]) -> logits [B, T, V] on the whole context at
-- every step. Returns the ids [B, T + max_tokens] ([T + max_tokens] for a 1-d prompt). Runs without
-- recording gradients; the model is put in eval mode for the call and back.
local nnr = require "nnr"
local V = require "nnr.check"
local F = require "nnr.nn.functional"

local M = {}
local OPTIONS = { max_tokens = true, temperature = true, top_k = true, top_p = true, seed = true, vocab_size = true, context = true }

-- the next token of every row of logits [B, Vocab]: greedy, or sampled after temperature, top-k, top-p
function M.sample(logits, opts)
  local who = "sample"
  opts = V.options(who, opts, { temperature = true, top_k = true, top_p = true })
  local t = V.number(who, "temperature", opts.temperature, { min = 0, default = 1 })
  local nv = logits:size(2)
  if t == 0 then return logits:argmax(2) end          -- ids are 1-based, as every index
  local z = logits:double() / t
  if opts.top_k ~= nil then
    local k = V.integer(who, "top_k", opts.top_k, 1)
    if k < nv then
      local kth = z:topk(k, 2):narrow(2, k, 1)
      z = z:masked_fill(z:lt(kth), -math.huge)
    end
  end
  if opts.top_p ~= nil then
    local p = V.number(who, "top_p", opts.top_p, { above = 0, max = 1 })
    if p < 1 then     -- the smallest set of the most likely tokens whose probabilities reach p
      local sorted = z:sort(2, true)
      local probs = F.softmax(sorted, 2)
      local kept = (probs:cumsum(2) - probs):lt(p):sum(2, true)       -- how many: those before the set is complete
      local least = sorted:gather(2, kept)                             -- the smallest kept logit of each row
      z = z:masked_fill(z:lt(least), -math.huge)
    end
  end
  return F.softmax(z, 2):multinomial(1):squeeze(2)
end

local function check_prompt(prompt, vocab)
  if not nnr.is_tensor(prompt) or (prompt:dim() ~= 1 and prompt:dim() ~= 2) or prompt:is_floating_point() or prompt:numel() == 0 then
    error("generate: prompt must be a non-empty integer tensor of 1-based token ids, [T] or [B, T]", 0)
  end
  local lo, hi = prompt:min():item(), prompt:max():item()
  if lo < 1 or (vocab and hi > vocab) then
    local bad = lo < 1 and lo or hi
    error(string.format("generate: the prompt has token id %d, outside the vocabulary 1..%s", bad, vocab and tostring(vocab) or "V"), 0)
  end
end

function M.generate(model, prompt, opts)
  opts = V.options("generate", opts, OPTIONS)
  local n = V.integer("generate", "max_tokens", opts.max_tokens, 0)
  local vocab = opts.vocab_size and V.integer("generate", "vocab_size", opts.vocab_size, 1)
  local context = opts.context and V.integer("generate", "context", opts.context, 1)
  check_prompt(prompt, vocab)
  local one = prompt:dim() == 1
  local ids = (one and prompt:unsqueeze(1) or prompt):to("i64")
  local saved_rng = opts.seed ~= nil and nnr.get_rng_state() or nil
  if saved_rng then nnr.manual_seed(V.integer("generate", "seed", opts.seed, 0)) end
  local was_training = model.training
  if model.train then model:train(false) end
  local ok, result = pcall(nnr.no_grad, function()
    local out, state, feed = { ids }, nil, ids
    for _ = 1, n do
      local logits
      if model.step then
        logits, state = model:step(feed, state)
      else
        local all = nnr.cat(out, 2)
        if context and all:size(2) > context then all = all:narrow(2, all:size(2) - context + 1, context) end
        logits = model(all)
      end
      if not nnr.is_tensor(logits) or logits:dim() ~= 3 or logits:size(1) ~= ids:size(1) then
        error("generate: the model must give logits [B, T, vocab]" .. (nnr.is_tensor(logits) and (", got " .. nnr.shape_str(logits:size())) or ""), 0)
      end
      if vocab and logits:size(3) ~= vocab then
        error(string.format("generate: the model gives %d logits per token, vocab_size is %d", logits:size(3), vocab), 0)
      end
      local nxt = M.sample(logits:select(2, logits:size(2)), { temperature = opts.temperature, top_k = opts.top_k, top_p = opts.top_p })
      feed = nxt:unsqueeze(2)
      out[#out + 1] = feed
    end
    return nnr.cat(out, 2)
  end)
  if model.train then model:train(was_training) end
  if saved_rng then nnr.set_rng_state(saved_rng) end
  if not ok then error(result, 0) end
  return one and result:squeeze(1) or result
end

return M
