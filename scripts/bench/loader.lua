-- DataLoader throughput: passes over Fashion-MNIST's training images with
-- ToFloat, Normalize and a 2-pixel-padded RandomCrop, shuffled, batches
-- consumed and dropped. Prints one JSON line (median of 3 timed epochs).
-- Usage: nnrun scripts/bench/loader.lua BATCH WORKERS [DATA_DIR]
local nnr = require "nnr"
local data = nnr.data
local batch, workers = tonumber(arg[1] or 64), tonumber(arg[2] or 0)
local dir = arg[3] or "/usr/share/datasets/fashion-mnist"
local ds = data.IDXDataset(dir .. "/train-images-idx3-ubyte.gz", dir .. "/train-labels-idx1-ubyte.gz")
local loader = data.DataLoader(ds, { batch_size = batch, shuffle = true, seed = 1, num_workers = workers,
  transform = data.Compose { data.ToFloat(1 / 255), data.Normalize(0.286, 0.353), data.RandomCrop(28, 2) } })
for _ in loader:iter() do end                        -- warm-up epoch
local rates = {}
for r = 1, 3 do
  local t0, n = nnr.clock(), 0
  for x in loader:iter() do n = n + x:size(1) end
  rates[r] = n / (nnr.clock() - t0)
end
table.sort(rates)
print(string.format('{"samples_per_s": %.1f, "batch": %d, "workers": %d}', rates[2], batch, workers))
