-- nnr.data datasets beyond tensors: CSV, binary records, image folders, Lua datasets,
-- Subset/ConcatDataset/random_split, samplers, collate, and their faults.
local nnr = require "nnr"
local data = nnr.data

local tmp = os.tmpname()
os.remove(tmp)
os.execute("mkdir -p " .. tmp)
local function path(name) return tmp .. "/" .. name end
local function write(name, text)
  local f = assert(io.open(path(name), "wb"))
  f:write(text)
  f:close()
  return path(name)
end
local function batches(loader)
  local out = {}
  for x, y in loader:iter() do out[#out + 1] = { x = x:totable(), y = y and y:totable() } end
  return out
end
local function err_of(fn)
  local ok, e = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

teardown(function() os.execute("rm -rf " .. tmp) end)

describe("CSVDataset", function()
  it("reads numeric columns, a named label column and quoted fields", function()
    local p = write("a.csv", 'f1,"label",f2\n1.5,0,"2"\n-3,2,4e1\r\n\n" 5 ",1,6\n')
    local ds = data.CSVDataset(p, { label = "label" })
    assert.equal(3, ds:len())
    local x, y = ds:get(1)
    assert.same({ 1.5, 2 }, x:totable())
    assert.equal(1, y:item())                    -- class 0 in the file is 1 here
    assert.equal("i64", y.dtype)
    local b = batches(data.DataLoader(ds, { batch_size = 3, num_workers = 2 }))
    assert.same({ { 1.5, 2 }, { -3, 40 }, { 5, 6 } }, b[1].x)
    assert.same({ 1, 3, 2 }, b[1].y)
    local reg = data.CSVDataset(p, { label = 3, classes = false })
    local _, r = reg:get(2)
    assert.equal(40, r:item())
    local plain = data.CSVDataset(write("b.csv", "1;2\n3;4\n"), { header = false, delimiter = ";" })
    local px, py = plain:get(2)
    assert.same({ 3, 4 }, px:totable())
    assert.is_nil(py)
  end)

  it("names the file, the line and the column of bad input", function()
    assert.matches("b%.csv:3: column 2: \"x\" is not a number",
      err_of(function() data.CSVDataset(write("b.csv", "a,b\n1,2\n3,x\n"), {}) end))
    assert.matches("c%.csv:3: 3 fields, expected 2", err_of(function() data.CSVDataset(write("c.csv", "a,b\n1,2\n3,4,5\n")) end))
    assert.matches("d%.csv:2: a quoted field is not closed", err_of(function() data.CSVDataset(write("d.csv", "a,b\n1,\"2\n")) end))
    assert.matches("no column named \"y\"", err_of(function() data.CSVDataset(write("e.csv", "a,b\n1,2\n"), { label = "y" }) end))
    assert.matches("label 1.5 is not a class", err_of(function() data.CSVDataset(write("f.csv", "a,b\n1,1.5\n"), { label = 2 }) end))
    assert.matches("cannot open", err_of(function() data.CSVDataset(path("missing.csv")) end))
  end)

  it("refuses files that would make a dataset that lies", function()
    assert.matches("empty%.csv: the file is empty", err_of(function() data.CSVDataset(write("empty.csv", "")) end))
    assert.matches("blank%.csv: the file is empty", err_of(function() data.CSVDataset(write("blank.csv", "\n\n")) end))
    assert.matches("hdr%.csv: no records after the header", err_of(function() data.CSVDataset(write("hdr.csv", "a,b\n")) end))
    assert.matches("nul%.csv:2: column 2: the field holds a NUL byte",
      err_of(function() data.CSVDataset(write("nul.csv", "a,b\n1,2\0003\n")) end))
    assert.matches("label %(a 1%-based column number%) must be an integer",
      err_of(function() data.CSVDataset(write("g.csv", "a,b\n1,2\n"), { label = 1.5 }) end))
    assert.matches("label %(a 1%-based column number%) must be an integer in %[1",
      err_of(function() data.CSVDataset(write("g.csv", "a,b\n1,2\n"), { label = 0 }) end))
    assert.matches("unknown option 'lable'", err_of(function() data.CSVDataset(write("g.csv", "a,b\n1,2\n"), { lable = 2 }) end))
  end)
end)

describe("BinaryRecordDataset", function()
  it("reads fields of memory-mapped records, labels as classes", function()
    -- a 4-byte header, then records of: label u8, 2x3 u8 pixels, one padding byte
    local bytes = { "HEAD" }
    for r = 0, 4 do
      bytes[#bytes + 1] = string.char(r % 2)
      for k = 1, 6 do bytes[#bytes + 1] = string.char(10 * r + k) end
      bytes[#bytes + 1] = "\0"
    end
    local p = write("rec.bin", table.concat(bytes))
    local ds = data.BinaryRecordDataset(p, { header = 4, record_size = 8, offset = 1, shape = { 2, 3 }, label_offset = 0 })
    assert.equal(5, ds:len())
    local x, y = ds:get(3)
    assert.same({ { 21, 22, 23 }, { 24, 25, 26 } }, x:totable())
    assert.equal(1, y:item())
    local b = batches(data.DataLoader(ds, { batch_size = 5, num_workers = 1, transform = data.ToFloat(1) }))
    assert.same({ 5, 1, 2, 3 }, { #b[1].x, #b[1].x[1], #b[1].x[1][1], #b[1].x[1][1][1] })
    assert.same({ 1, 2, 1, 2, 1 }, b[1].y)
    assert.matches("not a 4%-byte header and whole 7%-byte records",
      err_of(function() data.BinaryRecordDataset(p, { header = 4, record_size = 7, shape = { 6 } }) end))
    assert.matches("do not fit a 4%-byte record",
      err_of(function() data.BinaryRecordDataset(p, { header = 4, record_size = 4, shape = { 6 } }) end))
    assert.matches("do not fit", err_of(function()
      data.BinaryRecordDataset(p, { header = 4, record_size = 8, offset = 2 ^ 53, shape = { 6 } }) end))
  end)

  it("checks float class labels as CSV's are (NaN, 2.5 and -1 are not classes)", function()
    local f = ffi and ffi or require("ffi")
    local vals = f.new("float[4]", { 1, 0 / 0, 2.5, -1 })
    local p = write("flab.bin", f.string(vals, 16))
    local ds = data.BinaryRecordDataset(p, { shape = { 0 + 1 }, dtype = "u8", record_size = 4, label_offset = 0, label_dtype = "f32" })
    local _, y = ds:get(1)
    assert.equal(2, y:item())
    for i = 2, 4 do assert.matches("sample " .. i .. ": label .* is not a class number", err_of(function() ds:get(i) end)) end
    assert.matches("sample 2: label nan is not a class number",
      err_of(function() for _ in data.DataLoader(ds, { batch_size = 4 }):iter() do end end))
    local raw = data.BinaryRecordDataset(p, { shape = { 1 }, record_size = 4, label_offset = 0, label_dtype = "f32", raw_labels = true })
    local _, r = raw:get(3)
    assert.equal(2.5, r:item())
  end)
end)

describe("transforms", function()
  it("refuse what would divide by zero or truncate, and normalize per channel whatever the means", function()
    assert.matches("Normalize: std is 0", err_of(function() data.Normalize(0.5, 0) end))
    assert.matches("Normalize: std%[2%] must be a finite number", err_of(function() data.Normalize({ 0, 0, 0 }, { 1, 0 / 0, 1 }) end))
    assert.matches("RandomCrop: size must be an integer", err_of(function() data.RandomCrop(2.5) end))
    assert.matches("RandomHorizontalFlip: p must be a finite number in %[0, 1%]", err_of(function() data.RandomHorizontalFlip(2) end))
    -- channel 2's mean is 0: each channel still gets its own statistics
    local x = nnr.ones(3, 2, 2) * 2
    local ds = data.TensorDataset(x:unsqueeze(1))
    local loader = data.DataLoader(ds, { batch_size = 1, transform = data.Normalize({ 1, 0, -1 }, { 1, 2, 4 }) })
    for b in loader:iter() do
      assert.same({ 1, 1, 0.75 }, { b[1][1][1][1], b[1][2][1][1], b[1][3][1][1] })
    end
  end)
end)

describe("ImageFolder", function()
  local root = path("images")
  setup(function()
    os.execute("mkdir -p " .. root .. "/cat " .. root .. "/dog " .. root .. "/empty")
    nnr.manual_seed(4)
    for k = 1, 3 do
      data.save_image(root .. "/cat/c" .. k .. ".png", (nnr.rand(3, 6, 5) * 255):byte())
      data.save_image(root .. "/dog/d" .. k .. ".jpg", (nnr.rand(3, 6, 5) * 255):byte(), 95)
    end
    write("images/dog/notes.txt", "not an image")
  end)

  it("labels sorted class folders and decodes PNG exactly and JPEG closely", function()
    local ds = data.ImageFolder(root)
    assert.same({ "cat", "dog", "empty" }, ds.classes)
    assert.equal(6, ds:len())
    local img = (nnr.rand(3, 4, 7) * 255):byte()
    data.save_image(path("exact.png"), img)
    assert.same(img:totable(), data.load_image(path("exact.png")):totable())
    local grey = data.load_image(path("exact.png"), 1)
    assert.same({ 1, 4, 7 }, grey.shape)
    local x, y = ds:get(4)
    assert.same({ 3, 6, 5 }, x.shape)
    assert.equal(2, y:item())
    -- JPEG at quality 95 of smooth content stays close
    local smooth = nnr.arange(0, 16):view(1, 1, 16):expand(3, 16, 16):mul(8):byte()
    data.save_image(path("smooth.jpg"), smooth, 95)
    local back = data.load_image(path("smooth.jpg"), 3)
    assert.is_true((back:float() - smooth:float()):abs():mean():item() < 8)
  end)

  it("batches through transforms in the workers, the same for any worker count", function()
    local ds = data.ImageFolder(root)
    local opts = function(w)
      return { batch_size = 4, shuffle = true, seed = 2, num_workers = w,
               transform = { data.ToFloat(), data.Resize(8), data.RandomHorizontalFlip() } }
    end
    local ref = batches(data.DataLoader(ds, opts(0)))
    assert.same({ 4, 3, 8, 8 }, { #ref[1].x, #ref[1].x[1], #ref[1].x[1][1], #ref[1].x[1][1][1] })
    for w = 1, 4 do assert.same(ref, batches(data.DataLoader(ds, opts(w)))) end
    -- without a resize, images of different sizes cannot share a batch
    data.save_image(root .. "/cat/c4.png", (nnr.rand(3, 7, 5) * 255):byte())
    local mixed = data.ImageFolder(root)
    assert.matches("c4%.png: shape %[3, 7, 5%] differs from the batch's %[3, 6, 5%]",
      err_of(function() batches(data.DataLoader(mixed, { batch_size = 7, num_workers = 2 })) end))
    os.remove(root .. "/cat/c4.png")
  end)

  it("reports corrupt and truncated images with the file and the sample", function()
    local good = io.open(root .. "/dog/d1.jpg", "rb"):read("*a")
    write("images/dog/d0.jpg", good:sub(1, math.floor(#good / 2)))
    local png = io.open(root .. "/cat/c1.png", "rb"):read("*a")
    write("images/cat/c0.png", png:sub(1, 40))
    write("images/cat/c00.png", "\137PNG\r\n\26\ngarbage")
    local ds = data.ImageFolder(root)
    local e = err_of(function() batches(data.DataLoader(ds, { batch_size = 2, num_workers = 2 })) end)
    assert.matches("DataLoader over ImageFolder%(.*images, 9 samples%): batch 1 of epoch 1: sample 1: .*c0%.png: corrupt", e)
    assert.matches("sample 6: .*d0%.jpg: corrupt", err_of(function() ds:get(6) end))
    assert.matches("c00%.png: corrupt PNG", err_of(function() ds:get(2) end))
    data.save_image(path("noise.jpg"), (nnr.rand(3, 64, 64) * 255):byte())
    local noise = io.open(path("noise.jpg"), "rb"):read("*a")
    write("cut.jpg", noise:sub(1, math.floor(#noise * 0.7)))
    assert.matches("cut%.jpg: corrupt or truncated JPEG", err_of(function() data.load_image(path("cut.jpg")) end))
    assert.matches("not a PNG or JPEG", err_of(function() data.load_image(path("a.csv")) end))
    os.remove(root .. "/dog/d0.jpg"); os.remove(root .. "/cat/c0.png"); os.remove(root .. "/cat/c00.png")
    assert.matches("cannot read the folder", err_of(function() data.ImageFolder(path("nowhere")) end))
  end)
end)

describe("Lua datasets", function()
  local Squares = {}
  Squares.__index = Squares
  Squares.__len = function(self) return self.n end
  function Squares:get(i) return nnr.tensor({ i, i * i, math.random() }), i % 3 end
  local ds = setmetatable({ n = 11, name = "Squares" }, Squares)

  it("run in per-worker states with the same batches for 0 to 4 workers", function()
    local ref = batches(data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 7, num_workers = 0 }))
    assert.equal(3, #ref)
    assert.same({ 4, 3 }, { #ref[1].x, #ref[1].x[1] })
    for w = 1, 4 do assert.same(ref, batches(data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 7, num_workers = w }))) end
    for _, b in ipairs(ref) do
      for k, row in ipairs(b.x) do assert.equal(row[1] * row[1], row[2]); assert.equal(row[1] % 3, b.y[k]) end
    end
  end)

  it("take Lua transforms and collate functions, and tensors captured by the dataset", function()
    local table_ds = { get = function(self, i) return self.rows[i], self.labels[i] end, rows = nnr.randn(9, 2), labels = nnr.arange(1, 10) }
    table_ds.len = function(self) return 9 end
    local scale = 10
    local l = data.DataLoader(table_ds, { batch_size = 9, num_workers = 2, transform = function(x) return x * scale end,
      collate = function(samples)
        local xs, ys = {}, {}
        for i, s in ipairs(samples) do xs[i], ys[i] = s[1], s[2] end
        return nnr.stack(xs, 1), nnr.tensor(ys, { dtype = "f32" })
      end })
    local b = batches(l)[1]
    local H = require "helpers"
    H.assert_close((table_ds.rows * 10):totable(), b.x, 1e-6)
    assert.same(table_ds.labels:float():totable(), b.y)
  end)

  it("are told the loader's epoch, through Subset and ConcatDataset too", function()
    local Epochs = { get = function(_, i, epoch) return nnr.tensor({ i, epoch }) end, len = function() return 6 end }
    local wrapped = data.ConcatDataset { data.Subset(Epochs, { 6, 5, 4 }), Epochs }
    for w = 0, 2 do
      local l = data.DataLoader(wrapped, { batch_size = 9, num_workers = w })
      for e = 1, 3 do
        local b = batches(l)[1].x
        assert.same({ 6, e }, b[1])
        assert.same({ 1, e }, b[4])
        assert.same({ 6, e }, b[9])
      end
    end
  end)

  it("report a worker's error with the dataset, the sample and the cause", function()
    local bad = setmetatable({ n = 10, name = "Flaky" }, { __index = { get = function(_, i)
      if i == 7 then error("no sample seven") end
      return nnr.tensor({ i })
    end }, __len = function() return 10 end })
    for w = 0, 2 do
      local e = err_of(function() batches(data.DataLoader(bad, { batch_size = 4, num_workers = w })) end)
      assert.matches("DataLoader over Flaky: batch 2 of epoch 1: sample 7: .*no sample seven", e)
    end
    local file = io.open(path("x.csv"), "w")
    assert.matches("cannot send a userdata to the worker states %(at dataset%.file%)", err_of(function()
      data.DataLoader({ file = file, get = function() end, len = function() return 1 end }, { num_workers = 1 })
    end))
    file:close()
  end)
end)

describe("Subset, ConcatDataset, random_split and samplers", function()
  local a = data.TensorDataset(nnr.arange(10):view(10, 1), nnr.arange(1, 11))
  local b = data.TensorDataset(nnr.arange(100, 105):view(5, 1), nnr.arange(11, 16))

  it("compose C datasets without copying and Lua ones through get", function()
    local c = data.ConcatDataset({ a, b })
    assert.equal(15, c:len())
    local x = c:get(12)
    assert.same({ 101 }, x:totable())
    local s = data.Subset(c, { 15, 1, 11 })
    assert.same({ { { 104 }, { 0 }, { 100 } } }, { batches(data.DataLoader(s, { batch_size = 3, num_workers = 2 }))[1].x })
    local lua_ds = { get = function(_, i) return nnr.tensor({ -i }), i end, len = function() return 2 end }
    local mixed = data.ConcatDataset({ a, lua_ds })
    assert.equal(12, data.len(mixed))
    local mb = batches(data.DataLoader(mixed, { batch_size = 12, num_workers = 2 }))[1]
    assert.same({ 0 }, mb.x[1]); assert.same({ -2 }, mb.x[12])
    assert.matches("index 16 %(entry 1%) is outside 1..15", err_of(function() data.Subset(c, { 16 }) end))
    assert.matches("dataset 2 has samples", err_of(function()
      data.ConcatDataset({ a, data.TensorDataset(nnr.zeros(3, 2), nnr.arange(1, 4)) }) end))
  end)

  it("random_split gives disjoint seeded parts", function()
    local p1, p2 = data.random_split(a, { 0.7, 0.3 }, 5)
    assert.equal(7, p1:len()); assert.equal(3, p2:len())
    local seen = {}
    for _, part in ipairs({ p1, p2 }) do
      for _, i in ipairs(part.indices) do assert.is_nil(seen[i]); seen[i] = true end
    end
    local q1 = data.random_split(a, { 7, 3 }, 5)
    assert.same(p1.indices, q1.indices)
    assert.matches("sum to 9 but the dataset has 10", err_of(function() data.random_split(a, { 4, 5 }) end))
  end)

  it("samplers choose each epoch's order, and resume with it", function()
    local l = data.DataLoader(a, { batch_size = 2, sampler = data.SubsetRandomSampler({ 2, 4, 6, 8 }, { seed = 1 }), num_workers = 2 })
    assert.equal(2, #l)
    local e1 = batches(l)
    local ys = {}
    for _, bt in ipairs(e1) do for _, y in ipairs(bt.y) do ys[#ys + 1] = y end end
    table.sort(ys)
    assert.same({ 2, 4, 6, 8 }, ys)
    local w = data.DataLoader(a, { batch_size = 50, sampler = data.WeightedRandomSampler({ 0, 0, 1, 0, 0, 0, 0, 0, 0, 3 }, 100, { seed = 3 }) })
    local counts = {}
    for _, y in ipairs(batches(w)[1].y) do counts[y] = (counts[y] or 0) + 1 end
    assert.same({ 3, 10 }, (function() local k = {}; for y in pairs(counts) do k[#k + 1] = y end table.sort(k) return k end)())
    assert.is_true(counts[10] > counts[3])
    local fn = data.DataLoader(a, { batch_size = 3, sampler = function(epoch) return { epoch, epoch + 1, 10 } end })
    assert.same({ 1, 2, 10 }, batches(fn)[1].y)
    assert.same({ 2, 3, 10 }, batches(fn)[1].y)
    -- resume in the middle of a sampled epoch
    local mk = function() return data.DataLoader(a, { batch_size = 2, sampler = data.RandomSampler(10, { seed = 4 }), num_workers = 2 }) end
    local whole = mk()
    batches(whole)
    local full = batches(whole)                                    -- epoch 2
    local part = mk()
    batches(part)
    local it = part:iter()
    it(); it()
    local resumed = mk()
    resumed:load_state_dict(part:state_dict())
    local rest = batches(resumed)
    assert.equal(#full - 2, #rest)
    assert.same(full[3], rest[1])
    assert.matches("sampler gave index 11", err_of(function() batches(data.DataLoader(a, { sampler = { 11 } })) end))
    assert.matches("sampler and shuffle", err_of(function() data.DataLoader(a, { sampler = { 1 }, shuffle = true }) end))
    assert.matches("unknown option 'batchsize'", err_of(function() data.DataLoader(a, { batchsize = 3 }) end))
  end)
end)

describe("pin_memory", function()
  it("gives page-locked batches through the plugin that offers them, and ordinary ones otherwise", function()
    local plain = data.DataLoader(data.TensorDataset(nnr.randn(4, 2)), { batch_size = 2, pin_memory = true })
    for x in plain:iter() do assert.is_false(x:is_pinned()) end
    local dir = os.getenv("NNR_TEST_PLUGIN_DIR")
    if not dir then pending("NNR_TEST_PLUGIN_DIR is not set (run through ctest)"); return end
    -- the example backend pins with mlock; run where it is loaded
    local exe = io.popen("readlink -f /proc/$PPID/exe"):read("*l")
    local script = [[
      local nnr = require "nnr"; local data = nnr.data
      local t = nnr.randn(3, 4); local p = t:pin_memory()
      assert(p:is_pinned() and not t:is_pinned() and (p - t):abs():sum():item() == 0)
      local ds = data.TensorDataset(nnr.randn(10, 3), nnr.arange(1, 11))
      local lua_ds = { get = function(_, i) return nnr.tensor({ i }), i end, len = function() return 5 end }
      for _, d in ipairs({ ds, lua_ds }) do
        local l = data.DataLoader(d, { batch_size = 4, num_workers = 2, pin_memory = true })
        assert(l.pin_memory)
        for x, y in l:iter() do assert(x:is_pinned() and y:is_pinned()) end
      end
      print("pinned ok")
    ]]
    local f = io.popen(string.format("NNR_PLUGIN_PATH=%s/libtest_testdev.so %s -e %q 2>&1", dir, exe, script))
    local out = f:read("*a")
    f:close()
    assert.matches("pinned ok", out)
  end)
end)

describe("loader shutdown and memory", function()
  it("stops Lua workers on break, error and collection, and starts again cleanly", function()
    local ds = { get = function(_, i) return nnr.randn(8, 8) + i, i end, len = function() return 200 end }
    for round = 1, 3 do
      local l = data.DataLoader(ds, { batch_size = 4, num_workers = 3, prefetch = 6 })
      for x in l:iter() do if x then break end end                 -- break with batches in flight
      local it = l:iter()                                          -- a new epoch drains the old one
      it()
      assert.is_false(pcall(function() for _ in l:iter() do error("in the loop " .. round) end end))
      l = nil
      collectgarbage(); collectgarbage()                           -- the loader and its states go
    end
  end)

  it("keeps memory flat over epochs without collectgarbage()", function()
    if os.getenv("NNR_MEMCHECK") then pending("resident size means nothing under " .. os.getenv("NNR_MEMCHECK")); return end
    local ds = data.TensorDataset((nnr.rand(2000, 1, 28, 28) * 255):byte(), nnr.arange(1, 2001))
    local l = data.DataLoader(ds, { batch_size = 50, shuffle = true, num_workers = 4,
      transform = { data.ToFloat(), data.RandomCrop(28, 2), data.RandomHorizontalFlip() } })
    local function kib()
      for line in io.lines("/proc/self/status") do
        local v = line:match("^VmRSS:%s+(%d+)")
        if v then return tonumber(v) end
      end
    end
    -- the GC runs when tensor bytes grow by 32 MiB (core/allocator.c), about every 5 epochs of
    -- 6 MiB here: memory saws up and down; its peaks must not climb
    local function peak(epochs)
      local m = 0
      for _ = 1, epochs do
        for x, y in l:iter() do local _ = x:sum() + y:sum() end
        m = math.max(m, kib())
      end
      return m
    end
    local first, second = peak(12), peak(12)
    assert.is_true(second - first < 4 * 1024, string.format("peaks grew from %d to %d KiB", first, second))
  end)
end)
