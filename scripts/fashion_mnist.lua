-- Fashion-MNIST for the scripts: the IDX files of Debian's
-- dataset-fashion-mnist package, a per-epoch permutation that depends only on
-- (seed, epoch), and the three models of the training script.
--   local fm = dofile("scripts/fashion_mnist.lua")
local nnr = require "nnr"
local check = require "nnr.check"
local nn = nnr.nn

local M = {}
M.DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
local DEFAULT_DATA = M.DEFAULT_DATA
local MEAN, STD = 0.2860, 0.3530          -- of the training images, as torchvision's Normalize uses

-- data -----------------------------------------------------------------------------
-- the raw split: u8 images [N, 28, 28] and 1-based i64 labels
function M.read_split(dir, prefix)
  local function path(kind)
    local p = string.format("%s/%s-%s-idx%d-ubyte", dir, prefix, kind, kind == "images" and 3 or 1)
    local f = io.open(p .. ".gz") or io.open(p)
    if not f then
      if dir == DEFAULT_DATA then
        error(string.format("%s.gz is missing: install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or pass --data DIR", p), 0)
      end
      error(p .. ".gz is missing (--data " .. dir .. ")", 0)
    end
    f:close()
    return io.open(p .. ".gz") and p .. ".gz" or p
  end
  local images = nnr.load_idx(path("images"))
  local labels = nnr.load_idx(path("labels"))
  if images:dim() ~= 3 or images:size(2) ~= 28 or images:size(3) ~= 28 or labels:dim() ~= 1 or labels:size(1) ~= images:size(1) then
    error(string.format("%s: images %s and labels %s do not form a Fashion-MNIST split", dir, nnr.shape_str(images:size()),
      nnr.shape_str(labels:size())), 0)
  end
  return images, labels:long():add_(1)
end

-- images normalised as f32 [N, 1, 28, 28], labels 1-based i64
function M.load_split(dir, prefix)
  local images, labels = M.read_split(dir, prefix)
  return images:float():div_(255):sub_(MEAN):div_(STD):view(-1, 1, 28, 28), labels
end

-- a permutation of 1..n that depends only on (seed, epoch): resuming needs no generator state
function M.permutation(n, seed, epoch) return require("nnr").data.permutation(n, seed, epoch) end

-- command-line numbers ----------------------------------------------------------------------
-- --name's value: the number the text spells, then checked by nnr.check (spec: integer, min, max, ...),
-- so "--lr nan", "--epochs 1e300" and "--batch-size 2.5" are refused before any work, naming the option
function M.number_option(name, text, spec)
  local flag = "--" .. name:gsub("_", "-")
  local v = tonumber(text)
  if v == nil then error(flag .. " needs a number, got '" .. tostring(text) .. "'", 0) end
  return check.number("", flag, v, spec)
end

-- a checkpoint for --resume (who: "--resume PATH") must hold what training continues from
function M.check_training_checkpoint(who, ck)
  for _, k in ipairs { "model", "optimizer", "rng" } do
    if type(ck[k]) ~= "table" then
      error(string.format("%s: the checkpoint has no %s (not one written by --save?)", who, k == "rng" and "RNG state" or k), 0)
    end
  end
  check.integer(who, "epoch", ck.epoch, 0, 1e6)
  return ck
end

function M.load_training_checkpoint(who, path) return M.check_training_checkpoint(who, nnr.load_checkpoint(path)) end

-- what both training scripts (train_fashion_mnist.lua, train_charlm.lua) do first, before any work -------------
-- threads, --allow-bf16 and the seed; --distributed (under mpirun: the rank and world, --batch-size split over
-- the ranks, and rank > 0 prints and writes nothing); the device; the files the run will write (--metrics
-- appended, --save and --save-init replaced), --plot's format and --tensorboard's writer.
-- Returns {D, rank, world, device, tb}.
function M.start_run(opts)
  if opts.threads then nnr.set_num_threads(opts.threads) end
  if opts.allow_bf16 then nnr.backends.cpu.allow_bf16 = true end
  nnr.manual_seed(opts.seed)
  local run = { world = 1, rank = 0 }
  if opts.distributed then
    run.D = nnr.parallel.Distributed
    run.rank, run.world = run.D.init()
    if opts.batch_size % run.world ~= 0 then
      error(string.format("--batch-size %d does not split over %d ranks; use a multiple of %d", opts.batch_size, run.world, run.world), 0)
    end
    if opts.data_parallel then error("--data-parallel and --distributed do not combine (yet)", 0) end
    if run.rank ~= 0 then opts.quiet, opts.metrics, opts.save, opts.save_init, opts.tensorboard, opts.plot = true, nil, nil, nil, nil, nil end
  end
  local ok, err = pcall(nnr.device, opts.device)
  if not ok then error("--device " .. opts.device .. ": " .. tostring(err), 0) end
  run.device = nnr.device(opts.device).name
  if opts.metrics then check.writable("--metrics", opts.metrics, true) end
  for _, k in ipairs { "save", "save_init" } do if opts[k] then check.writable("--" .. k:gsub("_", "-"), opts[k]) end end
  if opts.plot then nnr.plot.check_output(opts.plot, "--plot") end
  if opts.tensorboard then        -- the numbers of each evaluation, and every weight's and gradient's histogram
    local made, w = pcall(nnr.tensorboard.SummaryWriter, opts.tensorboard)
    if not made then error("--tensorboard " .. opts.tensorboard .. ": " .. tostring(w), 0) end
    run.tb = w
  end
  return run
end

-- progress lines (train_fashion_mnist.lua, train_charlm.lua) ---------------------------------------
-- the resident size of this process in MiB (0 where /proc is missing)
function M.rss_mib()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return (tonumber(s:match("VmRSS:%s+(%d+)")) or 0) / 1024
end

-- graceful stops ---------------------------------------------------------------------------
-- From here on SIGINT (Ctrl-C) and SIGTERM let the step in progress finish: the training loop polls
-- stop_requested() after each step (nnr.signals; a second signal interrupts at once).
function M.catch_stop() require("nnr.signals").catch_stop(true) end

-- nil, or the signal ("SIGINT", "SIGTERM"); with D (nnr.parallel.Distributed) every rank learns the highest
-- any rank saw, so that all stop after the same step (nnr.train's, which the Trainer polls)
M.stop_requested = nnr.train.stop_requested

-- models -----------------------------------------------------------------------------
function M.build_model(kind)
  if kind == "mlp" then
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
  end
  local bn = kind == "cnn-bn"
  local layers = { nn.Conv2d(1, 32, 3, { padding = 1 }) }
  if bn then layers[#layers + 1] = nn.BatchNorm2d(32) end
  for _, l in ipairs { nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, { padding = 1 }) } do layers[#layers + 1] = l end
  if bn then layers[#layers + 1] = nn.BatchNorm2d(64) end
  for _, l in ipairs { nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10) } do
    layers[#layers + 1] = l
  end
  return nn.Sequential(layers)
end

-- the training split as a loader: u8 images transformed in the loader's workers
-- (to float, normalised; with augment, a random 28x28 crop of the image padded by 2
-- and a random horizontal flip)
function M.loader(images, labels, opts)
  local data = nnr.data
  local t = { data.ToFloat(1 / 255), data.Normalize(MEAN, STD) }
  if opts.augment then t[#t + 1] = data.RandomCrop(28, 2); t[#t + 1] = data.RandomHorizontalFlip(0.5) end
  return data.DataLoader(data.TensorDataset(images, labels), { batch_size = opts.batch_size, shuffle = opts.shuffle,
    seed = opts.seed, num_workers = opts.workers, transform = data.Compose(t), pin_memory = opts.pin_memory,
    sampler = opts.sampler })
end

return M
