-- Runs inside a loader's worker state (core/host/states.c): rebuilds the dataset,
-- transforms and collate function sent by nnr.data.serial, then builds
-- batches on request. Each state belongs to one worker slot and is used by
-- one thread at a time; it shares nothing with the main state but tensors,
-- which cross by pointer and refcount. An error in a worker (a Lua error, os.exit) fails the batch
-- with a message naming the sample; the state stays usable for the next batch.
local M = {}

-- the random seed of sample i in epoch e: math.random in a Lua dataset or
-- transform repeats from run to run, whatever the number of workers
local function sample_seed(seed, epoch, i)
  return ((seed * 1000003 + epoch * 7919 + i * 104729) % 4503599627370449) + 1
end
M.sample_seed = sample_seed

function M.start(payload, tensors_ud, ntensors, slot, datasets_ud, ndatasets)
  local nnr = require "nnr"
  local binding = require "nnr.binding"
  binding.worker_state()
  local data = require "nnr.data"
  local ffi, C = binding.ffi, binding.C

  local dp = ffi.cast("nnr_dataset **", datasets_ud)
  local spec = require("nnr.data.serial").decode(payload, "DataLoader payload", tensors_ud, ntensors,
    function(i) return data._wrap(dp[i - 1]) end)

  -- a worker cannot end the process: os.exit in a dataset, transform or collate function becomes an
  -- error of the sample (or batch) being built, the epoch ends with it and the loader stays usable
  os.exit = function(code)
    error(string.format("os.exit(%s) called in a DataLoader worker: a worker cannot end the process",
      code == nil and "" or tostring(code)), 0)
  end

  local ds, transforms, collate, seed, name = spec.dataset, spec.transforms, spec.collate or data.default_collate, spec.seed, spec.name
  local get = data._getter(ds)
  local params = ffi.new("double[8]")
  local batches = 0

  local function transform(x, i, epoch)
    for k, t in ipairs(transforms) do
      if type(t) == "function" then
        x = t(x)
      else
        for j = 1, 8 do params[j - 1] = t.params[j] or 0 end
        if not nnr.is_tensor(x) then error(t.name .. ": expected a tensor sample, got " .. type(x), 0) end
        x = binding.own(C.nnr_transform_apply(t.kind, params, #t.params, x.p, sample_seed(seed, epoch, i) + k))
      end
    end
    return x
  end

  -- the position in the batch of the first sample unlike the first one (a tensor of another shape, a
  -- target where the first has none or the reverse); with rows, what is wrong with it
  local function odd_sample(samples, rows)
    local x1, y1 = samples[1][1], samples[1][2]
    local shape1 = nnr.is_tensor(x1) and nnr.shape_str(x1:size())
    for k = 2, #samples do
      local x, y = samples[k][1], samples[k][2]
      if (y == nil) ~= (y1 == nil) then
        return rows and string.format("it has %s target and sample %d, first in the batch, has %s (a dataset's get must return "
          .. "a target always or never)", y == nil and "no" or "a", tonumber(rows[0]) + 1, y1 == nil and "none" or "one") or k
      end
      if shape1 and nnr.is_tensor(x) and nnr.shape_str(x:size()) ~= shape1 then
        return rows and string.format("its shape %s differs from the batch's %s (sample %d; add Resize or CenterCrop, or a collate "
          .. "function)", nnr.shape_str(x:size()), shape1, tonumber(rows[0]) + 1) or k
      end
    end
  end

  local function build(rows, count, epoch)
    local samples = {}
    for j = 0, count - 1 do
      local i = tonumber(rows[j]) + 1
      math.randomseed(sample_seed(seed, epoch, i))
      local ok, err = pcall(function()
        local x, y = get(ds, i, epoch)
        if x == nil then error("get returned nothing", 0) end
        samples[j + 1] = { transform(x, i, epoch), y }
      end)
      if not ok then error(string.format("sample %d: %s", i, tostring(err)), 0) end
    end
    local ok, x, y = pcall(collate, samples)
    if not ok then
      local culprit = spec.collate == nil and odd_sample(samples)   -- the default collate: which sample broke it
      if culprit then
        error(string.format("sample %d: %s", tonumber(rows[culprit - 1]) + 1, odd_sample(samples, rows)), 0)
      end
      error("collate: " .. tostring(x), 0)
    end
    if not nnr.is_tensor(x) or (y ~= nil and not nnr.is_tensor(y)) then
      error("collate: expected to return tensors x[, y], got " .. type(x) .. ", " .. type(y), 0)
    end
    return x, y
  end

  return function(rows_ud, count, epoch, batch, out_ud)
    local rows = ffi.cast("const int64_t *", rows_ud)
    local ok, x, y = pcall(build, rows, count, epoch)
    if not ok then return tostring(x) end
    local out = ffi.cast("nnr_tensor **", out_ud)
    C.nnr_tensor_retain(x.p)
    out[0] = x.p
    if y ~= nil then C.nnr_tensor_retain(y.p); out[1] = y.p end
    x, y = nil, nil
    batches = batches + 1
    if batches % 8 == 0 then collectgarbage() else collectgarbage("step", 256) end
    return nil
  end, name, slot
end

return M
