-- What scripts/train_charlm.lua and scripts/generate.lua share: the corpus and its tokenizer,
-- checkpoints of a language model (its config and tokenizer travel with the weights), the
-- learning-rate schedule, and the small pieces of a command line.
local nnr = require "nnr"
local check = require "nnr.check"
local M = {}

M.DEFAULT_DATA = "/usr/share/games/fortunes"
M.DEFAULT_EXCLUDE = ".dat,.u8"          -- strfile's index files and the UTF-8 copies beside the text

-- command lines ------------------------------------------------------------------------------
-- argv -> opts: flags (no value), numeric (name -> nnr.check spec), strings (names taking any text);
-- defaults are copied first. Unknown options and missing values are errors naming the option. Also returns
-- the set of options the command line gave.
function M.parse(argv, defaults, numeric, flags, strings, script)
  local opts, given = {}, {}
  for k, v in pairs(defaults) do opts[k] = v end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local key = a:match("^%-%-([%w%-]+)$")
    if not key then error("unexpected argument '" .. a .. "' (see the header of " .. script .. ")", 0) end
    key = key:gsub("%-", "_")
    local flag = "--" .. key:gsub("_", "-")
    if key == "help" then
      io.write(io.open(script):read("*a"):match("^(.-)\nlocal"), "\n")
      os.exit(0)
    elseif flags[key] then
      opts[key], given[key] = true, true
    else
      local v = argv[i + 1]
      if v == nil then error(flag .. " needs a value", 0) end
      if numeric[key] then
        local n = tonumber(v)
        if n == nil then error(flag .. " needs a number, got '" .. v .. "'", 0) end
        v = check.number("", flag, n, numeric[key])
      elseif not strings[key] then
        error("unknown option " .. flag, 0)
      end
      opts[key], given[key] = v, true
      i = i + 1
    end
    i = i + 1
  end
  return opts, given
end

-- one JSON object on a line, keys in order (integers as integers, strings quoted, NaN and infinities null)
function M.json_line(t, order)
  local parts = {}
  for _, k in ipairs(order) do
    local v = t[k]
    local s
    if type(v) == "string" then s = string.format("%q", v):gsub("\\\n", "\\n")
    elseif v ~= v or v == math.huge or v == -math.huge then s = "null"        -- JSON has no NaN or infinity
    elseif v == math.floor(v) and math.abs(v) < 2 ^ 53 then s = string.format("%d", v)
    else s = string.format("%.6g", v) end
    parts[#parts + 1] = string.format("%q:%s", k, s)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- the corpus and its tokens -----------------------------------------------------------------------
local function suffixes(s)
  local out = {}
  for x in s:gmatch("[^,]+") do out[#out + 1] = x end
  return out
end

-- the corpus at path (a file or a folder), refused with a message when it is missing or empty
function M.open_corpus(path, exclude)
  local ok, corpus = pcall(nnr.text.Corpus, path, { exclude = suffixes(exclude) })
  if not ok then error("--data " .. path .. ": " .. tostring(corpus):gsub("^Corpus: ", ""), 0) end
  if corpus:size() == 0 then error("--data " .. path .. ": the corpus is empty (no text to train on)", 0) end
  return corpus
end

function M.make_tokenizer(kind, corpus, bpe_vocab)
  local ok, tok
  if kind == "char" then ok, tok = pcall(nnr.text.CharVocab, corpus)
  else ok, tok = pcall(nnr.text.BPE.train, corpus, { vocab_size = bpe_vocab }) end
  if not ok then error("--tokens " .. kind .. ": " .. tostring(tok), 0) end
  return tok
end

-- a tokenizer as the text of its JSON file, and back (checkpoints hold strings)
function M.tokenizer_to_string(tok)
  local tmp = os.tmpname()
  tok:save(tmp)
  local f = assert(io.open(tmp, "rb"))
  local s = f:read("*a")
  f:close()
  os.remove(tmp)
  return s
end

function M.tokenizer_from_string(s, who)
  if type(s) ~= "string" then error(who .. ": the checkpoint has no tokenizer (not one written by train_charlm.lua?)", 0) end
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(s)
  f:close()
  local ok, tok = pcall(nnr.text.load, tmp)
  os.remove(tmp)
  if not ok then error(who .. ": its tokenizer: " .. tostring(tok), 0) end
  return tok
end

-- checkpoints ------------------------------------------------------------------------------------------
-- reads a checkpoint of train_charlm.lua: the model rebuilt from its config with its weights, the tokenizer
function M.load_model(path, who)
  local ok, ck = pcall(nnr.load_checkpoint, path)
  if not ok then error(who .. ": " .. tostring(ck), 0) end
  if type(ck.config) ~= "table" or type(ck.model) ~= "table" then
    error(who .. ": " .. path .. " holds no language model (not a checkpoint written by train_charlm.lua --save?)", 0)
  end
  local built, model = pcall(nnr.models.build, ck.config)
  if not built then error(who .. ": its model config: " .. tostring(model), 0) end
  local loaded, err = pcall(model.load_state_dict, model, ck.model)
  if not loaded then error(who .. ": " .. tostring(err), 0) end
  local tok = M.tokenizer_from_string(ck.tokenizer, who)
  if tok.vocab_size ~= ck.config.vocab_size then
    error(string.format("%s: the tokenizer has %d tokens, the model %d", who, tok.vocab_size, ck.config.vocab_size), 0)
  end
  return model, tok, ck
end

-- the learning rate at step s (1-based) of n: linear warm-up over `warmup` steps, then a cosine from lr
-- down to min_lr at step n (nanoGPT's schedule)
function M.lr_at(s, n, lr, min_lr, warmup)
  if s <= warmup then return lr * s / warmup end
  if n <= warmup then return lr end
  local progress = math.min(1, (s - warmup) / (n - warmup))
  return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
end

return M
