-- nnr.train: the training loop, its progress, metrics and callbacks, for a model a user brings.
--   local trainer = nnr.train.Trainer{
--     model = model, optimizer = opt, loss_fn = F.cross_entropy,     -- or step_fn(trainer, x, y) -> loss
--     train_loader = train, val_loader = val, device = "cpu", epochs = 10,
--     accumulate = 1, clip_grad_norm = 1.0, autocast = "bf16", metrics = {"accuracy"},
--     callbacks = {nnr.train.EarlyStopping{patience = 3}, nnr.train.ModelCheckpoint{dir = "ck"},
--                  nnr.train.LRScheduler{scheduler = sched, interval = "step"}, nnr.train.Logger(writer)},
--     data_parallel = dp,         -- a nnr.parallel.DataParallel: its replicas run each step (its criterion)
--     distributed = true,         -- under mpirun: gradients and logs averaged over the ranks (DistributedDataParallel)
--     quiet = false, max_steps = nil, detect_anomaly = false,
--     eval_every = nil,           -- steps: validate (and end a "period", an epoch's stand-in) every N steps, not each epoch
--     unit = "samples" }          -- or "tokens": rates count x:numel() (tokens_per_s), not x:size(1)
--   local history = trainer:fit()            -- or trainer:fit{resume = "ck/last.ckpt"}
--   nnr.train.lr_find{model = ..., optimizer = ..., loss_fn = ..., loader = ..., plot = "lr.png"}
-- Each epoch's logs: epoch, step, train_loss, val_loss and val_<metric> (with a val_loader), lr, seconds,
-- samples_per_s. Callbacks are tables with any of on_fit_start(tr), on_epoch_start(tr, epoch),
-- on_step_start(tr, {epoch, step}), on_step_end(tr, logs) (epoch, step, loss, lr), on_interrupt(tr, stop), on_validation_end(tr, logs), on_epoch_end(tr, logs),
-- on_fit_end(tr, history), and state_dict/load_state_dict to be resumed; setting tr.stop_training ends
-- the run after the current epoch (or step). A callback that raises stops fit with its name and error.
local nnr = require "nnr"
local V = require "nnr.check"

local M = {}
local Trainer = {}
Trainer.__index = Trainer

local CONFIG = { model = true, optimizer = true, loss_fn = true, step_fn = true, train_loader = true, val_loader = true, device = true,
                 epochs = true, max_steps = true, accumulate = true, clip_grad_norm = true, autocast = true, metrics = true,
                 callbacks = true, data_parallel = true, distributed = true, quiet = true, detect_anomaly = true, evaluate = true,
                 print_epochs = true, stop_signals = true, stop_after = true, eval_every = true, unit = true }
local METRICS = { accuracy = true }

-- a DataLoader (a userdata proxy) or a table with iter()
local function has_iter(x)
  if type(x) ~= "table" and type(x) ~= "userdata" then return false end
  local ok, f = pcall(function() return x.iter end)
  return ok and type(f) == "function"
end

local function cb_name(cb) return (getmetatable(cb) and getmetatable(cb).__name) or cb.name or "a callback" end

function M.Trainer(cfg)
  local who = "Trainer"
  cfg = V.options(who, cfg, CONFIG)
  if type(cfg.model) ~= "table" then error(who .. ": model is required (a module)", 0) end
  if type(cfg.optimizer) ~= "table" or type(cfg.optimizer.step) ~= "function" then error(who .. ": optimizer is required", 0) end
  if cfg.loss_fn == nil and cfg.step_fn == nil and cfg.data_parallel == nil then error(who .. ": give loss_fn or step_fn", 0) end
  for _, k in ipairs { "loss_fn", "step_fn" } do
    if cfg[k] ~= nil and type(cfg[k]) ~= "function" then error(who .. ": " .. k .. " must be a function", 0) end
  end
  if not has_iter(cfg.train_loader) then error(who .. ": train_loader is required (a nnr.data.DataLoader or anything with iter())", 0) end
  if cfg.val_loader ~= nil and not has_iter(cfg.val_loader) then error(who .. ": val_loader must have iter()", 0) end
  local self = setmetatable({}, Trainer)
  self.model, self.optimizer, self.loss_fn, self.step_fn = cfg.model, cfg.optimizer, cfg.loss_fn, cfg.step_fn
  self.train_loader, self.val_loader = cfg.train_loader, cfg.val_loader
  self.device = cfg.device and nnr.device(cfg.device).name or "cpu"
  self.epochs = V.integer(who, "epochs", cfg.epochs or 1, 1, 1e9)
  self.max_steps = cfg.max_steps and V.integer(who, "max_steps", cfg.max_steps, 1, 1e15)
  self.stop_after = cfg.stop_after and V.integer(who, "stop_after", cfg.stop_after, 0, 1e15)   -- the last epoch (step) of this part
  self.eval_every = cfg.eval_every and V.integer(who, "eval_every", cfg.eval_every, 1, 1e15)
  self.unit = V.choice(who, "unit", cfg.unit or "samples", { "samples", "tokens" })
  if self.eval_every and self.stop_after and (cfg.accumulate or 1) > 1 and self.stop_after % cfg.accumulate ~= 0 then
    error(string.format("%s: stop_after (%d) must be a multiple of accumulate (%d): a run resumes at the start of a group", who,
      self.stop_after, cfg.accumulate), 0)
  end
  self.accumulate = V.integer(who, "accumulate", cfg.accumulate or 1, 1, 1e6)
  self.clip = cfg.clip_grad_norm and V.number(who, "clip_grad_norm", cfg.clip_grad_norm, { above = 0 })
  if cfg.autocast ~= nil then V.choice(who, "autocast", cfg.autocast, { "bf16", "f16" }) end
  self.autocast = cfg.autocast
  self.metrics = {}
  for _, m in ipairs(cfg.metrics or {}) do
    if not METRICS[m] then error(who .. ": unknown metric " .. V.show(m) .. " (known: accuracy)", 0) end
    self.metrics[#self.metrics + 1] = m
  end
  self.callbacks = cfg.callbacks or {}
  for i, cb in ipairs(self.callbacks) do
    if type(cb) ~= "table" then error(string.format("%s: callbacks[%d] must be a table of methods, got %s", who, i, type(cb)), 0) end
  end
  self.quiet = V.boolean(who, "quiet", cfg.quiet)
  if cfg.evaluate ~= nil and type(cfg.evaluate) ~= "function" then error(who .. ": evaluate must be a function(trainer) -> logs", 0) end
  self.evaluate = cfg.evaluate
  self.print_epochs = cfg.print_epochs ~= false
  self.stop_signals = V.boolean(who, "stop_signals", cfg.stop_signals)
  for _, cb in ipairs(self.callbacks) do     -- else no logs table a step
    if cb.on_step_end then self._step_hooks = true end
    if cb.on_step_start then self._start_hooks = true end
  end
  self.detect_anomaly = V.boolean(who, "detect_anomaly", cfg.detect_anomaly)
  self.dp = cfg.data_parallel
  if cfg.distributed then
    self.D = nnr.parallel.Distributed
    if not self.D.is_initialized() then self.D.init() end
    self.ddp = nnr.parallel.DistributedDataParallel(self.model)
  end
  self.rank = self.D and self.D.rank() or 0
  self.epoch, self.step, self.history, self.stop_training = 0, 0, {}, false
  self._window = { loss = 0, steps = 0, samples = 0 }        -- eval_every: the current period's step losses
  return self
end

-- every callback's hook, in order, on every rank (a scheduler must step everywhere; the writers check
-- tr.rank themselves); an error names the callback
function Trainer:_call(hook, ...)
  for _, cb in ipairs(self.callbacks) do
    local fn = cb[hook]
    if fn then
      local ok, err = pcall(fn, cb, self, ...)
      if not ok then error(string.format("Trainer: %s's %s failed: %s", cb_name(cb), hook, tostring(err)), 0) end
    end
  end
end

function Trainer:lr() return self.optimizer.param_groups[1].lr end

-- one batch's loss (a tensor), forward and backward done
function Trainer:_forward(x, y)
  if self.step_fn then return self.step_fn(self, x, y) end
  return self.loss_fn(self.model(x), y)
end

function Trainer:_backward(x, y)
  if self.dp then return nnr.tensor({ (self.dp:backward(x, y)) }) end
  local loss
  if self.autocast then loss = nnr.autocast(self.autocast, function() return self:_forward(x, y) end)
  else loss = self:_forward(x, y) end
  if not nnr.is_tensor(loss) or loss:numel() ~= 1 then error("Trainer: the loss must be a one-element tensor", 0) end
  local scaled = self.accumulate > 1 and loss / self.accumulate or loss
  if self.ddp then self.ddp:backward(scaled) else scaled:backward() end
  return loss
end

function Trainer:_evaluate()
  local model = self.model
  model:eval()
  local total, n, correct = 0, 0, 0
  nnr.no_grad(function()
    for x, y in self.val_loader:iter() do
      x, y = x:to(self.device), y:to(self.device)
      local out
      if self.step_fn then
        local l = self.step_fn(self, x, y)
        total, n = total + l:item() * x:size(1), n + x:size(1)
      else
        out = model(x)
        total, n = total + self.loss_fn(out, y):item() * x:size(1), n + x:size(1)
        if self.metrics[1] == "accuracy" then correct = correct + out:argmax(2):eq(y):sum():item() end
      end
    end
  end)
  model:train()
  if self.D then
    local t = self.D.all_reduce(nnr.tensor({ total, n, correct }, { dtype = "f64" }))
    total, n, correct = t[1], t[2], t[3]
  end
  local logs = { val_loss = total / math.max(n, 1) }
  if self.metrics[1] == "accuracy" and not self.step_fn then logs.val_accuracy = correct / math.max(n, 1) end
  return logs
end

-- seconds as m:ss
local function fmt_time(t)
  if t ~= t or t == math.huge then return "--:--" end
  return string.format("%d:%02d", math.floor(t / 60), math.floor(t % 60))
end
M.fmt_time = fmt_time

-- what the progress display owes now: "bar" on a terminal (redrawn in place at most every 0.1 s, and at
-- the end), "line" elsewhere (every 10 s, and at the end where line_at_end), or nil
function Trainer:_progress_due(at_end, line_at_end)
  local since = nnr.clock() - (self._last_print or 0)
  if self._tty then return (at_end or since >= 0.1) and "bar" or nil end
  return ((at_end and line_at_end) or since >= 10) and "line" or nil
end

-- shows it: head, a bar filled to fraction, tail (redrawn in place, its line ended by _end_bar); or line
function Trainer:_progress_show(due, head, fraction, tail, line)
  if due == "bar" then
    local filled = math.floor(30 * fraction)
    io.write("\r", head, " [", string.rep("=", filled), string.rep(" ", 30 - filled), "] ", tail, " ")
    self._bar = true
  else
    print(line)
  end
  io.stdout:flush()
  self._last_print = nnr.clock()
end

-- the progress of an epoch: a bar, else a line every 10 s and at the end
local function progress_line(self, done, total, loss, samples)
  local due = self:_progress_due(done == total, true)
  if not due then return end
  local elapsed = nnr.clock() - self._epoch_t0
  local rate = samples / math.max(elapsed, 1e-9)
  local eta = total > 0 and (total - done) * elapsed / math.max(done, 1) or 0
  if due == "line" then
    self:_progress_show(due, nil, nil, nil, string.format("epoch %d/%d step %d/%d loss %.4f %.0f %s/s ETA %s", self.epoch, self.epochs, done,
      total, loss, rate, self.unit, fmt_time(eta)))
    return
  end
  self:_progress_show(due, string.format("epoch %d/%d", self.epoch, self.epochs), total > 0 and done / total or 0,
    string.format("%3d%% loss %.4f %6.0f %s/s ETA %s", total > 0 and math.floor(100 * done / total) or 0, loss, rate, self.unit, fmt_time(eta)))
  if done == total then self:_end_bar() end
end

-- nil, or the signal a stop was asked with (nnr.signals: SIGINT, SIGTERM); under Distributed every rank
-- learns the highest any rank saw, so that all stop after the same step
local function stop_requested(D)
  local sig, status = require("nnr.signals").stop_requested()
  if not D then return sig end
  local t = D.all_reduce(nnr.tensor({ status or 0 }, { dtype = "f64" }), "max")
  if t[1] == 0 then return nil end
  return ({ [130] = "SIGINT", [143] = "SIGTERM" })[t[1]] or ("signal " .. (t[1] - 128))
end
M.stop_requested = stop_requested

-- one batch: forward, backward and, every `accumulate` batches (or where `flush`), the optimizer's step.
-- Returns the loss (a number) and the learning rate the batch trained with.
function Trainer:_batch(x, y, flush, where)
  local opt = self.optimizer
  if self._start_hooks then self:_call("on_step_start", { epoch = self.epoch, step = self.step + 1 }) end
  if self._pending == 0 then opt:zero_grad() end       -- (so the last step's gradients stay for the logs)
  local loss = self:_backward(x, y)
  local lr = self:lr()
  self._pending = self._pending + 1
  if self._pending == self.accumulate or flush then
    if self.clip then nnr.nn.utils.clip_grad_norm(self.model:parameters(), self.clip) end
    opt:step()
    self._pending = 0
  end
  self.step = self.step + 1
  local l = loss:item()
  if self.detect_anomaly and (l ~= l or l == math.huge or l == -math.huge) then
    error(string.format("training stopped: the loss is %s at %s (detect_anomaly); lower the learning rate?", tostring(l), where()), 0)
  end
  self._last_lr = lr
  return l, lr
end

-- a DataLoader's length, or 0 for an iterable without one
local function loader_len(loader)
  local ok, n = pcall(function() return loader:len() end)
  return ok and type(n) == "number" and n or 0
end

-- ends a progress bar's line (before other output)
function Trainer:_end_bar()
  if self._bar then io.write("\n"); io.flush(); self._bar = false end
end

-- a stop part way (a signal, or stop_after between evaluations): self.interrupted, then on_interrupt
function Trainer:_interrupt(stop)
  self:_end_bar()
  self.interrupted = stop
  self:_call("on_interrupt", stop)
end

-- one epoch's steps; within: {step, loss_sum, samples} of an epoch stopped part way (its loader goes on after
-- the batches done). Returns the epoch's logs, or nil when a stop signal ended it (self.interrupted says where).
function Trainer:_epoch(within)
  local loader = self.train_loader
  local total = loader_len(loader)
  local running, seen, done, seen0, units = 0, 0, 0, 0, 0
  if within then
    loader:load_state_dict({ epoch = self.epoch, position = within.step })
    done = within.step
    if self.rank == 0 then running, seen, seen0 = within.loss_sum, within.samples, within.samples end   -- summed over the ranks
  end
  self._epoch_t0, self._last_print = nnr.clock(), 0      -- (an epoch's first step is shown)
  self.model:train()
  self._pending = 0
  local where = function() return string.format("epoch %d step %d", self.epoch, done + 1) end
  for x, y in loader:iter() do
    x, y = x:to(self.device), y:to(self.device)
    local l, lr = self:_batch(x, y, total > 0 and done + 1 == total, where)
    done = done + 1
    local len = x:size(1)
    running, seen, units = running + l * len, seen + len, units + (self.unit == "tokens" and x:numel() or len)
    if not self.quiet and self.rank == 0 then progress_line(self, done, total, running / seen, units) end
    if self._step_hooks then self:_call("on_step_end", { epoch = self.epoch, step = self.step, loss = l, lr = lr }) end
    if self.stop_training or (self.max_steps and self.step >= self.max_steps) then break end
    -- (after the epoch's last step the epoch finishes first; a stop waits for the end of an accumulation group)
    if self.stop_signals and done < total and self._pending == 0 then
      local sig = stop_requested(self.D)
      if sig then
        local loss_sum, samples = running, seen
        if self.D then
          local t = self.D.all_reduce(nnr.tensor({ running, seen }, { dtype = "f64" }))
          loss_sum, samples = t[1], t[2]
        end
        self:_interrupt({ signal = sig, epoch = self.epoch, step = done, loss_sum = loss_sum, samples = samples })
        return nil
      end
    end
  end
  if self._pending > 0 then self.optimizer:step() end
  local seconds = nnr.clock() - self._epoch_t0
  if self.D then
    local t = self.D.all_reduce(nnr.tensor({ running, seen, units }, { dtype = "f64" }))
    running, seen, units = t[1], t[2], t[3]
  end
  return { epoch = self.epoch, step = self.step, train_loss = running / math.max(seen, 1), lr = self._last_lr or self:lr(), seconds = seconds,
           [self.unit .. "_per_s"] = units / math.max(seconds, 1e-9) }
end

-- eval_every: the progress of the run, "step 120/1000 [====   ] loss 2.1 lr 1.0e-03 5000 tokens/s ETA 0:42"
-- (a bar, else a line every 10 s)
function Trainer:_step_progress(last)
  local due = self:_progress_due(self.step >= last, false)
  if not due then return end
  local now, w = nnr.clock(), self._window
  local loss, rate = w.loss / math.max(w.steps, 1), w.samples / math.max(now - self._period_t0, 1e-9)
  local eta = (last - self.step) * (now - self._run_t0) / math.max(self.step - self._first_step, 1)
  if due == "line" then
    self:_progress_show(due, nil, nil, nil, string.format("step %d/%d loss %.4f lr %.2e %.0f %s/s ETA %s", self.step, self._total, loss,
      self._last_lr, rate, self.unit, fmt_time(eta)))
    return
  end
  self:_progress_show(due, string.format("step %d/%d", self.step, self._total), self.step / self._total,
    string.format("loss %.4f lr %.2e %6.0f %s/s ETA %s", loss, self._last_lr, rate, self.unit, fmt_time(eta)))
end

-- eval_every: the end of a period: its logs (the mean of its step losses, its rate), validation, the history,
-- the line, on_epoch_end
function Trainer:_period_end()
  local w, seconds = self._window, nnr.clock() - self._period_t0
  local loss, rate = w.loss / math.max(w.steps, 1), w.samples / math.max(seconds, 1e-9)
  if self.D then      -- each rank's mean, averaged; the ranks' rates summed
    local t = self.D.all_reduce(nnr.tensor({ loss, rate }, { dtype = "f64" }))
    loss, rate = t[1] / self.D.world_size(), t[2]
  end
  self._window = { loss = 0, steps = 0, samples = 0 }     -- (a checkpoint written by a callback below starts the next one)
  self:_end_bar()
  local logs = { epoch = self.epoch, step = self.step, train_loss = loss, lr = self._last_lr, seconds = seconds, [self.unit .. "_per_s"] = rate }
  self:_validate(logs)
  self.history[#self.history + 1] = logs
  if self.print_epochs and not self.quiet and self.rank == 0 then print(self:_line("step " .. self.step, logs)) end
  self:_call("on_epoch_end", logs)
  self._period_t0 = nnr.clock()
end

-- eval_every: the run's steps from self.step to `last` (of self._total), the data stream continued across
-- epochs (and after a resume, from where it was). Returns when done, stopped or interrupted.
function Trainer:_steps(last)
  local loader = self.train_loader
  local per_epoch = loader_len(loader)
  local epoch, position = 1, 0
  if self.step > 0 then
    if per_epoch == 0 then error("Trainer: resuming part way needs a train_loader with len()", 0) end
    epoch = math.ceil(self.step / per_epoch)
    position = self.step - (epoch - 1) * per_epoch
    if position == per_epoch then epoch, position = epoch + 1, 0 end
  end
  self._run_t0, self._period_t0, self._first_step, self._last_print, self._pending = nnr.clock(), nnr.clock(), self.step, 0, 0
  self.model:train()
  local where = function() return "step " .. self.step end
  while self.step < last and not self.stop_training do
    self.epoch = epoch
    if position > 0 then loader:load_state_dict({ epoch = epoch, position = position })
    else pcall(function() if loader.epoch ~= nil then loader.epoch = epoch - 1 end end) end
    self:_call("on_epoch_start", epoch)
    local any = false
    for x, y in loader:iter() do
      any = true
      x, y = x:to(self.device), y:to(self.device)
      local l, lr = self:_batch(x, y, self.step + 1 == self._total, where)
      local w = self._window
      w.loss, w.steps, w.samples = w.loss + l, w.steps + 1, w.samples + (self.unit == "tokens" and x:numel() or x:size(1))
      if not self.quiet and self.rank == 0 then self:_step_progress(last) end
      if self._step_hooks then self:_call("on_step_end", { epoch = self.epoch, step = self.step, loss = l, lr = lr }) end
      if self.step % self.eval_every == 0 or self.step == self._total then self:_period_end() end
      if self.stop_training or self.step >= last then break end
      -- (a stop waits for the end of an accumulation group: a resumed run starts a group where it left off)
      local sig = self.stop_signals and self._pending == 0 and stop_requested(self.D)
      if sig then return self:_stop_period(sig) end
    end
    if not any then error("Trainer: the train_loader gave no batches", 0) end
    epoch, position = epoch + 1, 0
  end
  if self._pending > 0 and self.stop_training then self.optimizer:step(); self._pending = 0 end    -- (a group cut short by a callback)
  -- stop_after between evaluations: the part's end is a stop too (a checkpoint there resumes the period)
  if self.step == last and self.step % self.eval_every ~= 0 and self.step < self._total then self:_stop_period(nil) end
end

-- eval_every: a stop part way through a period; the ranks agree on its loss sum, so that each resumes alike
function Trainer:_stop_period(sig)
  if self.D then
    local t = self.D.all_reduce(nnr.tensor({ self._window.loss }, { dtype = "f64" }))
    self._window.loss = t[1] / self.D.world_size()
  end
  self:_interrupt({ signal = sig, epoch = self.epoch, step = self.step })
end

-- validation into logs (evaluate, or the val_loader), then on_validation_end
function Trainer:_validate(logs)
  local v = self.evaluate and self.evaluate(self) or (self.val_loader and self:_evaluate())
  if not v then return end
  for k, x in pairs(v) do logs[k] = x end
  self:_call("on_validation_end", logs)
end

-- "epoch 3: train loss 0.4, val loss 0.5, val accuracy 0.8, 5000 samples/s, 3.2 s"
function Trainer:_line(what, logs)
  local parts = { string.format("%s: train loss %.4f", what, logs.train_loss) }
  if logs.val_loss then parts[#parts + 1] = string.format("val loss %.4f", logs.val_loss) end
  if logs.val_accuracy then parts[#parts + 1] = string.format("val accuracy %.4f", logs.val_accuracy) end
  parts[#parts + 1] = string.format("%.0f %s/s, %.1f s", logs[self.unit .. "_per_s"] or 0, self.unit, logs.seconds)
  return table.concat(parts, ", ")
end

function Trainer:fit(opts)
  opts = V.options("Trainer:fit", opts, { resume = true, validate = true })
  self._tty = false
  pcall(function()
    local ffi = require "ffi"
    pcall(ffi.cdef, "int isatty(int fd);")
    self._tty = ffi.C.isatty(1) == 1
  end)
  local first, within = 1, nil
  if opts.resume then first, within = self:load(opts.resume, opts.validate)
  elseif self._resume then first, within = self._resume[1], self._resume[2] end      -- a load() before fit
  self._resume = nil
  self.stop_training, self.interrupted = false, nil
  local caught_before
  if self.stop_signals then caught_before = require("nnr.signals").catch_stop(true) end
  local ok, err = pcall(self._run, self, first, within)
  if self.stop_signals and not caught_before then require("nnr.signals").catch_stop(false) end   -- as it was (a REPL's Ctrl-C)
  if not ok then error(err, 0) end
  return self.history
end

function Trainer:_run(first, within)
  self:_call("on_fit_start")
  if self.eval_every then          -- a run of steps: max_steps, or epochs of the loader's batches
    self._total = self.max_steps or self.epochs * loader_len(self.train_loader)
    if self._total < 1 then error("Trainer: eval_every needs max_steps, or a train_loader with len()", 0) end
    self:_steps(math.min(self._total, self.stop_after or self._total))
    self:_call("on_fit_end", self.history)
    return self.history
  end
  local last = math.min(self.epochs, self.stop_after or self.epochs)
  for epoch = first, last do
    self.epoch = epoch
    -- a DataLoader's epoch e is the training epoch e (its shuffle follows it), also after a resume
    if not within then pcall(function() if self.train_loader.epoch ~= nil then self.train_loader.epoch = epoch - 1 end end) end
    self:_call("on_epoch_start", epoch)
    local logs = self:_epoch(within)
    within = nil
    if not logs then break end                   -- a stop signal: on_interrupt has run
    self:_validate(logs)
    self.history[#self.history + 1] = logs
    if self.print_epochs and not self.quiet and self.rank == 0 then print(self:_line("epoch " .. epoch, logs)) end
    self:_call("on_epoch_end", logs)
    if self.stop_training or (self.max_steps and self.step >= self.max_steps) then break end
    if self.stop_signals and epoch < last then
      local sig = stop_requested(self.D)
      if sig then
        self:_interrupt({ signal = sig, epoch = epoch })
        break
      end
    end
  end
  self:_call("on_fit_end", self.history)
  return self.history
end

-- what a resumed run needs: the model, the optimizer, the epochs done, the callbacks' states, the RNG, the
-- history; within (a stop part way through the next epoch): {step, loss_sum, samples}; with eval_every, the
-- current period's loss sum and steps (window_loss, window_steps); extra: the caller's fields (what its own
-- checks need on resume)
function Trainer:state_dict(within, extra)
  local cbs = {}
  for i, cb in ipairs(self.callbacks) do cbs[i] = cb.state_dict and cb:state_dict() or {} end
  local sd = { model = self.model:state_dict(), optimizer = self.optimizer:state_dict(), epoch = self.epoch, global_step = self.step,
               callbacks = cbs, rng = nnr.get_rng_state(), history = self.history }
  if self.eval_every then sd.window_loss, sd.window_steps = self._window.loss, self._window.steps end
  -- a stop within the next epoch: its batches done and running loss (the names the training scripts always used)
  if within and not self.eval_every then sd.step, sd.epoch_loss_sum, sd.epoch_samples = within.step, within.loss_sum, within.samples end
  for k, v in pairs(extra or {}) do sd[k] = v end
  return sd
end

-- the epochs done (this one included), or the state at a stop within the next epoch
function Trainer:save(path, within, extra)
  if within and within.epoch and not self.eval_every then
    local done = self.epoch
    self.epoch = within.epoch - 1
    local ok, err = pcall(nnr.save_checkpoint, path, self:state_dict(within, extra))
    self.epoch = done
    if not ok then error(err, 0) end
    return
  end
  nnr.save_checkpoint(path, self:state_dict(nil, extra))
end

-- a checkpoint of Trainer:save (validate(ck) may refuse it first): the epoch to start at, and where in it
function Trainer:load(path, validate)
  local ck = nnr.load_checkpoint(V.path("Trainer", "resume", path))
  if validate then validate(ck) end            -- the caller's checks first: its messages are the more precise
  return self:load_state_dict(ck, path)
end

-- a checkpoint's table (of state_dict); `who` names it in errors
function Trainer:load_state_dict(ck, who)
  who = "Trainer: " .. tostring(who or "the checkpoint")
  for _, k in ipairs { "model", "optimizer" } do
    if type(ck[k]) ~= "table" then error(who .. " is not a Trainer checkpoint: it has no " .. k, 0) end
  end
  -- (eval_every: the steps done place the data stream; "step" is what train_charlm.lua's checkpoints called them)
  local steps = self.eval_every and (ck.global_step or ck.step) or ck.global_step or 0
  V.integer(who, "global_step", steps, 0, 1e15)
  if not self.eval_every and type(ck.epoch) ~= "number" then error(who .. " is not a Trainer checkpoint: it has no epoch", 0) end
  self.model:load_state_dict(ck.model)
  self.optimizer:load_state_dict(ck.optimizer)
  self.epoch, self.step = ck.epoch or 0, steps
  if ck.rng then nnr.set_rng_state(ck.rng) end
  self.history = {}
  for i = 1, #(ck.history or {}) do self.history[i] = ck.history[i] end
  for i, cb in ipairs(self.callbacks) do
    local s = ck.callbacks and ck.callbacks[i]
    if s and cb.load_state_dict then cb:load_state_dict(s) end
  end
  if self.eval_every then
    local wl, ws = ck.window_loss or 0, ck.window_steps or 0
    if type(wl) ~= "number" then error(who .. ": window_loss must be a number", 0) end     -- (inf or nan: a diverged run's)
    self._window = { loss = wl, steps = V.integer(who, "window_steps", ws, 0, 1e15), samples = 0 }
    return 1, nil
  end
  local within = ck.step ~= nil and { step = ck.step, loss_sum = ck.epoch_loss_sum, samples = ck.epoch_samples } or nil
  if within and (type(within.step) ~= "number" or type(within.samples) ~= "number") then
    error(who .. ": a stop within an epoch needs its step and epoch_samples", 0)
  end
  self._resume = { ck.epoch + 1, within }
  return ck.epoch + 1, within
end

-- callbacks ------------------------------------------------------------------------------------
local function monitored(who, logs, key)
  local v = logs[key]
  if type(v) ~= "number" then
    local have = {}
    for k in pairs(logs) do have[#have + 1] = k end
    table.sort(have)
    error(string.format("%s: the epoch's logs have no '%s' (they have: %s)", who, key, table.concat(have, ", ")), 0)
  end
  return v
end

local function better(mode, a, b, delta) if mode == "min" then return a < b - delta end return a > b + delta end

local EarlyStopping = { __name = "EarlyStopping" }
EarlyStopping.__index = EarlyStopping
-- EarlyStopping{monitor = "val_loss", mode = "min" | "max", patience = 3, min_delta = 0}
function M.EarlyStopping(o)
  local who = "EarlyStopping"
  o = V.options(who, o, { monitor = true, mode = true, patience = true, min_delta = true })
  return setmetatable({ monitor = o.monitor or "val_loss", mode = V.choice(who, "mode", o.mode or "min", { "min", "max" }),
                        patience = V.integer(who, "patience", o.patience or 3, 0, 1e9),
                        min_delta = V.number(who, "min_delta", o.min_delta or 0, { min = 0 }), wait = 0 }, EarlyStopping)
end
function EarlyStopping:on_epoch_end(tr, logs)
  local v = monitored("EarlyStopping", logs, self.monitor)
  if self.best == nil or better(self.mode, v, self.best, self.min_delta) then self.best, self.wait = v, 0; return end
  self.wait = self.wait + 1
  if self.wait > self.patience then
    tr.stop_training = true
    self.stopped_epoch = logs.epoch
    if not tr.quiet and tr.rank == 0 then
      local unit = tr.eval_every and "evaluation" or "epoch"
      print(string.format("early stop after %s %d: %s has not improved on %.6g for %d %ss", tr.eval_every and "step" or "epoch",
        tr.eval_every and logs.step or logs.epoch, self.monitor, self.best, self.wait, unit))
    end
  end
end
function EarlyStopping:state_dict() return { best = self.best, wait = self.wait } end
function EarlyStopping:load_state_dict(s) self.best, self.wait = s.best, s.wait or 0 end

local Checkpoint = { __name = "ModelCheckpoint" }
Checkpoint.__index = Checkpoint
-- ModelCheckpoint{dir, monitor = "val_loss", mode = "min", save_top_k = 1, save_last = true}: dir/epoch<N>.ckpt for
-- the best k epochs by the monitored value (others deleted; with eval_every dir/step<N>.ckpt, the best evaluations),
-- dir/last.ckpt after every epoch; written whole
function M.ModelCheckpoint(o)
  local who = "ModelCheckpoint"
  o = V.options(who, o, { dir = true, monitor = true, mode = true, save_top_k = true, save_last = true })
  local dir = V.path(who, "dir", o.dir)
  require("nnr.binding").check(require("nnr.binding").C.nnr_make_dirs(dir))
  return setmetatable({ dir = dir, monitor = o.monitor or "val_loss", mode = V.choice(who, "mode", o.mode or "min", { "min", "max" }),
                        save_top_k = V.integer(who, "save_top_k", o.save_top_k == nil and 1 or o.save_top_k, 0, 1e6),
                        save_last = o.save_last ~= false, best = {} }, Checkpoint)
end
function Checkpoint:on_epoch_end(tr, logs)
  if tr.rank ~= 0 then return end
  if self.save_top_k > 0 then
    local v = monitored("ModelCheckpoint", logs, self.monitor)
    local path = tr.eval_every and string.format("%s/step%d.ckpt", self.dir, logs.step) or string.format("%s/epoch%d.ckpt", self.dir, logs.epoch)
    local entry = { value = v, path = path, epoch = logs.epoch }
    local worst = self.best[#self.best]
    if #self.best < self.save_top_k or better(self.mode, v, worst.value, 0) then
      tr:save(path)
      self.best[#self.best + 1] = entry
      table.sort(self.best, function(a, b) return better(self.mode, a.value, b.value, 0) end)
      while #self.best > self.save_top_k do
        local gone = table.remove(self.best)
        if gone.path ~= path then os.remove(gone.path) end
      end
      self.best_path = self.best[1].path
    end
  end
  if self.save_last then tr:save(self.dir .. "/last.ckpt") end
end
function Checkpoint:state_dict()
  local b = {}
  for i, e in ipairs(self.best) do b[i] = { value = e.value, path = e.path, epoch = e.epoch } end
  return { best = b }
end
function Checkpoint:load_state_dict(s)
  self.best = {}
  for i = 1, #(s.best or {}) do self.best[i] = s.best[i] end
  self.best_path = self.best[1] and self.best[1].path
end

local Sched = { __name = "LRScheduler" }
Sched.__index = Sched
-- LRScheduler{scheduler = s, interval = "epoch" | "step", monitor = "val_loss"}: s:step() after each epoch or step;
-- a ReduceLROnPlateau gets the monitored value
function M.LRScheduler(o)
  local who = "LRScheduler"
  o = V.options(who, o, { scheduler = true, interval = true, monitor = true })
  if type(o.scheduler) ~= "table" or type(o.scheduler.step) ~= "function" then error(who .. ": scheduler is required", 0) end
  local plateau = getmetatable(o.scheduler) and getmetatable(o.scheduler).__name == "ReduceLROnPlateau"
  local interval = V.choice(who, "interval", o.interval or "epoch", { "epoch", "step" })
  if plateau and interval == "step" then error(who .. ": ReduceLROnPlateau steps once an epoch, on a monitored value", 0) end
  return setmetatable({ scheduler = o.scheduler, interval = interval, monitor = o.monitor or "val_loss", plateau = plateau }, Sched)
end
function Sched:on_step_end() if self.interval == "step" then self.scheduler:step() end end
function Sched:on_epoch_end(_, logs)
  if self.interval ~= "epoch" then return end
  if self.plateau then self.scheduler:step(monitored("LRScheduler", logs, self.monitor)) else self.scheduler:step() end
end
function Sched:state_dict() return self.scheduler.state_dict and self.scheduler:state_dict() or {} end
function Sched:load_state_dict(s) if self.scheduler.load_state_dict then self.scheduler:load_state_dict(s) end end

local Logger = { __name = "Logger" }
Logger.__index = Logger
local ROLES = { train = true, test = true, val = true }
-- Logger(writer[, {every = 0, histograms = false}]): the epoch's numbers to a SummaryWriter or JSONLinesWriter
-- (train_loss -> "loss/train", test_accuracy -> "accuracy/test", others by their name), the step's loss every
-- `every` steps (0: never), and with histograms every parameter's and gradient's histogram each epoch
function M.Logger(writer, o)
  o = V.options("Logger", o, { every = true, histograms = true })
  if type(writer) ~= "table" or type(writer.add_scalar) ~= "function" then error("Logger: a writer with add_scalar is required", 0) end
  return setmetatable({ writer = writer, every = V.integer("Logger", "every", o.every or 0, 0, 1e9),
                        histograms = V.boolean("Logger", "histograms", o.histograms) }, Logger)
end
function Logger:on_step_end(tr, logs)
  if tr.rank == 0 and self.every > 0 and logs.step % self.every == 0 then self.writer:add_scalar("step/loss", logs.loss, logs.step) end
end
function Logger:on_epoch_end(tr, logs)
  if tr.rank ~= 0 then return end
  local at = tr.eval_every and logs.step or logs.epoch      -- the x axis: epochs, or steps with eval_every
  local keys = {}
  for k, v in pairs(logs) do if type(v) == "number" and k ~= "epoch" and k ~= "step" then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local role, base = k:match("^(%a+)_(.+)$")
    self.writer:add_scalar(role and ROLES[role] and (base .. "/" .. role) or k, logs[k], at)
  end
  if self.histograms then
    for _, np in ipairs(tr.model:named_parameters()) do
      self.writer:add_histogram(np[1], np[2], at)
      if np[2].grad then self.writer:add_histogram(np[1] .. ".grad", np[2].grad, at) end
    end
  end
  if self.writer.flush then self.writer:flush() end
end

-- the learning-rate finder: a sweep from min_lr to max_lr (exponential, `steps` batches), the smoothed loss at
-- each rate, stopped when it passes 4x its best; the model and optimizer are put back as they were.
-- Returns {lrs, losses, suggestion} (the rate of the steepest fall); plot = "lr.png" draws loss against rate.
function M.lr_find(o)
  local who = "lr_find"
  o = V.options(who, o, { model = true, optimizer = true, loss_fn = true, loader = true, device = true, min_lr = true, max_lr = true,
                          steps = true, smooth = true, plot = true })
  local model, opt, loss_fn, loader = o.model, o.optimizer, o.loss_fn, o.loader
  if type(model) ~= "table" or type(opt) ~= "table" or type(loss_fn) ~= "function" or not has_iter(loader) then
    error(who .. ": model, optimizer, loss_fn and loader are required", 0)
  end
  local lo = V.number(who, "min_lr", o.min_lr or 1e-7, { above = 0 })
  local hi = V.number(who, "max_lr", o.max_lr or 10, { above = lo })
  local steps = V.integer(who, "steps", o.steps or 100, 2, 1e6)
  local beta = V.number(who, "smooth", o.smooth or 0.98, { min = 0, below = 1 })
  if o.plot then nnr.plot.check_output(o.plot, who) end
  local device = o.device and nnr.device(o.device).name or "cpu"
  local saved_model, saved_opt, saved_rng = model:state_dict(), opt:state_dict(), nnr.get_rng_state()
  local copy = {}
  for k, v in pairs(saved_model) do copy[k] = v:clone() end
  local lrs, losses, avg, best = {}, {}, 0, math.huge
  local i = 0
  model:train()
  while i < steps do
    local progressed = false
    for x, y in loader:iter() do
      progressed = true
      i = i + 1
      local lr = lo * (hi / lo) ^ ((i - 1) / (steps - 1))
      for _, g in ipairs(opt.param_groups) do g.lr = lr end
      opt:zero_grad()
      local loss = loss_fn(model(x:to(device)), y:to(device))
      loss:backward()
      opt:step()
      local l = loss:item()
      avg = beta * avg + (1 - beta) * l
      local smoothed = avg / (1 - beta ^ i)
      if l ~= l or smoothed > 4 * best then i = steps; break end
      best = math.min(best, smoothed)
      lrs[#lrs + 1], losses[#losses + 1] = lr, smoothed
      if i >= steps then break end
    end
    if not progressed then error(who .. ": the loader gave no batches", 0) end
  end
  model:load_state_dict(copy)
  opt:load_state_dict(saved_opt)
  nnr.set_rng_state(saved_rng)
  -- the steepest fall of the smoothed loss against log(lr), away from the ends (the first tenth, where the
  -- smoothing has little to go on, and the last twentieth)
  local suggestion, steepest = lrs[math.max(1, math.floor(#lrs / 2))], math.huge
  for k = math.max(2, math.floor(#lrs / 10)), #lrs - math.max(1, math.floor(#lrs / 20)) do
    local slope = (losses[k + 1] - losses[k - 1]) / (math.log(lrs[k + 1]) - math.log(lrs[k - 1]))
    if slope < steepest then steepest, suggestion = slope, lrs[k] end
  end
  if o.plot then
    local recs = {}
    for k = 1, #lrs do recs[k] = { lr = lrs[k], train_loss = losses[k] } end
    nnr.plot.curves(recs, o.plot, { x = "lr", logx = true, title = string.format("learning rate finder: suggested %.3g", suggestion) })
  end
  return { lrs = lrs, losses = losses, suggestion = suggestion }
end

return M
