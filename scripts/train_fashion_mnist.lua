-- Trains a network on Fashion-MNIST (Debian's dataset-fashion-mnist package).
--
--   nnrun scripts/train_fashion_mnist.lua [--model mlp|cnn|cnn-bn] [--epochs N]
--         [--batch-size N] [--lr X] [--optimizer sgd|adam] [--device cpu|cuda|cuda:N]
--         [--threads N] [--seed N] [--data DIR] [--save PATH] [--resume PATH]
--         [--metrics FILE] [--tensorboard DIR] [--plot FILE.png|svg] [--lr-schedule cosine|none] [--stop-after EPOCH]
--         [--distributed]
--         [--data-parallel DEV,DEV,...]
--         [--workers N] [--augment] [--allow-bf16] [--detect-anomaly] [--quiet]
--
-- --allow-bf16 lets the cpu run f32 matrix products with bf16 products and f32 sums on
-- AMX tiles where the cpu has them (nnr.backends.cpu.allow_bf16; about 2x faster on
-- Sapphire Rapids, see docs/perf.md); elsewhere it changes nothing.
--
-- Batches come from nnr.data.DataLoader: --workers N (default 2) assemble and
-- transform them ahead of use on libuv's pool; --augment adds a random crop
-- (padding 2) and a horizontal flip. Each epoch reports the share of its time
-- the training loop waited for data.
--
-- Defaults: cnn, 2 epochs, batch 64, SGD lr 0.01 momentum 0.9, seed 1, and the
-- learning rate annealed per step along a cosine from --lr to 0 over the run
-- (--lr-schedule none keeps it constant).
-- After each epoch it evaluates on the 10,000 test images; with --metrics it
-- appends one JSON object per epoch; with --tensorboard DIR it logs the same numbers and histograms of
-- every weight and gradient for TensorBoard (nnr.tensorboard.SummaryWriter); with --plot FILE it draws the
-- loss, accuracy and learning-rate curves at the end (gnuplot; a resumed run with --metrics FILE draws that
-- file's whole history, without the learning rate); with --save it writes a checkpoint
-- (model, optimizer, schedule, epoch, RNG state) that --resume continues from,
-- giving the same losses as a run that never stopped. --stop-after N ends the
-- run after epoch N (a job split in parts: resume it with the same arguments).
--
-- Ctrl-C (SIGINT) or SIGTERM during training lets the step in progress finish, writes a
-- checkpoint of that position to --save PATH (mid-epoch too: the loader's position and the
-- epoch's running loss go with it, so --resume PATH continues with the same batches, losses and
-- final weights as a run never interrupted) and exits with 130 (SIGINT) or 143 (SIGTERM):
--   interrupted at epoch 1 step 120 (SIGINT): checkpoint written to ck.st; resume with --resume ck.st
-- A second signal interrupts at once (the checkpoint being written, if any, stays the previous one).
--
-- Numeric options are checked before any work: --epochs and --stop-after whole numbers in
-- [0, 1e6], --batch-size in [1, 2^31), --lr finite >= 0, --momentum in [0, 1], --threads in
-- [1, 1024], --workers in [0, 64], --seed in [0, 2^53], --limit >= 1.
local nnr = require "nnr"
local check = require "nnr.check"
local ffi = require "ffi"
local nn, optim = nnr.nn, nnr.optim
local fm = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts") .. "/fashion_mnist.lua")
local read_split, build_model = fm.read_split, fm.build_model

ffi.cdef "int isatty(int fd);"

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

-- progress -----------------------------------------------------------------------------
local Progress = {}
Progress.__index = Progress
function Progress.new(total, epoch, epochs, quiet)
  return setmetatable({ total = total, epoch = epoch, epochs = epochs, tty = ffi.C.isatty(1) == 1, quiet = quiet,
                        start = nnr.clock(), last = 0 }, Progress)
end
function Progress:update(done, loss, samples)
  if self.quiet then return end
  local now = nnr.clock()
  local elapsed = now - self.start
  local rate = samples / math.max(elapsed, 1e-9)
  local eta = (self.total - done) * elapsed / math.max(done, 1)
  if self.tty then
    if now - self.last < 0.1 and done < self.total then return end
    local width = 30
    local filled = math.floor(width * done / self.total)
    io.write(string.format("\repoch %d/%d [%s%s] %3d%% loss %.4f %6.0f samples/s ETA %s ", self.epoch, self.epochs,
      string.rep("=", filled), string.rep(" ", width - filled), math.floor(100 * done / self.total), loss, rate, fm.fmt_time(eta)))
    if done == self.total then io.write("\n") end
    io.flush()
  elseif done == self.total or now - self.last >= 10 then
    print(string.format("epoch %d/%d step %d/%d loss %.4f %.0f samples/s ETA %s", self.epoch, self.epochs, done, self.total, loss,
      rate, fm.fmt_time(eta)))
  end
  self.last = now
end

-- training -------------------------------------------------------------------------------
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
  return total_loss / n, correct / n
end

local function json_line(t, order)
  local parts = {}
  for _, k in ipairs(order) do
    local v = t[k]
    parts[#parts + 1] = string.format("%q:%s", k, k == "epoch" and string.format("%d", v) or string.format("%.6g", v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function main(argv)
  local opts = parse_args(argv)
  if opts.threads then nnr.set_num_threads(opts.threads) end
  if opts.allow_bf16 then nnr.backends.cpu.allow_bf16 = true end
  nnr.manual_seed(opts.seed)
  -- --distributed (under mpirun -np N): --batch-size stays the global batch, each rank takes its
  -- share of every batch (DistributedSampler), gradients are averaged (DistributedDataParallel),
  -- and only rank 0 prints, writes metrics and saves checkpoints
  local D, world, rank = nil, 1, 0
  if opts.distributed then
    D = nnr.parallel.Distributed
    rank, world = D.init()
    if opts.batch_size % world ~= 0 then
      error(string.format("--batch-size %d does not split over %d ranks; use a multiple of %d", opts.batch_size, world, world), 0)
    end
    if rank ~= 0 then opts.quiet, opts.metrics, opts.save, opts.tensorboard, opts.plot = true, nil, nil, nil, nil end
  end
  if opts.plot then nnr.plot.check_output(opts.plot, "--plot") end
  local records = {}      -- what --plot draws without --metrics
  local tb
  if opts.tensorboard then
    local ok, w = pcall(nnr.tensorboard.SummaryWriter, opts.tensorboard)
    if not ok then error("--tensorboard " .. opts.tensorboard .. ": " .. tostring(w), 0) end
    tb = w
  end
  local device = opts.device
  local ok, err = pcall(nnr.device, device)        -- before any work: say at once why a device is unusable
  if not ok then error("--device " .. device .. ": " .. tostring(err), 0) end
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
  local ddp = D and nnr.parallel.DistributedDataParallel(model) or nil       -- rank 0's initial weights everywhere
  -- --data-parallel cpu:0,cpu:1 (naming a cpu device makes it), or cuda:0,cuda:1: a replica per device
  local dpar
  if opts.data_parallel then
    local devs = {}
    for d in opts.data_parallel:gmatch("[^,]+") do devs[#devs + 1] = d end
    if D then error("--data-parallel and --distributed do not combine (yet)", 0) end
    model:to(devs[1])
    device = nnr.device(devs[1]).name
    dpar = nnr.parallel.DataParallel(model, devs)
  end
  local opt
  if opts.optimizer == "sgd" then opt = optim.SGD(model:parameters(), { lr = opts.lr, momentum = opts.momentum })
  else opt = optim.Adam(model:parameters(), { lr = opts.lr }) end
  local n = train_images:size(1)
  local steps = #train
  -- cosine annealing stepped every batch, over the whole run
  local sched = opts.lr_schedule == "cosine" and optim.CosineAnnealingLR(opt, { T_max = math.max(1, steps * opts.epochs) }) or nil
  -- a checkpoint: the model, the optimizer and its schedule, the RNG, the epochs done, and what the data
  -- stream depends on; `within` (a stop mid-epoch) adds the batches done in the next epoch and its running loss
  local function save_checkpoint(epochs_done, within)
    local ck = { model = model:state_dict(), optimizer = opt:state_dict(), epoch = epochs_done,
                 scheduler = sched and sched:state_dict() or nil, rng = nnr.get_rng_state(), model_kind = opts.model,
                 batch_size = opts.batch_size, samples = n, world = world }
    if within then ck.step, ck.epoch_loss_sum, ck.epoch_samples = within.step, within.loss_sum, within.samples end
    nnr.save_checkpoint(opts.save, ck)
  end
  local first_epoch, resume = 1, nil
  if opts.resume then
    local where = "--resume " .. opts.resume
    local ck = fm.load_training_checkpoint(where, opts.resume)
    if ck.model_kind and ck.model_kind ~= opts.model then
      error(string.format("--resume %s holds a %s model, not %s", opts.resume, ck.model_kind, opts.model), 0)
    end
    model:load_state_dict(ck.model)
    opt:load_state_dict(ck.optimizer)
    if sched and ck.scheduler then sched:load_state_dict(ck.scheduler) end
    nnr.set_rng_state(ck.rng)
    first_epoch = check.integer(where, "epoch", ck.epoch, 0, 1e6) + 1
    if ck.step ~= nil then        -- stopped mid-epoch: the same batches only with the same batch size, data and ranks
      if ck.batch_size ~= opts.batch_size or ck.samples ~= n or (ck.world or 1) ~= world then
        error(string.format("%s stopped in the middle of epoch %d with --batch-size %s on %s training images and %s process(es); "
          .. "resume it with the same --batch-size, --limit and number of processes (now %d, %d, %d)", where, first_epoch,
          tostring(ck.batch_size), tostring(ck.samples), tostring(ck.world or 1), opts.batch_size, n, world), 0)
      end
      resume = { step = check.integer(where, "step", ck.step, 1, steps - 1),
                 -- a diverged run's sum may be inf or nan and still resumes (its losses are what they were)
                 loss_sum = type(ck.epoch_loss_sum) == "number" and ck.epoch_loss_sum or check.number(where, "epoch_loss_sum", ck.epoch_loss_sum),
                 samples = check.integer(where, "epoch_samples", ck.epoch_samples, 1) }
    end
    if not opts.quiet then
      if resume then print(string.format("resumed from %s at epoch %d step %d", opts.resume, first_epoch, resume.step))
      else print(string.format("resumed from %s after epoch %d", opts.resume, ck.epoch)) end
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

  -- a stop (SIGINT, SIGTERM) seen after a step or an epoch: write the checkpoint (unless just written),
  -- say where training stopped and what was saved; nnrun then exits with 130 or 143
  local function stop(sig, what, save)
    local ok, err = true, nil
    if opts.save and save then ok, err = pcall(save) end
    if rank ~= 0 then return end
    if not opts.save then
      io.stderr:write(string.format("interrupted %s (%s); no --save was given, so no checkpoint was written\n", what, sig))
    elseif ok then
      io.stderr:write(string.format("interrupted %s (%s): checkpoint written to %s; resume with --resume %s\n", what, sig, opts.save, opts.save))
    else
      io.stderr:write(string.format("interrupted %s (%s), but the checkpoint could not be written: %s\n", what, sig, tostring(err)))
    end
  end

  local losses = {}
  local last = math.min(opts.epochs, opts.stop_after or opts.epochs)
  for epoch = first_epoch, last do
    local progress = Progress.new(steps, epoch, opts.epochs, opts.quiet)
    local t0 = nnr.clock()
    local wait0 = train:stats().wait_seconds
    local running, seen, s = 0, 0, 0
    local seen0 = 0
    if resume and epoch == first_epoch then   -- continue the data stream after the batches already done
      train:load_state_dict({ epoch = epoch, position = resume.step })
      s = resume.step
      if rank == 0 then running, seen, seen0 = resume.loss_sum, resume.samples, resume.samples end   -- summed over ranks
    else
      train.epoch = epoch - 1                     -- the loader's epoch e is the training epoch e, also after --resume
    end
    for xb, yb in train:iter() do
      s = s + 1
      xb, yb = xb:to(device), yb:to(device)
      local len = xb:size(1)
      local loss
      opt:zero_grad()
      if dpar then
        loss = nnr.tensor({ (dpar:backward(xb, yb)) })        -- each replica's forward and backward, at once
      else
        loss = nn.functional.cross_entropy(model(xb), yb)
        if ddp then ddp:backward(loss) else loss:backward() end
      end
      opt:step()
      if sched then sched:step() end
      local l = loss:item()
      if opts.detect_anomaly and (l ~= l or l == math.huge or l == -math.huge) then
        error(string.format("training stopped: the loss is %s at epoch %d step %d (--detect-anomaly); lower --lr?", tostring(l), epoch, s), 0)
      end
      losses[#losses + 1] = l
      running = running + l * len
      seen = seen + len
      progress:update(s, running / seen, seen - seen0)
      if s < steps then         -- (after the epoch's last step, the epoch finishes: evaluation, metrics, checkpoint)
        local sig = fm.stop_requested(D)
        if sig then
          if progress.tty and not opts.quiet then io.write("\n") end
          local loss_sum, samples = running, seen
          if D then     -- the epoch's running loss over all ranks (rank 0 takes it back on resume)
            local t = D.all_reduce(nnr.tensor({ running, seen }, { dtype = "f64" }))
            loss_sum, samples = t[1], t[2]
          end
          stop(sig, string.format("at epoch %d step %d", epoch, s),
            function() save_checkpoint(epoch - 1, { step = s, loss_sum = loss_sum, samples = samples }) end)
          return losses
        end
      end
    end
    local train_seconds = nnr.clock() - t0
    local wait_fraction = (train:stats().wait_seconds - wait0) / train_seconds
    local epoch_seen = seen - seen0           -- the samples of this run's part of the epoch, for the speed
    if D then     -- the epoch's loss and samples over all ranks
      local t = D.all_reduce(nnr.tensor({ running, seen, epoch_seen }, { dtype = "f64" }))
      running, seen, epoch_seen = t[1], t[2], t[3]
    end
    local test_loss, accuracy = evaluate(model, test, device)
    local seconds = nnr.clock() - t0
    local rss = fm.rss_mib()
    if not opts.quiet then
      print(string.format("epoch %d: train loss %.4f, test loss %.4f, test accuracy %.4f, %.0f samples/s, %.1f s, waited for data %.2f%%, RSS %.0f MiB",
        epoch, running / seen, test_loss, accuracy, epoch_seen / train_seconds, seconds, 100 * wait_fraction, rss))
      io.stdout:flush()
    end
    if opts.metrics then
      local f = assert(io.open(opts.metrics, "a"))
      f:write(json_line({ epoch = epoch, train_loss = running / seen, test_loss = test_loss, test_accuracy = accuracy,
        samples_per_s = epoch_seen / train_seconds, seconds = seconds, rss_mib = rss, data_wait_fraction = wait_fraction },
        { "epoch", "train_loss", "test_loss", "test_accuracy", "samples_per_s", "seconds", "rss_mib", "data_wait_fraction" }), "\n")
      f:close()
    end
    records[#records + 1] = { epoch = epoch, train_loss = running / seen, test_loss = test_loss, test_accuracy = accuracy,
                              lr = opt.param_groups[1].lr }
    if tb then
      tb:add_scalar("loss/train", running / seen, epoch)
      tb:add_scalar("loss/test", test_loss, epoch)
      tb:add_scalar("accuracy/test", accuracy, epoch)
      tb:add_scalar("lr", opt.param_groups[1].lr, epoch)
      tb:add_scalar("samples_per_s", epoch_seen / train_seconds, epoch)
      for _, np in ipairs(model:named_parameters()) do
        tb:add_histogram(np[1], np[2], epoch)
        if np[2].grad then tb:add_histogram(np[1] .. ".grad", np[2].grad, epoch) end
      end
      tb:flush()
    end
    if opts.save then save_checkpoint(epoch) end
    if epoch < last then
      local sig = fm.stop_requested(D)
      if sig then stop(sig, string.format("after epoch %d", epoch)); return losses end
    end
  end
  if tb then tb:close() end
  if opts.plot then
    local what = (opts.resume and opts.metrics) or records      -- a resumed run: the whole history, from its metrics file
    nnr.plot.curves(what, opts.plot, { title = string.format("Fashion-MNIST, %s, batch %d, %s lr %g", opts.model, opts.batch_size, opts.optimizer, opts.lr) })
    if not opts.quiet then print("curves: " .. opts.plot) end
  end
  return losses
end

main(arg)
