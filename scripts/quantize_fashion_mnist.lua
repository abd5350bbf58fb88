-- Smaller, faster Fashion-MNIST models: int8 dynamic quantization and structured pruning.
--
--   nnrun scripts/quantize_fashion_mnist.lua [--checkpoint PATH] [--metrics FILE] [--threads N] [--seed N]
--         [--data DIR] [--epochs N] [--prune AMOUNT] [--limit N] [--save-fp32 PATH] [--quiet]
--         [--save PATH] [--resume PATH]
--
-- Loads a checkpoint of scripts/train_fashion_mnist.lua (--save PATH; an mlp), or without one
-- trains the mlp for --epochs (5) epochs as the main job does; --save PATH keeps that training's
-- checkpoints (after each epoch, and where Ctrl-C or SIGTERM stopped it: the step in progress
-- finishes, the checkpoint is written, the script exits with 130 or 143) and --resume PATH
-- continues one with the same batches and losses (a finished one serves as --checkpoint too).
-- Then it builds four variants:
--   fp32          the model as trained
--   int8          nnr.quant.dynamic(model, {nn.Linear}): int8 weights per channel, int8 activations per row
--   pruned        a copy with --prune (0.5) of the hidden neurons removed by L2 norm
--                 (prune.ln_structured), fine-tuned for one epoch with the masks, then shrunk
--   pruned+int8   the pruned model quantized
-- and prints, for each: test accuracy, size in bytes (the state dict as saved), latency at batch 1
-- (median) and throughput at batch 256 (median). --metrics FILE appends one JSON object per row:
--   {"variant":"fp32","accuracy":...,"bytes":...,"latency_b1_us":...,"throughput_b256":...}
-- --save-fp32 PATH writes the fp32 model's weights (safetensors) for scripts/bench/run_quant.py,
-- which quantizes the same model with PyTorch.
local nnr = require "nnr"
local check = require "nnr.check"
local nn = nnr.nn
local F = nn.functional
local fm = dofile((arg[0]:match("^(.*)/[^/]*$") or "scripts") .. "/fashion_mnist.lua")

local function parse_args(argv)
  local opts = { seed = 1, data = fm.DEFAULT_DATA, epochs = 5, prune = 0.5 }
  -- numbers checked before any work (nnr.check): whole, finite, in range
  local numeric = { threads = { integer = true, min = 1, max = 1024 }, seed = { integer = true, min = 0, max = 2 ^ 53 },
                    epochs = { integer = true, min = 0, max = 1e6 }, prune = {}, limit = { integer = true, min = 1, max = 2 ^ 53 } }
  local strings = { checkpoint = true, metrics = true, data = true, save_fp32 = true, save = true, resume = true }
  local i = 1
  while i <= #argv do
    local key = argv[i]:match("^%-%-([%w%-]+)$")
    if not key then error("unexpected argument '" .. argv[i] .. "' (see the header of scripts/quantize_fashion_mnist.lua)", 0) end
    key = key:gsub("%-", "_")
    if key == "quiet" then opts.quiet = true
    elseif key == "help" then io.write(io.open(arg[0]):read("*a"):match("^(.-)\nlocal"), "\n"); os.exit(0)
    elseif numeric[key] or strings[key] then
      local v = argv[i + 1]
      if v == nil then error("--" .. key:gsub("_", "-") .. " needs a value", 0) end
      if numeric[key] then v = fm.number_option(key, v, numeric[key]) end
      opts[key] = v
      i = i + 1
    else
      error("unknown option --" .. key:gsub("_", "-"), 0)
    end
    i = i + 1
  end
  if not (opts.prune >= 0 and opts.prune < 1) then error("--prune must be in [0, 1), got " .. check.show(opts.prune), 0) end
  if opts.checkpoint and opts.resume then error("--checkpoint (a trained mlp) and --resume (a training to continue) exclude each other", 0) end
  return opts
end

local function say(opts, ...) if not opts.quiet then print(string.format(...)) end end

local function accuracy(model, x, y)
  model:eval()
  local correct = 0
  nnr.no_grad(function()
    for i = 1, x:size(1), 1000 do
      local n = math.min(1000, x:size(1) - i + 1)
      correct = correct + model(x:narrow(1, i, n)):argmax(2):eq(y:narrow(1, i, n)):sum():item()
    end
  end)
  return correct / x:size(1)
end

-- SGD with momentum, lr cosine-annealed per batch as in the main job. save: a path for checkpoints
-- (after each epoch, and where a stop ended the training); resume: a loaded checkpoint to continue.
-- Returns nil when done, or the signal that stopped it ("SIGINT", "SIGTERM") and where.
local function train(model, images, labels, opts, epochs, lr, save, resume)
  model:train()
  local opt = nnr.optim.SGD(model:parameters(), { lr = lr, momentum = 0.9 })
  local loader = fm.loader(images, labels, { batch_size = 64, shuffle = true, seed = opts.seed, workers = 2 })
  local steps = #loader
  local sched = nnr.optim.CosineAnnealingLR(opt, { T_max = math.max(1, steps * epochs) })
  local samples = images:size(1)
  local function checkpoint(epochs_done, within)
    local ck = { model = model:state_dict(), optimizer = opt:state_dict(), scheduler = sched:state_dict(), epoch = epochs_done,
                 rng = nnr.get_rng_state(), model_kind = "mlp", batch_size = 64, samples = samples, world = 1 }
    if within then ck.step, ck.epoch_loss_sum, ck.epoch_samples = within.step, within.loss_sum, within.samples end
    nnr.save_checkpoint(save, ck)
  end
  local first, start, total0, n0 = 1, 0, 0, 0
  if resume then
    local where = "--resume " .. opts.resume
    opt:load_state_dict(resume.optimizer)
    if resume.scheduler then sched:load_state_dict(resume.scheduler) end
    nnr.set_rng_state(resume.rng)
    first = check.integer(where, "epoch", resume.epoch, 0, 1e6) + 1
    if resume.step ~= nil then
      if resume.batch_size ~= 64 or resume.samples ~= samples then
        error(string.format("%s stopped in the middle of epoch %d of training on %s images with batches of %s; resume it with the same --limit",
          where, first, tostring(resume.samples), tostring(resume.batch_size)), 0)
      end
      start = check.integer(where, "step", resume.step, 1, steps - 1)
      total0 = check.number(where, "epoch_loss_sum", resume.epoch_loss_sum)
      n0 = check.integer(where, "epoch_samples", resume.epoch_samples, 1)
    end
  end
  fm.catch_stop()
  for epoch = first, epochs do
    local total, n, s = 0, 0, 0
    if start > 0 and epoch == first then
      loader:load_state_dict({ epoch = epoch, position = start })
      total, n, s = total0, n0, start
    else
      loader.epoch = epoch - 1
    end
    for xb, yb in loader:iter() do
      local loss = F.cross_entropy(model(xb), yb)
      opt:zero_grad()
      loss:backward()
      opt:step()
      sched:step()
      s = s + 1
      total, n = total + loss:item() * xb:size(1), n + xb:size(1)
      local sig = s < steps and fm.stop_requested()
      if sig then
        if save then checkpoint(epoch - 1, { step = s, loss_sum = total, samples = n }) end
        return sig, string.format("at epoch %d step %d", epoch, s)
      end
    end
    say(opts, "  epoch %d/%d: train loss %.4f", epoch, epochs, total / n)
    if save then checkpoint(epoch) end
    local sig = epoch < epochs and fm.stop_requested()
    if sig then return sig, string.format("after epoch %d", epoch) end
  end
end

local function median(t) table.sort(t); return t[math.floor(#t / 2) + 1] end

local function speed(model)
  model:eval()
  local x1, x256 = nnr.randn(1, 1, 28, 28), nnr.randn(256, 1, 28, 28)
  local lat, thr = {}, {}
  nnr.no_grad(function()
    for _ = 1, 200 do model(x1) end
    for i = 1, 2000 do local t0 = nnr.clock(); model(x1):sum():item(); lat[i] = nnr.clock() - t0 end
    for _ = 1, 5 do model(x256) end
    for i = 1, 60 do local t0 = nnr.clock(); model(x256):sum():item(); thr[i] = nnr.clock() - t0 end
  end)
  return median(lat) * 1e6, 256 / median(thr)
end

local function main(argv)
  local opts = parse_args(argv)
  if opts.threads then nnr.set_num_threads(opts.threads) end
  nnr.manual_seed(opts.seed)
  local train_x, train_y = fm.load_split(opts.data, "train")
  local test_x, test_y = fm.load_split(opts.data, "t10k")
  local train_u8 = fm.read_split(opts.data, "train")
  if opts.limit then
    local function head(t) return t:narrow(1, 1, math.min(opts.limit, t:size(1))) end
    train_x, train_y, train_u8, test_x, test_y = head(train_x), head(train_y), head(train_u8), head(test_x), head(test_y)
  end

  local model = fm.build_model("mlp")
  if opts.checkpoint then
    local ck = nnr.load_checkpoint(opts.checkpoint)
    if ck.model_kind and ck.model_kind ~= "mlp" then
      error(string.format("--checkpoint %s holds a %s model; this script quantizes and prunes the mlp", opts.checkpoint, ck.model_kind), 0)
    end
    model:load_state_dict(ck.model)
    say(opts, "loaded %s", opts.checkpoint)
  else
    local resume
    if opts.resume then
      resume = fm.load_training_checkpoint("--resume " .. opts.resume, opts.resume)
      if resume.model_kind ~= "mlp" then
        error(string.format("--resume %s holds a %s model; this script trains the mlp", opts.resume, tostring(resume.model_kind)), 0)
      end
      model:load_state_dict(resume.model)
      say(opts, "resuming the mlp's training from %s", opts.resume)
    else
      say(opts, "training the mlp for %d epochs (no --checkpoint)", opts.epochs)
    end
    local sig, where = train(model, train_u8, train_y, opts, opts.epochs, 0.01, opts.save, resume)
    if sig then     -- nnrun exits with 130 or 143
      if opts.save then
        io.stderr:write(string.format("interrupted %s (%s): checkpoint written to %s; resume with --resume %s\n", where, sig, opts.save, opts.save))
      else
        io.stderr:write(string.format("interrupted %s (%s); no --save was given, so no checkpoint was written\n", where, sig))
      end
      return
    end
  end
  model:eval()
  if opts.save_fp32 then nnr.save(opts.save_fp32, model:state_dict()) end

  local variants = { { "fp32", model } }
  variants[2] = { "int8", nnr.quant.dynamic(model, { nn.Linear }) }

  -- structured pruning of the hidden neurons, one epoch of fine-tuning with the masks, then shrink
  local pruned = nnr.quant.copy(model)
  for _, i in ipairs { 2, 4 } do nnr.prune.ln_structured(pruned:get(i), "weight", opts.prune, 2, 1) end
  say(opts, "pruned %.0f%% of the hidden neurons (sparsity %.3f); fine-tuning 1 epoch", 100 * opts.prune, nnr.prune.sparsity(pruned))
  local sig, where = train(pruned, train_u8, train_y, opts, 1, 0.005)
  if sig then
    io.stderr:write(string.format("interrupted %s of the pruned model's fine-tuning (%s)%s\n", where, sig,
      opts.save and string.format("; the trained mlp is in %s: rerun with --checkpoint %s", opts.save, opts.save) or ""))
    return
  end
  for _, i in ipairs { 2, 4 } do nnr.prune.remove(pruned:get(i), "weight") end
  local _, removed = nnr.prune.shrink(pruned)
  pruned:eval()
  say(opts, "shrunk: %d neurons removed, %d -> %d parameters", removed, model:num_parameters(), pruned:num_parameters())
  variants[3] = { "pruned", pruned }
  variants[4] = { "pruned+int8", nnr.quant.dynamic(pruned, { nn.Linear }) }

  local rows = {}
  for i, v in ipairs(variants) do
    local acc = accuracy(v[2], test_x, test_y)
    local lat, thr = speed(v[2])
    rows[i] = { variant = v[1], accuracy = acc, bytes = v[2]:size_bytes(), latency_b1_us = lat, throughput_b256 = thr }
  end
  local base = rows[1]
  print(string.format("%-12s %9s %11s %8s %14s %9s %16s %9s", "variant", "accuracy", "bytes", "smaller", "latency b1 us", "faster",
    "b256 samples/s", "faster"))
  for _, r in ipairs(rows) do
    print(string.format("%-12s %9.4f %11d %7.2fx %14.1f %8.2fx %16.0f %8.2fx", r.variant, r.accuracy, r.bytes, base.bytes / r.bytes,
      r.latency_b1_us, base.latency_b1_us / r.latency_b1_us, r.throughput_b256, r.throughput_b256 / base.throughput_b256))
  end
  if opts.metrics then
    local f = assert(io.open(opts.metrics, "a"))
    for _, r in ipairs(rows) do
      f:write(string.format('{"variant":"%s","accuracy":%.6g,"bytes":%d,"latency_b1_us":%.6g,"throughput_b256":%.6g}\n', r.variant,
        r.accuracy, r.bytes, r.latency_b1_us, r.throughput_b256))
    end
    f:close()
  end
end

main(arg)
