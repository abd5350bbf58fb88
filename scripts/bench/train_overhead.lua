-- What logging and callbacks cost (issue 19: under 1% of step time at batch 64 on the mlp), in one run: the
-- Fashion-MNIST mlp's steps at batch 64 in a bare loop; under nnr.train.Trainer with no callbacks; and under
-- the Trainer with the callbacks a user would have (a Logger writing the step's loss every step and the
-- epoch's numbers to a TensorBoard SummaryWriter, EarlyStopping, an LRScheduler stepped every step, a user's
-- on_step_end; the bare loop and the plain Trainer step the scheduler themselves), in interleaved rounds.
-- Prints the medians, what logging and callbacks add to the Trainer's step, and what the Trainer's loop adds
-- to the bare one. Batches come from a tensor in memory, the same for all. Usage:
--   nnrun scripts/bench/train_overhead.lua [ROUNDS] [STEPS]
local nnr = require "nnr"
local F = nnr.nn.functional
local fm = dofile((arg[0]:match("^(.*)/bench/[^/]*$") or "scripts") .. "/fashion_mnist.lua")
local rounds, steps = tonumber(arg[1] or 7), tonumber(arg[2] or 400)
nnr.set_num_threads(2)
nnr.manual_seed(0)
local x = nnr.randn(steps * 64, 1, 28, 28)
local y = nnr.randint(1, 11, { steps * 64 })
local loader = nnr.data.DataLoader(nnr.data.TensorDataset(x, y), { batch_size = 64 })

local function bare(model, opt, sched)
  local t0 = nnr.clock()
  for xb, yb in loader:iter() do
    local loss = F.cross_entropy(model(xb), yb)
    opt:zero_grad()
    loss:backward()
    opt:step()
    sched:step()
    local _ = loss:item()
  end
  return (nnr.clock() - t0) / steps
end

local dir = os.tmpname() .. ".tb"
local function trainer(model, opt, sched)
  local w = nnr.tensorboard.SummaryWriter(dir)
  local calls = 0
  local tr = nnr.train.Trainer { model = model, optimizer = opt, loss_fn = F.cross_entropy, train_loader = loader, quiet = true,
    callbacks = { nnr.train.Logger(w, { every = 1 }), nnr.train.EarlyStopping { monitor = "train_loss", patience = 100 },
                  nnr.train.LRScheduler { scheduler = sched, interval = "step" }, { name = "mine", on_step_end = function() calls = calls + 1 end } } }
  local t0 = nnr.clock()
  tr:fit()
  local dt = (nnr.clock() - t0) / steps
  w:close()
  assert(calls == steps)
  return dt
end

local function plain(model, opt, sched)
  local tr = nnr.train.Trainer { model = model, optimizer = opt, loss_fn = F.cross_entropy, train_loader = loader, quiet = true,
    callbacks = { nnr.train.LRScheduler { scheduler = sched, interval = "step" } } }
  local t0 = nnr.clock()
  tr:fit()
  return (nnr.clock() - t0) / steps
end

local function fresh()
  nnr.manual_seed(1)
  local m = fm.build_model("mlp")
  local o = nnr.optim.SGD(m:parameters(), { lr = 0.01, momentum = 0.9 })
  return m, o, nnr.optim.CosineAnnealingLR(o, { T_max = steps })
end
bare(fresh())                       -- warm-up
plain(fresh())
trainer(fresh())
local a, p, b = {}, {}, {}
for r = 1, rounds do
  b[r] = trainer(fresh())
  p[r] = plain(fresh())
  a[r] = bare(fresh())
end
local function med(t) table.sort(t); return t[math.ceil(#t / 2)] end
local ma, mp, mb = med(a), med(p), med(b)
print(string.format('{"bare_step_us": %.1f, "trainer_step_us": %.1f, "trainer_with_logging_us": %.1f, "logging_callbacks_percent": %.2f, '
  .. '"trainer_loop_percent": %.2f, "rounds": %d, "steps": %d}', ma * 1e6, mp * 1e6, mb * 1e6, 100 * (mb - mp) / mp, 100 * (mp - ma) / ma,
  rounds, steps))
os.execute("rm -rf '" .. dir .. "'")
