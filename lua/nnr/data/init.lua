-- nnr.data: datasets, transforms and the DataLoader (DESIGN.md decision 8).
--
--   local data = nnr.data
--   local ds = data.IDXDataset(images_path, labels_path)
--   local loader = data.DataLoader(ds, {batch_size = 64, shuffle = true, seed = 1, num_workers = 2,
--     transform = data.Compose{data.ToFloat(1/255), data.Normalize(0.286, 0.353), data.RandomCrop(28, 2)}})
--   for x, y in loader:iter() do ... end          -- #loader batches per epoch
--
-- Batches are assembled and transformed in C on libuv's worker pool, ahead of
-- use and in order; batch k of epoch e depends only on (seed, e, k), so the
-- worker count never changes the data and a position can be saved and resumed.
local binding = require "nnr.binding"
local V = require "nnr.check"
local ffi, C = binding.ffi, binding.C

local M = {}

-- datasets -------------------------------------------------------------------------------
-- A C-backed dataset is a table with `handle` (an nnr_dataset*, shared read-only with the
-- loader's workers). A Lua dataset is any table with get(i) and a length (__len, len() or #).
local CDataset = {}
CDataset.__index = CDataset
M._CDataset = CDataset

local function owned_dataset(p) if p == nil then binding.raise() end return ffi.gc(p, C.nnr_dataset_release) end

local function cdataset(handle, fields, class)
  local self = fields or {}
  self.handle = owned_dataset(handle)
  return setmetatable(self, class or CDataset)
end

-- wraps an nnr_dataset* from another state (a worker's copy: the pool keeps the original alive)
function M._wrap(p)
  C.nnr_dataset_retain(p)
  return cdataset(p)
end

local tensor_pair = ffi.new("nnr_tensor *[2]")
function CDataset:len() return tonumber(C.nnr_dataset_length(self.handle)) end
-- sample i (1-based) as tensors x[, y]; epoch (default 1, the loader's first) matters to random text windows only
function CDataset:get(i, epoch)
  if type(i) ~= "number" or i ~= math.floor(i) then error("dataset:get: expected an integer index, got " .. tostring(i), 0) end
  if epoch ~= nil then V.integer("dataset:get", "epoch", epoch, 0) end
  binding.check(C.nnr_dataset_get_epoch(self.handle, i - 1, epoch or 1, tensor_pair, tensor_pair + 1))
  local x = binding.own(tensor_pair[0])
  local y = tensor_pair[1] ~= nil and binding.own(tensor_pair[1]) or nil
  return x, y
end
function CDataset:__tostring() return string.format("%s(%d samples)", self.kind or "Dataset", self:len()) end

local function is_cdataset(ds) return type(ds) == "table" and rawget(ds, "handle") ~= nil and type(ds.handle) == "cdata" end
M.is_cdataset = is_cdataset

-- the length of any dataset: C-backed, __len (LuaJIT does not call it for tables), len(), or #
local function dataset_len(ds)
  if is_cdataset(ds) then return ds:len() end
  local mt = getmetatable(ds)
  if mt and mt.__len then return mt.__len(ds) end
  if type(ds.len) == "function" then return ds:len() end
  return #ds
end
M.len = dataset_len

-- get(ds, i, epoch): the dataset's get method, told the epoch (or ds[i] for a plain list of samples)
function M._getter(ds)
  if type(ds.get) == "function" then return function(d, i, epoch) return d:get(i, epoch) end end
  return function(d, i) local s = d[i]; if type(s) == "table" and not require("nnr").is_tensor(s) then return s[1], s[2] end return s end
end

-- samples are the rows of x (and y)
function M.TensorDataset(x, y)
  local nnr = require "nnr"
  if not nnr.is_tensor(x) or (y ~= nil and not nnr.is_tensor(y)) then error("TensorDataset: expected tensors", 0) end
  if y and y:size(1) ~= x:size(1) then
    error(string.format("TensorDataset: %d samples but %d targets", x:size(1), y:size(1)), 0)
  end
  return cdataset(C.nnr_dataset_tensors(x.p, y and y.p or nil), { x = x, y = y, kind = "TensorDataset" })
end

-- an IDX pair (the MNIST family, raw or gzip); labels become 1-based i64 classes unless raw_labels
function M.IDXDataset(images, labels, opts)
  local nnr = require "nnr"
  local x = nnr.load_idx(images)
  opts = V.options("IDXDataset", opts, { raw_labels = true })
  local y = labels and nnr.load_idx(labels) or nil
  if y and not opts.raw_labels then
    -- classes are whole numbers >= 0 (a float label file may hold NaN or 2.5: not classes)
    if y:is_floating_point() then
      for k, v in ipairs(y:reshape(-1):totable()) do
        if not (v >= 0 and v == math.floor(v) and v < 2 ^ 53) then
          error(string.format("IDXDataset: %s: label %s of sample %d is not a class number (0, 1, ...; raw_labels = true keeps the values)",
            labels, V.show(v), k), 0)
        end
      end
    end
    y = y:long():add_(1)
  end
  local ds = M.TensorDataset(x, y)
  ds.kind = "IDXDataset"
  return ds
end

-- CSVDataset(path, {label = name or column (1-based), header = true, delimiter = ",", classes = true})
-- numeric columns become f32 features; the label column i64 classes (0-based in the file, 1-based here)
-- or, with classes = false, f32 targets
function M.CSVDataset(path, opts)
  opts = V.options("CSVDataset", opts, { label = true, header = true, delimiter = true, classes = true })
  V.path("CSVDataset", "path", path)
  local header = opts.header == nil or V.boolean("CSVDataset", "header", opts.header)
  if opts.classes ~= nil then V.boolean("CSVDataset", "classes", opts.classes) end
  local delim = opts.delimiter or ","
  if type(delim) ~= "string" or #delim ~= 1 or delim == "\n" or delim == "\r" or delim == '"' or delim == "\0" then
    error("CSVDataset: delimiter must be one character other than a quote, a line break or NUL, got " .. V.show(delim), 0)
  end
  local label_name, label_col = nil, -1
  if type(opts.label) == "string" then
    if opts.label == "" or opts.label:find("\0", 1, true) then error("CSVDataset: label must be a column name without NUL bytes", 0) end
    label_name = opts.label
  elseif type(opts.label) == "number" then label_col = V.integer("CSVDataset", "label (a 1-based column number)", opts.label, 1, 2 ^ 31 - 1) - 1
  elseif opts.label ~= nil then error("CSVDataset: label must be a column name or a 1-based column number, got " .. type(opts.label), 0) end
  binding.check(C.nnr_load_csv(path, header and 1 or 0, label_name, label_col, delim:byte(), opts.classes == false and 0 or 1,
    tensor_pair, tensor_pair + 1))
  local x = binding.own(tensor_pair[0])
  local y = tensor_pair[1] ~= nil and binding.own(tensor_pair[1]) or nil
  local ds = M.TensorDataset(x, y)
  ds.kind = "CSVDataset"
  ds.path = path
  return ds
end

-- BinaryRecordDataset(path, {shape = {...}, dtype = "u8", header = 0, record_size, offset = 0,
--   label_offset, label_dtype = "u8", raw_labels = false}): fixed-size records of a memory-mapped file
function M.BinaryRecordDataset(path, opts)
  local who = "BinaryRecordDataset"
  opts = V.options(who, opts, { shape = true, dtype = true, header = true, record_size = true, offset = true, label_offset = true,
                                label_dtype = true, raw_labels = true })
  local shape = opts.shape or error("BinaryRecordDataset: shape (the sample's dimensions) is required", 0)
  if type(shape) == "number" then shape = { shape } end
  if type(shape) ~= "table" or #shape > 7 then error("BinaryRecordDataset: shape must be a list of at most 7 sizes", 0) end
  local xdt = binding.dtype_id(opts.dtype or "u8", who)
  local ydt = binding.dtype_id(opts.label_dtype or "u8", who)
  local sizes = ffi.new("int64_t[?]", math.max(#shape, 1))
  local xbytes = C.nnr_dtype_size(xdt)
  for i, v in ipairs(shape) do sizes[i - 1] = V.integer(who, "shape[" .. i .. "]", v, 1); xbytes = xbytes * v end
  local offset = V.integer(who, "offset", opts.offset or 0, 0)
  V.integer(who, "header", opts.header or 0, 0)
  local label_offset = opts.label_offset == nil and -1 or V.integer(who, "label_offset", opts.label_offset, 0)
  if opts.record_size ~= nil then V.integer(who, "record_size", opts.record_size, 1) end
  if opts.raw_labels ~= nil then V.boolean(who, "raw_labels", opts.raw_labels) end
  local record = opts.record_size or math.max(offset + xbytes, label_offset >= 0 and label_offset + C.nnr_dtype_size(ydt) or 0)
  local h = C.nnr_dataset_records(V.path(who, "path", path), opts.header or 0, record, offset, xdt, #shape, sizes, label_offset, ydt,
    (label_offset >= 0 and not opts.raw_labels) and 1 or 0)
  return cdataset(h, { kind = "BinaryRecordDataset", path = path })
end

-- ImageFolder(root, {channels = 3}): root/<class>/<image>.png|jpg|jpeg, classes sorted by name and
-- numbered from 1 (ds.classes); images are decoded by the loader's workers into u8 [C, H, W]
function M.ImageFolder(root, opts)
  opts = V.options("ImageFolder", opts, { channels = true })
  local channels = opts.channels == nil and 3 or V.integer("ImageFolder", "channels", opts.channels, 0, 4)
  local ds = cdataset(C.nnr_dataset_image_folder(V.path("ImageFolder", "root", root), channels), { kind = "ImageFolder", root = root })
  ds.classes = {}
  for i = 1, C.nnr_dataset_class_count(ds.handle) do ds.classes[i] = ffi.string(C.nnr_dataset_class_name(ds.handle, i - 1)) end
  return ds
end

-- TextDataset(path, {seq_len, tokenizer, seed, windows, samples, stride, split, val_fraction, exclude}): windows of
-- text for language models (lua/nnr/data/text.lua, docs/sequence.md)
function M.TextDataset(source, opts) return require("nnr.data.text")(M, source, opts) end

-- a PNG or JPEG file as u8 [C, H, W] (channels: 0 as stored, 1, 3 or 4), and back
function M.load_image(path, channels)
  return binding.own(C.nnr_load_image(V.path("load_image", "path", path), V.integer("load_image", "channels", channels or 0, 0, 4)))
end
function M.save_image(path, image, quality)
  binding.check(C.nnr_save_image(V.path("save_image", "path", path), require("nnr.tensor").tp("save_image", image, "image"), V.integer("save_image", "quality", quality or 90, 1, 100)))
end

-- Subset, ConcatDataset and random_split: C-backed when their parts are, else Lua datasets
local LuaSubset = {}
LuaSubset.__index = LuaSubset
M._LuaSubset = LuaSubset
function LuaSubset:len() return #self.indices end
function LuaSubset:get(i, epoch) return self.getter(self.dataset, self.indices[i], epoch) end

-- the samples of dataset at the (1-based) indices
function M.Subset(dataset, indices)
  local n = dataset_len(dataset)
  for k, i in ipairs(indices) do
    if type(i) ~= "number" or i ~= math.floor(i) or i < 1 or i > n then
      error(string.format("Subset: index %s (entry %d) is outside 1..%d", tostring(i), k, n), 0)
    end
  end
  if is_cdataset(dataset) then
    local idx = ffi.new("int64_t[?]", math.max(#indices, 1))
    for k, i in ipairs(indices) do idx[k - 1] = i - 1 end
    return cdataset(C.nnr_dataset_subset(dataset.handle, #indices, idx), { kind = "Subset", dataset = dataset, indices = indices })
  end
  return setmetatable({ dataset = dataset, indices = indices, getter = M._getter(dataset) }, LuaSubset)
end

local LuaConcat = {}
LuaConcat.__index = LuaConcat
M._LuaConcat = LuaConcat
function LuaConcat:len() return self.offsets[#self.offsets] end
function LuaConcat:get(i, epoch)
  for k = 1, #self.parts do
    if i <= self.offsets[k + 1] then return self.getters[k](self.parts[k], i - self.offsets[k], epoch) end
  end
  error(string.format("ConcatDataset: index %d is outside 1..%d", i, self:len()), 0)
end

function M.ConcatDataset(parts)
  if type(parts) ~= "table" or #parts == 0 then error("ConcatDataset: expected a list of datasets", 0) end
  local all_c = true
  for _, p in ipairs(parts) do all_c = all_c and is_cdataset(p) end
  if all_c then
    local hs = ffi.new("nnr_dataset *[?]", #parts)
    for k, p in ipairs(parts) do hs[k - 1] = p.handle end
    return cdataset(C.nnr_dataset_concat(#parts, hs), { kind = "ConcatDataset", parts = parts })
  end
  local offsets, getters = { 0 }, {}
  for k, p in ipairs(parts) do offsets[k + 1] = offsets[k] + dataset_len(p); getters[k] = M._getter(p) end
  return setmetatable({ parts = parts, offsets = offsets, getters = getters }, LuaConcat)
end

-- random_split(dataset, {lengths} or {fractions}[, seed]): disjoint Subsets of a seeded permutation
function M.random_split(dataset, lengths, seed)
  local n = dataset_len(dataset)
  local sizes, total = {}, 0
  local fractions = true
  for _, l in ipairs(lengths) do fractions = fractions and l > 0 and l < 1 end
  if fractions then
    for k, f in ipairs(lengths) do sizes[k] = math.floor(f * n) end
    for _, s in ipairs(sizes) do total = total + s end
    for k = 1, n - total do local j = (k - 1) % #sizes + 1; sizes[j] = sizes[j] + 1 end    -- remainders round-robin
  else
    for k, l in ipairs(lengths) do sizes[k] = l end
  end
  total = 0
  for _, s in ipairs(sizes) do
    if s < 0 or s ~= math.floor(s) then error("random_split: lengths must be whole numbers or fractions in (0, 1)", 0) end
    total = total + s
  end
  if total ~= n then error(string.format("random_split: lengths sum to %d but the dataset has %d samples", total, n), 0) end
  local perm = M.permutation(n, seed or 0)
  local out, at = {}, 0
  for k, s in ipairs(sizes) do
    local idx = {}
    for j = 1, s do idx[j] = perm[at + j] end
    at = at + s
    out[k] = M.Subset(dataset, idx)
  end
  return unpack(out)
end

-- samplers ---------------------------------------------------------------------------------
-- A sampler gives each epoch's sample order: sampler:indices(epoch) -> {i1, i2, ...} (1-based), or a
-- function(epoch) returning that list. Samplers here draw from (seed, epoch) and repeat exactly.
-- the uniform numbers of the core's keyed stream for (seed, epoch): the one generator (core/base/random.c)
local function rng(seed, epoch)
  local buf, at, n, first = ffi.new("double[256]"), 256, 256, 0
  return function()
    if at == n then
      binding.check(C.nnr_random_uniforms(seed, C.NNR_STREAM_SAMPLER, epoch, first, n, buf))
      first, at = first + n, 0
    end
    at = at + 1
    return buf[at - 1]
  end
end

-- the seeded permutation of 1..n for (seed, epoch): the loader's own shuffle with that seed gives the same order
function M.permutation(n, seed, epoch)
  if type(n) ~= "number" or n < 0 or n ~= math.floor(n) then error("permutation: n must be a whole number >= 0, got " .. tostring(n), 2) end
  local out = ffi.new("int64_t[?]", math.max(n, 1))
  binding.check(C.nnr_random_permutation(seed or 0, C.NNR_STREAM_SHUFFLE, epoch or 0, n, out))
  local p = {}
  for i = 1, n do p[i] = tonumber(out[i - 1]) + 1 end
  return p
end

local Sampler = {}
Sampler.__index = Sampler
M._Sampler = Sampler
function Sampler:len() return self.n end

function M.SequentialSampler(n)
  V.count("SequentialSampler", "n", n)
  return setmetatable({ n = n, indices = function(self) local t = {}; for i = 1, self.n do t[i] = i end return t end }, Sampler)
end
-- RandomSampler(n, {seed, replacement = false, num_samples = n})
function M.RandomSampler(n, opts)
  opts = V.options("RandomSampler", opts, { seed = true, replacement = true, num_samples = true })
  V.count("RandomSampler", "n", n)
  V.count("RandomSampler", "num_samples", opts.num_samples or n)
  V.integer("RandomSampler", "seed", opts.seed or 0, 0)
  if not opts.replacement and (opts.num_samples or n) > n then
    error("RandomSampler: num_samples (" .. opts.num_samples .. ") exceeds n (" .. n .. ") without replacement", 0)
  end
  local s = setmetatable({ n = opts.num_samples or n, size = n, seed = opts.seed or 0, replacement = opts.replacement }, Sampler)
  function s.indices(self, epoch)
    if self.replacement then
      local r, t = rng(self.seed, epoch), {}
      for i = 1, self.n do t[i] = math.floor(r() * self.size) + 1 end
      return t
    end
    local p = M.permutation(self.size, self.seed, epoch)
    for i = self.n + 1, #p do p[i] = nil end
    return p
  end
  return s
end
-- DistributedSampler(n or dataset[, {num_replicas, rank, shuffle = true, seed = 0, drop_last = false}]):
-- this rank's share of each epoch, for nnr.parallel.Distributed. Every rank draws the same seeded
-- permutation of the epoch (RandomSampler's), pads it by repeating its start to a multiple of
-- num_replicas (or drops the tail with drop_last), and takes every num_replicas-th index from
-- position rank + 1. num_replicas and rank default to the MPI world's.
function M.DistributedSampler(n, opts)
  opts = V.options("DistributedSampler", opts, { num_replicas = true, rank = true, shuffle = true, seed = true, drop_last = true })
  if type(n) ~= "number" then n = dataset_len(n) end
  V.count("DistributedSampler", "n", n)
  V.integer("DistributedSampler", "seed", opts.seed or 0, 0)
  local D = require("nnr.parallel").Distributed
  local replicas = V.integer("DistributedSampler", "num_replicas", opts.num_replicas or D.world_size(), 1)
  local rank = V.integer("DistributedSampler", "rank", opts.rank or D.rank(), 0)
  if replicas < 1 or rank < 0 or rank >= replicas then
    error(string.format("DistributedSampler: rank %s of %s replicas", tostring(rank), tostring(replicas)), 2)
  end
  local per = opts.drop_last and math.floor(n / replicas) or math.ceil(n / replicas)
  local s = setmetatable({ n = per, size = n, seed = opts.seed or 0, shuffle = opts.shuffle ~= false, replicas = replicas, rank = rank },
    Sampler)
  function s.indices(self, epoch)
    local p
    if self.shuffle then p = M.permutation(self.size, self.seed, epoch)
    else p = {}; for i = 1, self.size do p[i] = i end end
    local t = {}
    for k = 1, self.n do
      local pos = self.rank + 1 + (k - 1) * self.replicas
      t[k] = p[(pos - 1) % self.size + 1]
    end
    return t
  end
  return s
end

-- SubsetRandomSampler(indices, {seed}): the given indices, shuffled each epoch
function M.SubsetRandomSampler(indices, opts)
  opts = V.options("SubsetRandomSampler", opts, { seed = true })
  if type(indices) ~= "table" then error("SubsetRandomSampler: indices must be a list", 0) end
  for k, i in ipairs(indices) do V.integer("SubsetRandomSampler", "indices[" .. k .. "]", i, 1) end
  local s = setmetatable({ n = #indices, list = indices, seed = opts and opts.seed or 0 }, Sampler)
  function s.indices(self, epoch)
    local p, t = M.permutation(#self.list, self.seed, epoch), {}
    for i, k in ipairs(p) do t[i] = self.list[k] end
    return t
  end
  return s
end
-- WeightedRandomSampler(weights, num_samples, {replacement = true, seed})
function M.WeightedRandomSampler(weights, num_samples, opts)
  opts = V.options("WeightedRandomSampler", opts, { replacement = true, seed = true })
  if type(weights) ~= "table" then error("WeightedRandomSampler: weights must be a list of numbers", 0) end
  V.count("WeightedRandomSampler", "num_samples", num_samples)
  local total = 0
  for i, w in ipairs(weights) do
    V.number("WeightedRandomSampler", "weight " .. i, w, { min = 0 })
    total = total + w
  end
  if not (total > 0 and total < math.huge) then error("WeightedRandomSampler: the weights sum to zero", 0) end
  local replacement = opts.replacement ~= false
  if not replacement and num_samples > #weights then error("WeightedRandomSampler: more samples than weights without replacement", 0) end
  local s = setmetatable({ n = num_samples, weights = weights, seed = opts.seed or 0 }, Sampler)
  function s.indices(self, epoch)
    local r, t, w = rng(self.seed, epoch), {}, {}
    for i, v in ipairs(self.weights) do w[i] = v end
    local cum = {}
    local function rebuild() local c = 0; for i, v in ipairs(w) do c = c + v; cum[i] = c end end
    rebuild()
    for k = 1, self.n do
      local u = r() * cum[#cum]
      local lo, hi = 1, #cum
      while lo < hi do local mid = math.floor((lo + hi) / 2); if cum[mid] > u then hi = mid else lo = mid + 1 end end
      t[k] = lo
      if not replacement then w[lo] = 0; rebuild() end
    end
    return t
  end
  return s
end

local function sampler_indices(sampler, epoch)
  local list
  if type(sampler) == "function" then list = sampler(epoch)
  elseif type(sampler) == "table" and type(sampler.indices) == "function" then list = sampler:indices(epoch)
  elseif type(sampler) == "table" then list = sampler
  else error("DataLoader: sampler must be a sampler, a function(epoch) or a list of indices", 0) end
  if type(list) ~= "table" then error("DataLoader: the sampler returned " .. type(list) .. ", expected a list of indices", 0) end
  return list
end

-- the default collate of Lua datasets: stacks tensors; numbers become an i64 (whole) or f32 tensor
function M.default_collate(samples)
  local nnr = require "nnr"
  local function batch(list, what)
    local first = list[1]
    if nnr.is_tensor(first) then
      for i, v in ipairs(list) do if type(v) == "number" then list[i] = nnr.tensor(v, { dtype = first.dtype }) end end
      return nnr.stack(list, 1)
    end
    if type(first) == "number" then
      local whole = true
      for i, v in ipairs(list) do
        if nnr.is_tensor(v) then v = v:item(); list[i] = v end
        whole = whole and v == math.floor(v)
      end
      return nnr.tensor(list, { dtype = whole and "i64" or "f32" })
    end
    if type(first) == "table" then return nnr.tensor(list, { dtype = "f32" }) end
    error("collate: cannot batch " .. what .. " of type " .. type(first), 0)
  end
  local xs, ys, with_y = {}, {}, 0
  for i, s in ipairs(samples) do
    xs[i], ys[i] = s[1], s[2]
    if xs[i] == nil then error("collate: sample " .. i .. " of the batch has no input (x is nil)", 0) end
    if ys[i] ~= nil then with_y = with_y + 1 end
  end
  if with_y ~= 0 and with_y ~= #samples then
    local missing
    for i = 1, #samples do if ys[i] == nil then missing = i; break end end
    error(string.format("collate: %d of the batch's %d samples have a target and sample %d has none (a dataset's get must "
      .. "return a target always or never)", with_y, #samples, missing), 0)
  end
  return batch(xs, "x"), with_y > 0 and batch(ys, "y") or nil
end

-- transforms (applied to x in the workers, in C) ------------------------------------------
local function transform(kind, params, name) return { kind = kind, params = params, name = name } end
function M.ToFloat(scale)
  return transform(C.NNR_TRANSFORM_TO_FLOAT, { V.number("ToFloat", "scale", scale, { default = 1 / 255 }) }, "ToFloat")
end
-- Normalize(mean, std), or per channel Normalize({m0, m1, m2}, {s0, s1, s2}); a std of 0 divides by
-- zero and is refused, as torchvision does
local function mean_std(mean, std, what)
  V.number("Normalize", "mean" .. what, mean)
  V.number("Normalize", "std" .. what, std)
  if std == 0 then error("Normalize: std" .. what .. " is 0, which would divide by zero", 0) end
end
function M.Normalize(mean, std)
  if type(mean) == "table" then
    if type(std) ~= "table" or #mean ~= #std then error("Normalize: mean and std must be lists of the same length", 0) end
    if #mean ~= 3 then error("Normalize: per-channel statistics need 3 channels, got " .. #mean, 0) end
    local p = {}
    for c = 1, 3 do mean_std(mean[c], std[c], "[" .. c .. "]"); p[2 * c - 1], p[2 * c] = mean[c], std[c] end
    p[7] = 1    -- per channel
    return transform(C.NNR_TRANSFORM_NORMALIZE, p, "Normalize")
  end
  mean_std(mean, std, "")
  return transform(C.NNR_TRANSFORM_NORMALIZE, { mean, std, 0 }, "Normalize")
end
-- an output size: a whole number or {h, w}, each in 1..2^24 (an image side)
local function hw(op, size)
  local h, w = size, size
  if type(size) == "table" then
    if #size ~= 2 then error(op .. ": size must be a number or a pair {h, w}", 0) end
    h, w = size[1], size[2]
  end
  return V.integer(op, "size", h, 1, 2 ^ 24), V.integer(op, "size", w, 1, 2 ^ 24)
end
function M.RandomCrop(size, padding)
  local h, w = hw("RandomCrop", size)
  return transform(C.NNR_TRANSFORM_RANDOM_CROP, { h, w, V.integer("RandomCrop", "padding", padding or 0, 0, 2 ^ 24) }, "RandomCrop")
end
function M.CenterCrop(size) local h, w = hw("CenterCrop", size); return transform(C.NNR_TRANSFORM_CENTER_CROP, { h, w }, "CenterCrop") end
function M.RandomHorizontalFlip(p)
  return transform(C.NNR_TRANSFORM_RANDOM_HFLIP, { V.probability("RandomHorizontalFlip", "p", p == nil and 0.5 or p, true) }, "RandomHorizontalFlip")
end
function M.Resize(size) local h, w = hw("Resize", size); return transform(C.NNR_TRANSFORM_RESIZE, { h, w }, "Resize") end
function M.Compose(list) return { compose = list } end

-- a transform is a C one above or a Lua function(x) -> x (run in the worker states)
local function flatten_transforms(t, out)
  out = out or {}
  if t == nil then return out end
  if type(t) == "function" then out[#out + 1] = t
  elseif type(t) ~= "table" then error("DataLoader: a transform must be a transform, a function or a list, got " .. type(t), 0)
  elseif t.compose then for _, x in ipairs(t.compose) do flatten_transforms(x, out) end
  elseif t.kind then out[#out + 1] = t
  else for _, x in ipairs(t) do flatten_transforms(x, out) end end
  return out
end

-- the loader -------------------------------------------------------------------------------
local Loader = {}
Loader.__index = Loader

local pair = ffi.new("nnr_tensor *[2]")
local stats_buf = ffi.new("double[2]")
local count_buf = ffi.new("int64_t[1]")

local function dataset_name(ds)
  if is_cdataset(ds) then
    local where = ds.path or ds.root
    return string.format("%s(%s%d samples)", ds.kind or "Dataset", where and (where .. ", ") or "", ds:len())
  end
  if type(ds.name) == "string" then return ds.name end
  local mt = getmetatable(ds)
  if mt and type(mt.__name) == "string" then return mt.__name end
  return "Lua dataset"
end

-- the first chunk of a state beside the script's (a loader's Lua worker, a DataParallel replica:
-- core/host/states.c): this state's module paths, then module_name's start(...) with the arguments
-- the C side passes (payload, tensors, ntensors, slot, datasets, ndatasets)
function M._state_bootstrap(module_name)
  return string.format([[
package.path = %q
package.cpath = %q
return (require %q).start(...)
]], package.path, package.cpath, module_name)
end

-- n LuaJIT states (core/host/states.c) built from payloads (one shared, or one per state) with their
-- tensors (counts[k] of the flat list for payload k) and datasets
function M._lua_states(n, module_name, payloads, tensor_lists, datasets)
  local np = #payloads
  local cp, cl, cn = ffi.new("const char *[?]", np), ffi.new("size_t[?]", np), ffi.new("int[?]", np)
  local total = 0
  for k = 1, np do total = total + #tensor_lists[k] end
  local ct, at = ffi.new("nnr_tensor *[?]", total + 1), 0
  for k = 1, np do
    cp[k - 1], cl[k - 1], cn[k - 1] = payloads[k], #payloads[k], #tensor_lists[k]
    for _, t in ipairs(tensor_lists[k]) do ct[at] = t.p; at = at + 1 end
  end
  local dp = ffi.new("nnr_dataset *[?]", #datasets + 1)
  for i, d in ipairs(datasets) do dp[i - 1] = d.handle end
  local states = C.nnr_lua_states_new(n, "=" .. module_name, M._state_bootstrap(module_name), np, cp, cl, ct, cn, dp, #datasets)
  if states == nil then binding.raise() end
  return states
end

-- hands the dataset, transforms and collate function to per-worker Lua states
local function lua_pool(p, dataset, transforms, collate, seed, workers, name)
  local nnr = require "nnr"
  local serial = require "nnr.data.serial"
  local payload, tensors, datasets = serial.encode(
    { dataset = dataset, transforms = transforms, collate = collate, seed = seed, name = name },
    nnr.is_tensor, function(v) if is_cdataset(v) then return v.handle end end)
  local states = M._lua_states(math.max(workers, 1), "nnr.data.worker", { payload }, { tensors }, datasets)
  local st = C.nnr_loader_set_batch_fn(p, C.nnr_lua_states_batch, states, C.nnr_lua_states_free)
  if st ~= 0 then C.nnr_lua_states_free(states); binding.raise() end
end

local OPTIONS = { batch_size = 1, shuffle = 1, seed = 1, drop_last = 1, num_workers = 1, prefetch = 1, pin_memory = 1,
                  sampler = 1, collate = 1, transform = 1 }

function M.DataLoader(dataset, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then error("DataLoader: unknown option '" .. tostring(k) .. "'", 0) end
  end
  if type(dataset) ~= "table" then error("DataLoader: expected a dataset, got " .. type(dataset), 0) end
  if not is_cdataset(dataset) and type(dataset.get) ~= "function" and dataset[1] == nil then
    error("DataLoader: a Lua dataset needs get(i) and a length (__len, len() or #)", 0)
  end
  if opts.sampler ~= nil and opts.shuffle then error("DataLoader: sampler and shuffle cannot both be given", 0) end
  -- whole numbers in range, checked before the FFI would truncate a fraction or wrap a huge value
  local check = require "nnr.check"
  local batch = check.number("DataLoader", "batch_size", opts.batch_size or 1, { integer = true })
  if batch < 1 then error("DataLoader: batch_size must be >= 1 (got " .. check.show(batch) .. ")", 0) end
  local workers = check.integer("DataLoader", "num_workers", opts.num_workers or 0, 0, 64)
  local seed = check.integer("DataLoader", "seed", opts.seed or 0, 0)
  local prefetch = opts.prefetch == nil and 0 or check.integer("DataLoader", "prefetch", opts.prefetch, 1, 4096)
  local n = dataset_len(dataset)
  check.integer("DataLoader", "the dataset's length", n, 0)
  local transforms = flatten_transforms(opts.transform)
  local native = is_cdataset(dataset) and opts.collate == nil
  for _, t in ipairs(transforms) do native = native and type(t) == "table" end
  local handle = native and dataset.handle or owned_dataset(C.nnr_dataset_indices(n))
  -- a batch at least as large as the dataset is the whole of it: 2^62 stands for any larger size (an int64)
  local p = C.nnr_loader_new(handle, math.min(batch, 2 ^ 62), opts.shuffle and 1 or 0, seed, opts.drop_last and 1 or 0, workers, prefetch)
  if p == nil then binding.raise() end
  p = ffi.gc(p, C.nnr_loader_free)
  local name = dataset_name(dataset)
  local pinned = false
  if opts.pin_memory then
    pinned = C.nnr_pinned_provider() ~= nil
    if not pinned and not M._warned_pin then
      M._warned_pin = true
      io.stderr:write("DataLoader: pin_memory: no plugin offers page-locked memory (the cuda plugin does); batches stay in ordinary memory\n")
    end
    binding.check(C.nnr_loader_set_pin_memory(p, 1))
  end
  if native then
    local params = ffi.new("double[8]")
    for _, t in ipairs(transforms) do
      for i = 1, 8 do params[i - 1] = t.params[i] or 0 end
      binding.check(C.nnr_loader_add_transform(p, t.kind, params, #t.params))
    end
  else
    lua_pool(p, dataset, transforms, opts.collate, seed, workers, name)
  end
  local self = { handle = p, dataset = dataset, epoch = 0, resume_position = nil, batch_size = batch, sampler = opts.sampler,
                 drop_last = opts.drop_last, name = name, pin_memory = pinned }
  if self.sampler then
    -- the sampler's length gives #loader before the first epoch
    local len = type(self.sampler) == "table" and (self.sampler.n or (self.sampler.len and self.sampler:len()) or #self.sampler) or n
    self.sampler_len = len
  end
  -- a userdata proxy, so that #loader works under Lua 5.1 semantics
  local proxy = newproxy(true)
  local mt = getmetatable(proxy)
  mt.__index = function(_, k) local v = self[k]; if v ~= nil then return v end return Loader[k] end
  mt.__newindex = function(_, k, v) self[k] = v end
  mt.__len = function() return Loader.len(self) end
  mt.__tostring = function() return string.format("DataLoader(%d batches of %d from %s)", Loader.len(self), batch, name) end
  return proxy
end

function Loader:len()
  if self.sampler_len and self.epoch == 0 then
    local n = self.sampler_len
    return self.drop_last and math.floor(n / self.batch_size) or math.ceil(n / self.batch_size)
  end
  return tonumber(C.nnr_loader_length(self.handle))
end

local function set_sampler_order(self, epoch)
  local list = sampler_indices(self.sampler, epoch)
  local idx = ffi.new("int64_t[?]", math.max(#list, 1))
  local check = require "nnr.check"
  for k, i in ipairs(list) do
    if type(i) ~= "number" or i ~= i or i ~= math.floor(i) or i < -2 ^ 53 or i > 2 ^ 53 then
      error("DataLoader: the sampler gave " .. check.show(i) .. " at position " .. k .. ", expected an integer index", 0)
    end
    idx[k - 1] = i - 1
  end
  binding.check(C.nnr_loader_set_order(self.handle, #list, idx))
end

-- one epoch: for x, y in loader:iter() do ... end (the next call starts the next epoch)
function Loader:iter()
  local own = binding.own
  local handle = self.handle
  local name = self.name
  self.epoch = self.epoch + 1
  local start = self.resume_position or 0
  self.resume_position = nil
  if self.sampler then set_sampler_order(self, self.epoch) end
  binding.check(C.nnr_loader_start_epoch(handle, self.epoch, start))
  return function()
    local st = C.nnr_loader_next(handle, pair, pair + 1)
    if st == C.NNR_LOADER_END then return nil end
    if st ~= 0 then
      local msg = binding.last_error()
      if msg:sub(1, 12) == "DataLoader: " then msg = "DataLoader over " .. name .. ": " .. msg:sub(13) end
      error(msg, 0)
    end
    local x = own(pair[0])
    local y = pair[1] ~= nil and own(pair[1]) or nil
    return x, y
  end
end

-- {wait_seconds, busy_seconds, batches}: time the caller waited for data, worker time spent assembling
function Loader:stats()
  C.nnr_loader_stats(self.handle, stats_buf, stats_buf + 1, count_buf)
  return { wait_seconds = stats_buf[0], busy_seconds = stats_buf[1], batches = tonumber(count_buf[0]) }
end

-- the position to resume from: the epoch in progress and the batches it has given
function Loader:state_dict()
  return { epoch = self.epoch, position = tonumber(C.nnr_loader_position(self.handle)) }
end

function Loader:load_state_dict(sd)
  local check = require "nnr.check"
  if type(sd) ~= "table" then error("DataLoader: load_state_dict expects {epoch, position}, got " .. type(sd), 0) end
  local n = self:len()
  check.integer("DataLoader: load_state_dict", "epoch", sd.epoch, 1)
  check.integer("DataLoader: load_state_dict", "position", sd.position, 0)   -- past the end: start_epoch says so
  if sd.position == n then      -- the epoch was finished: continue with the next one
    self.epoch, self.resume_position = sd.epoch, nil
  else
    self.epoch, self.resume_position = sd.epoch - 1, sd.position
  end
end

return require("nnr.names").guard(M, "nnr.data")
