-- Smaller, faster Fashion-MNIST models: int8 dynamic quantization and structured pruning.
--
--   nnrun scripts/quantize_fashion_mnist.lua [--checkpoint PATH] [--metrics FILE] [--threads N] [--seed N]
--         [--data DIR] [--epochs N] [--prune AMOUNT] [--limit N] [--save-fp32 PATH] [--quiet]
--
-- Loads a checkpoint of scripts/train_fashion_mnist.lua (--save PATH; an mlp), or without one
-- trains the mlp for --epochs (5) epochs as the main job does. Then it builds four variants:
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
local nn = nnr.nn
local F = nn.functional
local fm = dofile((arg[0]:match("^(.*)/[^/]*$") or "scripts") .. "/fashion_mnist.lua")

local function parse_args(argv)
  local opts = { seed = 1, data = fm.DEFAULT_DATA, epochs = 5, prune = 0.5 }
  local numeric = { threads = true, seed = true, epochs = true, prune = true, limit = true }
  local strings = { checkpoint = true, metrics = true, data = true, save_fp32 = true }
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
      if numeric[key] then v = tonumber(v) or error("--" .. key:gsub("_", "-") .. " needs a number, got '" .. argv[i + 1] .. "'", 0) end
      opts[key] = v
      i = i + 1
    else
      error("unknown option --" .. key:gsub("_", "-"), 0)
    end
    i = i + 1
  end
  if not (opts.prune >= 0 and opts.prune < 1) then error("--prune must be in [0, 1)", 0) end
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

-- SGD with momentum, lr cosine-annealed per batch as in the main job
local function train(model, images, labels, opts, epochs, lr)
  model:train()
  local opt = nnr.optim.SGD(model:parameters(), { lr = lr, momentum = 0.9 })
  local loader = fm.loader(images, labels, { batch_size = 64, shuffle = true, seed = opts.seed, workers = 2 })
  local sched = nnr.optim.CosineAnnealingLR(opt, { T_max = math.max(1, #loader * epochs) })
  for epoch = 1, epochs do
    loader.epoch = epoch - 1
    local total, n = 0, 0
    for xb, yb in loader:iter() do
      local loss = F.cross_entropy(model(xb), yb)
      opt:zero_grad()
      loss:backward()
      opt:step()
      sched:step()
      total, n = total + loss:item() * xb:size(1), n + xb:size(1)
    end
    say(opts, "  epoch %d/%d: train loss %.4f", epoch, epochs, total / n)
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
    train_x, train_y, train_u8 = train_x:narrow(1, 1, opts.limit), train_y:narrow(1, 1, opts.limit), train_u8:narrow(1, 1, opts.limit)
    test_x, test_y = test_x:narrow(1, 1, math.min(opts.limit, test_x:size(1))), test_y:narrow(1, 1, math.min(opts.limit, test_y:size(1)))
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
    say(opts, "training the mlp for %d epochs (no --checkpoint)", opts.epochs)
    train(model, train_u8, train_y, opts, opts.epochs, 0.01)
  end
  model:eval()
  if opts.save_fp32 then nnr.save(opts.save_fp32, model:state_dict()) end

  local variants = { { "fp32", model } }
  variants[2] = { "int8", nnr.quant.dynamic(model, { nn.Linear }) }

  -- structured pruning of the hidden neurons, one epoch of fine-tuning with the masks, then shrink
  local pruned = nnr.quant.copy(model)
  for _, i in ipairs { 2, 4 } do nnr.prune.ln_structured(pruned:get(i), "weight", opts.prune, 2, 1) end
  say(opts, "pruned %.0f%% of the hidden neurons (sparsity %.3f); fine-tuning 1 epoch", 100 * opts.prune, nnr.prune.sparsity(pruned))
  train(pruned, train_u8, train_y, opts, 1, 0.005)
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
