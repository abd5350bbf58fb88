-- nnr.autograd: gradients on demand (grad), Functions with a backward written in Lua, gradient
-- hooks, and gradient checking against finite differences (gradcheck, gradgradcheck).
--
-- grad(outputs, inputs[, {grad_outputs=, retain_graph=, create_graph=, allow_unused=}])
--   -> the gradients of the outputs with respect to each input, as several return values; no
--   .grad is touched. create_graph records the backward itself (higher-order gradients).
--
-- Function{name=, forward = function(ctx, ...), backward = function(ctx, grad...)} -> F;
--   F(...) (or F:apply(...)) runs forward with recording off and records one node whose backward
--   is the Lua function. ctx:save_for_backward(...), ctx.saved_tensors, ctx.needs_input_grad,
--   ctx:mark_non_differentiable(...), ctx:set_materialize_grads(flag); other fields are free.
--
-- gradcheck(fn, inputs[, opts]) -> ok, message
--   fn: function of the input tensors returning one tensor.
--   inputs: tensors; those that require grad are checked (use f64).
--   opts: eps (1e-6), atol (1e-5), rtol (1e-3).
-- The output is projected on a fixed random tensor v, so one backward pass
-- gives v.J; each input element is then perturbed by +-eps and the central
-- difference of sum(fn(...) * v) compared with it (fn runs with recording on,
-- so that a fn that takes gradients itself, autograd.grad, works). Works on non-contiguous
-- inputs: elements are written through their strides.
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C

local M = {}

local function project(nnr, out, v)
  return (out:to("f64") * v):sum():item()
end

function M.gradcheck(fn, inputs, opts)
  local nnr = require "nnr"
  local check = require "nnr.check"
  opts = check.options("gradcheck", opts, { eps = true, atol = true, rtol = true })
  local eps = check.number("gradcheck", "eps", opts.eps, { above = 0, default = 1e-6 })
  local atol = check.number("gradcheck", "atol", opts.atol, { min = 0, default = 1e-5 })
  local rtol = check.number("gradcheck", "rtol", opts.rtol, { min = 0, default = 1e-3 })
  local out = fn(unpack(inputs))
  if not nnr.is_tensor(out) then return false, "gradcheck: fn must return a tensor" end
  if not out.requires_grad then return false, "gradcheck: the output does not require grad (no input requires grad?)" end
  nnr.manual_seed(4321)
  local v = nnr.randn(out:size(), { dtype = "f64", device = out.device })
  for _, x in ipairs(inputs) do
    if nnr.is_tensor(x) and x.requires_grad then
      x.grad = nil
      if not x.is_leaf then x:retain_grad() end      -- a view of a leaf (x:t()) is checked as itself
    end
  end
  (out:to("f64") * v):sum():backward()
  local analytic = {}
  for i, x in ipairs(inputs) do
    if nnr.is_tensor(x) and x.requires_grad then
      analytic[i] = x.grad or nnr.zeros_like(x)
    end
  end
  local idx, val = ffi.new("int64_t[8]"), ffi.new("double[1]")
  return nnr.no_grad(function()
    for i, x in ipairs(inputs) do
      if analytic[i] then
        local sizes, n = x:size(), x:numel()
        local a = analytic[i]:to("f64"):contiguous()
        local flat = a:view(-1)
        for k = 0, n - 1 do
          local rem = k
          for d = #sizes, 1, -1 do idx[d - 1] = rem % sizes[d]; rem = math.floor(rem / sizes[d]) end
          binding.check(C.nnr_get(x.p, idx, val))
          local orig = val[0]
          binding.check(C.nnr_set(x.p, idx, orig + eps))
          local fp = project(nnr, nnr.enable_grad(fn, unpack(inputs)), v)
          binding.check(C.nnr_set(x.p, idx, orig - eps))
          local fm = project(nnr, nnr.enable_grad(fn, unpack(inputs)), v)
          binding.check(C.nnr_set(x.p, idx, orig))
          local numeric = (fp - fm) / (2 * eps)
          local got = flat[k + 1]
          if math.abs(numeric - got) > atol + rtol * math.abs(numeric) then
            local where = {}
            for d = 1, #sizes do where[d] = tonumber(idx[d - 1]) + 1 end
            return false, string.format("gradcheck: input %d element [%s]: numerical %.8g, analytical %.8g",
              i, table.concat(where, ", "), numeric, got)
          end
        end
      end
    end
    return true, "ok"
  end)
end

-- ---------------------------------------------------------------- the engine's host side
-- One callback per Lua state runs Function backwards and hooks; it is set on this thread before each
-- backward pass (each state runs its passes on its own thread). Ids carry this state's owner number;
-- the engine lists the ids whose nodes died, and the registry drops them.
local T = require "nnr.tensor"
local V = require "nnr.check"
local is_tensor, tp = T.is_tensor, T.tp
local own, check = binding.own, binding.check

-- one per Lua state, kept where a second load of this module (busted's insulation) finds it: the
-- tensor metatype, set once, keeps the first load's methods
local shared = debug.getregistry()["nnr.autograd"]
if not shared then
  shared = { owner = C.nnr_autograd_new_owner(), registry = {}, last_id = 0 }
  debug.getregistry()["nnr.autograd"] = shared
end
local owner, registry = shared.owner, shared.registry
local function new_id() shared.last_id = shared.last_id + 1; return owner * 4294967296 + shared.last_id end
local deadbuf = ffi.new("int64_t[256]")
local function drain()
  repeat
    local n = C.nnr_autograd_dead_ids(owner, deadbuf, 256)
    for i = 0, n - 1 do registry[tonumber(deadbuf[i])] = nil end
  until n < 256
end
M._registry = registry

-- a borrowed nnr_tensor* as a handle of its own
local function borrowed(p)
  if p == nil then return nil end
  C.nnr_tensor_retain(p)
  return own(p)
end
-- a handle's tensor as a new reference for the engine
local function give(t)
  C.nnr_tensor_retain(t.p)
  return t.p
end

-- an error from the user's Lua code: its message, and the user's frames when it carries a position
local function traceback(e)
  local msg = tostring(e)
  if type(e) == "string" and msg:match("^[^\n]-:%d+: ") and not msg:find("stack traceback:", 1, true) then return debug.traceback(msg, 2) end
  return msg
end

local function pack(...) return { n = select("#", ...), ... } end

local function run_function(entry, n_in, ins, n_out, outs)
  local fn, ctx = entry.fn, entry.ctx
  local grads = {}
  for k = 1, n_in do
    local g = borrowed(ins[k - 1])
    if g == nil and ctx._materialize then
      local m = entry.out_meta[k]
      g = T.zeros(m.sizes, { dtype = m.dtype, device = m.device })
    end
    grads[k] = g
  end
  rawset(ctx, "_in_backward", true)
  local ok, res = xpcall(function() return pack(fn.backward(ctx, unpack(grads, 1, n_in))) end, traceback)
  rawset(ctx, "_in_backward", false)       -- whatever happened: its saved outputs link to its node only meanwhile
  if not ok then error(res, 0) end
  if res.n > entry.nargs then
    error(fn.name .. ".backward returned " .. res.n .. " values, forward took " .. entry.nargs .. " arguments", 0)
  end
  for j, pos in ipairs(entry.positions) do
    local g = res[pos]
    if g ~= nil then
      if not is_tensor(g) then
        error(fn.name .. ".backward: value " .. pos .. " must be a tensor or nil (the gradient of argument " .. pos .. "), got " .. type(g), 0)
      end
      outs[j - 1] = give(g)
    end
  end
end

local function run_hook(fn, ins, outs)
  local g = borrowed(ins[0])
  local r = fn(g)
  if r ~= nil then
    if not is_tensor(r) then error("gradient hook: must return nil or a tensor, got " .. type(r), 0) end
    outs[0] = give(r)
  end
end

shared.callback = shared.callback or ffi.cast("nnr_autograd_callback", function(kind, id, n_in, ins, n_out, outs)
  local entry = registry[tonumber(id)]
  local ok, err = true, nil
  if kind == C.NNR_AUTOGRAD_FUNCTION then
    if entry == nil then
      C.nnr_set_error(C.NNR_ERR_INTERNAL, "backward: a Function's state is gone (freed by an earlier backward?)")
      return C.NNR_ERR_INTERNAL
    end
    ok, err = xpcall(run_function, traceback, entry, n_in, ins, n_out, outs)
    if not ok then err = entry.fn.name .. "Backward: " .. tostring(err) end
  elseif entry ~= nil then          -- a hook (removed ones are simply gone)
    ok, err = xpcall(run_hook, traceback, entry, ins, outs)
    if not ok then err = "gradient hook: " .. tostring(err) end
  end
  if ok then return 0 end
  for k = 0, n_out - 1 do           -- what was handed over before the error is taken back
    if outs[k] ~= nil then C.nnr_tensor_release(outs[k]); outs[k] = nil end
  end
  C.nnr_set_error(C.NNR_ERR_INVALID, err)
  return C.NNR_ERR_INVALID
end)
local callback = shared.callback

-- pointer arrays are made per call: a pass must never read arrays another call is filling
local ptrs_ct = ffi.typeof("nnr_tensor *[?]")
local ptrs_a, ptrs_b = ptrs_ct(64), ptrs_ct(64)       -- Function:apply's (no pass runs while it fills them)
local function tensor_list(op, what, x)
  local list = is_tensor(x) and { x } or x
  if type(list) ~= "table" or #list == 0 then error(op .. ": " .. what .. " must be a tensor or a non-empty list of tensors", 0) end
  if #list > 64 then error(op .. ": at most 64 " .. what .. ", got " .. #list, 0) end
  local buf = ptrs_ct(#list)
  for i = 1, #list do buf[i - 1] = tp(op, list[i], what .. " " .. i) end
  return list, buf
end

-- the passes run interpreted: the engine calls back into Lua, which LuaJIT forbids from a C call
-- made by compiled code
local function backward_pass(roots, grads, retain, create)
  C.nnr_autograd_set_callback(callback)
  local st = C.nnr_backward_multi(1, roots, grads, retain and 1 or 0, create and 1 or 0)
  drain()
  check(st)
end
jit.off(backward_pass)

-- t:backward([gradient][, retain_graph]) or t:backward{gradient=, retain_graph=, create_graph=}
local backward_options = { gradient = true, grad = true, retain_graph = true, create_graph = true }
function M.backward(t, grad, retain_graph)
  tp("backward", t, "self")
  local create = false
  if type(grad) == "table" and not is_tensor(grad) then
    local o = V.options("backward", grad, backward_options)
    grad, retain_graph, create = o.gradient or o.grad, o.retain_graph, o.create_graph
  elseif type(grad) == "boolean" then
    grad, retain_graph = nil, grad
  end
  local roots, grads = ptrs_ct(1), nil
  roots[0] = t.p
  if grad ~= nil then grads = ptrs_ct(1); grads[0] = tp("backward", grad, "gradient") end
  if retain_graph == nil then retain_graph = create end      -- PyTorch's default
  backward_pass(roots, grads, retain_graph, create)
end
T.methods.backward = M.backward

local grad_options = { grad_outputs = true, retain_graph = true, create_graph = true, allow_unused = true }
local function grad_pass(n_out, outs, grads, n_in, ins, retain, create, unused, res)
  C.nnr_autograd_set_callback(callback)
  local st = C.nnr_autograd_grad(n_out, outs, grads, n_in, ins, retain and 1 or 0, create and 1 or 0, unused and 1 or 0, res)
  drain()
  return st
end
jit.off(grad_pass)

function M.grad(outputs, inputs, opts)
  opts = V.options("autograd.grad", opts, grad_options)
  local outs, outs_p = tensor_list("autograd.grad", "outputs", outputs)
  local ins, ins_p = tensor_list("autograd.grad", "inputs", inputs)
  local go, grads_p = opts.grad_outputs, nil
  if go ~= nil then
    local list = is_tensor(go) and { go } or go
    if type(list) ~= "table" then error("autograd.grad: grad_outputs must be a tensor or a list of tensors (nil entries allowed)", 0) end
    grads_p = ptrs_ct(#outs)
    for i = 1, #outs do grads_p[i - 1] = list[i] ~= nil and tp("autograd.grad", list[i], "grad_outputs " .. i) or nil end
  end
  local create = opts.create_graph and true or false
  local retain = opts.retain_graph
  if retain == nil then retain = create end                -- PyTorch's default
  local out = ptrs_ct(#ins)
  check(grad_pass(#outs, outs_p, grads_p, #ins, ins_p, retain, create, opts.allow_unused, out))
  local res = {}
  for i = 1, #ins do res[i] = out[i - 1] ~= nil and own(out[i - 1]) or nil end
  return unpack(res, 1, #ins)
end

-- t:register_hook(fn): fn(grad) runs when t's gradient is computed, and may return a replacement.
-- Returns a handle whose remove() takes it off.
local Handle = {}
Handle.__index = Handle
function Handle:remove()
  local t = self._t.t
  if t ~= nil then C.nnr_tensor_remove_hook(t.p, self.id) end
  registry[self.id] = nil
end
function T.methods.register_hook(t, fn)
  tp("register_hook", t, "self")
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    error("register_hook: expected a function, got " .. type(fn), 0)
  end
  drain()
  local id = new_id()
  check(C.nnr_tensor_register_hook(t.p, id))
  registry[id] = fn
  return setmetatable({ id = id, _t = setmetatable({ t = t }, { __mode = "v" }) }, Handle)
end

-- ---------------------------------------------------------------- Functions written in Lua
local Ctx = {}
local ctx_methods = {}
Ctx.__index = function(ctx, k)
  if k == "saved_tensors" then
    local saved = rawget(ctx, "_saved")
    if not saved then return {} end
    if rawget(ctx, "_released") then
      error(rawget(ctx, "_name") .. ": saved tensors were freed after a backward; pass retain_graph = true to backward through it twice", 0)
    end
    local out = {}
    for i = 1, saved.n do
      local t = saved[i]
      if is_tensor(t) and C.nnr_tensor_version(t.p) ~= saved.versions[i] then
        error(rawget(ctx, "_name") .. ": tensor " .. i .. " saved for backward was modified by an in-place operation (version " ..
          C.nnr_tensor_version(t.p) .. ", expected " .. saved.versions[i] .. "); use the out-of-place op or clone() first", 0)
      end
      -- an output of the Function, linked to its node again while a graph is created
      if saved.output_of and saved.output_of[i] and rawget(ctx, "_in_backward") then
        t = own(C.nnr_function_saved_output(t.p, rawget(ctx, "_id"), saved.output_of[i]))
      end
      out[i] = t
    end
    return out
  end
  return ctx_methods[k]
end
function ctx_methods:save_for_backward(...)
  local saved = { n = select("#", ...), versions = {}, ... }
  for i = 1, saved.n do
    local t = saved[i]
    if t ~= nil and not is_tensor(t) then
      error(rawget(self, "_name") .. ": save_for_backward takes tensors (or nil), argument " .. i .. " is a " .. type(t), 0)
    end
    if t ~= nil then saved.versions[i] = C.nnr_tensor_version(t.p) end
  end
  rawset(self, "_saved", saved)
end
function ctx_methods:mark_non_differentiable(...)
  for i = 1, select("#", ...) do
    local t = select(i, ...)
    tp(rawget(self, "_name") .. ": mark_non_differentiable", t, "argument " .. i)
    self._nondiff[#self._nondiff + 1] = t
  end
end
function ctx_methods:set_materialize_grads(flag) rawset(self, "_materialize", flag and true or false) end

local Function = {}
Function.__index = Function
local function_keys = { name = true, forward = true, backward = true }

local namebuf_ct = ffi.typeof("unsigned char[?]")
local floating = { f32 = true, f64 = true, f16 = true, bf16 = true }

function Function:apply(...)
  drain()
  local name = self.name
  local args = pack(...)
  local ctx = setmetatable({ needs_input_grad = {}, _nondiff = {}, _materialize = true, _name = name }, Ctx)
  local inputs, positions, any = {}, {}, false
  local recording = C.nnr_is_grad_enabled() ~= 0
  for i = 1, args.n do
    local a = args[i]
    local needs = false
    if is_tensor(a) then
      inputs[#inputs + 1] = a
      positions[#positions + 1] = i
      needs = recording and a.requires_grad
    end
    ctx.needs_input_grad[i] = needs
    any = any or needs
  end
  local outs = pack(require("nnr").no_grad(self.forward, ctx, unpack(args, 1, args.n)))
  if not any then return unpack(outs, 1, outs.n) end
  if #inputs > 64 then error(name .. ": at most 64 tensor arguments", 0) end
  -- the tensor outputs take the node; one that is an input, appears twice or already has a history
  -- is an alias first (a new tensor over the same memory)
  local out_list, orig, seen = {}, {}, {}
  for i = 1, outs.n do
    local o = outs[i]
    if is_tensor(o) then
      orig[#out_list + 1] = o
      local alias = seen[o] or o.requires_grad
      for _, x in ipairs(inputs) do alias = alias or rawequal(x, o) end
      seen[o] = true
      if alias then o = o:detach(); outs[i] = o end
      out_list[#out_list + 1] = o
    end
  end
  if #out_list == 0 then error(name .. ".forward returned no tensor", 0) end
  if #out_list > 127 then error(name .. ": at most 127 tensor outputs", 0) end
  local diff = namebuf_ct(#out_list)
  local out_meta = {}
  for k, o in ipairs(out_list) do
    local nd = not floating[o.dtype]
    for _, m in ipairs(ctx._nondiff) do nd = nd or rawequal(m, orig[k]) end
    diff[k - 1] = nd and 0 or 1
    out_meta[k] = { sizes = o:size(), dtype = o.dtype, device = o.device }
    ptrs_b[k - 1] = o.p
  end
  for j, x in ipairs(inputs) do ptrs_a[j - 1] = x.p end
  -- an output saved for backward is kept as an alias without the node (it would hold itself)
  local saved = rawget(ctx, "_saved")
  if saved then
    saved.output_of = {}
    for i = 1, saved.n do
      for k, o in ipairs(out_list) do
        if rawequal(saved[i], orig[k]) or rawequal(saved[i], o) then saved[i] = o:detach(); saved.output_of[i] = k - 1 end
      end
    end
  end
  local id = new_id()
  rawset(ctx, "_id", id)
  registry[id] = { fn = self, ctx = ctx, positions = positions, nargs = args.n, out_meta = out_meta }
  local st = C.nnr_function_node(name, id, #inputs, ptrs_a, #out_list, ptrs_b, diff)
  if st ~= 0 then registry[id] = nil; binding.raise() end
  return unpack(outs, 1, outs.n)
end
Function.__call = function(self, ...) return self:apply(...) end

setmetatable(Function, { __call = function(_, def)
  if type(def) ~= "table" then error("autograd.Function: expected {name=, forward=, backward=}, got " .. type(def), 0) end
  V.options("autograd.Function", def, function_keys)
  if type(def.forward) ~= "function" then error("autograd.Function: forward must be a function(ctx, ...)", 0) end
  if type(def.backward) ~= "function" then error("autograd.Function: backward must be a function(ctx, grad...)", 0) end
  if def.name ~= nil and (type(def.name) ~= "string" or not def.name:match("^[%w_%.]+$")) then
    error("autograd.Function: name must be a string of letters, digits, '_' and '.', got " .. tostring(def.name), 0)
  end
  return setmetatable({ name = def.name or "Function", forward = def.forward, backward = def.backward }, Function)
end })
M.Function = Function

-- gradgradcheck(fn, inputs[, opts]): second derivatives against finite differences of the first.
-- The first-order gradients of fn (with create_graph, against a random output weighting that itself
-- requires grad) are checked by gradcheck with respect to the inputs and that weighting.
function M.gradgradcheck(fn, inputs, opts)
  local nnr = require "nnr"
  local out = fn(unpack(inputs))
  if not is_tensor(out) or not out.requires_grad then return false, "gradgradcheck: fn must return a tensor that requires grad" end
  nnr.manual_seed(8765)
  local v = nnr.randn(out:size(), { dtype = out.dtype, device = out.device }):requires_grad_()
  local diff = {}
  for _, x in ipairs(inputs) do if is_tensor(x) and x.requires_grad then diff[#diff + 1] = x end end
  local n = #inputs
  local first_order
  local function first(...)     -- with recording on: gradcheck's perturbed calls run inside no_grad
    return nnr.enable_grad(first_order, ...)
  end
  function first_order(...)
    local args = { ... }
    local o = fn(unpack(args, 1, n))
    local gs = { M.grad(o, diff, { grad_outputs = args[n + 1], create_graph = true, allow_unused = true }) }
    local parts = {}
    for i, x in ipairs(diff) do parts[i] = (gs[i] or nnr.zeros_like(x)):reshape(-1) end
    return nnr.cat(parts)
  end
  local all = {}
  for i = 1, n do all[i] = inputs[i] end
  all[n + 1] = v
  local ok, msg = M.gradcheck(first, all, opts)
  if not ok then msg = msg:gsub("^gradcheck", "gradgradcheck") end
  return ok, msg
end

return M
