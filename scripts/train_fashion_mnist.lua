-- Trains a network on Fashion-MNIST (Debian's dataset-fashion-mnist package), on nnr.train.Trainer.
--
--   nnrun scripts/train_fashion_mnist.lua [--model mlp|cnn|cnn-bn] [--epochs N] [--batch-size N] [--lr X]
--         [--optimizer sgd|adam] [--device cpu|cuda|cuda:N] [--threads N] [--seed N] [--data DIR] [--save PATH]
--         [--resume PATH] [--metrics FILE] [--tensorboard DIR] [--plot FILE.png|svg] [--lr-schedule cosine|none]
--         [--stop-after EPOCH] [--distributed] [--data-parallel DEV,DEV,...] [--workers N] [--augment]
--         [--allow-bf16] [--detect-anomaly] [--quiet]
--
-- --allow-bf16: f32 matrix products with bf16 products and f32 sums where the cpu has an engine for them
-- (nnr.backends.cpu.allow_bf16: AMX, about 2x faster on Sapphire Rapids; docs/perf.md); else nothing.
-- Batches come from nnr.data.DataLoader: --workers N (default 2) assemble and transform them ahead of use on
-- libuv's pool; --augment adds a random crop (padding 2) and a horizontal flip. Each epoch reports the share
-- of its time the training loop waited for data.
--
-- Defaults: cnn, 2 epochs, batch 64, SGD lr 0.01 momentum 0.9, seed 1, and the learning rate annealed per
-- step along a cosine from --lr to 0 over the run (--lr-schedule none keeps it constant). After each epoch it
-- evaluates on the 10,000 test images; --metrics appends one JSON object per epoch; --tensorboard DIR logs
-- the same numbers and histograms of every weight and gradient (nnr.tensorboard.SummaryWriter); --plot FILE
-- draws the loss, accuracy and learning-rate curves at the end (gnuplot; a resumed run with --metrics FILE
-- draws that file's whole history); --save writes a checkpoint (model, optimizer, schedule, epoch, RNG
-- state) that --resume continues from, giving the same losses as a run that never stopped. --stop-after N
-- ends the run after epoch N (a job split in parts: resume it with the same arguments).
--
-- Ctrl-C (SIGINT) or SIGTERM during training lets the step in progress finish, writes a checkpoint of that
-- position to --save PATH (mid-epoch too: the loader's position and the epoch's running loss go with it, so
-- --resume PATH continues with the same batches, losses and final weights as a run never interrupted) and
-- exits with 130 (SIGINT) or 143 (SIGTERM):
--   interrupted at epoch 1 step 120 (SIGINT): checkpoint written to ck.st; resume with --resume ck.st
-- A second signal interrupts at once (the checkpoint being written, if any, stays the previous one).
-- Numeric options are checked before any work: --epochs and --stop-after whole numbers in [0, 1e6],
-- --batch-size in [1, 2^31), --lr finite >= 0, --momentum in [0, 1], --threads in [1, 1024], --workers in
-- [0, 64], --seed in [0, 2^53], --limit >= 1.
local nnr = require "nnr"
local check = require "nnr.check"
local nn, optim = nnr.nn, nnr.optim
local fm = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts") .. "/fashion_mnist.lua")
local read_split, build_model = fm.read_split, fm.build_model

local DEFAULT_DATA = fm.DEFAULT_DATA

-- arguments ------------------------------------------------------------------------
local function parse_args(argv)
  local opts = { model = "cnn", epochs = 2, batch_size = 64, lr = 0.01, optimizer = "sgd", device = "cpu",
                 seed = 1, data = DEFAULT_DATA, momentum = 0.9, lr_schedule = "cosine", workers = 2 }
  local numeric = { epochs = { integer = true, min = 0, max = 1e6 }, batch_size = { integer = true, min = 1, max = 2 ^ 31 - 1 },
                    lr = { min = 0 }, threads = { integer = true, min = 1, max = 1024 }, seed = { integer = true, min = 0, max = 2 ^ 53 },
                    momentum = { min = 0, max = 1 }, limit = { integer = true, min = 1, max = 2 ^ 53 },
                    stop_after = { integer = true, min = 0, max = 1e6 }, workers = { integer = true, min = 0, max = 64 } }
  local flags = { detect_anomaly = true, quiet = true, augment = true, distributed = true, allow_bf16 = true }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local key = a:match("^%-%-([%w%-]+)$")
    if not key then error("unexpected argument '" .. a .. "' (see the header of scripts/train_fashion_mnist.lua)", 0) end
    key = key:gsub("%-", "_")
    if key == "help" then
      io.write(io.open(arg[0]):read("*a"):match("^(.-)\nlocal"), "\n")
      os.exit(0)
    elseif flags[key] then
      opts[key] = true
    else
      local v = argv[i + 1]
      if v == nil then error("--" .. key:gsub("_", "-") .. " needs a value", 0) end
      if numeric[key] then
        v = fm.number_option(key, v, numeric[key])
      elseif opts[key] == nil and not ({ save = 1, resume = 1, metrics = 1, data = 1, stop_after = 1, threads = 1, limit = 1,
                                          data_parallel = 1, tensorboard = 1, plot = 1 })[key] then
        error("unknown option --" .. key:gsub("_", "-"), 0)
      end
      opts[key] = v
      i = i + 1
    end
    i = i + 1
  end
  if not ({ mlp = 1, cnn = 1, ["cnn-bn"] = 1 })[opts.model] then error("--model must be mlp, cnn or cnn-bn, got '" .. opts.model .. "'", 0) end
  if not ({ sgd = 1, adam = 1 })[opts.optimizer] then error("--optimizer must be sgd or adam, got '" .. opts.optimizer .. "'", 0) end
  if not ({ cosine = 1, none = 1 })[opts.lr_schedule] then error("--lr-schedule must be cosine or none, got '" .. opts.lr_schedule .. "'", 0) end
  return opts
end

-- training (the loop, its progress bar, resuming and stops: nnr.train.Trainer) ------------------------------
local function evaluate(model, loader, device)
  model:eval()
  local correct, total_loss, n = 0, 0, 0
  nnr.no_grad(function()
    for xb, yb in loader:iter() do
      xb, yb = xb:to(device), yb:to(device)
      local out = model(xb)
      total_loss = total_loss + nn.functional.cross_entropy(out, yb, { reduction = "sum" }):item()
      correct = correct + out:argmax(2):eq(yb):sum():item()
      n = n + xb:size(1)
    end
  end)
  model:train()
  return { test_loss = total_loss / n, test_accuracy = correct / n }
end

local METRICS = { "epoch", "train_loss", "test_loss", "test_accuracy", "samples_per_s", "seconds", "rss_mib", "data_wait_fraction" }
local function json_line(t)
  local parts = {}
  for _, k in ipairs(METRICS) do
    parts[#parts + 1] = string.format("%q:%s", k, k == "epoch" and string.format("%d", t[k]) or string.format("%.6g", t[k]))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- what a checkpoint must match to be resumed (a stop mid-epoch: the same batches need the same batch size,
-- data and ranks)
local function resume_check(opts, n, steps, world)
  return function(ck)
    local where = "--resume " .. opts.resume
    fm.check_training_checkpoint(where, ck)
    if ck.model_kind and ck.model_kind ~= opts.model then error(string.format("--resume %s holds a %s model, not %s", opts.resume, ck.model_kind, opts.model), 0) end
    if ck.step ~= nil then
      local w = { step = ck.step, loss_sum = ck.epoch_loss_sum, samples = ck.epoch_samples }
      if ck.batch_size ~= opts.batch_size or ck.samples ~= n or (ck.world or 1) ~= world then
        error(string.format("%s stopped in the middle of epoch %d with --batch-size %s on %s training images and %s process(es); "
          .. "resume it with the same --batch-size, --limit and number of processes (now %d, %d, %d)", where, ck.epoch + 1,
          tostring(ck.batch_size), tostring(ck.samples), tostring(ck.world or 1), opts.batch_size, n, world), 0)
      end
      check.integer(where, "step", w.step, 1, steps - 1)
      -- a diverged run's sum may be inf or nan and still resumes (its losses are what they were)
      if type(w.loss_sum) ~= "number" then check.number(where, "epoch_loss_sum", w.loss_sum) end
      check.integer(where, "epoch_samples", w.samples, 1)
    end
  end
end

-- after each epoch: the line, --metrics and --save; at a stop: the checkpoint and what was saved (nnrun then
-- exits with 130 or 143)
local function reporter(opts, train, extra)
  local r = { name = "report" }
  function r.on_epoch_start() r.t0, r.wait0 = nnr.clock(), train:stats().wait_seconds end
  function r.on_epoch_end(_, tr, logs)
    if tr.rank ~= 0 then return end
    local m = { epoch = logs.epoch, train_loss = logs.train_loss, test_loss = logs.test_loss, test_accuracy = logs.test_accuracy,
                samples_per_s = logs.samples_per_s, seconds = nnr.clock() - r.t0, rss_mib = fm.rss_mib(),
                data_wait_fraction = (train:stats().wait_seconds - r.wait0) / logs.seconds }
    if not opts.quiet then
      print(string.format("epoch %d: train loss %.4f, test loss %.4f, test accuracy %.4f, %.0f samples/s, %.1f s, waited for data %.2f%%, RSS %.0f MiB",
        m.epoch, m.train_loss, m.test_loss, m.test_accuracy, m.samples_per_s, m.seconds, 100 * m.data_wait_fraction, m.rss_mib))
      io.stdout:flush()
    end
    if opts.metrics then
      local f = assert(io.open(opts.metrics, "a"))
      f:write(json_line(m), "\n")
      f:close()
    end
    if opts.save then tr:save(opts.save, nil, extra) end
  end
  function r.on_interrupt(_, tr, stop)
    local what = stop.step and string.format("at epoch %d step %d", stop.epoch, stop.step) or string.format("after epoch %d", stop.epoch)
    local ok, err = true, nil
    if opts.save and stop.step then ok, err = pcall(tr.save, tr, opts.save, stop, extra) end
    if tr.rank ~= 0 then return end
    if not opts.save then
      io.stderr:write(string.format("interrupted %s (%s); no --save was given, so no checkpoint was written\n", what, stop.signal))
    elseif ok then
      io.stderr:write(string.format("interrupted %s (%s): checkpoint written to %s; resume with --resume %s\n", what, stop.signal, opts.save, opts.save))
    else
      io.stderr:write(string.format("interrupted %s (%s), but the checkpoint could not be written: %s\n", what, stop.signal, tostring(err)))
    end
  end
  return r
end

local function main(argv)
  local opts = parse_args(argv)
  -- --distributed (under mpirun -np N): --batch-size stays the global batch, each rank takes its
  -- share of every batch (DistributedSampler), gradients are averaged (DistributedDataParallel),
  -- and only rank 0 prints, writes metrics and saves checkpoints
  local run = fm.start_run(opts)
  local D, world, tb, device = run.D, run.world, run.tb, run.device
  local train_images, train_y = read_split(opts.data, "train")
  local test_images, test_y = read_split(opts.data, "t10k")
  if opts.limit then   -- for tests: a prefix of each split
    local function head(t) return t:narrow(1, 1, math.min(opts.limit, t:size(1))) end
    train_images, train_y, test_images, test_y = head(train_images), head(train_y), head(test_images), head(test_y)
  end
  -- batches bound for a GPU are built in page-locked memory, so their copies are asynchronous
  local pin = not device:match("^cpu")
  local sampler = D and nnr.data.DistributedSampler(train_images:size(1), { seed = opts.seed }) or nil
  local train = fm.loader(train_images, train_y, { batch_size = math.floor(opts.batch_size / world), shuffle = not sampler, seed = opts.seed,
                                                   sampler = sampler, workers = opts.workers, augment = opts.augment, pin_memory = pin })
  local test = fm.loader(test_images, test_y, { batch_size = 256, workers = opts.workers, pin_memory = pin })
  local model = build_model(opts.model):to(device)
  -- --data-parallel cpu:0,cpu:1 (naming a cpu device makes it), or cuda:0,cuda:1: a replica per device
  local dpar
  if opts.data_parallel then
    local devs = {}
    for d in opts.data_parallel:gmatch("[^,]+") do devs[#devs + 1] = d end
    model:to(devs[1])
    device = nnr.device(devs[1]).name
    dpar = nnr.parallel.DataParallel(model, devs)
  end
  local opt
  if opts.optimizer == "sgd" then opt = optim.SGD(model:parameters(), { lr = opts.lr, momentum = opts.momentum })
  else opt = optim.Adam(model:parameters(), { lr = opts.lr }) end
  local n, steps = train_images:size(1), #train
  local callbacks = {}
  if opts.lr_schedule == "cosine" then      -- cosine annealing stepped every batch, over the whole run
    callbacks[1] = nnr.train.LRScheduler { scheduler = optim.CosineAnnealingLR(opt, { T_max = math.max(1, steps * opts.epochs) }), interval = "step" }
  end
  callbacks[#callbacks + 1] = reporter(opts, train, { model_kind = opts.model, batch_size = opts.batch_size, samples = n, world = world })
  if tb then callbacks[#callbacks + 1] = nnr.train.Logger(tb, { histograms = true }) end
  -- rank 0's initial weights everywhere (distributed); --stop-after ends the run early
  local tr = nnr.train.Trainer { model = model, optimizer = opt, loss_fn = nn.functional.cross_entropy, train_loader = train, device = device,
    epochs = opts.epochs, stop_after = opts.stop_after, data_parallel = dpar, distributed = D ~= nil, callbacks = callbacks, quiet = opts.quiet,
    detect_anomaly = opts.detect_anomaly, evaluate = function(t) return evaluate(t.model, test, device) end, print_epochs = false, stop_signals = true }
  if opts.resume then
    local first, within = tr:load(opts.resume, resume_check(opts, n, steps, world))
    if not opts.quiet then
      if within then print(string.format("resumed from %s at epoch %d step %d", opts.resume, first, within.step))
      else print(string.format("resumed from %s after epoch %d", opts.resume, first - 1)) end
    end
  end
  fm.catch_stop()     -- from here on Ctrl-C and SIGTERM let the step in progress finish (before the header, which tests wait for)
  if not opts.quiet then
    print(string.format("Fashion-MNIST: %d training and %d test images; model %s (%d parameters) on %s; %s lr %g (%s), batch %d, %d threads, %d loader workers%s",
      train_images:size(1), test_images:size(1), opts.model, model:num_parameters(), device, opts.optimizer, opts.lr,
      opts.lr_schedule == "cosine" and "cosine to 0" or "constant", opts.batch_size, nnr.get_num_threads(), opts.workers,
      opts.augment and ", augmented" or ""))
    io.stdout:flush()
  end
  tr:fit()
  if tb then tb:close() end
  if opts.plot and not tr.interrupted then     -- a resumed run with --metrics: the whole history, from the file
    nnr.plot.curves((opts.resume and opts.metrics) or tr.history, opts.plot,
      { title = string.format("Fashion-MNIST, %s, batch %d, %s lr %g", opts.model, opts.batch_size, opts.optimizer, opts.lr) })
    if not opts.quiet then print("curves: " .. opts.plot) end
  end
end

main(arg)
