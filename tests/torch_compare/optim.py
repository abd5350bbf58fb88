"""nnrun against PyTorch: optimizers, learning-rate schedules and weight averaging (issue 16, item 3).

Optimizers: the same starting parameters and the same fixed quadratic loss for K steps give the same
parameters (Adagrad, LBFGS with and without strong_wolfe; Lion against its update written out here,
as torch 1.13 has none). Schedulers: the learning rates (and OneCycleLR's momenta) over 30+ steps.
AveragedModel: the averaged parameters after several updates (SWA and EMA), and update_bn."""
import harness

s = harness.Suite("optim")

# the loss: sum(((M p - T) * W)^2) with M [5, 4], p [4, 3]: a quadratic with a full Hessian
LOSS_LUA = "local function loss(p) return ((x2:matmul(p) - x3) ^ 2 * x4):sum() end\n"
LOSS_PY = "def loss(p): return ((x2.matmul(p) - x3) ** 2 * x4).sum()\n"


def problem(layout="contiguous"):
    return [s.tensor([4, 3], layout=layout), s.tensor([5, 4]), s.tensor([5, 3]), s.tensor([5, 3], low=0.5, high=1.5)]


def steps_case(name, lua_make, py_make, k, layout="contiguous", **kw):
    lua = LOSS_LUA + ("local p = x1:detach():clone():requires_grad_(true)\n"
                      "local opt = %s\n"
                      "for _ = 1, %d do opt:zero_grad(); loss(p):backward(); opt:step() end\n"
                      "return p" % (lua_make, k))
    py = LOSS_PY + ("p = x1.detach().clone().requires_grad_(True)\n"
                    "opt = %s\n"
                    "for _ in range(%d):\n    opt.zero_grad(); loss(p).backward(); opt.step()\n"
                    "return p" % (py_make, k))
    s.case(name, problem(layout), lua=lua, py=py, **kw)


# Adagrad ------------------------------------------------------------------------------------------
steps_case("Adagrad, defaults, 25 steps", "nnr.optim.Adagrad({ p })", "torch.optim.Adagrad([p])", 25)
steps_case("Adagrad, every option, transposed parameter, 25 steps",
           "nnr.optim.Adagrad({ p }, { lr = 0.3, lr_decay = 0.05, weight_decay = 0.1, initial_accumulator_value = 0.2, eps = 1e-6 })",
           "torch.optim.Adagrad([p], lr=0.3, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2, eps=1e-6)",
           25, layout="transposed")

# float32 parameters: the same rule in single precision
s.case("Adagrad, f32 parameter, 15 steps", [s.tensor([4, 3], dtype="f32"), s.tensor([5, 4], dtype="f32"), s.tensor([5, 3], dtype="f32"),
                                             s.tensor([5, 3], dtype="f32", low=0.5, high=1.5)],
       lua=LOSS_LUA + "local p = x1:detach():clone():requires_grad_(true)\n"
           "local opt = nnr.optim.Adagrad({ p }, { lr = 0.1, weight_decay = 0.01 })\n"
           "for _ = 1, 15 do opt:zero_grad(); loss(p):backward(); opt:step() end\nreturn p",
       py=LOSS_PY + "p = x1.detach().clone().requires_grad_(True)\n"
          "opt = torch.optim.Adagrad([p], lr=0.1, weight_decay=0.01)\n"
          "for _ in range(15):\n    opt.zero_grad(); loss(p).backward(); opt.step()\nreturn p", atol=1e-5, rtol=1e-4)

# LBFGS --------------------------------------------------------------------------------------------
for ls_lua, ls_py, label in (("nil", "None", "fixed step"), ('"strong_wolfe"', '"strong_wolfe"', "strong_wolfe")):
    for lr, max_iter, hist, k in ((0.1, 5, 100, 4), (1, 20, 3, 3)):
        lua = LOSS_LUA + ("local p = x1:detach():clone():requires_grad_(true)\n"
                          "local opt = nnr.optim.LBFGS({ p }, { lr = %r, max_iter = %d, history_size = %d, line_search_fn = %s })\n"
                          "local losses = {}\n"
                          "for i = 1, %d do losses[i] = opt:step(function() opt:zero_grad(); local l = loss(p); l:backward(); return l end):item() end\n"
                          "local st = opt.state[p]\n"
                          "return p, nnr.tensor(losses, { dtype = 'f64' }), st.func_evals, st.n_iter" % (lr, max_iter, hist, ls_lua, k))
        py = LOSS_PY + ("p = x1.detach().clone().requires_grad_(True)\n"
                        "opt = torch.optim.LBFGS([p], lr=%r, max_iter=%d, history_size=%d, line_search_fn=%s)\n"
                        "def closure():\n    opt.zero_grad(); l = loss(p); l.backward(); return l\n"
                        "losses = [float(opt.step(closure)) for _ in range(%d)]\n"
                        "st = opt.state[p]\n"
                        "return p, torch.tensor(losses, dtype=torch.float64), st['func_evals'], st['n_iter']" % (lr, max_iter, hist, ls_py, k))
        s.case("LBFGS, %s, lr %r, max_iter %d, history %d, %d steps" % (label, lr, max_iter, hist, k), problem(), lua=lua, py=py,
               atol=1e-8, rtol=1e-7)

# two parameters (the flat vectors concatenate them in order); contiguous, as torch's LBFGS takes
# p.grad.view(-1), which fails on the gradient of a transposed parameter (nnrun's reshapes)
s.case("LBFGS, strong_wolfe, two parameters", problem() + [s.tensor([5, 3])],
       lua=LOSS_LUA + "local p = x1:detach():clone():requires_grad_(true)\n"
       "local q = x5:detach():clone():requires_grad_(true)\n"
       "local opt = nnr.optim.LBFGS({ p, q }, { max_iter = 6, history_size = 4, line_search_fn = 'strong_wolfe' })\n"
       "local function closure() opt:zero_grad(); local l = loss(p) + ((q - x2:matmul(p)) ^ 2):sum(); l:backward(); return l end\n"
       "for _ = 1, 3 do opt:step(closure) end\n"
       "return p, q, opt.state[p].func_evals",
       py=LOSS_PY + "p = x1.detach().clone().requires_grad_(True)\n"
       "q = x5.detach().clone().requires_grad_(True)\n"
       "opt = torch.optim.LBFGS([p, q], max_iter=6, history_size=4, line_search_fn='strong_wolfe')\n"
       "def closure():\n    opt.zero_grad(); l = loss(p) + ((q - x2.matmul(p)) ** 2).sum(); l.backward(); return l\n"
       "for _ in range(3): opt.step(closure)\n"
       "return p, q, opt.state[p]['func_evals']", atol=1e-8, rtol=1e-7)

# a non-quadratic (Rosenbrock) from a start where the line search brackets and zooms
ROSEN_LUA = "local function f(p) local x, y = p[{ { 1, 1 } }], p[{ { 2, 2 } }]; return (((1 - x) ^ 2) + ((y - x * x) ^ 2) * 100):sum() end\n"
ROSEN_PY = "def f(p): return ((1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2)\n"
s.case("LBFGS, strong_wolfe, Rosenbrock, 3 steps of max_iter 10", [s.tensor([2], values=[-1.2, 1.0])],
       lua=ROSEN_LUA + "local p = x1:detach():clone():requires_grad_(true)\n"
       "local opt = nnr.optim.LBFGS({ p }, { max_iter = 10, line_search_fn = 'strong_wolfe' })\n"
       "for _ = 1, 3 do opt:step(function() opt:zero_grad(); local l = f(p); l:backward(); return l end) end\n"
       "return p, opt.state[p].func_evals",
       py=ROSEN_PY + "p = x1.detach().clone().requires_grad_(True)\n"
       "opt = torch.optim.LBFGS([p], max_iter=10, line_search_fn='strong_wolfe')\n"
       "def closure():\n    opt.zero_grad(); l = f(p); l.backward(); return l\n"
       "for _ in range(3): opt.step(closure)\n"
       "return p, opt.state[p]['func_evals']", atol=1e-8, rtol=1e-7)

# Lion: torch 1.13 has none; the update of lucidrains/lion-pytorch written out
LION_PY = LOSS_PY + """p = x1.detach().clone()
m = torch.zeros_like(p)
lr, wd, b1, b2 = %r, %r, %r, %r
for _ in range(%d):
    q = p.clone().requires_grad_(True)
    g, = torch.autograd.grad(loss(q), q)
    p.mul_(1 - lr * wd)
    p.add_((m * b1 + g * (1 - b1)).sign(), alpha=-lr)
    m.mul_(b2).add_(g, alpha=1 - b2)
return p, m"""
for lr, wd, b1, b2, k, layout in ((1e-4, 0, 0.9, 0.99, 20, "contiguous"), (0.05, 0.3, 0.8, 0.95, 30, "transposed")):
    lua = LOSS_LUA + ("local p = x1:detach():clone():requires_grad_(true)\n"
                      "local opt = nnr.optim.Lion({ p }, { lr = %r, weight_decay = %r, betas = { %r, %r } })\n"
                      "for _ = 1, %d do opt:zero_grad(); loss(p):backward(); opt:step() end\n"
                      "return p, opt.state[p].exp_avg" % (lr, wd, b1, b2, k))
    s.case("Lion, lr %r, weight_decay %r, betas (%r, %r), %s, %d steps" % (lr, wd, b1, b2, layout, k), problem(layout),
           lua=lua, py=LION_PY % (lr, wd, b1, b2, k))

# schedulers: the lr (and momentum) of each group before every one of N steps -----------------------
def sched_case(name, opt_lua, opt_py, make_lua, make_py, n=35, extra_lua="", extra_py="", momentum=None):
    """momentum: None, "momentum" or "beta1": also compare group 1's momentum sequence"""
    mom_lua = {"momentum": "opt.param_groups[1].momentum", "beta1": "opt.param_groups[1].betas[1]"}.get(momentum, "0")
    mom_py = {"momentum": "opt.param_groups[0]['momentum']", "beta1": "opt.param_groups[0]['betas'][0]"}.get(momentum, "0")
    lua = ("local a = nnr.zeros(3, { dtype = 'f64', requires_grad = true })\n"
           "local b = nnr.zeros(2, { dtype = 'f64', requires_grad = true })\n"
           "local opt = %s\n%s\nlocal s = %s\n"
           "local l1, l2, m = {}, {}, {}\n"
           "for i = 1, %d do\n"
           "  local lr = s:get_last_lr(); l1[i], l2[i], m[i] = lr[1], lr[2], %s\n"
           "  opt:step(); s:step()\n"
           "end\n"
           "return nnr.tensor(l1, { dtype = 'f64' }), nnr.tensor(l2, { dtype = 'f64' }), nnr.tensor(m, { dtype = 'f64' })"
           % (opt_lua, extra_lua, make_lua, n, mom_lua))
    py = ("import warnings\nwarnings.simplefilter('ignore')\n"
          "a = torch.zeros(3, dtype=torch.float64, requires_grad=True)\n"
          "b = torch.zeros(2, dtype=torch.float64, requires_grad=True)\n"
          "opt = %s\n%s\ns = %s\n"
          "l1, l2, m = [], [], []\n"
          "for i in range(%d):\n"
          "    lr = s.get_last_lr(); l1.append(lr[0]); l2.append(lr[1]); m.append(%s)\n"
          "    opt.step(); s.step()\n"
          "return torch.tensor(l1, dtype=torch.float64), torch.tensor(l2, dtype=torch.float64), torch.tensor(m, dtype=torch.float64)"
          % (opt_py, extra_py, make_py, n, mom_py))
    s.case(name, [], lua=lua, py=py, atol=1e-12, rtol=1e-10)


SGD_LUA = "nnr.optim.SGD({ { params = { a } }, { params = { b }, lr = 0.02 } }, { lr = 0.1, momentum = 0.9 })"
SGD_PY = "torch.optim.SGD([{'params': [a]}, {'params': [b], 'lr': 0.02}], lr=0.1, momentum=0.9)"
ADAM_LUA = "nnr.optim.Adam({ { params = { a } }, { params = { b }, lr = 0.02 } }, { lr = 0.1 })"
ADAM_PY = "torch.optim.Adam([{'params': [a]}, {'params': [b], 'lr': 0.02}], lr=0.1)"

sched_case("ExponentialLR gamma 0.9", SGD_LUA, SGD_PY, "nnr.optim.ExponentialLR(opt, { gamma = 0.9 })",
           "torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)")
sched_case("MultiStepLR {3, 10, 10, 25}, gamma 0.5", SGD_LUA, SGD_PY, "nnr.optim.MultiStepLR(opt, { milestones = { 10, 3, 25, 10 }, gamma = 0.5 })",
           "torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 3, 25, 10], gamma=0.5)")
sched_case("MultiStepLR default gamma, milestone 0", SGD_LUA, SGD_PY, "nnr.optim.MultiStepLR(opt, { milestones = { 0, 7 } })",
           "torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[0, 7])")
sched_case("CosineAnnealingLR past T_max (periodic)", SGD_LUA, SGD_PY, "nnr.optim.CosineAnnealingLR(opt, { T_max = 12, eta_min = 0.001 })",
           "torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.001)")
sched_case("StepLR", SGD_LUA, SGD_PY, "nnr.optim.StepLR(opt, { step_size = 4, gamma = 0.7 })",
           "torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.7)")
sched_case("LinearLR", SGD_LUA, SGD_PY, "nnr.optim.LinearLR(opt, { start_factor = 0.1, end_factor = 0.9, total_iters = 8 })",
           "torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=0.9, total_iters=8)")
sched_case("SequentialLR: LinearLR warm-up then CosineAnnealingLR", SGD_LUA, SGD_PY,
           "nnr.optim.SequentialLR(opt, { schedulers = { w, c }, milestones = { 5 } })",
           "torch.optim.lr_scheduler.SequentialLR(opt, schedulers=[w, c], milestones=[5])", n=40,
           extra_lua="local w = nnr.optim.LinearLR(opt, { start_factor = 0.01, total_iters = 5 })\n"
                     "local c = nnr.optim.CosineAnnealingLR(opt, { T_max = 25, eta_min = 1e-4 })",
           extra_py="w = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=5)\n"
                    "c = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=25, eta_min=1e-4)")
sched_case("SequentialLR: three schedulers (ExponentialLR, StepLR, MultiStepLR)", SGD_LUA, SGD_PY,
           "nnr.optim.SequentialLR(opt, { schedulers = { e, st, ms }, milestones = { 6, 17 } })",
           "torch.optim.lr_scheduler.SequentialLR(opt, schedulers=[e, st, ms], milestones=[6, 17])", n=36,
           extra_lua="local e = nnr.optim.ExponentialLR(opt, { gamma = 0.8 })\n"
                     "local st = nnr.optim.StepLR(opt, { step_size = 3, gamma = 0.5 })\n"
                     "local ms = nnr.optim.MultiStepLR(opt, { milestones = { 2, 9 }, gamma = 0.3 })",
           extra_py="e = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)\n"
                    "st = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)\n"
                    "ms = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 9], gamma=0.3)")
# two schedulers stepped together on one optimizer compose (PyTorch's chainable forms)
sched_case("LinearLR and ExponentialLR both stepped (chained)", SGD_LUA, SGD_PY, "nnr.optim.ExponentialLR(opt, { gamma = 0.95 })",
           "torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)", n=1,
           extra_lua="local w = nnr.optim.LinearLR(opt, { start_factor = 0.2, total_iters = 6 })\n"
                     "local e = nnr.optim.ExponentialLR(opt, { gamma = 0.9 })\n"
                     "local c = nnr.optim.CosineAnnealingLR(opt, { T_max = 7 })\n"
                     "local seq = {}\n"
                     "for i = 1, 32 do seq[#seq + 1] = opt.param_groups[1].lr; seq[#seq + 1] = opt.param_groups[2].lr; opt:step(); w:step(); e:step(); c:step() end\n"
                     "do return nnr.tensor(seq, { dtype = 'f64' }) end",
           extra_py="w = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=6)\n"
                    "e = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)\n"
                    "c = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)\n"
                    "seq = []\n"
                    "for i in range(32):\n"
                    "    seq += [opt.param_groups[0]['lr'], opt.param_groups[1]['lr']]; opt.step(); w.step(); e.step(); c.step()\n"
                    "return torch.tensor(seq, dtype=torch.float64)")
for strat in ("cos", "linear"):
    for three in (False, True):
        tl, tp = ("true", "True") if three else ("false", "False")
        sched_case("OneCycleLR %s, three_phase %s, SGD momentum" % (strat, three), SGD_LUA, SGD_PY,
                   "nnr.optim.OneCycleLR(opt, { max_lr = { 1, 0.3 }, total_steps = 40, anneal_strategy = '%s', three_phase = %s })" % (strat, tl),
                   "torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[1, 0.3], total_steps=40, anneal_strategy='%s', three_phase=%s)" % (strat, tp),
                   n=40, momentum="momentum")
sched_case("OneCycleLR epochs x steps_per_epoch, Adam beta1, every option", ADAM_LUA, ADAM_PY,
           "nnr.optim.OneCycleLR(opt, { max_lr = 0.5, epochs = 4, steps_per_epoch = 9, pct_start = 0.25, div_factor = 10, "
           "final_div_factor = 100, base_momentum = 0.8, max_momentum = 0.9 })",
           "torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, epochs=4, steps_per_epoch=9, pct_start=0.25, div_factor=10, "
           "final_div_factor=100, base_momentum=0.8, max_momentum=0.9)", n=36, momentum="beta1")
sched_case("OneCycleLR without cycle_momentum", SGD_LUA, SGD_PY,
           "nnr.optim.OneCycleLR(opt, { max_lr = 0.4, total_steps = 31, cycle_momentum = false })",
           "torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=31, cycle_momentum=False)", n=31, momentum="momentum")
for strat, epochs in (("cos", 5), ("linear", 0), ("linear", 3)):
    sched_case("SWALR %s over %d epochs after CosineAnnealingLR" % (strat, epochs), SGD_LUA, SGD_PY, "nil", "None", n=1,
               extra_lua="local cos = nnr.optim.CosineAnnealingLR(opt, { T_max = 30 })\n"
                         "local swa = nnr.optim.swa_utils.SWALR(opt, { swa_lr = { 0.05, 0.01 }, anneal_epochs = %d, anneal_strategy = '%s' })\n"
                         "local seq = {}\n"
                         "for i = 1, 32 do seq[#seq + 1] = opt.param_groups[1].lr; seq[#seq + 1] = opt.param_groups[2].lr; opt:step()\n"
                         "  if i > 12 then swa:step() else cos:step() end end\n"
                         "do return nnr.tensor(seq, { dtype = 'f64' }) end" % (epochs, strat),
               extra_py="from torch.optim.swa_utils import SWALR\n"
                        "cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)\n"
                        "swa = SWALR(opt, swa_lr=[0.05, 0.01], anneal_epochs=%d, anneal_strategy='%s')\n"
                        "seq = []\n"
                        "for i in range(1, 33):\n"
                        "    seq += [opt.param_groups[0]['lr'], opt.param_groups[1]['lr']]; opt.step()\n"
                        "    (swa if i > 12 else cos).step()\n"
                        "return torch.tensor(seq, dtype=torch.float64)" % (epochs, strat))

# ReduceLROnPlateau over a noisy falling metric (the same values on both sides)
for mode, tmode, extra_l, extra_p in (("min", "rel", "", ""), ("max", "abs", ", threshold = 0.05, cooldown = 2, min_lr = { 0.01, 0.005 }",
                                                                     ", threshold=0.05, cooldown=2, min_lr=[0.01, 0.005]")):
    sign = "-" if mode == "max" else ""
    s.case("ReduceLROnPlateau %s %s" % (mode, tmode), [s.tensor([40], low=0, high=1)],
           lua="local opt = %s\n"
               "local s = nnr.optim.ReduceLROnPlateau(opt, { mode = '%s', threshold_mode = '%s', patience = 2, factor = 0.5%s })\n"
               "local l1, l2 = {}, {}\n"
               "for i = 1, 40 do s:step(%s(x1[i] + 3 / i)); local lr = s:get_last_lr(); l1[i], l2[i] = lr[1], lr[2] end\n"
               "return nnr.tensor(l1, { dtype = 'f64' }), nnr.tensor(l2, { dtype = 'f64' }), s.best, s.num_bad_epochs"
               % (SGD_LUA.replace("{ a }", "{ nnr.zeros(1, { requires_grad = true }) }").replace("{ b }", "{ nnr.zeros(1, { requires_grad = true }) }"),
                  mode, tmode, extra_l, sign),
           py="opt = %s\n"
              "s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode='%s', threshold_mode='%s', patience=2, factor=0.5%s)\n"
              "l1, l2 = [], []\n"
              "for i in range(1, 41):\n"
              "    s.step(%s(x1[i - 1].item() + 3 / i)); lr = s._last_lr; l1.append(lr[0]); l2.append(lr[1])\n"
              "return torch.tensor(l1, dtype=torch.float64), torch.tensor(l2, dtype=torch.float64), s.best, s.num_bad_epochs"
              % (SGD_PY.replace("[a]", "[torch.zeros(1, requires_grad=True)]").replace("[b]", "[torch.zeros(1, requires_grad=True)]"),
                 mode, tmode, extra_p, sign),
           atol=1e-12, rtol=1e-10)

# AveragedModel ------------------------------------------------------------------------------------
# a Linear and a BatchNorm1d given the same weights, moved through 5 "training steps" (p = p + d_k)
AVG_LUA = """local model = nn.Sequential(nn.Linear(4, 3, { dtype = 'f64' }), nn.BatchNorm1d(3, { dtype = 'f64' }))
local lin, bn = model:get(1), model:get(2)
nnr.no_grad(function() lin.weight:copy_(x1); lin.bias:copy_(x2) end)
local avg = nnr.optim.swa_utils.AveragedModel(model%s)
for k = 1, 5 do
  nnr.no_grad(function() lin.weight:add_(x3[k]); lin.bias:sub_(x3[k]:sum(2)):mul_(1.1); bn.weight:mul_(0.9) end)
  model(x4)                                -- moves the BatchNorm statistics
  avg:update_parameters(model)
end
local m = avg.module
return m:get(1).weight, m:get(1).bias, m:get(2).weight, m:get(2).running_mean, m:get(2).running_var, avg.n_averaged"""
AVG_PY = """from torch.optim.swa_utils import AveragedModel
model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
with torch.no_grad(): model[0].weight.copy_(x1); model[0].bias.copy_(x2)
avg = AveragedModel(model%s)
for k in range(5):
    with torch.no_grad(): model[0].weight.add_(x3[k]); model[0].bias.sub_(x3[k].sum(1)).mul_(1.1); model[1].weight.mul_(0.9)
    model(x4)
    avg.update_parameters(model)
m = avg.module
%sreturn m[0].weight, m[0].bias, m[1].weight, m[1].running_mean, m[1].running_var, avg.n_averaged"""
avg_inputs = lambda: [s.tensor([3, 4]), s.tensor([3]), s.tensor([5, 3, 4]), s.tensor([6, 4])]
# torch 1.13 leaves the buffers of the copy alone without use_buffers; PyTorch 2 (and nnrun) copy the model's
SYNC_BUFFERS = "for b_swa, b_model in zip(m.buffers(), model.buffers()): b_swa.detach().copy_(b_model.detach())\n"
s.case("AveragedModel: SWA (equal weights), buffers follow the model", avg_inputs(), lua=AVG_LUA % "", py=AVG_PY % ("", SYNC_BUFFERS))
s.case("AveragedModel: EMA 0.75 (ema_decay), use_buffers", avg_inputs(), lua=AVG_LUA % ", { ema_decay = 0.75, use_buffers = true }",
       py=AVG_PY % (", avg_fn=lambda a, p, n: a + (p - a) * (1 - 0.75), use_buffers=True", ""))
s.case("AveragedModel: multi_avg_fn = get_ema_multi_avg_fn(0.5)", avg_inputs(),
       lua=AVG_LUA % ", { multi_avg_fn = nnr.optim.swa_utils.get_ema_multi_avg_fn(0.5) }",
       py=AVG_PY % (", avg_fn=lambda a, p, n: 0.5 * a + 0.5 * p", SYNC_BUFFERS))
s.case("AveragedModel: avg_fn given, use_buffers", avg_inputs(),
       lua=AVG_LUA % ", { avg_fn = function(a, p, n) return a * 0.3 + p * 0.7 + n * 0.01 end, use_buffers = true }",
       py=AVG_PY % (", avg_fn=lambda a, p, n: a * 0.3 + p * 0.7 + n.item() * 0.01, use_buffers=True", ""))
s.case("AveragedModel: forward is the averaged copy's; state_dict keys", avg_inputs(),
       lua=(AVG_LUA % "").split("local m = avg.module")[0] + "avg:eval()\nlocal sd = avg:state_dict()\n"
           "return avg(x4), sd['module.1.weight'], sd['n_averaged']",
       py=(AVG_PY % ("", "")).split("m = avg.module")[0] + "avg.eval()\nsd = avg.state_dict()\n" + SYNC_BUFFERS.replace("m.buffers", "avg.module.buffers") +
          "return avg(x4), sd['module.0.weight'], sd['n_averaged']")
s.case("update_bn: cumulative BatchNorm statistics over a list of batches", [s.tensor([4, 6, 3]), s.tensor([3, 3])],
       lua="local model = nn.Sequential(nn.Linear(3, 3, { dtype = 'f64' }), nn.BatchNorm1d(3, { dtype = 'f64', momentum = 0.3 }))\n"
           "nnr.no_grad(function() model:get(1).weight:copy_(x2); model:get(1).bias:fill_(0.25) end)\n"
           "model:eval()\n"
           "nnr.optim.swa_utils.update_bn({ { x1[1] }, { x1[2], 0 }, x1[3], { x1[4] } }, model)\n"
           "local bn = model:get(2)\n"
           "return bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.momentum, model.training",
       py="from torch.optim.swa_utils import update_bn\n"
          "model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, momentum=0.3)).double()\n"
          "with torch.no_grad(): model[0].weight.copy_(x2); model[0].bias.fill_(0.25)\n"
          "model.eval()\n"
          "update_bn([[x1[0]], [x1[1], 0], x1[2], [x1[3]]], model)\n"
          "return model[1].running_mean, model[1].running_var, model[1].num_batches_tracked, model[1].momentum, model.training")

# clip_grad_value ----------------------------------------------------------------------------------
s.case("clip_grad_value", [s.tensor([3, 4], layout="transposed", low=-3, high=3), s.tensor([5], low=-3, high=3)],
       lua="local a, b = x1:detach():clone():requires_grad_(true), x2:detach():clone():requires_grad_(true)\n"
           "local c = nnr.zeros(2, { dtype = 'f64', requires_grad = true })\n"
           ";((a * a):sum() + (b * 3):sum()):backward()\n"
           "nn.utils.clip_grad_value({ a, b, c }, 1.5)\n"
           "return a.grad, b.grad",
       py="a, b = x1.detach().clone().requires_grad_(True), x2.detach().clone().requires_grad_(True)\n"
          "c = torch.zeros(2, dtype=torch.float64, requires_grad=True)\n"
          "((a * a).sum() + (b * 3).sum()).backward()\n"
          "torch.nn.utils.clip_grad_value_([a, b, c], 1.5)\n"
          "return a.grad, b.grad")

# errors both sides refuse -------------------------------------------------------------------------
P1 = [s.tensor([3])]
s.raises("Adagrad: negative lr_decay", P1, lua="return nnr.optim.Adagrad({ x1:clone():requires_grad_(true) }, { lr_decay = -1 })",
         py="return torch.optim.Adagrad([x1.clone().requires_grad_(True)], lr_decay=-1)")
s.raises("LBFGS: two parameter groups", P1,
         lua="return nnr.optim.LBFGS({ { params = { x1:clone():requires_grad_(true) } }, { params = { x1:clone():requires_grad_(true) } } })",
         py="return torch.optim.LBFGS([{'params': [x1.clone().requires_grad_(True)]}, {'params': [x1.clone().requires_grad_(True)]}])")
s.raises("OneCycleLR: stepped past total_steps", P1,
         lua="local opt = nnr.optim.SGD({ x1:clone():requires_grad_(true) }, { lr = 0.1 })\n"
             "local s = nnr.optim.OneCycleLR(opt, { max_lr = 1, total_steps = 5 })\nfor _ = 1, 6 do s:step() end",
         py="import warnings\nwarnings.simplefilter('ignore')\nopt = torch.optim.SGD([x1.clone().requires_grad_(True)], lr=0.1)\n"
            "s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1, total_steps=5)\nfor _ in range(6): s.step()")
s.raises("SequentialLR: milestones and schedulers disagree", P1,
         lua="local opt = nnr.optim.SGD({ x1:clone():requires_grad_(true) }, { lr = 0.1 })\n"
             "return nnr.optim.SequentialLR(opt, { schedulers = { nnr.optim.ExponentialLR(opt, { gamma = 0.9 }) }, milestones = { 3 } })",
         py="opt = torch.optim.SGD([x1.clone().requires_grad_(True)], lr=0.1)\n"
            "return torch.optim.lr_scheduler.SequentialLR(opt, schedulers=[torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)], milestones=[3])")
s.raises("ReduceLROnPlateau: factor 1", P1,
         lua="return nnr.optim.ReduceLROnPlateau(nnr.optim.SGD({ x1:clone():requires_grad_(true) }, { lr = 0.1 }), { factor = 1 })",
         py="return torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([x1.clone().requires_grad_(True)], lr=0.1), factor=1)")
s.run()
