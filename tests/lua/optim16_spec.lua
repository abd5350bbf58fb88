-- Issue 16, optimizers and schedules: Adagrad, LBFGS, Lion reach known minima; the schedulers'
-- values by hand; state dicts round trip (through a checkpoint file too); weight averaging;
-- clip_grad_value; bad options are clear errors. (tests/torch_compare/optim.py compares all of
-- it with PyTorch step by step.)
local nnr = require "nnr"
local H = require "helpers"
local nn, optim = nnr.nn, nnr.optim
local swa_utils = optim.swa_utils

local function rosenbrock(p)
  local x, y = p[{ { 1, 1 } }], p[{ { 2, 2 } }]
  return (((1 - x) ^ 2) + ((y - x * x) ^ 2) * 100):sum()
end
-- a quadratic with its minimum at c and a full Hessian: sum((A (p - c))^2)
local A = nnr.tensor({ { 2, 0.5, 0 }, { 0.5, 1, 0.3 }, { 0, 0.3, 3 } }, { dtype = "f64" })
local C = nnr.tensor({ 1, -2, 0.5 }, { dtype = "f64" })
local function quadratic(p) return (A:matmul(p - C) ^ 2):sum() end
local function param(values) return nnr.tensor(values, { dtype = "f64", requires_grad = true }) end
local function run(opt, p, f, n, sched)
  for _ = 1, n do
    opt:zero_grad(); f(p):backward(); opt:step()
    if sched then sched:step() end
  end
end
local function sgd(lr) return optim.SGD({ param({ 0 }) }, { lr = lr or 1 }) end
local function close(a, b, tol) return math.abs(a - b) <= (tol or 1e-12) * math.max(1, math.abs(b)) end

describe("optim16: optimizers reach the known minimum", function()
  it("Adagrad on a quadratic", function()
    local p = param({ 3, 3, -3 })
    run(optim.Adagrad({ p }, { lr = 0.5 }), p, quadratic, 600)
    H.assert_close(p, { 1, -2, 0.5 }, 1e-4)
  end)

  it("LBFGS on Rosenbrock, with a fixed step and with strong_wolfe", function()
    for _, ls in ipairs { false, "strong_wolfe" } do
      local p = param({ -1.5, 2 })
      local opt = optim.LBFGS({ p }, { lr = ls and 1 or 0.1, max_iter = 100, line_search_fn = ls or nil })
      for _ = 1, 20 do
        opt:step(function() opt:zero_grad(); local f = rosenbrock(p); f:backward(); return f end)
      end
      H.assert_close(p, { 1, 1 }, 1e-4)
    end
  end)

  it("LBFGS with strong_wolfe solves a quadratic in a handful of evaluations", function()
    local p = param({ 3, 3, -3 })
    local opt = optim.LBFGS({ p }, { line_search_fn = "strong_wolfe" })
    local loss = opt:step(function() opt:zero_grad(); local f = quadratic(p); f:backward(); return f end)
    assert.is_true(loss:item() > 1)                -- the loss of the first evaluation is returned
    H.assert_close(p, { 1, -2, 0.5 }, 1e-6)
    assert.is_true(opt.state[p].func_evals <= 12, "func_evals " .. opt.state[p].func_evals)
  end)

  it("Lion on a quadratic (with a decaying lr: its steps have a fixed size)", function()
    local p = param({ 3, 3, -3 })
    local opt = optim.Lion({ p }, { lr = 0.05 })
    run(opt, p, quadratic, 1500, optim.ExponentialLR(opt, { gamma = 0.995 }))
    H.assert_close(p, { 1, -2, 0.5 }, 1e-3)
  end)
end)

describe("optim16: update rules by hand", function()
  it("Adagrad: lr_decay, weight_decay, initial_accumulator_value", function()
    local p = param({ 1, -2 })
    local opt = optim.Adagrad({ p }, { lr = 0.1, lr_decay = 0.5, weight_decay = 0.1, initial_accumulator_value = 1, eps = 0 })
    p.grad = nnr.tensor({ 2, 3 }, { dtype = "f64" }); opt:step()
    -- g = (2.1, 2.8); sum = 1 + g^2; p -= 0.1 g / sqrt(sum)
    H.assert_close(p, { 1 - 0.1 * 2.1 / math.sqrt(1 + 2.1 ^ 2), -2 - 0.1 * 2.8 / math.sqrt(1 + 2.8 ^ 2) }, 1e-12)
    local p1 = p[1]
    p.grad = nnr.tensor({ 2, 3 }, { dtype = "f64" }); opt:step()
    local g = 2 + 0.1 * p1
    H.assert_close(p[{ { 1, 1 } }], { p1 - 0.1 / 1.5 * g / math.sqrt(1 + 2.1 ^ 2 + g * g) }, 1e-12)
    assert.equal(2, opt.state[p].step)
  end)

  it("Lion: the sign of the interpolation, decoupled weight decay, then the momentum", function()
    local p = param({ 1, -1, 2 })
    local opt = optim.Lion({ p }, { lr = 0.1, betas = { 0.5, 0.9 }, weight_decay = 0.5 })
    p.grad = nnr.tensor({ 3, -0.25, 0 }, { dtype = "f64" }); opt:step()
    H.assert_close(p, { 0.95 - 0.1, -0.95 + 0.1, 1.9 }, 1e-12)
    H.assert_close(opt.state[p].exp_avg, { 0.3, -0.025, 0 }, 1e-12)
    p.grad = nnr.tensor({ -1, -1, 1 }, { dtype = "f64" }); opt:step()
    -- interpolation: 0.5 m + 0.5 g = (-0.35, -0.5125, 0.5): signs (-, -, +)
    H.assert_close(p, { 0.85 * 0.95 + 0.1, -0.85 * 0.95 + 0.1, 1.9 * 0.95 - 0.1 }, 1e-12)
  end)

  it("optimizers skip parameters without a gradient and leave the gradient alone", function()
    for _, cls in ipairs { optim.Adagrad, optim.Lion } do
      local p, q = param({ 1, 2 }), param({ 3 })
      local opt = cls({ p, q }, { lr = 0.1, weight_decay = 0.1 })
      p.grad = nnr.tensor({ 1, -1 }, { dtype = "f64" })
      opt:step()
      H.assert_close(q, { 3 }, 0)
      H.assert_close(p.grad, { 1, -1 }, 0)
      assert.is_nil(opt.state[q])
    end
  end)
end)

describe("optim16: state_dict round trips", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)

  -- k steps, a round trip of the state (through a checkpoint file), k more: the same as 2k steps
  local function resumes(make, f, k, closure_style)
    local function stepper(opt, p)
      if closure_style then
        return function() opt:step(function() opt:zero_grad(); local l = f(p); l:backward(); return l end) end
      end
      return function() opt:zero_grad(); f(p):backward(); opt:step() end
    end
    local p1 = param({ -1.2, 1, 0.5 })
    local o1 = make(p1)
    local s1 = stepper(o1, p1)
    for _ = 1, 2 * k do s1() end
    local p2 = param({ -1.2, 1, 0.5 })
    local o2 = make(p2)
    local s2 = stepper(o2, p2)
    for _ = 1, k do s2() end
    local path = dir .. "/opt.safetensors"
    nnr.save_checkpoint(path, { optimizer = o2:state_dict(), p = p2:detach() })
    local ck = nnr.load_checkpoint(path)
    local p3 = param(ck.p:totable())
    local o3 = make(p3)
    o3:load_state_dict(ck.optimizer)
    local s3 = stepper(o3, p3)
    for _ = 1, k do s3() end
    H.assert_close(p3, p1:detach():totable(), 1e-12)
  end

  it("Adagrad, Lion and LBFGS (both kinds) continue as if never stopped", function()
    resumes(function(p) return optim.Adagrad({ p }, { lr = 0.2, lr_decay = 0.01 }) end, quadratic, 5)
    resumes(function(p) return optim.Lion({ p }, { lr = 0.01, weight_decay = 0.1 }) end, quadratic, 5)
    resumes(function(p) return optim.LBFGS({ p }, { lr = 0.05, max_iter = 3, history_size = 4 }) end, rosenbrock, 3, true)
    resumes(function(p) return optim.LBFGS({ p }, { max_iter = 2, history_size = 3, line_search_fn = "strong_wolfe" }) end, rosenbrock, 3, true)
  end)

  it("a saved LBFGS state does not change with later steps", function()
    local p = param({ -1.2, 1 })
    local opt = optim.LBFGS({ p }, { max_iter = 2 })
    local function closure() opt:zero_grad(); local l = rosenbrock(p); l:backward(); return l end
    opt:step(closure); opt:step(closure)
    local sd = opt:state_dict()
    local n = #sd.state[1].old_dirs
    opt:step(closure); opt:step(closure)
    assert.equal(n, #sd.state[1].old_dirs)
  end)

  it("LBFGS load_state_dict refuses a state of the wrong size, before changing anything", function()
    local p = param({ -1.2, 1 })
    local opt = optim.LBFGS({ p }, { max_iter = 2 })
    opt:step(function() opt:zero_grad(); local l = rosenbrock(p); l:backward(); return l end)
    local sd = opt:state_dict()
    local q = param({ 1, 2, 3 })
    local other = optim.LBFGS({ q })
    assert.matches("state 'd' has shape %[2%], expected %[3%]", H.errmsg(function() other:load_state_dict(sd) end))
    assert.is_nil(other.state[q])
    sd.state[1].ro = { 1 }
    assert.matches("old_dirs, old_stps and ro hold", H.errmsg(function() optim.LBFGS({ param({ 0, 0 }) }):load_state_dict(sd) end))
    sd.param_groups[1].history_size = 0
    assert.matches("history_size must be an integer >= 1", H.errmsg(function() optim.LBFGS({ param({ 0, 0 }) }):load_state_dict(sd) end))
  end)

  it("schedulers: state_dict and load_state_dict resume the sequence", function()
    local function seq(make, n, from)
      local opt = optim.SGD({ param({ 0 }) }, { lr = 0.1, momentum = 0.9 })
      local s = make(opt)
      if from then s:load_state_dict(from) end
      local out = {}
      for i = 1, n do s:step(); out[i] = opt.param_groups[1].lr end
      return out, s:state_dict()
    end
    local makers = {
      function(o) return optim.ExponentialLR(o, { gamma = 0.9 }) end,
      function(o) return optim.MultiStepLR(o, { milestones = { 2, 5 } }) end,
      function(o) return optim.OneCycleLR(o, { max_lr = 1, total_steps = 20 }) end,
      function(o)
        return optim.SequentialLR(o, { schedulers = { optim.LinearLR(o, { total_iters = 3 }), optim.CosineAnnealingLR(o, { T_max = 8 }) },
          milestones = { 4 } })
      end,
    }
    for _, make in ipairs(makers) do
      local all = seq(make, 12)
      local _, sd = seq(make, 6)
      local rest = seq(make, 6, sd)
      for i = 1, 6 do assert.is_true(close(rest[i], all[6 + i], 1e-9), i .. ": " .. rest[i] .. " vs " .. all[6 + i]) end
    end
    -- ReduceLROnPlateau keeps its counters
    local opt = optim.SGD({ param({ 0 }) }, { lr = 1 })
    local r = optim.ReduceLROnPlateau(opt, { patience = 1 })
    r:step(1); r:step(2)
    local r2 = optim.ReduceLROnPlateau(optim.SGD({ param({ 0 }) }, { lr = 1 }), { patience = 1 })
    r2:load_state_dict(r:state_dict())
    r2:step(2)
    assert.is_true(close(r2:get_last_lr()[1], 0.1))
    assert.matches("best must be a number", H.errmsg(function() r2:load_state_dict({ last_epoch = 1, best = 0 / 0, num_bad_epochs = 0, cooldown_counter = 0 }) end))
    assert.matches("last_epoch must be an integer >= 0", H.errmsg(function() optim.OneCycleLR(sgd(), { max_lr = 1, total_steps = 5 }):load_state_dict({ last_epoch = -1 }) end))
    assert.matches("stepped 7 times, total_steps is 5", H.errmsg(function() optim.OneCycleLR(sgd(), { max_lr = 1, total_steps = 5 }):load_state_dict({ last_epoch = 7 }) end))
    assert.matches("1 scheduler states, 2 schedulers", H.errmsg(function()
      local o = sgd()
      optim.SequentialLR(o, { schedulers = { optim.ExponentialLR(o, { gamma = 0.5 }), optim.StepLR(o, { step_size = 2 }) }, milestones = { 2 } })
        :load_state_dict({ last_epoch = 1, schedulers = { { last_epoch = 1 } } })
    end))
  end)
end)

describe("optim16: schedulers by hand", function()
  it("ExponentialLR and MultiStepLR", function()
    local opt = sgd(1)
    local e = optim.ExponentialLR(opt, { gamma = 0.5 })
    assert.equal(1, e:get_last_lr()[1])
    e:step(); e:step()
    assert.is_true(close(e:get_last_lr()[1], 0.25))
    local opt2 = sgd(1)
    local m = optim.MultiStepLR(opt2, { milestones = { 3, 1, 3 }, gamma = 0.1 })
    local seen = {}
    for i = 1, 4 do m:step(); seen[i] = opt2.param_groups[1].lr end
    assert.is_true(close(seen[1], 0.1) and close(seen[2], 0.1) and close(seen[3], 0.001) and close(seen[4], 0.001))
  end)

  it("OneCycleLR: from max_lr / div_factor up to max_lr and down to its minimum; momentum inversely", function()
    local opt = optim.SGD({ param({ 0 }) }, { lr = 0.1, momentum = 0.5 })
    local s = optim.OneCycleLR(opt, { max_lr = 1, total_steps = 10, pct_start = 0.3 })
    local g = opt.param_groups[1]
    assert.is_true(close(g.lr, 0.04)); assert.equal(0.95, g.momentum)
    s:step(); s:step()                       -- step 2 = pct_start * 10 - 1: the peak
    assert.is_true(close(g.lr, 1)); assert.is_true(close(g.momentum, 0.85))
    for _ = 3, 9 do s:step() end
    assert.is_true(close(g.lr, 0.04 / 1e4)); assert.is_true(close(g.momentum, 0.95))
    s:step()                                 -- the 10th step is allowed (PyTorch's), the 11th is not
    assert.matches("OneCycleLR: stepped 11 times, total_steps is 10", H.errmsg(function() s:step() end))
    assert.equal(10, s.last_epoch)
    -- Adam: beta1 cycles, beta2 stays; a fresh table each time (the defaults' table is shared)
    local adam = optim.Adam({ param({ 0 }) }, { lr = 0.1 })
    local defaults_betas = adam.defaults.betas
    optim.OneCycleLR(adam, { max_lr = 0.1, total_steps = 4, base_momentum = 0.6, max_momentum = 0.7 }):step()
    assert.is_true(adam.param_groups[1].betas[1] < 0.7 and adam.param_groups[1].betas[2] == 0.999)
    assert.equal(0.9, defaults_betas[1])
  end)

  it("SequentialLR: LinearLR warm-up then CosineAnnealingLR, restarting at the milestone", function()
    local opt = sgd(1)
    local w = optim.LinearLR(opt, { start_factor = 0.25, total_iters = 3 })
    local c = optim.CosineAnnealingLR(opt, { T_max = 4 })
    local s = optim.SequentialLR(opt, { schedulers = { w, c }, milestones = { 3 } })
    local got = { opt.param_groups[1].lr }
    for i = 1, 6 do s:step(); got[i + 1] = s:get_last_lr()[1] end
    local want = { 0.25, 0.5, 0.75, 1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2 }
    for i = 1, #want do assert.is_true(close(got[i], want[i], 1e-12), i .. ": " .. got[i] .. " vs " .. want[i]) end
  end)

  it("ReduceLROnPlateau: patience, threshold, cooldown, min_lr, max mode", function()
    local opt = sgd(1)
    local s = optim.ReduceLROnPlateau(opt, { patience = 2, factor = 0.5, cooldown = 1, min_lr = 0.2 })
    local lrs = {}
    for i, v in ipairs { 10, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9 } do s:step(v); lrs[i] = opt.param_groups[1].lr end
    -- bad at steps 3, 4, 5 -> halve at 5; cooldown 1 swallows 6; bad 7, 8, 9 -> 0.25 at 9; then min_lr
    local want = { 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25 }
    for i = 1, #want do assert.is_true(close(lrs[i], want[i]), i .. ": " .. lrs[i]) end
    for _ = 1, 8 do s:step(9) end
    assert.is_true(close(opt.param_groups[1].lr, 0.2))
    local opt2 = sgd(1)
    local m = optim.ReduceLROnPlateau(opt2, { mode = "max", patience = 0, threshold = 0.1, threshold_mode = "abs" })
    m:step(1); m:step(1.05)                  -- not better by more than 0.1: reduced
    assert.is_true(close(opt2.param_groups[1].lr, 0.1))
    m:step(nnr.tensor(2)); assert.equal(2, m.best)
    m:step(0 / 0)                            -- NaN is never better
    assert.equal(2, m.best)
  end)

  it("CosineAnnealingLR is periodic past T_max, as PyTorch", function()
    local opt = sgd(1)
    local c = optim.CosineAnnealingLR(opt, { T_max = 2 })
    for _ = 1, 3 do c:step() end
    assert.is_true(close(opt.param_groups[1].lr, 0.5, 1e-12))
  end)

  it("SWALR anneals from where the lr stands to swa_lr", function()
    local opt = sgd(1)
    local s = swa_utils.SWALR(opt, { swa_lr = 0.1, anneal_epochs = 2, anneal_strategy = "linear" })
    assert.equal(1, opt.param_groups[1].lr)
    s:step(); assert.is_true(close(opt.param_groups[1].lr, 0.55))
    s:step(); assert.is_true(close(opt.param_groups[1].lr, 0.1))
    s:step(); assert.is_true(close(opt.param_groups[1].lr, 0.1))
  end)
end)

describe("optim16: weight averaging", function()
  local function linear(w, b)
    local m = nn.Linear(2, 1, { dtype = "f64" })
    nnr.no_grad(function() m.weight:copy_(nnr.tensor({ w }, { dtype = "f64" })); m.bias:fill_(b) end)
    return m
  end

  it("AveragedModel: SWA is the mean of the models seen; EMA the exponential average", function()
    local model = linear({ 1, 2 }, 3)
    local swa = swa_utils.AveragedModel(model)
    local ema = swa_utils.AveragedModel(model, { ema_decay = 0.5 })
    for k = 1, 3 do
      nnr.no_grad(function() model.weight:fill_(k); model.bias:fill_(10 * k) end)
      swa:update_parameters(model); ema:update_parameters(model)
    end
    H.assert_close(swa.module.weight, { { 2, 2 } }, 1e-12)
    H.assert_close(swa.module.bias, { 20 }, 1e-12)
    H.assert_close(ema.module.weight, { { 2.25, 2.25 } }, 1e-12)     -- 1 -> 1.5 -> 2.25
    assert.equal(3, swa.n_averaged:item())
    -- the copy is its own: the model's tensors are not shared
    H.assert_close(model.weight, { { 3, 3 } }, 0)
    -- used as a module, with PyTorch's state dict keys
    H.assert_close(swa(nnr.tensor({ { 1, 1 } }, { dtype = "f64" })), { { 24 } }, 1e-12)
    local sd = swa:state_dict()
    assert.is_not_nil(sd["module.weight"]); assert.is_not_nil(sd["module.bias"]); assert.is_not_nil(sd.n_averaged)
    local other = swa_utils.AveragedModel(linear({ 0, 0 }, 0))
    other:load_state_dict(sd)
    H.assert_close(other.module.weight, { { 2, 2 } }, 0)
    assert.equal(3, other.n_averaged:item())
  end)

  it("AveragedModel: avg_fn and multi_avg_fn receive the number averaged so far", function()
    local model = linear({ 1, 1 }, 0)
    local seen = {}
    local avg = swa_utils.AveragedModel(model, { avg_fn = function(a, p, n) seen[#seen + 1] = n; return a + p end })
    for _ = 1, 3 do avg:update_parameters(model) end
    assert.same({ 1, 1, 2, 2 }, seen)          -- weight and bias, at the 2nd and 3rd updates
    H.assert_close(avg.module.weight, { { 3, 3 } }, 0)
    local multi = swa_utils.AveragedModel(model, { multi_avg_fn = function(as, ps, n) for i, a in ipairs(as) do a:copy_(ps[i] * n) end end })
    multi:update_parameters(model); multi:update_parameters(model)
    H.assert_close(multi.module.weight, { { 1, 1 } }, 0)
  end)

  it("update_bn recomputes BatchNorm statistics as a cumulative average, from a loader, a list or an iterator", function()
    H.reseed(16)
    local x = nnr.randn(12, 3, { dtype = "f64" })
    local model = nn.Sequential(nn.BatchNorm1d(3, { dtype = "f64", momentum = 0.2 }))
    model:eval()
    local bn = model:get(1)
    local batches = { x:narrow(1, 1, 4), x:narrow(1, 5, 4), x:narrow(1, 9, 4) }
    local mean_of_means = (batches[1]:mean(1) + batches[2]:mean(1) + batches[3]:mean(1)) / 3
    local var_mean = (batches[1]:var(1) + batches[2]:var(1) + batches[3]:var(1)) / 3
    local function check_stats()
      H.assert_close(bn.running_mean, mean_of_means:totable(), 1e-12)
      H.assert_close(bn.running_var, var_mean:totable(), 1e-12)
      assert.equal(3, bn.num_batches_tracked:item())
      assert.equal(0.2, bn.momentum)
      assert.is_false(model.training)
    end
    swa_utils.update_bn(batches, model); check_stats()
    local i = 0
    swa_utils.update_bn(function() i = i + 1; return batches[i], "label" end, model); check_stats()
    local loader = nnr.data.DataLoader(nnr.data.TensorDataset(x, nnr.ones(12, { dtype = "i64" })), { batch_size = 4 })
    swa_utils.update_bn(loader, model); check_stats()
    -- through an AveragedModel; a model without BatchNorm is left alone
    local avg = swa_utils.AveragedModel(model)
    swa_utils.update_bn(batches, avg)
    H.assert_close(avg.module:get(1).running_mean, mean_of_means:totable(), 1e-12)
    swa_utils.update_bn(batches, nn.Linear(3, 3))
    -- a bad batch: an error naming it, and the momentum restored
    assert.matches("update_bn: batch 2 is a string", H.errmsg(function() swa_utils.update_bn({ batches[1], "x" }, model) end))
    assert.equal(0.2, bn.momentum)
  end)

  it("bad uses are clear errors", function()
    local model = linear({ 1, 1 }, 0)
    assert.matches("at most one of avg_fn, multi_avg_fn and ema_decay", H.errmsg(function()
      swa_utils.AveragedModel(model, { ema_decay = 0.9, avg_fn = function(a) return a end })
    end))
    assert.matches("ema_decay must be a finite number in %[0, 1%], got 1.5", H.errmsg(function() swa_utils.AveragedModel(model, { ema_decay = 1.5 }) end))
    assert.matches("unknown option 'decay'", H.errmsg(function() swa_utils.AveragedModel(model, { decay = 0.9 }) end))
    assert.matches("expected a module", H.errmsg(function() swa_utils.AveragedModel(nnr.ones(2)) end))
    local avg = swa_utils.AveragedModel(model)
    assert.matches("the model has 4 parameters, the averaged copy 2", H.errmsg(function()
      avg:update_parameters(nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1)))
    end))
    assert.matches("parameters 1 has shape %[1, 3%] in the model, %[1, 2%]", H.errmsg(function() avg:update_parameters(nn.Linear(3, 1)) end))
    assert.matches("avg_fn returned a string", H.errmsg(function()
      local a = swa_utils.AveragedModel(model, { avg_fn = function() return "x" end })
      a:update_parameters(model); a:update_parameters(model)
    end))
    assert.matches("SWALR: swa_lr is needed", H.errmsg(function() swa_utils.SWALR(sgd(), {}) end))
    assert.matches("SWALR: anneal_epochs must be an integer >= 0, got %-1", H.errmsg(function() swa_utils.SWALR(sgd(), { swa_lr = 0.1, anneal_epochs = -1 }) end))
    assert.matches("SWALR: anneal_strategy must be one of 'cos', 'linear', got 'exp'", H.errmsg(function() swa_utils.SWALR(sgd(), { swa_lr = 0.1, anneal_strategy = "exp" }) end))
    assert.matches("update_bn: loader must be", H.errmsg(function() swa_utils.update_bn(3, nn.Sequential(nn.BatchNorm1d(2))) end))
    assert.matches("get_ema_multi_avg_fn: decay must be", H.errmsg(function() swa_utils.get_ema_multi_avg_fn(0 / 0) end))
  end)
end)

describe("optim16: clip_grad_value", function()
  it("clamps every gradient in place; skips parameters without one", function()
    local a, b, c = param({ 1, 2, 3 }), param({ 0 }), param({ 5 })
    a.grad = nnr.tensor({ -4, 0.5, 2 }, { dtype = "f64" })
    b.grad = nnr.tensor({ 7 }, { dtype = "f64" })
    nn.utils.clip_grad_value({ a, b, c }, 1)
    H.assert_close(a.grad, { -1, 0.5, 1 }, 0)
    H.assert_close(b.grad, { 1 }, 0)
    assert.is_nil(c.grad)
    nn.utils.clip_grad_value_(a, 0.25)
    H.assert_close(a.grad, { -0.25, 0.25, 0.25 }, 0)
    assert.matches("clip_grad_value: clip_value must be a finite number >= 0, got %-1", H.errmsg(function() nn.utils.clip_grad_value({ a }, -1) end))
    assert.matches("clip_value must be a finite number >= 0, got nan", H.errmsg(function() nn.utils.clip_grad_value({ a }, 0 / 0) end))
    assert.matches("entry 2 is a number", H.errmsg(function() nn.utils.clip_grad_value({ a, 3 }, 1) end))
  end)
end)

describe("optim16: bad options are clear errors", function()
  local p = param({ 1 })
  local cases = {
    { function() optim.Adagrad({ p }, { lr = 0 / 0 }) end, "Adagrad: lr must be a finite number >= 0, got nan" },
    { function() optim.Adagrad({ p }, { eps = -1 }) end, "Adagrad: eps must be a finite number >= 0, got %-1" },
    { function() optim.Adagrad({ p }, { initial_accumulator_value = -0.5 }) end, "initial_accumulator_value must be" },
    { function() optim.Adagrad({ p }, { momentum = 0.9 }) end, "Adagrad: unknown option 'momentum'" },
    { function() optim.Lion({ p }, { betas = { 1.5, 0.9 } }) end, "Lion: betas%[1%] must be a finite number in %[0, 1%], got 1.5" },
    { function() optim.Lion({ p }, { betas = 0.9 }) end, "Lion: betas must be a pair" },
    { function() optim.Lion({ p }, { weight_decay = 1 / 0 }) end, "Lion: weight_decay must be a finite number >= 0, got inf" },
    { function() optim.LBFGS({ p }, { line_search_fn = "armijo" }) end, "LBFGS: line_search_fn must be one of 'strong_wolfe', got 'armijo'" },
    { function() optim.LBFGS({ p }, { max_iter = 0 }) end, "LBFGS: max_iter must be an integer >= 1, got 0" },
    { function() optim.LBFGS({ p }, { history_size = 2.5 }) end, "LBFGS: history_size must be an integer >= 1, got 2.5" },
    { function() optim.LBFGS({ p }, { tolerance_grad = 0 / 0 }) end, "LBFGS: tolerance_grad must be" },
    { function() optim.LBFGS({ { params = { p } }, { params = { param({ 2 }) } } }) end, "LBFGS: parameter groups are not supported" },
    { function() optim.LBFGS({ p, nnr.ones(1, { requires_grad = true }) }) end, "LBFGS: parameter 2 is f32 on cpu, parameter 1 f64 on cpu" },
    { function() optim.LBFGS({ p }):step() end, "LBFGS:step: expected a closure" },
    { function() optim.LBFGS({ p }):step(function() return "x" end) end, "LBFGS: the closure must return the loss %(a tensor or a number%), got string" },
    { function() optim.LBFGS({ p }):step(function() return nnr.ones(2) end) end, "LBFGS: the closure returned a tensor of shape %[2%]" },
    { function() optim.ExponentialLR(sgd()) end, "ExponentialLR: gamma must be a finite number >= 0, got nil" },
    { function() optim.ExponentialLR(sgd(), { gamma = 0 / 0 }) end, "ExponentialLR: gamma must be a finite number >= 0, got nan" },
    { function() optim.MultiStepLR(sgd(), { milestones = 3 }) end, "MultiStepLR: milestones must be a list" },
    { function() optim.MultiStepLR(sgd(), { milestones = { 2, 1.5 } }) end, "MultiStepLR: milestones%[2%] must be an integer >= 0, got 1.5" },
    { function() optim.OneCycleLR(sgd(), { total_steps = 10 }) end, "OneCycleLR: max_lr is needed" },
    { function() optim.OneCycleLR(sgd(), { max_lr = 1 }) end, "OneCycleLR: total_steps is needed" },
    { function() optim.OneCycleLR(sgd(), { max_lr = 1, total_steps = 10, epochs = 2 }) end, "give total_steps or epochs and steps_per_epoch, not both" },
    { function() optim.OneCycleLR(sgd(), { max_lr = 1, epochs = 2 }) end, "OneCycleLR: steps_per_epoch must be an integer >= 1, got nil" },
    { function() optim.OneCycleLR(sgd(), { max_lr = 1, total_steps = 10, pct_start = 1.5 }) end, "pct_start must be a finite number in %[0, 1%]" },
    { function() optim.OneCycleLR(sgd(), { max_lr = 1, total_steps = 10, anneal_strategy = "exp" }) end, "anneal_strategy must be one of 'cos', 'linear'" },
    { function() optim.OneCycleLR(sgd(), { max_lr = { 1, 2 }, total_steps = 10 }) end, "OneCycleLR: max_lr has 2 values, the optimizer 1 parameter groups" },
    { function() optim.OneCycleLR(optim.Adagrad({ p }), { max_lr = 1, total_steps = 10 }) end, "cycle_momentum needs an optimizer with momentum" },
    { function() optim.OneCycleLR(sgd(), { max_lr = 1, total_steps = 10, cycle_momentum = false, max_momentum = 0.9 }) end, "need cycle_momentum = true" },
    { function() optim.OneCycleLR(sgd(), { max_lr = 1, total_steps = 10, div_factor = 0 }) end, "div_factor must be a finite number > 0" },
    { function() optim.SequentialLR(sgd(), { schedulers = {}, milestones = {} }) end, "SequentialLR: schedulers must be a non%-empty list" },
    { function() local o = sgd(); optim.SequentialLR(o, { schedulers = { optim.ExponentialLR(o, { gamma = 0.5 }), optim.ExponentialLR(sgd(), { gamma = 0.5 }) }, milestones = { 2 } }) end,
      "SequentialLR: schedulers%[2%] belongs to another optimizer" },
    { function() local o = sgd(); optim.SequentialLR(o, { schedulers = { optim.ReduceLROnPlateau(o), optim.ExponentialLR(o, { gamma = 0.5 }) }, milestones = { 2 } }) end,
      "SequentialLR: schedulers%[1%] is not a closed%-form scheduler" },
    { function() local o = sgd(); local e = optim.ExponentialLR(o, { gamma = 0.5 }); optim.SequentialLR(o, { schedulers = { e, e, e }, milestones = { 3, 3 } }) end,
      "SequentialLR: milestones%[2%] must be an integer >= 4, got 3" },
    { function() local o = sgd(); optim.SequentialLR(o, { schedulers = { optim.ExponentialLR(o, { gamma = 0.5 }) }, milestones = { 1 } }) end,
      "SequentialLR: expected 0 milestones" },
    { function() optim.ReduceLROnPlateau(sgd(), { mode = "mean" }) end, "ReduceLROnPlateau: mode must be one of 'min', 'max', got 'mean'" },
    { function() optim.ReduceLROnPlateau(sgd(), { factor = 0 / 0 }) end, "ReduceLROnPlateau: factor must be a finite number in %[0, 1%), got nan" },
    { function() optim.ReduceLROnPlateau(sgd(), { patience = -1 }) end, "patience must be an integer >= 0" },
    { function() optim.ReduceLROnPlateau(sgd(), { min_lr = { 1, 2 } }) end, "min_lr has 2 values, the optimizer 1 parameter groups" },
    { function() optim.ReduceLROnPlateau(sgd(), { verbose = true }) end, "ReduceLROnPlateau: unknown option 'verbose'" },
    { function() optim.ReduceLROnPlateau(sgd()):step() end, "ReduceLROnPlateau:step: expected the metric" },
    { function() optim.ReduceLROnPlateau(sgd()):step(nnr.ones(2)) end, "the metric has shape %[2%], expected one number" },
  }
  it("name the optimizer or scheduler, the option and the value", function()
    for i, c in ipairs(cases) do
      local msg = H.errmsg(c[1])
      assert(msg and msg:match(c[2]), string.format("case %d: expected /%s/, got %s", i, c[2], tostring(msg)))
    end
  end)
end)
