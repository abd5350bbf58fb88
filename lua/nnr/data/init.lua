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
local core = require "nnr.core"
local ffi, C = core.ffi, core.C

local M = {}

-- datasets -------------------------------------------------------------------------------
local TensorDataset = {}
TensorDataset.__index = TensorDataset
-- samples are the rows of x (and y)
function M.TensorDataset(x, y)
  local nnr = require "nnr"
  if not nnr.is_tensor(x) or (y ~= nil and not nnr.is_tensor(y)) then error("TensorDataset: expected tensors", 0) end
  if y and y:size(1) ~= x:size(1) then
    error(string.format("TensorDataset: %d samples but %d targets", x:size(1), y:size(1)), 0)
  end
  return setmetatable({ x = x, y = y }, TensorDataset)
end
function TensorDataset:len() return self.x:size(1) end
-- sample i (1-based): x[i], y[i]
function TensorDataset:get(i) return self.x[i], self.y and self.y[i] end

-- an IDX pair (the MNIST family, raw or gzip); labels become 1-based i64 classes unless raw_labels
function M.IDXDataset(images, labels, opts)
  local nnr = require "nnr"
  local x = nnr.load_idx(images)
  local y = labels and nnr.load_idx(labels) or nil
  if y and not (opts and opts.raw_labels) then y = y:long():add_(1) end
  return M.TensorDataset(x, y)
end

-- transforms (applied to x in the workers, in C) ------------------------------------------
local function transform(kind, params, name) return { kind = kind, params = params, name = name } end
function M.ToFloat(scale) return transform(C.NNR_TRANSFORM_TO_FLOAT, { scale or 1 / 255 }, "ToFloat") end
-- Normalize(mean, std), or per channel Normalize({m0, m1, m2}, {s0, s1, s2})
function M.Normalize(mean, std)
  if type(mean) == "table" then
    local p = {}
    for c = 1, math.min(#mean, 3) do p[2 * c - 1], p[2 * c] = mean[c], std[c] end
    if #mean < 3 then error("Normalize: per-channel statistics need 3 channels", 0) end
    return transform(C.NNR_TRANSFORM_NORMALIZE, p, "Normalize")
  end
  return transform(C.NNR_TRANSFORM_NORMALIZE, { mean, std, 0 }, "Normalize")
end
local function hw(size) if type(size) == "table" then return size[1], size[2] end return size, size end
function M.RandomCrop(size, padding) local h, w = hw(size); return transform(C.NNR_TRANSFORM_RANDOM_CROP, { h, w, padding or 0 }, "RandomCrop") end
function M.CenterCrop(size) local h, w = hw(size); return transform(C.NNR_TRANSFORM_CENTER_CROP, { h, w }, "CenterCrop") end
function M.RandomHorizontalFlip(p) return transform(C.NNR_TRANSFORM_RANDOM_HFLIP, { p or 0.5 }, "RandomHorizontalFlip") end
function M.Resize(size) local h, w = hw(size); return transform(C.NNR_TRANSFORM_RESIZE, { h, w }, "Resize") end
function M.Compose(list) return { compose = list } end

local function flatten_transforms(t, out)
  out = out or {}
  if t == nil then return out end
  if t.compose then for _, x in ipairs(t.compose) do flatten_transforms(x, out) end
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

function M.DataLoader(dataset, opts)
  opts = opts or {}
  if getmetatable(dataset) ~= TensorDataset then
    error("DataLoader: this dataset type is not supported yet (TensorDataset and IDXDataset are)", 0)
  end
  local batch = opts.batch_size or 1
  local workers = opts.num_workers or 0
  local p = C.nnr_loader_new(dataset.x.p, dataset.y and dataset.y.p or nil, batch, opts.shuffle and 1 or 0, opts.seed or 0,
    opts.drop_last and 1 or 0, workers, opts.prefetch or 0)
  if p == nil then core.raise() end
  p = ffi.gc(p, C.nnr_loader_free)
  local params = ffi.new("double[8]")
  for _, t in ipairs(flatten_transforms(opts.transform)) do
    for i = 1, 8 do params[i - 1] = t.params[i] or 0 end
    core.check(C.nnr_loader_add_transform(p, t.kind, params, #t.params))
  end
  local self = { handle = p, dataset = dataset, epoch = 0, resume_position = nil, batch_size = batch }
  -- a userdata proxy, so that #loader works under Lua 5.1 semantics
  local proxy = newproxy(true)
  local mt = getmetatable(proxy)
  mt.__index = function(_, k) local v = self[k]; if v ~= nil then return v end return Loader[k] end
  mt.__newindex = function(_, k, v) self[k] = v end
  mt.__len = function() return tonumber(C.nnr_loader_length(p)) end
  mt.__tostring = function() return string.format("DataLoader(%d batches of %d)", tonumber(C.nnr_loader_length(p)), batch) end
  return proxy
end

function Loader:len() return tonumber(C.nnr_loader_length(self.handle)) end

-- one epoch: for x, y in loader:iter() do ... end (the next call starts the next epoch)
function Loader:iter()
  local own = core.own
  local handle = self.handle
  self.epoch = self.epoch + 1
  local start = self.resume_position or 0
  self.resume_position = nil
  core.check(C.nnr_loader_start_epoch(handle, self.epoch, start))
  return function()
    local st = C.nnr_loader_next(handle, pair, pair + 1)
    if st == C.NNR_LOADER_END then return nil end
    if st ~= 0 then core.raise() end
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
  local n = self:len()
  if sd.position == n then      -- the epoch was finished: continue with the next one
    self.epoch, self.resume_position = sd.epoch, nil
  else
    self.epoch, self.resume_position = sd.epoch - 1, sd.position
  end
end

return M
