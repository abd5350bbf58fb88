-- DataLoader throughput and memory. Prints one JSON line.
--
--   nnrun scripts/bench/loader.lua idx BATCH WORKERS [DATA_DIR]
--     Fashion-MNIST's training images through ToFloat, Normalize, a 2-pixel-padded
--     RandomCrop and RandomHorizontalFlip, shuffled, batches consumed and dropped;
--     the median of 3 timed epochs after a warm-up.
--   nnrun scripts/bench/loader.lua images BATCH WORKERS ROOT
--     an ImageFolder of JPEGs through ToFloat, Normalize, RandomCrop(32, 4) and a flip.
--   nnrun scripts/bench/loader.lua memory WORKERS EPOCHS [DATA_DIR]
--     memory (PSS) after loading and after each epoch of the idx job.
local nnr = require "nnr"
local data = nnr.data
local mode = arg[1] or "idx"

-- the proportional set size (as loader_torch.py measures PyTorch's processes)
local function rss_mib()
  for line in io.lines("/proc/self/smaps_rollup") do
    local kb = line:match("^Pss:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

local function idx_loader(batch, workers, dir)
  dir = dir or "/usr/share/datasets/fashion-mnist"
  local ds = data.IDXDataset(dir .. "/train-images-idx3-ubyte.gz", dir .. "/train-labels-idx1-ubyte.gz")
  return data.DataLoader(ds, { batch_size = batch, shuffle = true, seed = 1, num_workers = workers,
    transform = data.Compose { data.ToFloat(1 / 255), data.Normalize(0.286, 0.353), data.RandomCrop(28, 2), data.RandomHorizontalFlip() } })
end

local function median_rate(loader, epochs)
  for _ in loader:iter() do end                        -- warm-up epoch
  local rates = {}
  for r = 1, epochs do
    local t0, n = nnr.clock(), 0
    for x in loader:iter() do n = n + x:size(1) end
    rates[r] = n / (nnr.clock() - t0)
  end
  table.sort(rates)
  return rates[math.floor((#rates + 1) / 2)]
end

if mode == "idx" then
  local batch, workers = tonumber(arg[2] or 64), tonumber(arg[3] or 0)
  local rate = median_rate(idx_loader(batch, workers, arg[4]), 3)
  print(string.format('{"samples_per_s": %.1f, "batch": %d, "workers": %d}', rate, batch, workers))
elseif mode == "images" then
  local batch, workers, root = tonumber(arg[2]), tonumber(arg[3]), arg[4]
  local ds = data.ImageFolder(root)
  local loader = data.DataLoader(ds, { batch_size = batch, shuffle = true, seed = 1, num_workers = workers,
    transform = { data.ToFloat(), data.Normalize({ 0.49, 0.48, 0.45 }, { 0.25, 0.24, 0.26 }), data.RandomCrop(32, 4), data.RandomHorizontalFlip() } })
  local rate = median_rate(loader, 3)
  print(string.format('{"samples_per_s": %.1f, "batch": %d, "workers": %d, "images": %d}', rate, batch, workers, ds:len()))
elseif mode == "memory" then
  local workers, epochs = tonumber(arg[2]), tonumber(arg[3] or 5)
  local loader = idx_loader(64, workers, arg[4])
  local rss = { rss_mib() }
  for e = 1, epochs do
    for x, y in loader:iter() do end
    rss[#rss + 1] = rss_mib()
  end
  local parts = {}
  for i, v in ipairs(rss) do parts[i] = string.format("%.1f", v) end
  print(string.format('{"workers": %d, "pss_mib": [%s]}', workers, table.concat(parts, ", ")))
else
  error("usage: loader.lua idx|images|memory ...", 0)
end
