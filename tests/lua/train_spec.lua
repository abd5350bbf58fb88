-- nnr.train: the Trainer's loop, resuming, accumulation, clipping, and its callbacks (EarlyStopping,
-- ModelCheckpoint, LRScheduler, Logger, a user's), lr_find, and bad input
local nnr = require "nnr"
local F = nnr.nn.functional

local function data(n, seed)
  nnr.manual_seed(seed)
  local x = nnr.randn(n, 10)
  return x, x:narrow(2, 1, 3):argmax(2)
end
local x, y = data(512, 1)
local vx, vy = data(256, 2)
local function loaders(batch)
  return nnr.data.DataLoader(nnr.data.TensorDataset(x, y), { batch_size = batch or 32, shuffle = true, seed = 3 }),
         nnr.data.DataLoader(nnr.data.TensorDataset(vx, vy), { batch_size = 64 })
end
local function model_opt(lr, momentum)
  nnr.manual_seed(5)
  local m = nnr.nn.Sequential(nnr.nn.Linear(10, 32), nnr.nn.ReLU(), nnr.nn.Linear(32, 3))
  return m, nnr.optim.SGD(m:parameters(), { lr = lr or 0.1, momentum = momentum == nil and 0.9 or momentum })
end
local function tmpdir() local d = os.tmpname(); os.remove(d); return d end
local function max_diff(a, b)
  local d = 0
  for k, v in pairs(a:state_dict()) do d = math.max(d, (v - b:state_dict()[k]):abs():max():item()) end
  return d
end
local function fails(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
end

describe("nnr.train.Trainer", function()
  it("trains, validates and logs each epoch", function()
    local m, opt = model_opt()
    local train, val = loaders()
    local h = nnr.train.Trainer { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, val_loader = val, epochs = 3,
                                  metrics = { "accuracy" }, quiet = true }:fit()
    assert.are.equal(3, #h)
    assert.are.equal(3, h[3].epoch)
    assert.are.equal(48, h[3].step)
    assert.is_true(h[3].train_loss < h[1].train_loss)
    assert.is_true(h[3].val_accuracy > 0.85, "accuracy " .. h[3].val_accuracy)
    assert.are.equal(0.1, h[3].lr)
    assert.is_true(h[3].samples_per_s > 0 and h[3].val_loss > 0)
  end)

  it("resumes from ModelCheckpoint's last.ckpt with the same weights as a run that never stopped", function()
    local m1, o1 = model_opt()
    local t1, v1 = loaders()
    nnr.train.Trainer { model = m1, optimizer = o1, loss_fn = F.cross_entropy, train_loader = t1, val_loader = v1, epochs = 4, quiet = true }:fit()
    local dir = tmpdir()
    local m2, o2 = model_opt()
    local t2, v2 = loaders()
    local ck = nnr.train.ModelCheckpoint { dir = dir, save_top_k = 2 }
    nnr.train.Trainer { model = m2, optimizer = o2, loss_fn = F.cross_entropy, train_loader = t2, val_loader = v2, epochs = 2, quiet = true,
                        callbacks = { ck } }:fit()
    local m3, o3 = model_opt(0.5)                     -- other weights and rate: the checkpoint brings its own
    local t3, v3 = loaders()
    local ck3 = nnr.train.ModelCheckpoint { dir = dir, save_top_k = 2 }
    local tr = nnr.train.Trainer { model = m3, optimizer = o3, loss_fn = F.cross_entropy, train_loader = t3, val_loader = v3, epochs = 4,
                                   quiet = true, callbacks = { ck3 } }
    local h = tr:fit { resume = dir .. "/last.ckpt" }
    assert.are.equal(4, #h)                           -- the history came back with it
    assert.are.equal(0, max_diff(m1, m3))
    -- the best 2 epochs by val_loss kept, the others deleted
    local kept = 0
    for e = 1, 4 do local f = io.open(string.format("%s/epoch%d.ckpt", dir, e)); if f then kept = kept + 1; f:close() end end
    assert.are.equal(2, kept)
    assert.are.equal(2, #ck3.best)
    assert.is_true(ck3.best[1].value <= ck3.best[2].value)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("accumulates gradients over micro-batches like one large batch, and clips them", function()
    local m1, o1 = model_opt(0.1, 0)
    local m2, o2 = model_opt(0.1, 0)
    local t32 = nnr.data.DataLoader(nnr.data.TensorDataset(x, y), { batch_size = 32 })
    local t16 = nnr.data.DataLoader(nnr.data.TensorDataset(x, y), { batch_size = 16 })
    nnr.train.Trainer { model = m1, optimizer = o1, loss_fn = F.cross_entropy, train_loader = t32, quiet = true }:fit()
    nnr.train.Trainer { model = m2, optimizer = o2, loss_fn = F.cross_entropy, train_loader = t16, accumulate = 2, quiet = true }:fit()
    assert.is_true(max_diff(m1, m2) < 1e-5, "accumulated " .. max_diff(m1, m2))
    local m3, o3 = model_opt(0.1, 0)
    local before = m3:state_dict()["1.weight"]:clone()
    nnr.train.Trainer { model = m3, optimizer = o3, loss_fn = F.cross_entropy, train_loader = t32, clip_grad_norm = 1e-6, max_steps = 1,
                        quiet = true }:fit()
    assert.is_true((m3:state_dict()["1.weight"] - before):abs():max():item() <= 1e-7 + 1e-12)
  end)

  it("stops early, steps schedulers (ReduceLROnPlateau on a metric), logs, and names a failing callback", function()
    local m, opt = model_opt()
    local train, val = loaders()
    local plateau = nnr.optim.ReduceLROnPlateau(opt, { mode = "max", patience = 0, factor = 0.5 })
    local steps = 0
    local mine = { name = "counter", on_step_end = function() steps = steps + 1 end }
    local path = os.tmpname()
    local log = nnr.logging.JSONLinesWriter(path)
    local stop = nnr.train.EarlyStopping { monitor = "train_loss", mode = "max", patience = 1 }
    local tr = nnr.train.Trainer { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, val_loader = val, epochs = 10,
                                   quiet = true, callbacks = { stop, nnr.train.LRScheduler { scheduler = plateau, monitor = "train_loss" },
                                                               mine, nnr.train.Logger(log) } }
    local h = tr:fit()
    log:close()
    assert.are.equal(3, #h)                           -- the train loss falls: in "max" mode epochs 2 and 3 do not improve
    assert.are.equal(3, stop.stopped_epoch)
    assert.are.equal(48, steps)
    assert.are.equal(0.05, h[3].lr)                   -- halved after epochs 2 and 3; an epoch logs the rate it ran at
    assert.are.equal(0.025, opt.param_groups[1].lr)
    local n = 0
    for l in io.lines(path) do n = n + 1; assert.is_truthy(l:find('"kind":"scalar"', 1, true)) end
    assert.is_true(n >= 3 * 4)
    os.remove(path)
    local bad = { name = "broken", on_epoch_end = function() error("boom", 0) end }
    local t2 = nnr.train.Trainer { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, quiet = true, callbacks = { bad } }
    fails("Trainer: broken's on_epoch_end failed: boom", t2.fit, t2)
    local t3 = nnr.train.Trainer { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, quiet = true,
                                   callbacks = { nnr.train.EarlyStopping {} } }
    fails("EarlyStopping: the epoch's logs have no 'val_loss' (they have: epoch, lr, samples_per_s, seconds, step, train_loss)", t3.fit, t3)
  end)

  it("runs a DataParallel's replicas each step", function()
    local m, opt = model_opt()
    local train, val = loaders(64)
    local dp = nnr.parallel.DataParallel(m, { "cpu:0", "cpu:1" })
    local h = nnr.train.Trainer { model = m, optimizer = opt, data_parallel = dp, loss_fn = F.cross_entropy, train_loader = train,
                                  val_loader = val, epochs = 2, quiet = true }:fit()
    assert.are.equal(2, #h)
    assert.is_true(h[2].train_loss < h[1].train_loss and h[2].val_loss < 0.5, string.format("%g %g %g", h[1].train_loss, h[2].train_loss, h[2].val_loss))
  end)

  it("with eval_every, validates every N steps across epochs, and resumes part way through a period", function()
    local function run(stop_after, resume, cbs)
      local m, opt = model_opt(0.05)
      local train, val = loaders()                    -- 16 batches an epoch: 40 steps run into a third epoch
      local tr = nnr.train.Trainer { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, val_loader = val,
                                     max_steps = 40, eval_every = 15, stop_after = stop_after, unit = "tokens", quiet = true, callbacks = cbs }
      if resume then tr:load_state_dict(resume, "a stop") end
      return tr, tr:fit(), m
    end
    local starts, stops = {}, {}
    local spy = { on_step_start = function(_, tr, at) starts[#starts + 1] = at.step; assert.are.equal(tr.step + 1, at.step) end,
                  on_interrupt = function(_, _, stop) stops[#stops + 1] = stop end }
    local _, h, m1 = run(nil, nil, { spy })
    assert.are.same({ 15, 30, 40 }, { h[1].step, h[2].step, h[3].step })
    assert.are.same({ 1, 2, 3 }, { h[1].epoch, h[2].epoch, h[3].epoch })
    assert.are.equal(40, #starts)
    assert.are.equal(0, #stops)
    assert.is_true(h[3].val_loss < h[1].val_loss and h[1].tokens_per_s > 0 and h[1].samples_per_s == nil)
    -- stopped at step 20 (within the second period): on_interrupt, and a state that resumes the period's loss
    local tr2, h2 = run(20, nil, { spy })
    assert.are.equal(1, #h2)
    assert.are.equal(1, #stops)
    assert.is_nil(stops[1].signal)
    assert.are.equal(20, stops[1].step)
    local sd = tr2:state_dict()
    assert.are.equal(20, sd.global_step)
    assert.are.equal(5, sd.window_steps)
    local _, h3, m3 = run(nil, sd)
    assert.are.equal(3, #h3)                          -- the history goes on from the checkpoint's
    for i = 1, 3 do
      assert.are.equal(h[i].train_loss, h3[i].train_loss)
      assert.are.equal(h[i].val_loss, h3[i].val_loss)
    end
    assert.are.equal(0, max_diff(m1, m3))
    -- a callback's stop_training ends a run of steps after that step (not only its epoch)
    local stopper = { on_step_end = function(_, tr, logs) if logs.step == 20 then tr.stop_training = true end end }
    local tr4 = run(nil, nil, { stopper })
    assert.are.equal(20, tr4.step)
    local dir = tmpdir()
    local ck = nnr.train.ModelCheckpoint { dir = dir, save_top_k = 1 }
    run(nil, nil, { ck })
    assert.is_truthy(ck.best_path:match("/step%d+%.ckpt$"), ck.best_path)
    os.execute("rm -rf " .. dir)
    local m, opt = model_opt()
    fails("Trainer: eval_every must be an integer", nnr.train.Trainer, { model = m, optimizer = opt, loss_fn = F.cross_entropy,
          train_loader = loaders(), eval_every = 0 })
    fails("Trainer: unit must be one of 'samples', 'tokens'", nnr.train.Trainer, { model = m, optimizer = opt, loss_fn = F.cross_entropy,
          train_loader = loaders(), unit = "words" })
    local tr = nnr.train.Trainer { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = loaders(), eval_every = 5 }
    fails("Trainer: a stop: window_steps must be an integer", tr.load_state_dict, tr,
          { model = m:state_dict(), optimizer = opt:state_dict(), global_step = 3, window_steps = -1 }, "a stop")
  end)

  it("refuses bad configurations", function()
    local m, opt = model_opt()
    local train = loaders()
    fails("Trainer: unknown option 'epoch'", nnr.train.Trainer, { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, epoch = 3 })
    fails("Trainer: model is required", nnr.train.Trainer, { optimizer = opt, loss_fn = F.cross_entropy, train_loader = train })
    fails("Trainer: give loss_fn or step_fn", nnr.train.Trainer, { model = m, optimizer = opt, train_loader = train })
    fails("Trainer: train_loader is required", nnr.train.Trainer, { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = {} })
    fails("Trainer: unknown metric 'f1'", nnr.train.Trainer, { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, metrics = { "f1" } })
    fails("Trainer: accumulate must be an integer", nnr.train.Trainer, { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, accumulate = 0 })
    fails("Trainer: autocast must be one of 'bf16', 'f16'", nnr.train.Trainer, { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, autocast = "f8" })
    fails("EarlyStopping: mode must be one of 'min', 'max'", nnr.train.EarlyStopping, { mode = "up" })
    fails("LRScheduler: scheduler is required", nnr.train.LRScheduler, {})
    local tr = nnr.train.Trainer { model = m, optimizer = opt, loss_fn = F.cross_entropy, train_loader = train, quiet = true }
    fails("load /nonexistent.ckpt: No such file or directory", tr.fit, tr, { resume = "/nonexistent.ckpt" })
  end)
end)

describe("nnr.train.lr_find", function()
  it("sweeps the rate, suggests one where the loss falls fastest, puts the model back, and plots", function()
    local m, opt = model_opt(0.1, 0)
    local train = loaders()
    local before = m:state_dict()["1.weight"]:clone()
    local out = os.tmpname() .. ".png"
    local r = nnr.train.lr_find { model = m, optimizer = opt, loss_fn = F.cross_entropy, loader = train, min_lr = 1e-5, max_lr = 10, steps = 40,
                                  plot = out }
    assert.is_true(#r.lrs >= 10 and #r.lrs == #r.losses)
    assert.is_true(r.suggestion > 1e-5 and r.suggestion < 10)
    assert.are.equal(0, (m:state_dict()["1.weight"] - before):abs():max():item())
    assert.are.equal(0.1, opt.param_groups[1].lr)
    assert.are.equal(3, nnr.data.load_image(out):size(1))
    os.remove(out)
  end)
end)
