-- nnr.text: corpora and tokenizers for language models (docs/sequence.md, "Text data").
--
--   local text = nnr.text
--   local corpus = text.Corpus("/usr/share/games/fortunes", { exclude = { ".dat", ".u8" } })
--   local bpe = text.BPE.train(corpus, { vocab_size = 512 })     -- merges learnt in C
--   local ids = bpe:encode("Hello, world")                       -- i64 [n], ids 1..512
--   assert(bpe:decode(ids) == "Hello, world")                    -- exact, for any bytes
--   bpe:save("fortunes.bpe.json"); bpe = text.BPE.load("fortunes.bpe.json")
--   local vocab = text.CharVocab(corpus)                         -- its distinct UTF-8 characters
--
-- Ids are 1-based (nn.Embedding takes 1..vocab_size). Tokenizers are C objects, immutable once made.
local binding = require "nnr.binding"
local V = require "nnr.check"
local ffi, C = binding.ffi, binding.C

local M = {}

local len_buf = ffi.new("int64_t[2]")

-- a corpus -------------------------------------------------------------------------------------
local Corpus = {}
Corpus.__index = Corpus

local function wrap_corpus(p, name)
  if p == nil then binding.raise() end
  return setmetatable({ handle = ffi.gc(p, C.nnr_corpus_release), name = name }, Corpus)
end

local function is_corpus(x) return getmetatable(x) == Corpus end
M.is_corpus = is_corpus

-- paths: a file or folder, or a list of them; exclude: file-name suffixes a folder's files must not end in
local function open_corpus(paths, opts, who)
  who = who or "Corpus"
  opts = V.options(who, opts, { exclude = true })
  if type(paths) == "string" then paths = { paths } end
  if type(paths) ~= "table" or #paths == 0 then error(who .. ": expected a path, a list of paths or a Corpus, got " .. type(paths), 0) end
  local cp = ffi.new("const char *[?]", #paths)
  for i, p in ipairs(paths) do cp[i - 1] = V.path(who, "path", p) end
  local exclude = opts.exclude or {}
  if type(exclude) == "string" then exclude = { exclude } end
  if type(exclude) ~= "table" then error(who .. ": exclude must be a list of file-name suffixes, got " .. type(exclude), 0) end
  local ce = ffi.new("const char *[?]", #exclude + 1)
  for i, s in ipairs(exclude) do ce[i - 1] = V.path(who, "exclude[" .. i .. "]", s) end
  local p = C.nnr_corpus_open(#paths, cp, #exclude, ce)
  if p == nil then error(who .. ": " .. binding.last_error(), 0) end
  return wrap_corpus(p, #paths == 1 and paths[1] or (paths[1] .. " and " .. (#paths - 1) .. " more"))
end

M.Corpus = setmetatable({}, { __call = function(_, paths, opts) return open_corpus(paths, opts) end, __index = Corpus })

-- a corpus of the bytes of a Lua string (copied)
function Corpus.from_string(s, name)
  if type(s) ~= "string" then error("Corpus.from_string: expected a string, got " .. type(s), 0) end
  return wrap_corpus(C.nnr_corpus_from_bytes(s, #s, name or "(text)"), name or "(text)")
end

function Corpus:size() return tonumber(C.nnr_corpus_size(self.handle)) end
-- the files read, in order: {{path = ..., size = ...}, ...}
function Corpus:files()
  local out = {}
  for i = 1, C.nnr_corpus_file_count(self.handle) do
    out[i] = { path = ffi.string(C.nnr_corpus_file_path(self.handle, i - 1)), size = tonumber(C.nnr_corpus_file_size(self.handle, i - 1)) }
  end
  return out
end
-- bytes i..j (1-based, inclusive, as string.sub; negative counts from the end)
function Corpus:sub(i, j)
  local n = self:size()
  i, j = V.integer("Corpus:sub", "i", i or 1), V.integer("Corpus:sub", "j", j or -1)
  if i < 0 then i = n + i + 1 end
  if j < 0 then j = n + j + 1 end
  i, j = math.max(i, 1), math.min(j, n)
  if j < i then return "" end
  local buf = ffi.new("char[?]", j - i + 1)
  binding.check(C.nnr_corpus_read(self.handle, i - 1, j - i + 1, buf))
  return ffi.string(buf, j - i + 1)
end
function Corpus:__tostring() return string.format("Corpus(%s, %d bytes)", self.name, self:size()) end

-- a corpus from what a caller passed: a Corpus, a path or a list of paths (with exclude)
function M.as_corpus(source, exclude, who)
  if is_corpus(source) then
    if exclude ~= nil then error(who .. ": exclude applies to paths, not to a Corpus", 0) end
    return source
  end
  return open_corpus(source, { exclude = exclude }, who)
end

-- tokenizers -----------------------------------------------------------------------------------
local Tokenizer = {}
Tokenizer.__index = Tokenizer

-- the core's message with who in front once (the core names CharVocab or BPE itself; a file error starts "load PATH")
local function fail(who)
  local msg = binding.last_error()
  if msg:sub(1, #who + 2) == who .. ": " then msg = msg:sub(#who + 3) end
  if msg:sub(1, 5) == "load " then msg = msg:sub(6) end
  error(who .. ": " .. msg, 0)
end

local function wrap_tokenizer(p, class, who)
  if p == nil then fail(who) end
  local self = setmetatable({ handle = ffi.gc(p, C.nnr_tokenizer_free) }, class)
  self.vocab_size = tonumber(C.nnr_tokenizer_vocab_size(p))
  return self
end

-- ids as a contiguous cpu tensor: a tensor of integers, or a Lua list of whole numbers
local function ids_tensor(ids, who)
  local nnr = require "nnr"
  if nnr.is_tensor(ids) then
    if ids:is_floating_point() or ids.dtype == "bool" then error(who .. ": decode takes integer ids, got " .. ids.dtype, 0) end
    return ids.device == "cpu" and ids or ids:cpu()
  end
  if type(ids) ~= "table" then error(who .. ": decode takes a tensor or a list of ids, got " .. type(ids), 0) end
  for k, v in ipairs(ids) do
    if type(v) ~= "number" or v ~= math.floor(v) or v < -2 ^ 53 or v > 2 ^ 53 then
      error(string.format("%s: decode: entry %d (%s) is not a whole number", who, k, V.show(v)), 0)
    end
  end
  return nnr.tensor(#ids == 0 and {} or ids, { dtype = "i64" })
end

-- text (a string) as ids: i64 [n]
function Tokenizer:encode(s)
  if type(s) ~= "string" then error(self.kind .. ":encode: expected a string, got " .. type(s), 0) end
  local p = C.nnr_tokenizer_encode(self.handle, s, #s)
  if p == nil then binding.raise() end
  return binding.own(p):long()
end

-- ids (a tensor of any shape, read in order, or a list) as text
function Tokenizer:decode(ids)
  local t = ids_tensor(ids, self.kind)
  local p = C.nnr_tokenizer_decode(self.handle, t.p, len_buf)
  if p == nil then binding.raise() end
  local s = ffi.string(p, len_buf[0])
  C.nnr_bytes_free(p)
  return s
end

-- the bytes of one token (a character's UTF-8 for a CharVocab)
function Tokenizer:token(id)
  V.integer(self.kind .. ":token", "id", id)
  local p = C.nnr_tokenizer_token(self.handle, id, len_buf)
  if p == nil then binding.raise() end
  return ffi.string(p, len_buf[0])
end

-- the corpus as i32 ids [n] (what TextDataset windows)
function Tokenizer:encode_corpus(corpus)
  if not is_corpus(corpus) then error(self.kind .. ":encode_corpus: expected a Corpus", 0) end
  local p = C.nnr_tokenizer_encode_corpus(self.handle, corpus.handle)
  if p == nil then binding.raise() end
  return binding.own(p)
end

function Tokenizer:save(path)
  binding.check(C.nnr_tokenizer_save(self.handle, V.path(self.kind .. ":save", "path", path)))
end

function Tokenizer:__tostring() return string.format("%s(%d tokens)", self.kind, self.vocab_size) end

local function class(name)
  local cls = setmetatable({}, { __index = Tokenizer })
  cls.__index = cls
  cls.__tostring = Tokenizer.__tostring
  cls.kind = name
  return cls
end

local CharVocabClass = class("CharVocab")
local BPEClass = class("BPE")

local function load(path, want, who)
  local p = C.nnr_tokenizer_load(V.path(who, "path", path))
  if p == nil then fail(who) end
  local kind = C.nnr_tokenizer_kind(p)
  local cls = kind == C.NNR_TOKENIZER_BPE and BPEClass or CharVocabClass
  if want and cls ~= want then
    C.nnr_tokenizer_free(p)
    error(string.format("%s: %s holds a %s, not a %s (nnr.text.load reads either)", who, path, cls.kind, want.kind), 0)
  end
  return wrap_tokenizer(p, cls, who)
end

-- either kind of tokenizer file
function M.load(path) return load(path, nil, "nnr.text.load") end

-- CharVocab(source[, {exclude}]): the distinct characters of a UTF-8 corpus, ids in code point order
M.CharVocab = setmetatable({
  load = function(path) return load(path, CharVocabClass, "CharVocab.load") end,
  class = CharVocabClass,
}, { __call = function(_, source, opts)
  opts = V.options("CharVocab", opts, { exclude = true })
  local corpus = M.as_corpus(source, opts.exclude, "CharVocab")
  return wrap_tokenizer(C.nnr_charvocab_build(corpus.handle), CharVocabClass, "CharVocab")
end })

-- BPE.train(source, {vocab_size = 512, min_frequency = 2, exclude}): byte-level BPE learnt in C
M.BPE = {
  class = BPEClass,
  load = function(path) return load(path, BPEClass, "BPE.load") end,
  train = function(source, opts)
    opts = V.options("BPE.train", opts, { vocab_size = true, min_frequency = true, exclude = true })
    local vocab = V.integer("BPE.train", "vocab_size", opts.vocab_size or 512, 256, 2 ^ 20)
    local minf = V.integer("BPE.train", "min_frequency", opts.min_frequency or 2, 1)
    local corpus = M.as_corpus(source, opts.exclude, "BPE.train")
    return wrap_tokenizer(C.nnr_bpe_train(corpus.handle, vocab, minf), BPEClass, "BPE")
  end,
}

-- the merges in the order learnt: {{left, right}, ...}; merge k made token 256 + k
function BPEClass:merges()
  local out, l, r = {}, ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
  for k = 1, self.vocab_size - 256 do
    binding.check(C.nnr_bpe_merge(self.handle, k, l, r))
    out[k] = { tonumber(l[0]), tonumber(r[0]) }
  end
  return out
end

function M.is_tokenizer(x) local mt = getmetatable(x); return mt == CharVocabClass or mt == BPEClass end

return require("nnr.names").guard(M, "nnr.text")
