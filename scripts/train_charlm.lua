-- Trains a language model on text and writes samples of it: the second main job (docs/sequence.md).
--
--   nnrun scripts/train_charlm.lua [--model gpt|lstm|gru] [--tokens char|bpe] [--data FILE|DIR]
--         [--steps N | --epochs N] [--batch-size N] [--seq-len N] [--lr X] [--min-lr X] [--warmup N]
--         [--weight-decay X] [--clip X] [--dropout X] [--layers N] [--d-model N] [--heads N] [--hidden N]
--         [--bpe-vocab N] [--val-fraction X] [--eval-every N] [--eval-batches N] [--sample-tokens N]
--         [--temperature X] [--top-k N] [--prompt TEXT] [--threads N] [--seed N] [--save PATH]
--         [--resume PATH] [--stop-after STEP] [--metrics FILE] [--tensorboard DIR] [--plot FILE.png|svg]
--         [--device cpu|cuda|cuda:N]
--         [--data-parallel DEV,DEV,...] [--distributed] [--workers N] [--exclude SUFFIXES]
--         [--save-init PATH] [--allow-bf16] [--detect-anomaly] [--quiet]
--
-- Data: Debian's fortunes (package `fortunes`, /usr/share/games/fortunes, about 2.6 MB of English) by
-- default, or --data FILE|DIR (every file of a folder, in name order, less those ending in --exclude's
-- comma-separated suffixes: by default ".dat,.u8", the fortune index files). --tokens char (default)
-- learns the corpus's characters (it must be UTF-8 text); --tokens bpe learns a byte-level BPE of
-- --bpe-vocab tokens (512) in C. The last --val-fraction (0.1) of the tokens are held out.
-- Models (nnr.models): gpt (default; --layers 4, --heads 4, --d-model 256, context = --seq-len,
-- learned positions, a head tied to the embedding) or lstm / gru (--layers 2, --hidden 512).
-- Training: batches of --batch-size (32) windows of --seq-len (128) tokens at seeded random offsets,
-- AdamW (--weight-decay 0.1; betas 0.9, 0.95) with --warmup (100) steps of linear warm-up and a
-- cosine from --lr (1e-3; 2e-3 for lstm/gru) to --min-lr (lr / 10), the gradient clipped to a norm
-- of --clip (1). --steps N, or --epochs N (an epoch: as many windows as the training tokens hold
-- sequences; default 2 epochs).
-- Every --eval-every steps (250) and at the end: the validation loss over --eval-batches batches
-- (0: all of the held-out text), a line of progress, a sample of --sample-tokens (200) tokens after
-- --prompt (a newline) at --temperature 0.8, and with --metrics FILE a JSON line {step, train_loss,
-- val_loss, tokens_per_s, seconds, rss_mib, lr}; with --tensorboard DIR the same as TensorBoard scalars, and
-- histograms of every weight and its gradient (nnr.tensorboard.SummaryWriter); with --plot FILE the loss
-- curves and the learning rate drawn at the end (gnuplot; a resumed run draws the whole run's history,
-- which the checkpoint keeps). --save PATH writes a checkpoint (model, config, tokenizer, optimizer, RNG,
-- step, the run's options, the history) at each evaluation, at a stop and at the end;
-- --resume PATH continues it with the same batches and losses as a run that never stopped: the data,
-- tokens, schedule, batch, length and model come from the checkpoint (an option given again must
-- agree), and so do the reporting options unless given. --stop-after STEP ends early (resume later).
-- --save-init PATH writes the initial weights (safetensors) for scripts/bench/charlm_torch.py --init.
-- Ctrl-C or SIGTERM lets the step in progress finish and, with --save, writes a checkpoint.
-- scripts/generate.lua samples from a checkpoint. The loop is nnr.train.Trainer's (eval_every: steps, not epochs).
local nnr = require "nnr"
local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts")
local lm = dofile(dir .. "/charlm.lua")
local fm = dofile(dir .. "/fashion_mnist.lua")      -- start_run, catch_stop, rss_mib
local models, F = nnr.models, nnr.nn.functional

-- arguments ------------------------------------------------------------------------
local INT = function(min, max) return { integer = true, min = min, max = max or 2 ^ 31 - 1 } end
local NUMERIC = { steps = INT(1, 1e9), epochs = INT(1, 1e6), batch_size = INT(1), seq_len = INT(1), lr = { min = 0 }, min_lr = { min = 0 },
                  warmup = INT(0, 1e9), weight_decay = { min = 0 }, clip = { above = 0 }, dropout = { min = 0, below = 1 },
                  layers = INT(1, 1000), d_model = INT(1), heads = INT(1), hidden = INT(1), bpe_vocab = INT(256, 2 ^ 20),
                  val_fraction = { above = 0, below = 1 }, eval_every = INT(1, 1e9), eval_batches = INT(0, 1e9),
                  sample_tokens = INT(0, 1e6), temperature = { min = 0 }, top_k = INT(1), threads = INT(1, 1024),
                  seed = INT(0, 2 ^ 53), stop_after = INT(1, 1e9), workers = INT(0, 64) }
local FLAGS = { distributed = true, allow_bf16 = true, detect_anomaly = true, quiet = true }
local STRINGS = { model = true, tokens = true, data = true, prompt = true, save = true, resume = true, metrics = true, device = true,
                  data_parallel = true, exclude = true, save_init = true, tensorboard = true, plot = true }

local function parse_args(argv)
  local opts, given = lm.parse(argv, { model = "gpt", tokens = "char", data = lm.DEFAULT_DATA, exclude = lm.DEFAULT_EXCLUDE, batch_size = 32,
    seq_len = 128, warmup = 100, weight_decay = 0.1, clip = 1, dropout = 0, bpe_vocab = 512, val_fraction = 0.1, eval_every = 250,
    eval_batches = 0, sample_tokens = 200, temperature = 0.8, prompt = "\n", seed = 1, device = "cpu", workers = 2 },
    NUMERIC, FLAGS, STRINGS, arg[0] or "scripts/train_charlm.lua")
  opts.given = given
  local function check_choice(name, v, list)
    for _, c in ipairs(list) do if v == c then return end end
    error(string.format("--%s must be %s, got '%s'", name, table.concat(list, ", "), v), 0)
  end
  check_choice("model", opts.model, { "gpt", "lstm", "gru" })
  check_choice("tokens", opts.tokens, { "char", "bpe" })
  if opts.steps and opts.epochs then error("give --steps or --epochs, not both", 0) end
  local recurrent = opts.model ~= "gpt"
  opts.lr = opts.lr or (recurrent and 2e-3 or 1e-3)
  opts.min_lr = opts.min_lr or opts.lr / 10
  if opts.min_lr > opts.lr then error(string.format("--min-lr %g is above --lr %g", opts.min_lr, opts.lr), 0) end
  opts.layers = opts.layers or (recurrent and 2 or 4)
  for _, k in ipairs(recurrent and { "d_model", "heads" } or { "hidden" }) do
    if opts[k] then error(string.format("--%s is for the %s model, not %s", k:gsub("_", "-"), recurrent and "gpt" or "lstm/gru", opts.model), 0) end
  end
  return opts
end

-- the model of the options (or of a checkpoint's config)
local function model_config(opts, vocab)
  if opts.model == "gpt" then
    return { kind = "gpt", vocab_size = vocab, context = opts.seq_len, d_model = opts.d_model or 256, n_head = opts.heads or 4,
             n_layer = opts.layers, dropout = opts.dropout }
  end
  return { kind = "rnn_lm", vocab_size = vocab, cell = opts.model, hidden = opts.hidden or 512, num_layers = opts.layers, dropout = opts.dropout }
end

-- data ------------------------------------------------------------------------------------
local function make_data(opts, tok, world, rank, distributed)
  local corpus = lm.open_corpus(opts.data, opts.exclude)
  local ok, ids = pcall(tok.encode_corpus, tok, corpus)
  if not ok then error("--data " .. opts.data .. ": " .. tostring(ids), 0) end
  local n = ids:size(1)
  local val_n = math.floor(n * opts.val_fraction)
  if n - val_n <= opts.seq_len or val_n <= opts.seq_len then
    error(string.format("--seq-len %d is too long for the data: %s holds %d tokens (%d for training, %d held out); "
      .. "windows need seq_len + 1 tokens of each part", opts.seq_len, opts.data, n, n - val_n, val_n), 0)
  end
  local D = nnr.data
  local function split(name, extra)
    local o = { seq_len = opts.seq_len, split = name, val_fraction = opts.val_fraction, seed = opts.seed }
    for k, v in pairs(extra or {}) do o[k] = v end
    local made, ds = pcall(D.TextDataset, ids, o)
    if not made then error("--data " .. opts.data .. ": " .. tostring(ds), 0) end
    return ds
  end
  local train_ds, val_ds = split("train"), split("val")
  local batch = math.floor(opts.batch_size / world)
  -- under --distributed each rank takes every world-th window (the windows are at random offsets already), so
  -- that the ranks' batches of a step together are the one-process batch of that step
  local sampler = distributed and D.DistributedSampler(train_ds:len(), { shuffle = false, drop_last = true, num_replicas = world, rank = rank }) or nil
  local train = D.DataLoader(train_ds, { batch_size = batch, shuffle = false, drop_last = true, num_workers = opts.workers, sampler = sampler,
                                         seed = opts.seed })
  if #train == 0 then
    error(string.format("--batch-size %d is larger than the %d training windows of the data", opts.batch_size, train_ds:len()), 0)
  end
  local val = D.DataLoader(val_ds, { batch_size = opts.batch_size, num_workers = opts.workers })
  return train, val, n
end

-- the mean loss per token over the held-out text (at most `batches` batches; 0: all)
local function evaluate(model, val, device, batches)
  local total, count, b = 0, 0, 0
  nnr.no_grad(function()
    model:eval()
    for x, y in val:iter() do
      x, y = x:to(device), y:to(device)
      local logits = model(x)
      total = total + F.cross_entropy(logits:reshape(-1, logits:size(3)), y:reshape(-1), { reduction = "sum" }):item()
      count = count + y:numel()
      b = b + 1
      if batches > 0 and b >= batches then break end
    end
    model:train()
  end)
  return { val_loss = total / count }
end

local function sample(model, tok, opts, step)
  local prompt = tok:encode(opts.prompt)
  local dev = model:parameters()[1].device
  local ids = nnr.generate(model, prompt:to(dev), { max_tokens = opts.sample_tokens, temperature = opts.temperature,
                                                   top_k = opts.top_k, seed = (opts.seed + step) % 2 ^ 53 })
  return tok:decode(ids:narrow(1, prompt:size(1) + 1, opts.sample_tokens):cpu())
end

-- resuming -----------------------------------------------------------------------------------
-- what a run's batches, schedule and tokens depend on: kept in the checkpoint, taken from it on --resume
-- (an option given again must have the same value)
local RUN_KEYS = { "data", "exclude", "val_fraction", "batch_size", "seq_len", "seed", "lr", "min_lr", "warmup", "clip", "weight_decay",
                   "tokens", "bpe_vocab" }
-- how the run reports: from the checkpoint unless given again (then the new value holds)
local REPORT_KEYS = { "eval_every", "eval_batches", "sample_tokens", "temperature", "top_k", "prompt" }
local CONFIG_KEYS = { layers = { "n_layer", "num_layers" }, d_model = { "d_model" }, heads = { "n_head" }, hidden = { "hidden" },
                      dropout = { "dropout" } }

local function read_resume(opts, world)
  local who = "--resume " .. opts.resume
  local ok, ck = pcall(nnr.load_checkpoint, opts.resume)
  if not ok then error(who .. ": " .. tostring(ck), 0) end
  for _, k in ipairs { "model", "optimizer", "rng", "config", "run" } do
    if type(ck[k]) ~= "table" then error(string.format("%s: the checkpoint has no %s (not one written by train_charlm.lua --save?)", who, k), 0) end
  end
  local kind = ck.config.kind == "gpt" and "gpt" or ck.config.cell
  if kind ~= opts.model then error(string.format("%s holds a %s model, not %s (give --model %s)", who, tostring(kind), opts.model, tostring(kind)), 0) end
  local function same(flag, was, now)
    if was ~= now then
      error(string.format("%s was trained with --%s %s; resume it with the same or leave the option out (given: %s)", who, flag:gsub("_", "-"),
        tostring(was), tostring(now)), 0)
    end
  end
  for _, k in ipairs(RUN_KEYS) do
    local v = ck.run[k]
    if v == nil then error(string.format("%s: the checkpoint lacks the run's %s", who, k), 0) end
    if opts.given[k] then same(k, v, opts[k]) end
    opts[k] = v
  end
  for _, k in ipairs(REPORT_KEYS) do
    if not opts.given[k] and ck.run[k] ~= nil then opts[k] = ck.run[k] end
  end
  for flag, names in pairs(CONFIG_KEYS) do
    if opts.given[flag] then
      local v = ck.config[names[1]]
      if v == nil and names[2] then v = ck.config[names[2]] end
      same(flag, v, opts[flag])
    end
  end
  if (ck.world or 1) ~= world then error(string.format("%s ran on %d process(es), now %d", who, ck.world or 1, world), 0) end
  nnr.check.integer(who, "total", ck.run.total, 1, 1e9)
  local tok = lm.tokenizer_from_string(ck.tokenizer, who)
  if tok.vocab_size ~= ck.config.vocab_size then
    error(string.format("%s: its tokenizer has %d tokens, its model %s", who, tok.vocab_size, tostring(ck.config.vocab_size)), 0)
  end
  return ck, tok
end

-- training --------------------------------------------------------------------------------------
local function setup(opts)
  local run = fm.start_run(opts)
  local ck, tok
  if opts.resume then ck, tok = read_resume(opts, run.world)
  else tok = lm.make_tokenizer(opts.tokens, lm.open_corpus(opts.data, opts.exclude), opts.bpe_vocab) end
  run.tok, run.ck = tok, ck
  local encoded, err_prompt = pcall(tok.encode, tok, opts.prompt)        -- a prompt the vocabulary cannot spell: before any work
  if not encoded and opts.given.prompt then error("--prompt: " .. tostring(err_prompt), 0) end
  if not encoded then opts.prompt = tok:token(1) end      -- a text without newlines: the default prompt is its first token
  if opts.prompt == "" and opts.sample_tokens > 0 then error("--prompt is empty: samples start from at least one token", 0) end
  run.train, run.val, run.ntokens = make_data(opts, tok, run.world, run.rank, run.D ~= nil)
  run.total = opts.steps or (opts.epochs or 2) * #run.train
  if ck then
    if (opts.given.steps or opts.given.epochs) and run.total ~= ck.run.total then
      error(string.format("--resume %s was a run of %d steps; resume it with the same length or leave --steps and --epochs out (given: %d)",
        opts.resume, ck.run.total, run.total), 0)
    end
    run.total = ck.run.total
  end
  run.config = ck and ck.config or model_config(opts, tok.vocab_size)
  local built, model = pcall(models.build, run.config)
  if not built then error((ck and ("--resume " .. opts.resume .. ": its model: ") or "") .. tostring(model), 0) end
  run.model = model:to(run.device)
  if opts.save_init and not ck then nnr.save(opts.save_init, model:state_dict()) end
  if opts.data_parallel then
    local devs = {}
    for d in opts.data_parallel:gmatch("[^,]+") do devs[#devs + 1] = d end
    model:to(devs[1])
    run.device = nnr.device(devs[1]).name
    run.dpar = nnr.parallel.DataParallel(model, devs, { criterion = models.lm_loss })
  end
  run.opt = nnr.optim.AdamW(models.param_groups(model, opts.weight_decay), { lr = opts.lr, betas = { 0.9, 0.95 } })
  return run
end

-- the run's part of a checkpoint (beside the Trainer's model, optimizer, step, RNG and period loss)
local function extra(opts, run)
  local r = { total = run.total }
  for _, k in ipairs(RUN_KEYS) do r[k] = opts[k] end
  for _, k in ipairs(REPORT_KEYS) do r[k] = opts[k] end
  return { config = run.config, tokenizer = lm.tokenizer_to_string(run.tok), run = r, world = run.world }
end

-- the schedule before each step; after each evaluation a line, a sample, a metrics line, a checkpoint; at a
-- stop between evaluations (a signal, or --stop-after) a checkpoint and what was saved
local function reporter(opts, run)
  local r = { name = "report" }
  function r.on_step_start(_, tr, at)
    local lr = lm.lr_at(at.step, run.total, opts.lr, opts.min_lr, opts.warmup)
    for _, g in ipairs(tr.optimizer.param_groups) do g.lr = lr end
  end
  function r.on_epoch_end(_, tr, logs)
    local rss, seconds = fm.rss_mib(), nnr.clock() - run.t0
    if not opts.quiet then
      print(string.format("step %d: train loss %.4f, val loss %.4f, %.0f tokens/s, %.1f s, RSS %.0f MiB", logs.step, logs.train_loss, logs.val_loss,
        logs.tokens_per_s, seconds, rss))
      if opts.sample_tokens > 0 then print("sample: " .. opts.prompt .. sample(tr.model, run.tok, opts, logs.step)) end
      io.stdout:flush()
    end
    if opts.metrics then
      local f = assert(io.open(opts.metrics, "a"))
      f:write(lm.json_line({ step = logs.step, train_loss = logs.train_loss, val_loss = logs.val_loss, tokens_per_s = logs.tokens_per_s,
        seconds = seconds, rss_mib = rss, lr = logs.lr }, { "step", "train_loss", "val_loss", "tokens_per_s", "seconds", "rss_mib", "lr" }), "\n")
      f:close()
    end
    if opts.save then tr:save(opts.save, nil, extra(opts, run)) end
  end
  function r.on_interrupt(_, tr, stop)
    if opts.save then tr:save(opts.save, nil, extra(opts, run)) end
    if tr.rank ~= 0 then return end
    local why = stop.signal and "interrupted (" .. stop.signal .. ")" or "stopped (--stop-after)"
    if opts.save then
      io.stderr:write(string.format("%s at step %d: checkpoint written to %s; resume with --resume %s\n", why, stop.step, opts.save, opts.save))
    else
      io.stderr:write(string.format("%s at step %d; no --save was given, so no checkpoint was written\n", why, stop.step))
    end
  end
  return r
end

local function main(argv)
  local opts = parse_args(argv)
  local run = setup(opts)
  local callbacks = { reporter(opts, run), run.tb and nnr.train.Logger(run.tb, { histograms = true }) }
  local tr = nnr.train.Trainer { model = run.model, optimizer = run.opt, loss_fn = models.lm_loss, train_loader = run.train, device = run.device,
    max_steps = run.total, eval_every = opts.eval_every, stop_after = opts.stop_after, clip_grad_norm = opts.clip, data_parallel = run.dpar,
    distributed = run.D ~= nil, callbacks = callbacks, quiet = opts.quiet, detect_anomaly = opts.detect_anomaly, unit = "tokens",
    evaluate = function(t) return evaluate(t.model, run.val, run.device, opts.eval_batches) end, print_epochs = false, stop_signals = true }
  if run.ck then
    local ok, err = pcall(tr.load_state_dict, tr, run.ck, "--resume " .. opts.resume)
    if not ok then error("--resume " .. opts.resume .. ": " .. tostring(err):gsub("^Trainer: %-%-resume [^:]*: ", ""), 0) end
  end
  local last = math.min(run.total, opts.stop_after or run.total)
  fm.catch_stop()
  if not opts.quiet then
    print(string.format("%s: %d %s tokens (%d-token vocabulary); %s, %d parameters, on %s; AdamW lr %g -> %g, warm-up %d, batch %d x %d, "
      .. "%d steps%s, %d threads", run.ck and ("resumed from " .. opts.resume .. " at step " .. tr.step) or opts.data, run.ntokens, run.tok.kind,
      run.tok.vocab_size, opts.model, run.model:num_parameters(), run.device, opts.lr, opts.min_lr, opts.warmup, opts.batch_size, opts.seq_len,
      run.total, last < run.total and string.format(" (stopping after %d)", last) or "", nnr.get_num_threads()))
    io.stdout:flush()
  end
  if tr.step >= last then
    io.stderr:write(string.format("nothing to do: %s is at step %d of %d\n", opts.resume or "the run", tr.step, run.total))
    return
  end
  run.t0 = nnr.clock()
  tr:fit()
  if run.tb then run.tb:close() end
  if opts.plot and #tr.history > 0 then      -- the whole history (a resumed run's too: it is in the checkpoint)
    nnr.plot.curves(tr.history, opts.plot, { x = "step", title = string.format("%s, %s tokens, batch %d x %d", opts.model, run.tok.kind,
      opts.batch_size, opts.seq_len) })
    if not opts.quiet then print("curves: " .. opts.plot) end
  end
end

main(arg)
