-- optim.LBFGS(params, {lr = 1, max_iter = 20, max_eval = max_iter * 5 // 4, tolerance_grad = 1e-7,
--                      tolerance_change = 1e-9, history_size = 100, line_search_fn = nil | "strong_wolfe"})
--   opt:step(closure) -> the loss of the closure's first call
--
-- Limited-memory BFGS, PyTorch's algorithm (after minFunc) step for step: one step(closure) runs up
-- to max_iter iterations; each builds the direction d = -H g from the last history_size pairs
-- (s = the step taken, y = the change in gradient) by the two-loop recursion, with H0 = s'y / y'y,
-- and moves by t d: t = lr (min(1, 1 / |g|_1) lr on the very first iteration), or, with
-- line_search_fn = "strong_wolfe", the step a bracketing line search with cubic interpolation finds
-- (sufficient decrease c1 = 1e-4, curvature c2 = 0.9, at most 25 evaluations).
-- An iteration stops the step when the gradient's largest entry is at most tolerance_grad, the
-- loss or the step changes by less than tolerance_change, or max_eval evaluations were spent.
--
-- closure() re-evaluates the model: it zeroes the gradients, computes the loss, calls backward and
-- returns the loss (a tensor or a number); it is called with gradient recording on. One parameter
-- group only (as PyTorch); all parameters of one dtype and device. The state (of the first
-- parameter, as PyTorch keeps it) holds the flat direction d, the step t, the history old_dirs /
-- old_stps / ro, H_diag, prev_flat_grad, prev_loss and the counters func_evals and n_iter; it
-- costs (2 history_size + 2) times the parameters' size. Scalars are Lua numbers (doubles).
local nnr = require "nnr"
local Optimizer = require "nnr.optim.optimizer"
local check = require "nnr.check"
local NAME = "LBFGS"

-- false stands for PyTorch's None (a default of nil would read as an unknown option)
local LBFGS = Optimizer:extend(NAME, { lr = 1, max_iter = 20, max_eval = false, tolerance_grad = 1e-7,
  tolerance_change = 1e-9, history_size = 100, line_search_fn = false })

function LBFGS:__init(params, opts)
  Optimizer.__init(self, params, opts)
  if #self.param_groups ~= 1 then
    error("LBFGS: parameter groups are not supported (one group only, as PyTorch's LBFGS); pass a list of tensors", 0)
  end
  local g = self.param_groups[1]
  if g.max_eval == false or g.max_eval == nil then g.max_eval = math.floor(g.max_iter * 5 / 4) end
  self:check_group(g)
  self._params = g.params
  local first = g.params[1]
  for i, p in ipairs(g.params) do
    if p.dtype ~= first.dtype or p.device ~= first.device then
      error(string.format("LBFGS: parameter %d is %s on %s, parameter 1 %s on %s; all must share one dtype and device",
        i, p.dtype, p.device, first.dtype, first.device), 0)
    end
    if not p:is_floating_point() then error(string.format("LBFGS: parameter %d is %s, expected a floating-point tensor", i, p.dtype), 0) end
  end
end

local NON_NEGATIVE = { min = 0 }
function LBFGS:check_group(g)
  Optimizer.check_group(self, g)
  check.integer(NAME, "max_iter", g.max_iter, 1)
  if g.max_eval ~= false then check.integer(NAME, "max_eval", g.max_eval, 1) end
  check.number(NAME, "tolerance_grad", g.tolerance_grad, NON_NEGATIVE)
  check.number(NAME, "tolerance_change", g.tolerance_change, NON_NEGATIVE)
  check.integer(NAME, "history_size", g.history_size, 1)
  if g.line_search_fn ~= false and g.line_search_fn ~= nil then check.choice(NAME, "line_search_fn", g.line_search_fn, { "strong_wolfe" }) end
end

function LBFGS:_numel()
  if not self._numel_cache then
    local n = 0
    for _, p in ipairs(self._params) do n = n + p:numel() end
    self._numel_cache = n
  end
  return self._numel_cache
end

-- the gradients as one flat vector (zeros for a parameter without one)
function LBFGS:_gather_flat_grad()
  local views = {}
  for i, p in ipairs(self._params) do
    views[i] = p.grad and p.grad:reshape(-1) or nnr.zeros(p:numel(), { dtype = p.dtype, device = p.device })
  end
  return #views == 1 and views[1]:clone() or nnr.cat(views, 1)
end

-- p += step_size * (p's slice of update)
function LBFGS:_add_grad(step_size, update)
  local offset = 0
  nnr.no_grad(function()
    for _, p in ipairs(self._params) do
      local n = p:numel()
      p:add_(update:narrow(1, offset + 1, n):view_as(p) * step_size)
      offset = offset + n
    end
  end)
end

function LBFGS:_clone_param()
  return nnr.no_grad(function()
    local out = {}
    for i, p in ipairs(self._params) do out[i] = p:detach():clone() end
    return out
  end)
end

function LBFGS:_set_param(data)
  nnr.no_grad(function() for i, p in ipairs(self._params) do p:copy_(data[i]) end end)
end

local function loss_value(loss)
  if nnr.is_tensor(loss) then
    if loss:numel() ~= 1 then error("LBFGS: the closure returned a tensor of shape " .. nnr.shape_str(loss:size()) .. ", expected the loss (one element)", 0) end
    return loss:item()
  end
  if type(loss) ~= "number" then error("LBFGS: the closure must return the loss (a tensor or a number), got " .. type(loss), 0) end
  return loss
end

local function evaluate(closure)
  local loss = nnr.enable_grad(closure)
  return loss, loss_value(loss)
end

-- the loss and flat gradient at x + t d; the parameters are back at x afterwards
function LBFGS:_directional_evaluate(closure, x, t, d)
  self:_add_grad(t, d)
  local _, loss = evaluate(closure)
  local flat_grad = self:_gather_flat_grad()
  self:_set_param(x)
  return loss, flat_grad
end

local function dot(a, b) return a:dot(b):item() end
local function absmax(t) return t:abs():max():item() end

-- the minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to bounds
local function cubic_interpolate(x1, f1, g1, x2, f2, g2, lo, hi)
  if lo == nil then lo, hi = math.min(x1, x2), math.max(x1, x2) end
  local d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
  local d2_square = d1 * d1 - g1 * g2
  if d2_square >= 0 then
    local d2 = math.sqrt(d2_square)
    local min_pos
    if x1 <= x2 then
      min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else
      min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    end
    return math.min(math.max(min_pos, lo), hi)
  end
  return (lo + hi) / 2
end

-- PyTorch's _strong_wolfe: returns the loss, flat gradient and step at the point found, and the
-- number of evaluations
local function strong_wolfe(obj_func, x, t, d, f, g, gtd, c1, c2, tolerance_change, max_ls)
  c1, c2, tolerance_change, max_ls = c1 or 1e-4, c2 or 0.9, tolerance_change or 1e-9, max_ls or 25
  local d_norm = absmax(d)
  local f_new, g_new = obj_func(x, t, d)
  local ls_func_evals = 1
  local gtd_new = dot(g_new, d)
  local t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
  local done, ls_iter = false, 0
  local bracket, bracket_f, bracket_g, bracket_gtd
  -- bracketing phase
  while ls_iter < max_ls do
    if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev) then
      bracket, bracket_f, bracket_g, bracket_gtd = { t_prev, t }, { f_prev, f_new }, { g_prev, g_new }, { gtd_prev, gtd_new }
      break
    end
    if math.abs(gtd_new) <= -c2 * gtd then
      bracket, bracket_f, bracket_g = { t }, { f_new }, { g_new }
      done = true
      break
    end
    if gtd_new >= 0 then
      bracket, bracket_f, bracket_g, bracket_gtd = { t_prev, t }, { f_prev, f_new }, { g_prev, g_new }, { gtd_prev, gtd_new }
      break
    end
    -- interpolate
    local min_step, max_step = t + 0.01 * (t - t_prev), t * 10
    local tmp = t
    t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, min_step, max_step)
    t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = ls_func_evals + 1
    gtd_new = dot(g_new, d)
    ls_iter = ls_iter + 1
  end
  -- reached the maximum number of iterations
  if ls_iter == max_ls then
    bracket, bracket_f, bracket_g = { 0, t }, { f, f_new }, { g, g_new }
  end
  -- zoom phase: a point satisfying the criteria lies in the bracket; refine it until found or
  -- the bracket is too small
  local insuf_progress = false
  local low_pos, high_pos = 1, 2
  if not (bracket_f[1] <= bracket_f[#bracket_f]) then low_pos, high_pos = 2, 1 end
  while not done and ls_iter < max_ls do
    if math.abs(bracket[2] - bracket[1]) * d_norm < tolerance_change then break end
    t = cubic_interpolate(bracket[1], bracket_f[1], bracket_gtd[1], bracket[2], bracket_f[2], bracket_gtd[2])
    -- a step too close to either end of the bracket is moved inwards (after no progress, or outside)
    local bmax, bmin = math.max(bracket[1], bracket[2]), math.min(bracket[1], bracket[2])
    local eps = 0.1 * (bmax - bmin)
    if math.min(bmax - t, t - bmin) < eps then
      if insuf_progress or t >= bmax or t <= bmin then
        if math.abs(t - bmax) < math.abs(t - bmin) then t = bmax - eps else t = bmin + eps end
        insuf_progress = false
      else
        insuf_progress = true
      end
    else
      insuf_progress = false
    end
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = ls_func_evals + 1
    gtd_new = dot(g_new, d)
    ls_iter = ls_iter + 1
    if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos] then
      -- Armijo condition not satisfied or not lower than the lowest point
      bracket[high_pos], bracket_f[high_pos], bracket_g[high_pos], bracket_gtd[high_pos] = t, f_new, g_new, gtd_new
      if bracket_f[1] <= bracket_f[2] then low_pos, high_pos = 1, 2 else low_pos, high_pos = 2, 1 end
    else
      if math.abs(gtd_new) <= -c2 * gtd then
        done = true                          -- the Wolfe conditions hold
      elseif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0 then
        -- the old high becomes the new low
        bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
        bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
      end
      -- the new point becomes the new low
      bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos], bracket_gtd[low_pos] = t, f_new, g_new, gtd_new
    end
  end
  return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals
end
LBFGS._strong_wolfe, LBFGS._cubic_interpolate = strong_wolfe, cubic_interpolate

function LBFGS:step(closure)
  if type(closure) ~= "function" and not (type(closure) == "table" and getmetatable(closure) and getmetatable(closure).__call) then
    error("LBFGS:step: expected a closure (a function that zeroes the gradients, computes the loss, calls backward and returns the loss), got " .. type(closure), 0)
  end
  local group = self.param_groups[1]
  self:check_group(group)
  local lr, max_iter, max_eval = group.lr, group.max_iter, group.max_eval
  local tolerance_grad, tolerance_change = group.tolerance_grad, group.tolerance_change
  local line_search_fn, history_size = group.line_search_fn, group.history_size
  if line_search_fn == false then line_search_fn = nil end

  local state = self.state[self._params[1]]
  if not state then state = {}; self.state[self._params[1]] = state end
  state.func_evals = state.func_evals or 0
  state.n_iter = state.n_iter or 0

  -- evaluate the initial loss and gradient
  local orig_loss, loss = evaluate(closure)
  local current_evals = 1
  state.func_evals = state.func_evals + 1
  local flat_grad = self:_gather_flat_grad()
  local opt_cond = absmax(flat_grad) <= tolerance_grad
  -- optimal condition
  if opt_cond then return orig_loss end

  local d, t = state.d, state.t
  local old_dirs, old_stps, ro, H_diag = state.old_dirs, state.old_stps, state.ro, state.H_diag
  local prev_flat_grad, prev_loss = state.prev_flat_grad, state.prev_loss
  local al = {}

  local n_iter = 0
  while n_iter < max_iter do
    n_iter = n_iter + 1
    state.n_iter = state.n_iter + 1

    -- the descent direction
    if state.n_iter == 1 then
      d = -flat_grad
      old_dirs, old_stps, ro, H_diag = {}, {}, {}, 1
    else
      -- update the memory
      local y = flat_grad - prev_flat_grad
      local s = d * t
      local ys = dot(y, s)
      if ys > 1e-10 then
        if #old_dirs == history_size then   -- shift the history by one (limited memory)
          table.remove(old_dirs, 1); table.remove(old_stps, 1); table.remove(ro, 1)
        end
        old_dirs[#old_dirs + 1], old_stps[#old_stps + 1], ro[#ro + 1] = y, s, 1 / ys
        H_diag = ys / dot(y, y)              -- the initial Hessian approximation
      end
      -- the two-loop recursion: d = -H g
      local num_old = #old_dirs
      local q = -flat_grad
      for i = num_old, 1, -1 do
        al[i] = dot(old_stps[i], q) * ro[i]
        q:sub_(old_dirs[i] * al[i])
      end
      local r = q:mul_(H_diag)
      d = r
      for i = 1, num_old do
        local be_i = dot(old_dirs[i], r) * ro[i]
        r:add_(old_stps[i] * (al[i] - be_i))
      end
    end

    if prev_flat_grad == nil then prev_flat_grad = flat_grad:clone() else prev_flat_grad:copy_(flat_grad) end
    prev_loss = loss

    -- the step length
    if state.n_iter == 1 then
      t = math.min(1, 1 / flat_grad:abs():sum():item()) * lr
    else
      t = lr
    end

    -- the directional derivative; below -tolerance_change or the step stops
    local gtd = dot(flat_grad, d)
    if gtd > -tolerance_change then break end

    local ls_func_evals = 0
    if line_search_fn then
      local x_init = self:_clone_param()
      local function obj_func(x, step, dir) return self:_directional_evaluate(closure, x, step, dir) end
      loss, flat_grad, t, ls_func_evals = strong_wolfe(obj_func, x_init, t, d, loss, flat_grad, gtd)
      self:_add_grad(t, d)
      opt_cond = absmax(flat_grad) <= tolerance_grad
    else
      -- a fixed step
      self:_add_grad(t, d)
      if n_iter ~= max_iter then
        -- re-evaluate unless this is the last iteration (the step's caller evaluates anyway)
        local _
        _, loss = evaluate(closure)
        flat_grad = self:_gather_flat_grad()
        opt_cond = absmax(flat_grad) <= tolerance_grad
        ls_func_evals = 1
      end
    end
    -- count the evaluations
    current_evals = current_evals + ls_func_evals
    state.func_evals = state.func_evals + ls_func_evals

    -- the stopping conditions
    if n_iter == max_iter then break end
    if current_evals >= max_eval then break end
    if opt_cond then break end
    -- lack of progress
    if absmax(d) * math.abs(t) <= tolerance_change then break end
    if math.abs(loss - prev_loss) < tolerance_change then break end
  end

  state.d, state.t = d, t
  state.old_dirs, state.old_stps, state.ro, state.H_diag = old_dirs, old_stps, ro, H_diag
  state.prev_flat_grad, state.prev_loss = prev_flat_grad, prev_loss
  return orig_loss
end

-- the lists of the history are copied, so that a saved state does not change with the next step
function LBFGS:state_dict()
  local sd = Optimizer.state_dict(self)
  local s = sd.state[1]
  if s then
    for _, k in ipairs { "old_dirs", "old_stps", "ro" } do
      if s[k] then
        local copy = {}
        for i, v in ipairs(s[k]) do copy[i] = v end
        s[k] = copy
      end
    end
  end
  return sd
end

-- the state is checked whole before any of it is used: flat vectors of the parameters' total size,
-- a history of at most history_size pairs with one ro each, finite scalars
function LBFGS:load_state_dict(sd)
  local who = NAME .. ":load_state_dict"
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" or type(sd.state) ~= "table" then
    error(who .. ": expected the table state_dict() returns ({state = ..., param_groups = ...})", 0)
  end
  if #sd.param_groups ~= 1 or type(sd.param_groups[1]) ~= "table" then
    error(string.format("%s: %d parameter groups in the state, LBFGS has one", who, #sd.param_groups), 0)
  end
  local src, group = sd.param_groups[1], self.param_groups[1]
  if type(src.params) ~= "table" or #src.params ~= #group.params then
    error(string.format("%s: %s parameters in the state, %d in the optimizer", who,
      type(src.params) == "table" and tostring(#src.params) or "no list of", #group.params), 0)
  end
  local loaded = {}
  for k, v in pairs(group) do loaded[k] = v end
  for k, v in pairs(src) do if k ~= "params" then loaded[k] = v end end
  self:check_group(loaded)
  local n = self:_numel()
  local p1 = self._params[1]
  local function number(k, v, spec)
    if nnr.is_tensor(v) then v = v:item() end
    return check.number(who, k, v, spec)
  end
  local function vector(k, v)
    if not nnr.is_tensor(v) then error(string.format("%s: state '%s' must be a tensor, got %s", who, k, type(v)), 0) end
    if v:dim() ~= 1 or v:numel() ~= n then
      error(string.format("%s: state '%s' has shape %s, expected [%d] (the parameters' total size)", who, k, nnr.shape_str(v:size()), n), 0)
    end
    return v:to(p1.device, p1.dtype):clone()
  end
  local s = sd.state[1] or sd.state["1"]
  local mine
  if s ~= nil then
    if type(s) ~= "table" then error(who .. ": state 1 must be a table, got " .. type(s), 0) end
    for k in pairs(s) do
      if not ({ func_evals = 1, n_iter = 1, d = 1, t = 1, old_dirs = 1, old_stps = 1, ro = 1, H_diag = 1, prev_flat_grad = 1, prev_loss = 1 })[k] then
        error(string.format("%s: unknown state '%s'", who, tostring(k)), 0)
      end
    end
    mine = {}
    mine.func_evals = number("func_evals", s.func_evals or 0, { integer = true, min = 0 })
    mine.n_iter = number("n_iter", s.n_iter or 0, { integer = true, min = 0 })
    if mine.n_iter > 0 then
      for _, k in ipairs { "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss" } do
        if s[k] == nil then error(string.format("%s: state '%s' is missing (n_iter is %d)", who, k, mine.n_iter), 0) end
      end
      mine.d, mine.prev_flat_grad = vector("d", s.d), vector("prev_flat_grad", s.prev_flat_grad)
      mine.t, mine.H_diag, mine.prev_loss = number("t", s.t), number("H_diag", s.H_diag), number("prev_loss", s.prev_loss, { inf = true })
      local lists = {}
      for _, k in ipairs { "old_dirs", "old_stps", "ro" } do
        if type(s[k]) ~= "table" then error(string.format("%s: state '%s' must be a list, got %s", who, k, type(s[k])), 0) end
        local count = 0
        for _ in pairs(s[k]) do count = count + 1 end
        lists[k] = count
        if count > loaded.history_size then
          error(string.format("%s: state '%s' holds %d entries, more than history_size %d", who, k, count, loaded.history_size), 0)
        end
      end
      if lists.old_dirs ~= lists.old_stps or lists.old_dirs ~= lists.ro then
        error(string.format("%s: old_dirs, old_stps and ro hold %d, %d and %d entries, expected as many", who, lists.old_dirs, lists.old_stps, lists.ro), 0)
      end
      mine.old_dirs, mine.old_stps, mine.ro = {}, {}, {}
      for i = 1, lists.old_dirs do
        local function at(k) local v = s[k][i]; if v == nil then v = s[k][tostring(i)] end; return v end
        mine.old_dirs[i] = vector("old_dirs[" .. i .. "]", at("old_dirs"))
        mine.old_stps[i] = vector("old_stps[" .. i .. "]", at("old_stps"))
        mine.ro[i] = number("ro[" .. i .. "]", at("ro"))
      end
    end
  end
  for k, v in pairs(loaded) do group[k] = v end
  for _, p in ipairs(self._params) do self.state[p] = nil end
  self.state[p1] = mine
end

return LBFGS
