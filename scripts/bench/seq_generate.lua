-- nnrun side of issue 17's generation benchmark: the character-level GPT of seq_gpt.lua (4 layers of
-- d_model 256, 4 heads, GELU, tied head; nnr.models.GPT with a position table of 512 so that a
-- 16-token prompt and 256 new tokens fit one key/value cache) writes 256 tokens at batch 1 with
-- nnr.generate (temperature 0.8, a seed): f32, and int8 (nnr.quant.dynamic: every Linear). The
-- recomputing path (no cache, the whole context at every token) for reference.
-- seq_generate_torch.py is its twin. Usage: nnrun scripts/bench/seq_generate.lua [THREADS].
-- Prints one JSON object (median milliseconds for the 256 tokens, tokens per second).
local nnr = require "nnr"
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)

nnr.manual_seed(1)
local NEW, PROMPT = 256, 16
local model = nnr.models.GPT { vocab_size = 96, context = 512, d_model = 256, n_head = 4, n_layer = 4 }
local prompt = nnr.randint(1, 97, { 1, PROMPT })
local function gen(m) return function() return nnr.generate(m, prompt, { max_tokens = NEW, temperature = 0.8, seed = 1 }) end end

local out = { threads = threads, new_tokens = NEW, prompt = PROMPT }
out.f32_ms = timing.time_ms(gen(model), 1, 5)
out.f32_tokens_per_s = NEW / (out.f32_ms / 1e3)
local q = nnr.quant.dynamic(model, nil, { quiet = true })
out.int8_ms = timing.time_ms(gen(q), 1, 5)
out.int8_tokens_per_s = NEW / (out.int8_ms / 1e3)
out.int8_over_f32 = out.f32_ms / out.int8_ms
local threads_before = nnr.get_num_threads()
nnr.set_num_threads(1)
out.f32_1thread_ms = timing.time_ms(gen(model), 1, 5)
nnr.set_num_threads(threads_before)
local plain = setmetatable({ step = false }, { __index = model, __call = function(_, ...) return model(...) end })
out.no_cache_ms = timing.time_ms(gen(plain), 0, 1)
timing.print_json(out)
