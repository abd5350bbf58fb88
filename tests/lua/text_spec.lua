-- Text data (docs/sequence.md): nnr.data.TextDataset over bytes, folders and tokenizers, nnr.text.CharVocab
-- and nnr.text.BPE (checked against a plain-Lua reference trainer), their files, and their bad inputs.
local nnr = require "nnr"
local H = require "helpers"
local data, text = nnr.data, nnr.text

local tmp = os.tmpname()
os.remove(tmp)
os.execute("mkdir -p " .. tmp)
teardown(function() os.execute("rm -rf " .. tmp) end)
local function path(name) return tmp .. "/" .. name end
local function write(name, bytes)
  local f = assert(io.open(path(name), "wb"))
  f:write(bytes)
  f:close()
  return path(name)
end

local function utf8char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64) end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64, 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

-- n random bytes, with runs (longer than a BPE chunk), NULs and invalid UTF-8 among them
local function random_bytes(n)
  local out = {}
  while #out < n do
    local r = math.random()
    if r < 0.05 then for _ = 1, math.random(1, 150) do out[#out + 1] = string.char(math.random(0, 1) == 0 and 32 or 97) end
    elseif r < 0.1 then out[#out + 1] = "\xff\xfe\xc0\xaf\xed\xa0\x80\0"
    else out[#out + 1] = string.char(math.random(0, 255)) end
  end
  return table.concat(out):sub(1, n)
end

-- n words of a small alphabet, with spaces, line breaks, digits, punctuation and some multi-byte characters
local ALPHABET = { "a", "b", "c", "d", "e", "t", "h", "o", "n", utf8char(0xE9), utf8char(0x65E5) }
local function random_text(nwords)
  local out = {}
  for _ = 1, nwords do
    local w = {}
    for _ = 1, math.random(1, 6) do w[#w + 1] = ALPHABET[math.random(1, math.random() < 0.7 and 5 or #ALPHABET)] end
    local r = math.random()
    local sep = r < 0.7 and " " or r < 0.8 and "\n" or r < 0.85 and "  " or r < 0.9 and ", " or r < 0.95 and tostring(math.random(0, 999)) .. " " or "\t"
    out[#out + 1] = table.concat(w) .. sep
  end
  return table.concat(out)
end

local function key(t) return table.concat(t:totable(), ",") end
local function bytes_of(t) local out = {}; for k, v in ipairs(t) do out[k] = string.char(v - 1) end return table.concat(out) end

describe("TextDataset over bytes", function()
  it("gives windows of seq_len + 1 bytes as 1-based i64 ids, contiguous ones at stride offsets", function()
    H.reseed(11)
    local bytes = random_bytes(5000)
    local p = write("bytes.bin", bytes)
    local T = math.random(7, 40)
    local ds = data.TextDataset(p, { seq_len = T, windows = "contiguous" })
    assert.equal(math.floor((#bytes - 1 - T) / T) + 1, ds:len())
    assert.equal(256, ds.vocab_size)
    for _, i in ipairs { 1, 2, math.random(3, ds:len() - 1), ds:len() } do
      local x, y = ds:get(i)
      assert.equal("i64", x.dtype)
      assert.same({ T }, x:size())
      local o = (i - 1) * T
      assert.equal(bytes:sub(o + 1, o + T), bytes_of(x:totable()))
      assert.equal(bytes:sub(o + 2, o + T + 1), bytes_of(y:totable()))
      assert.equal(bytes:sub(o + 1, o + T), ds:decode(x))
    end
    local over = data.TextDataset(p, { seq_len = T, windows = "contiguous", stride = 3 })
    assert.equal(math.floor((#bytes - 1 - T) / 3) + 1, over:len())
    local x = over:get(over:len())
    local o = (over:len() - 1) * 3
    assert.equal(bytes:sub(o + 1, o + T), bytes_of(x:totable()))
  end)

  it("draws random windows from (seed, epoch, sample): the same every run, new each epoch", function()
    H.reseed(12)
    local bytes = random_bytes(3000)
    local p = write("random.bin", bytes)
    local T = 16
    local a, b = data.TextDataset(p, { seq_len = T, seed = 5 }), data.TextDataset(p, { seq_len = T, seed = 5 })
    local c = data.TextDataset(p, { seq_len = T, seed = 6 })
    assert.equal(math.floor((#bytes - 1) / T), a:len())
    local same, moved = 0, 0
    for i = 1, a:len() do
      local x, y = a:get(i)
      local s = bytes_of(x:totable())
      assert.equal(s:sub(2) .. bytes_of(y:totable()):sub(-1), bytes_of(y:totable()))
      assert.is_truthy(bytes:find(s .. bytes_of(y:totable()):sub(-1), 1, true))   -- a real window of the file
      assert.same(x:totable(), b:get(i):totable())
      assert.same(x:totable(), a:get(i, 1):totable())
      if key(x) == key(c:get(i)) then same = same + 1 end
      if key(x) ~= key(a:get(i, 2)) then moved = moved + 1 end
    end
    assert.is_true(same < a:len() / 10)
    assert.is_true(moved > a:len() * 0.9)
    assert.equal(7, data.TextDataset(p, { seq_len = T, samples = 7 }):len())
  end)

  it("feeds the DataLoader: batches are the dataset's samples of that epoch, whatever the workers", function()
    H.reseed(13)
    local p = write("loader.bin", random_bytes(4000))
    local ds = data.TextDataset(p, { seq_len = 24, seed = 3 })
    local function epochs(workers)
      local loader = data.DataLoader(ds, { batch_size = 8, num_workers = workers, shuffle = true, seed = 9 })
      local out = {}
      for e = 1, 2 do
        out[e] = {}
        for x, y in loader:iter() do out[e][#out[e] + 1] = { x = x:totable(), y = y:totable() } end
      end
      return out
    end
    local zero, two = epochs(0), epochs(2)
    assert.same(zero, two)
    assert.are_not.same(zero[1][1].x, zero[2][1].x)
    local order = data.permutation(ds:len(), 9, 2)     -- the loader's shuffle of epoch 2
    for k = 1, 8 do
      local x, y = ds:get(order[k], 2)
      assert.same(x:totable(), zero[2][1].x[k])
      assert.same(y:totable(), zero[2][1].y[k])
    end
    -- a Lua collate runs in worker states: they are told the epoch too
    local lua = data.DataLoader(ds, { batch_size = 8, num_workers = 2, shuffle = true, seed = 9,
                                      collate = function(s) return data.default_collate(s) end })
    local first
    for _ = 1, 2 do for x in lua:iter() do first = x; break end end
    assert.same(zero[2][1].x, first:totable())
  end)

  it("reads a folder's files in name order as one text, leaving out hidden files, sub-folders and excluded suffixes", function()
    os.execute("mkdir -p " .. path("folder/sub"))
    local parts = { ["folder/b.txt"] = random_text(30), ["folder/a.txt"] = random_text(40), ["folder/c"] = random_text(20) }
    for name, s in pairs(parts) do write(name, s) end
    write("folder/.hidden", "HIDDEN")
    write("folder/c.dat", "\0\1\2")
    write("folder/sub/d.txt", "SUB")
    local whole = parts["folder/a.txt"] .. parts["folder/b.txt"] .. parts["folder/c"]
    local corpus = text.Corpus(path("folder"), { exclude = { ".dat" } })
    local files = corpus:files()
    assert.same({ path("folder/a.txt"), path("folder/b.txt"), path("folder/c") }, { files[1].path, files[2].path, files[3].path })
    assert.equal(#whole, corpus:size())
    assert.equal(whole, corpus:sub(1, -1))
    assert.equal(whole:sub(-10, -3), corpus:sub(-10, -3))
    local T = 9
    local ds = data.TextDataset(path("folder"), { seq_len = T, windows = "contiguous", exclude = { ".dat" } })
    for i = 1, ds:len() do                       -- windows cross the files' boundaries as cat would
      assert.equal(whole:sub((i - 1) * T + 1, i * T), ds:decode(ds:get(i)))
    end
    local listed = data.TextDataset({ path("folder/c"), path("folder/a.txt") }, { seq_len = 4, windows = "contiguous" })
    assert.equal(parts["folder/c"]:sub(1, 4), listed:decode(listed:get(1)))
    assert.equal(#parts["folder/c"] + #parts["folder/a.txt"], listed.corpus:size())
  end)

  it("splits by position: train the first 1 - val_fraction of the tokens, val the rest in contiguous windows", function()
    H.reseed(14)
    local bytes = random_bytes(2000)
    local p = write("split.bin", bytes)
    local train = data.TextDataset(p, { seq_len = 10, split = "train", val_fraction = 0.25 })
    local val = data.TextDataset(p, { seq_len = 10, split = "val", val_fraction = 0.25 })
    assert.equal(1500, train.num_tokens)
    assert.equal(500, val.num_tokens)
    assert.equal("contiguous", val.windows)
    assert.equal(bytes:sub(1501, 1510), val:decode(val:get(1)))
    for i = 1, train:len() do
      local x, y = train:get(i)
      local s = bytes_of(x:totable()) .. bytes_of(y:totable()):sub(-1)
      local at = bytes:find(s, 1, true)
      assert.is_truthy(at and at + 10 <= 1500)
    end
  end)

  it("windows token ids given as a tensor", function()
    local ids = nnr.arange(1, 101, 1, { dtype = "i64" })
    local ds = data.TextDataset(ids, { seq_len = 5, windows = "contiguous" })
    assert.equal(19, ds:len())
    local x, y = ds:get(19)
    assert.same({ 91, 92, 93, 94, 95 }, x:totable())
    assert.same({ 92, 93, 94, 95, 96 }, y:totable())
  end)

  it("refuses bad input with clear errors", function()
    H.fails("TextDataset: cannot open .*missing%.txt: No such file", function() data.TextDataset(path("missing.txt"), { seq_len = 4 }) end)
    H.fails("TextDataset: .*empty%.txt is empty", function() data.TextDataset(write("empty.txt", ""), { seq_len = 4 }) end)
    local short = write("short.txt", string.rep("x", 50))
    H.fails("TextDataset: seq_len 50 is longer than the data: 50 bytes, and a window needs seq_len %+ 1 = 51",
      function() data.TextDataset(short, { seq_len = 50 }) end)
    H.fails("seq_len must be an integer in %[1", function() data.TextDataset(short, { seq_len = 0 }) end)
    H.fails("seq_len must be an integer", function() data.TextDataset(short, {}) end)
    H.fails("the val split has 5 bytes", function() data.TextDataset(short, { seq_len = 8, split = "val" }) end)
    H.fails("unknown option 'seqlen'", function() data.TextDataset(short, { seqlen = 4 }) end)
    H.fails("windows must be one of 'random', 'contiguous'", function() data.TextDataset(short, { seq_len = 4, windows = "all" }) end)
    H.fails("tokenizer must be an nnr%.text%.CharVocab or nnr%.text%.BPE", function() data.TextDataset(short, { seq_len = 4, tokenizer = {} }) end)
    H.fails("stride is for contiguous windows", function() data.TextDataset(short, { seq_len = 4, stride = 2 }) end)
    os.execute("mkdir -p " .. path("hidden_only"))
    write("hidden_only/.x", "abc")
    H.fails("the folder .*hidden_only has no files to read", function() data.TextDataset(path("hidden_only"), { seq_len = 1 }) end)
    os.execute("mkdir -p " .. path("empties"))
    write("empties/a", "")
    H.fails("every file is empty", function() data.TextDataset(path("empties"), { seq_len = 1 }) end)
    -- a non-text file with a character vocabulary: the file and the byte
    local vocab = text.CharVocab(text.Corpus.from_string("abc\n"))
    local bin = write("bin.dat", "abc\nabc\nabc\nabcab\0c")
    H.fails("CharVocab: .*bin%.dat is not text: a NUL byte at byte offset 17", function() text.CharVocab(bin) end)
    H.fails("TextDataset: CharVocab: .*bin%.dat is not text: a NUL byte at byte offset 17",
      function() data.TextDataset(bin, { seq_len = 2, tokenizer = vocab }) end)
    H.fails("CharVocab: .*latin1%.txt is not text: invalid UTF%-8 at byte offset 3 %(0xe9%)",
      function() text.CharVocab(write("latin1.txt", "caf\xe9 au lait")) end)
  end)
end)

describe("CharVocab", function()
  it("numbers a corpus's distinct characters in code point order, encodes and decodes them", function()
    H.reseed(21)
    local cps = { 10, 32, 33, 65, 97, 122, 0xE9, 0x3B1, 0x2014, 0x65E5, 0x1F600 }
    local pieces, seen = {}, {}
    for k = 1, 3000 do
      local cp = cps[math.random(1, #cps - 1)]
      seen[cp] = true
      pieces[k] = utf8char(cp)
    end
    local s = table.concat(pieces)
    local vocab = text.CharVocab(text.Corpus.from_string(s))
    local expect = {}
    for _, cp in ipairs(cps) do if seen[cp] then expect[#expect + 1] = cp end end
    assert.equal(#expect, vocab.vocab_size)
    for id, cp in ipairs(expect) do assert.equal(utf8char(cp), vocab:token(id)) end
    local ids = vocab:encode(s)
    assert.equal("i64", ids.dtype)
    assert.equal(3000, ids:numel())
    assert.equal(s, vocab:decode(ids))
    assert.equal(pieces[5], vocab:decode({ ids[5] }))
    -- a character outside the vocabulary (a prompt), and ids outside it
    H.fails("CharVocab: the character U%+1F600 '" .. utf8char(0x1F600) .. "' at byte offset 1 of the text is not in the vocabulary %(" ..
      #expect .. " characters%)", function() vocab:encode("a" .. utf8char(0x1F600)) end)
    H.fails("CharVocab: decode: id " .. (#expect + 1) .. " %(position 2%) is outside the vocabulary 1%.%." .. #expect,
      function() vocab:decode({ 1, #expect + 1 }) end)
    H.fails("id 0 %(position 1%) is outside", function() vocab:decode(nnr.zeros(2, { dtype = "i32" })) end)
    H.fails("decode takes integer ids, got f32", function() vocab:decode(nnr.ones(2)) end)
    H.fails("CharVocab: the text is not text: invalid UTF%-8 at byte offset 1", function() vocab:encode("a\xff") end)
  end)

  it("saves and loads, refusing files that lie", function()
    local vocab = text.CharVocab(text.Corpus.from_string("hello, w" .. utf8char(0xF6) .. "rld\n"))
    local p = path("chars.json")
    vocab:save(p)
    local back = text.CharVocab.load(p)
    assert.equal(vocab.vocab_size, back.vocab_size)
    assert.same(vocab:encode("world, hello"):totable(), back:encode("world, hello"):totable())
    assert.equal(vocab.vocab_size, text.load(p).vocab_size)
    local function bad(json, pattern)
      local f = write("bad_chars.json", json)
      H.fails("CharVocab%.load: .*bad_chars%.json: " .. pattern, function() text.CharVocab.load(f) end)
    end
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 2, "chars": [98, 97]}', "character 2 %(97%) is not above the one before it")
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 2, "chars": [97, 97]}', "character 2 %(97%) is not above")
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 1, "chars": [55296]}', "character 1 %(55296%) is a UTF%-16 surrogate")
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 1, "chars": [0]}', "character 1 must be a whole number in 1%.%.1114111")
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 1, "chars": [1114112]}', "character 1 must be a whole number")
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 3, "chars": [97, 98]}', '"chars" has 2 entries but vocab_size 3')
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 1, "chars": [97], "extra": 1}', 'unknown key "extra"')
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 1, "vocab_size": 1, "chars": [97]}', 'the key "vocab_size" appears twice')
    bad('{"type": "nnrun.charvocab", "version": 1, "vocab_size": 1, "chars": "a"}', '"chars" must be a list')
    local bpe_file = path("tiny.bpe.json")
    text.BPE.train(text.Corpus.from_string("aaaa"), { vocab_size = 257 }):save(bpe_file)
    H.fails("CharVocab%.load: .*tiny%.bpe%.json holds a BPE, not a CharVocab", function() text.CharVocab.load(bpe_file) end)
  end)
end)

-- a plain-Lua byte-level BPE after docs/sequence.md's rules: the chunks, then the most frequent pair (ties: the
-- smaller left id, then the smaller right id) merged left to right, over the distinct chunks weighted by count
local REF = {}
local function class(b)
  if b == 32 then return 0 end
  if b >= 9 and b <= 13 then return 1 end
  if b >= 128 or (b >= 97 and b <= 122) or (b >= 65 and b <= 90) then return 2 end
  if b >= 48 and b <= 57 then return 3 end
  return 4
end
function REF.chunks(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local last = math.min(n, i + 63)
    local c, j = class(s:byte(i)), i + 1
    if c == 0 and j <= n and class(s:byte(j)) >= 2 then c = class(s:byte(j)); j = j + 1 end
    if c >= 2 then
      while j <= last and class(s:byte(j)) == c do j = j + 1 end
    else
      while j <= n and j <= last + 1 and class(s:byte(j)) <= 1 do j = j + 1 end
      if j > last + 1 then j = last + 1
      elseif j <= n and j - i > 1 and s:byte(j - 1) == 32 then j = j - 1 end
    end
    out[#out + 1] = s:sub(i, j - 1)
    i = j
  end
  return out
end
local function merge_ids(ids, a, b, z)
  local out, k = {}, 1
  while k <= #ids do
    if k < #ids and ids[k] == a and ids[k + 1] == b then out[#out + 1] = z; k = k + 2 else out[#out + 1] = ids[k]; k = k + 1 end
  end
  return out
end
function REF.train(s, vocab_size, min_frequency)
  local counts, words = {}, {}
  for _, c in ipairs(REF.chunks(s)) do counts[c] = (counts[c] or 0) + 1 end
  for c, n in pairs(counts) do
    local ids = {}
    for k = 1, #c do ids[k] = c:byte(k) + 1 end
    words[#words + 1] = { ids = ids, n = n }
  end
  local merges = {}
  while 256 + #merges < vocab_size do
    local pc = {}
    for _, w in ipairs(words) do
      for k = 1, #w.ids - 1 do local key = w.ids[k] * 4194304 + w.ids[k + 1]; pc[key] = (pc[key] or 0) + w.n end
    end
    local best, bc
    for key, n in pairs(pc) do if not best or n > bc or (n == bc and key < best) then best, bc = key, n end end
    if not best or bc < (min_frequency or 2) then break end
    local a, b = math.floor(best / 4194304), best % 4194304
    merges[#merges + 1] = { a, b }
    for _, w in ipairs(words) do w.ids = merge_ids(w.ids, a, b, 256 + #merges) end
  end
  return merges
end
function REF.encode(merges, s)
  local rank = {}
  for k, m in ipairs(merges) do rank[m[1] * 4194304 + m[2]] = k end
  local out = {}
  for _, c in ipairs(REF.chunks(s)) do
    local ids = {}
    for k = 1, #c do ids[k] = c:byte(k) + 1 end
    while true do
      local best
      for k = 1, #ids - 1 do local r = rank[ids[k] * 4194304 + ids[k + 1]]; if r and (not best or r < best) then best = r end end
      if not best then break end
      ids = merge_ids(ids, merges[best][1], merges[best][2], 256 + best)
    end
    for _, id in ipairs(ids) do out[#out + 1] = id end
  end
  return out
end

describe("BPE", function()
  it("learns the merges the reference trainer learns and encodes as it does", function()
    H.reseed(31)
    for trial = 1, 3 do
      local s = random_text(400 + 200 * trial) .. random_bytes(200)
      local vocab_size = 256 + math.random(20, 80)
      local bpe = text.BPE.train(text.Corpus.from_string(s), { vocab_size = vocab_size })
      local ref = REF.train(s, vocab_size)
      assert.equal(256 + #ref, bpe.vocab_size)
      assert.same(ref, bpe:merges())
      local probe = random_text(100) .. random_bytes(100)
      assert.same(REF.encode(ref, probe), bpe:encode(probe):totable())
      for k, m in ipairs(ref) do assert.equal(bpe:token(m[1]) .. bpe:token(m[2]), bpe:token(256 + k)) end
    end
  end)

  it("round-trips any bytes exactly, invalid UTF-8 and NUL included", function()
    H.reseed(32)
    local bpe = text.BPE.train(text.Corpus.from_string(random_text(2000) .. random_bytes(3000)), { vocab_size = 400 })
    for _ = 1, 40 do
      local s = random_bytes(math.random(0, 3000))
      local ids = bpe:encode(s)
      assert.equal(s, bpe:decode(ids))
      assert.is_true(ids:numel() <= #s)
      if #s > 0 then assert.is_true(ids:min():item() >= 1 and ids:max():item() <= bpe.vocab_size) end
    end
    local s = random_text(500)
    assert.is_true(bpe:encode(s):numel() < #s * 0.8)     -- it compresses the kind of text it learnt
    assert.equal("", bpe:decode({}))
    assert.equal(0, bpe:encode(""):numel())
    H.fails("BPE: decode: id 401 %(position 3%) is outside the vocabulary 1%.%.400", function() bpe:decode({ 1, 2, 401 }) end)
    H.fails("BPE: decode: id %-1 %(position 1%)", function() bpe:decode(nnr.tensor({ -1 }, { dtype = "i64" })) end)
    H.fails("decode: entry 2 %(0%.5%) is not a whole number", function() bpe:decode({ 1, 0.5 }) end)
    H.fails("BPE: id 0 is outside the vocabulary", function() bpe:token(0) end)
  end)

  it("is deterministic, stops when no pair repeats and checks its options", function()
    H.reseed(33)
    local corpus = text.Corpus.from_string(random_text(800))
    local a, b = text.BPE.train(corpus, { vocab_size = 300 }), text.BPE.train(corpus, { vocab_size = 300 })
    assert.same(a:merges(), b:merges())
    local few = text.BPE.train(text.Corpus.from_string("abcd"), { vocab_size = 1000 })
    assert.equal(256, few.vocab_size)                               -- no pair occurs twice
    assert.equal(259, text.BPE.train(text.Corpus.from_string("abcd"), { vocab_size = 1000, min_frequency = 1 }).vocab_size)
    H.fails("BPE%.train: vocab_size must be an integer in %[256", function() text.BPE.train(corpus, { vocab_size = 100 }) end)
    H.fails("BPE%.train: min_frequency must be an integer", function() text.BPE.train(corpus, { min_frequency = 0 }) end)
    H.fails("BPE%.train: cannot open .*nowhere", function() text.BPE.train(path("nowhere")) end)
  end)

  it("saves and loads exactly, and refuses corrupt files naming the field", function()
    H.reseed(34)
    local bpe = text.BPE.train(text.Corpus.from_string(random_text(1500)), { vocab_size = 320 })
    local p = path("model.bpe.json")
    bpe:save(p)
    local back = text.BPE.load(p)
    assert.same(bpe:merges(), back:merges())
    local s = random_text(200) .. random_bytes(200)
    assert.same(bpe:encode(s):totable(), back:encode(s):totable())
    local head = '{"type": "nnrun.bpe", "version": 1, "chunks": "bytes64", '
    local function bad(json, pattern)
      local f = write("bad.bpe.json", json)
      H.fails("BPE%.load: .*bad%.bpe%.json: " .. pattern, function() text.BPE.load(f) end)
    end
    bad("", "the file is empty")
    bad("{", "not JSON %(a syntax error at byte offset")
    bad(head .. '"vocab_size": 256, "merges": []} x', "not JSON %(something after the document at byte offset")
    bad("[1, 2]", "the document must be an object")
    bad('{"type": "gpt2"}', 'not a tokenizer file %("type" must be "nnrun.bpe" or "nnrun.charvocab"%)')
    bad('{"type": "nnrun.bpe", "version": 2}', "format version 2; this nnrun reads version 1")
    bad('{"type": "nnrun.bpe", "version": 1.5}', "version must be a whole number")
    bad(head .. '"vocab_size": 257, "merges": [[300, 1]]}', "merge 1's tokens must be a whole number in 1%.%.256")
    bad(head .. '"vocab_size": 258, "merges": [[98, 98], [258, 1]]}', "merge 2's tokens must be a whole number in 1%.%.257")
    bad(head .. '"vocab_size": 257, "merges": [[1]]}', "merge 1 must be a pair of token ids")
    bad(head .. '"vocab_size": 257, "merges": [[1, 2.5]]}', "merge 1's tokens must be a whole number")
    bad(head .. '"vocab_size": 257, "merges": [["a", "b"]]}', "merge 1's tokens must be a whole number")
    bad(head .. '"vocab_size": 258, "merges": [[98, 98], [98, 98]]}', "merge 2 repeats the pair %(98, 98%) of merge 1")
    bad(head .. '"vocab_size": 259, "merges": [[98, 98]]}', '"merges" has 1 entries but vocab_size 259 says 3')
    bad(head .. '"vocab_size": 100, "merges": []}', "vocab_size 100 is below the 256 byte tokens")
    bad(head .. '"vocab_size": 1e300, "merges": []}', "vocab_size must be a whole number in 1%.%.1048576")
    bad(head .. '"vocab_size": 256}', 'the key "merges" is missing')
    bad('{"type": "nnrun.bpe", "version": 1, "chunks": "gpt2", "vocab_size": 256, "merges": []}', '"chunks" must be "bytes64"')
    bad(head .. '"vocab_size": 256, "merges": [], "merges": []}', 'the key "merges" appears twice')
    -- merges that double a token's length: the seventh would make 128 bytes, longer than any chunk
    bad(head .. '"vocab_size": 263, "merges": [[98, 98], [257, 257], [258, 258], [259, 259], [260, 260], [261, 261], [262, 262]]}',
      "merge 7 %(262, 262%) makes a token of 128 bytes; chunks, and so tokens, have at most 64")
    bad(head .. '"vocab_size": 256, "merges": [' .. string.rep("[1, 1], ", 2 ^ 21) .. ']}', "%d+ values, more than a tokenizer of the largest vocabulary")
    H.fails("BPE%.load: .*absent%.json: cannot open: No such file", function() text.BPE.load(path("absent.json")) end)
    H.fails("save .*no/such/dir/x%.json: cannot create a temporary file", function() bpe:save(path("no/such/dir/x.json")) end)
  end)

  it("trains on the fortunes corpus in well under a second and round-trips it", function()
    local dir = "/usr/share/games/fortunes"
    local f = io.open(dir .. "/fortunes", "rb")
    if not f then pending("Debian's fortunes package is not installed (scripts/setup.sh installs it)"); return end
    f:close()
    local corpus = text.Corpus(dir, { exclude = { ".dat", ".u8" } })
    assert.is_true(corpus:size() > 2e6)
    local t0 = nnr.clock()
    local bpe = text.BPE.train(corpus, { vocab_size = 1024 })
    local trained = nnr.clock() - t0
    assert.equal(1024, bpe.vocab_size)
    assert.is_true(trained < 5, "BPE training took " .. trained .. " s")
    local ds = data.TextDataset(dir, { seq_len = 64, tokenizer = bpe, exclude = { ".dat", ".u8" } })
    assert.is_true(ds.num_tokens < corpus:size() / 2)
    assert.equal(corpus:sub(1, -1), bpe:decode(ds.tokens))
    local x, y = ds:get(ds:len())
    assert.equal(bpe:decode(x):sub(#bpe:token(x[1]) + 1) .. bpe:token(y[64]), bpe:decode(y))
  end)
end)
