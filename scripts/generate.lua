-- Writes text with a language model trained by scripts/train_charlm.lua (docs/sequence.md).
--
--   nnrun scripts/generate.lua --checkpoint PATH [--prompt TEXT] [--max-tokens N] [--temperature X]
--         [--top-k N] [--top-p X] [--seed N] [--samples N] [--int8] [--device cpu|cuda|cuda:N]
--         [--threads N] [--bench]
--
-- The checkpoint holds the model's config, its weights and its tokenizer. The prompt (default: a
-- newline) is encoded with that tokenizer: a character it has never seen is an error naming it. Then
-- --max-tokens (256) tokens are sampled one at a time with the model's key/value caches (gpt) or carried
-- states (lstm, gru): --temperature 0.8 (0: always the most likely token), --top-k and --top-p (nucleus)
-- to keep only the likeliest, --seed 1 for the same text every time, --samples N continuations of the
-- same prompt at once (a batch). --int8 runs the model's linear layers with int8 weights
-- (nnr.quant.dynamic). --bench prints the tokens per second to stderr.
local nnr = require "nnr"
local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts")
local lm = dofile(dir .. "/charlm.lua")

local NUMERIC = { max_tokens = { integer = true, min = 0, max = 1e7 }, temperature = { min = 0 }, top_k = { integer = true, min = 1 },
                  top_p = { above = 0, max = 1 }, seed = { integer = true, min = 0, max = 2 ^ 53 }, samples = { integer = true, min = 1, max = 4096 },
                  threads = { integer = true, min = 1, max = 1024 } }

local function main(argv)
  local opts = lm.parse(argv, { prompt = "\n", max_tokens = 256, temperature = 0.8, seed = 1, samples = 1, device = "cpu" }, NUMERIC,
    { int8 = true, bench = true }, { checkpoint = true, prompt = true, device = true }, arg[0] or "scripts/generate.lua")
  if not opts.checkpoint then error("--checkpoint PATH is needed (a file written by train_charlm.lua --save)", 0) end
  if opts.threads then nnr.set_num_threads(opts.threads) end
  local ok, err = pcall(nnr.device, opts.device)
  if not ok then error("--device " .. opts.device .. ": " .. tostring(err), 0) end
  local model, tok = lm.load_model(opts.checkpoint, "--checkpoint " .. opts.checkpoint)
  if opts.int8 then
    if nnr.device(opts.device).type ~= "cpu" then error("--int8 runs on the cpu (the quant plugin's kernels); drop --device", 0) end
    model = nnr.quant.dynamic(model, nil, { quiet = true })
  end
  model = model:to(opts.device)
  if opts.prompt == "" then error("--prompt is empty: generation starts from at least one token", 0) end
  local encoded, prompt = pcall(tok.encode, tok, opts.prompt)
  if not encoded then error("--prompt: " .. tostring(prompt):gsub("^[%w.:]*: ", "", 1), 0) end
  local n = prompt:size(1)
  prompt = prompt:unsqueeze(1):expand(opts.samples, n):contiguous():to(opts.device)
  local t0 = nnr.clock()
  local ids = nnr.generate(model, prompt, { max_tokens = opts.max_tokens, temperature = opts.temperature, top_k = opts.top_k,
                                            top_p = opts.top_p, seed = opts.seed, vocab_size = tok.vocab_size })
  local seconds = nnr.clock() - t0
  for s = 1, opts.samples do
    if opts.samples > 1 then io.write(string.format("--- sample %d ---\n", s)) end
    io.write(opts.prompt, tok:decode(ids[s]:narrow(1, n + 1, opts.max_tokens):cpu()), "\n")
  end
  if opts.bench then
    io.stderr:write(string.format("%d tokens x %d in %.3f s: %.1f tokens/s%s\n", opts.max_tokens, opts.samples, seconds,
      opts.max_tokens * opts.samples / seconds, opts.int8 and " (int8)" or ""))
  end
end

main(arg)
