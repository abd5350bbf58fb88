-- nnr.data.TextDataset (docs/sequence.md, "Text data"): windows of seq_len + 1 tokens of a corpus, as a
-- C dataset the DataLoader's workers read directly.
--
--   local ds = data.TextDataset("/usr/share/games/fortunes", { seq_len = 128, exclude = { ".dat", ".u8" } })
--   local x, y = ds:get(1)        -- i64 [128] each: y is x shifted by one token
--
-- Tokens are the corpus's bytes (ids 1..256 = byte + 1, memory-mapped, never read into memory) or the ids
-- a tokenizer (nnr.text.CharVocab, nnr.text.BPE) gives, encoded once into memory (i32, 4 bytes a token).
local binding = require "nnr.binding"
local V = require "nnr.check"
local ffi, C = binding.ffi, binding.C

local OPTIONS = { seq_len = true, tokenizer = true, seed = true, windows = true, samples = true, stride = true, split = true,
                  val_fraction = true, exclude = true }

-- tokens [begin, end) (0-based) of n for the split: train the first 1 - f of them, val the last f
local function split_range(who, n, split, fraction)
  if split == nil then return 0, n end
  V.choice(who, "split", split, { "train", "val" })
  local f = V.number(who, "val_fraction", fraction == nil and 0.1 or fraction, { above = 0, below = 1 })
  local cut = n - math.floor(n * f)
  if split == "train" then return 0, cut end
  return cut, n
end

-- the bytes of ids 1..256 (byte + 1) as a string: bytes-mode decoding
local function decode_bytes(ids)
  local nnr = require "nnr"
  local t = nnr.is_tensor(ids) and ids:reshape(-1):totable() or ids
  if type(t) ~= "table" then error("TextDataset:decode: expected a tensor or a list of ids, got " .. type(ids), 0) end
  local out = {}
  for k, v in ipairs(t) do
    if type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v > 256 then
      error(string.format("TextDataset:decode: id %s (position %d) is outside the byte vocabulary 1..256", V.show(v), k), 0)
    end
    out[k] = string.char(v - 1)
  end
  return table.concat(out)
end

return function(data, source, opts)
  local who = "TextDataset"
  local nnr = require "nnr"
  local text = require "nnr.text"
  opts = V.options(who, opts, OPTIONS)
  local seq_len = V.integer(who, "seq_len", opts.seq_len, 1, 2 ^ 40)
  local seed = V.integer(who, "seed", opts.seed or 0, 0)
  local tok = opts.tokenizer
  if tok ~= nil and not text.is_tokenizer(tok) then
    error(who .. ": tokenizer must be an nnr.text.CharVocab or nnr.text.BPE (nil: bytes), got " .. type(tok), 0)
  end
  local corpus, ids, n, unit, vocab
  if nnr.is_tensor(source) then
    if tok ~= nil or opts.exclude ~= nil then error(who .. ": token ids are used as they are: no tokenizer or exclude with them", 0) end
    if source:dim() ~= 1 or (source.dtype ~= "i32" and source.dtype ~= "i64") then
      error(string.format("%s: token ids must be a 1-d i32 or i64 tensor, got %s %s", who, source.dtype, nnr.shape_str(source:size())), 0)
    end
    ids, unit = source.device == "cpu" and source or source:cpu(), "tokens"
    n = ids:size(1)
  else
    corpus = text.as_corpus(source, opts.exclude, who)
    if tok then
      local p = C.nnr_tokenizer_encode_corpus(tok.handle, corpus.handle)
      if p == nil then error(who .. ": " .. binding.last_error(), 0) end
      ids, vocab, unit = binding.own(p), tok.vocab_size, "tokens"
      n = ids:size(1)
    else
      n, vocab, unit = corpus:size(), 256, "bytes"
    end
  end
  local begin, finish = split_range(who, n, opts.split, opts.val_fraction)
  if opts.split and finish - begin <= seq_len then
    error(string.format("%s: the %s split has %d %s (val_fraction %s of %d), too few for windows of seq_len + 1 = %d", who, opts.split,
      finish - begin, unit, V.show(opts.val_fraction or 0.1), n, seq_len + 1), 0)
  end
  local windows = opts.windows or (opts.split == "val" and "contiguous" or "random")
  V.choice(who, "windows", windows, { "random", "contiguous" })
  local stride, samples = 0, 0
  if windows == "contiguous" then
    if opts.samples ~= nil then error(who .. ": samples is for random windows; contiguous windows are as many as fit", 0) end
    stride = V.integer(who, "stride", opts.stride or seq_len, 1)
  else
    if opts.stride ~= nil then error(who .. ": stride is for contiguous windows (windows = \"contiguous\")", 0) end
    -- by default an epoch holds about as many tokens as the data: (n - 1) / seq_len windows
    samples = V.integer(who, "samples", opts.samples or math.max(1, math.floor((finish - begin - 1) / seq_len)), 1)
  end
  local h = C.nnr_dataset_text(corpus and not ids and corpus.handle or nil, ids and ids.p or nil, begin, finish, seq_len, stride, samples, seed)
  if h == nil then
    local msg = binding.last_error()
    error((msg:sub(1, #who + 2) == who .. ": " and "" or who .. ": ") .. msg, 0)
  end
  local ds = setmetatable({ handle = ffi.gc(h, C.nnr_dataset_release) }, data._CDataset)
  ds.kind, ds.seq_len, ds.tokenizer, ds.corpus, ds.tokens, ds.vocab_size = who, seq_len, tok, corpus, ids, vocab
  ds.path = corpus and corpus.name or nil
  ds.split, ds.windows, ds.seed, ds.num_tokens = opts.split, windows, seed, finish - begin
  -- ids back to text: the tokenizer's, or bytes
  ds.decode = function(_, t) if tok then return tok:decode(t) end return decode_bytes(t) end
  return ds
end
