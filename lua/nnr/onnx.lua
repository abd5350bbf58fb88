-- nnr.onnx: ONNX models in nnrun.
--   local m = nnr.onnx.load("model.onnx")   -- an nn.Module: m(x), m:to("cuda"), trainable, quantizable
--   m(x) or m{x = x, mask = mask}            -- one input positionally, or by the graph's input names
-- The file is read and checked in C (core/data/onnx.c: protobuf-c against data/proto/onnx.proto, every
-- tensor against its shape, external data confined to the model's folder, the graph's order); here the
-- graph becomes a module: Gemm and MatMul by a weight become nn.Linear children, Conv nn.Conv2d, LSTM and
-- GRU nn.LSTM / nn.GRU (their gates reordered), so nnr.quant.dynamic and nnr.prune find them; the other
-- float initializers are the module's parameters, integer ones its buffers. Operators nnrun does not run are
-- listed, all of them, by name and node, when the model is loaded.
local nnr = require "nnr"
local ffi = require "ffi"
local binding = require "nnr.binding"
local json = require "nnr.json"
local V = require "nnr.check"
local O = require "nnr.onnx_ops"
local table_new = require "table.new"
local Module = require "nnr.nn.module"
local nn, F = nnr.nn, nnr.nn.functional
local C = binding.C

local M = {}
-- the default domain's versions read: 13 to 28 (onnx 1.23's newest); the operators here changed after 23
-- only by new types (float8, 4- and 2-bit) and attributes for them (Cast's round_mode), which nnrun refuses
M.OPSET_MIN, M.OPSET_MAX = 13, 28

local fail, ints, dim = O.fail, O.ints, O.dim

local Graph = Module:extend("OnnxGraph")
local RELU = { fusable_activation = function() return "relu" end }     -- what fuse_next asks of the next module
local RESERVED = { path = true, opset = true, inputs = true, outputs = true, nodes = true, producer = true, training = true }

-- a parameter or child name from an ONNX name ("layers.0.weight" -> "layers_0_weight"), unique in the module
local function sanitize(self, name)
  local base = name:gsub("[^%w_]", "_"):gsub("^(%d)", "_%1")
  if base == "" then base = "_" end
  local s, k = base, 1
  -- (not a name the module has: a method, a field, or one of Lua's module internals)
  while self._used[s] or Graph[s] ~= nil or Module[s] ~= nil or rawget(self, s) ~= nil or RESERVED[s] do k = k + 1; s = base .. "_" .. k end
  self._used[s] = true
  return s
end

-- nodes become children where a module runs them (ownership of their weights moves to the child)
local function lower(self, node, const, owned)
  local op, ins = node.op, node.inputs
  local w = const[ins[2]]
  local key = (ins[2] or ""):gsub("%.weight$", ""):gsub("%.", "_")
  if op == "Gemm" and w and w:dim() == 2 and (node.attrs.alpha or 1) == 1 and (node.attrs.beta or 1) == 1 and (node.attrs.transA or 0) == 0 then
    local b = ins[3] and ins[3] ~= "" and const[ins[3]]
    local weight = (node.attrs.transB or 0) == 1 and w or w:t():contiguous()
    if ins[3] and ins[3] ~= "" and not (b and b:dim() == 1 and b:size(1) == weight:size(1)) then return nil end     -- (a broadcast bias)
    local lin = nn.Linear(weight:size(2), weight:size(1), { bias = b ~= nil and b ~= false })
    lin:register_parameter("weight", weight)
    if b then lin:register_parameter("bias", b) end
    owned[ins[2]] = true
    if b then owned[ins[3]] = true end
    return lin, "linear"
  end
  if op == "MatMul" and w and w:dim() == 2 and w.dtype == "f32" then
    local lin = nn.Linear(w:size(1), w:size(2), { bias = false })
    lin:register_parameter("weight", w:t():contiguous())
    owned[ins[2]] = true
    return lin, "linear"
  end
  if op == "Conv" and w and w:dim() == 4 and (node.attrs.auto_pad or "NOTSET") == "NOTSET" then
    local pads = node.attrs.pads or { 0, 0, 0, 0 }
    if pads[1] ~= pads[3] or pads[2] ~= pads[4] then return nil end
    local b = ins[3] and ins[3] ~= "" and const[ins[3]]
    if ins[3] and ins[3] ~= "" and not b then return nil end
    local s = w:size()
    local group = node.attrs.group or 1
    local conv = nn.Conv2d(s[2] * group, s[1], { s[3], s[4] }, { stride = node.attrs.strides or 1, padding = { pads[1], pads[2] },
      dilation = node.attrs.dilations or 1, groups = group, bias = b ~= nil and b ~= false })
    conv:register_parameter("weight", w)
    if b then conv:register_parameter("bias", b) end
    owned[ins[2]] = true
    if b then owned[ins[3]] = true end
    return conv, "module"
  end
  return nil
end

-- the attributes each operator honours (no option is silently ignored: any other is an error at load);
-- operators absent here take none. Cast's saturate and round_mode apply to float8 only, which nnrun does not
-- read; Dropout's seed, BatchNormalization's momentum and the stash_type of LayerNormalization and Range
-- change nothing in inference.
local function set(...) local t = {}; for _, k in ipairs { ... } do t[k] = true end; return t end
local ATTRS = {
  AveragePool = set("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides", "dilations"),
  MaxPool = set("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides", "storage_order"),
  BatchNormalization = set("epsilon", "momentum", "training_mode"), Cast = set("to", "saturate", "round_mode"), CastLike = set("saturate", "round_mode"),
  Concat = set("axis"), Constant = set("value", "value_float", "value_floats", "value_int", "value_ints"), ConstantOfShape = set("value"),
  Conv = set("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"), Dropout = set("seed"), Elu = set("alpha"),
  Flatten = set("axis"), Gather = set("axis"), Gelu = set("approximate"), Gemm = set("alpha", "beta", "transA", "transB"),
  LSTM = set("activations", "direction", "hidden_size", "layout", "input_forget"),
  GRU = set("activations", "direction", "hidden_size", "layout", "linear_before_reset"),
  LayerNormalization = set("axis", "epsilon", "stash_type"), LeakyRelu = set("alpha"), LogSoftmax = set("axis"), Softmax = set("axis"),
  Pad = set("mode", "pads", "value"), Range = set("stash_type"), Reshape = set("allowzero"), Shape = set("start", "end"),
  Split = set("axis", "num_outputs", "split"), Transpose = set("perm"), Squeeze = set("axes"), Unsqueeze = set("axes"),
  ReduceMax = set("axes", "keepdims", "noop_with_empty_axes"), ReduceMin = set("axes", "keepdims", "noop_with_empty_axes"),
  ReduceMean = set("axes", "keepdims", "noop_with_empty_axes"), ReduceSum = set("keepdims", "noop_with_empty_axes"),
}
local DEFAULT_ACT = { LSTM = { "Sigmoid", "Tanh", "Tanh" }, GRU = { "Sigmoid", "Tanh" } }

-- why nnrun cannot run this node as it is (an attribute or a value it does not honour), or nil
local function unsupported_use(node)
  local allowed, a = ATTRS[node.op] or {}, node.attrs
  local names = {}
  for k in pairs(a) do if not allowed[k] then names[#names + 1] = k end end
  table.sort(names)
  if #names > 0 then return "attribute" .. (#names > 1 and "s" or "") .. " '" .. table.concat(names, "', '") .. "'" end
  for _, v in pairs(a) do if type(v) == "table" and v.graph then return "a subgraph" end end
  if node.op == "BatchNormalization" and (a.training_mode or 0) ~= 0 then return "training_mode 1" end
  if (node.op == "Dropout" or node.op == "MaxPool") and #node.outputs > 1 and node.outputs[2] ~= "" then return "a second output" end
  if (node.op == "LSTM" or node.op == "GRU") then
    if a.direction and a.direction ~= "forward" and a.direction ~= "bidirectional" then return "direction " .. a.direction end
    local want = DEFAULT_ACT[node.op]
    for i, f in ipairs(a.activations or {}) do
      if f ~= want[(i - 1) % #want + 1] then return "activations " .. table.concat(a.activations, ", ") end
    end
  end
  return nil
end

-- every operator the graph uses that nnrun cannot run, in one message
local function check_supported(g, path)
  local missing, order = {}, {}
  for _, node in ipairs(g.nodes) do
    local ok = (node.domain == "" or node.domain == "ai.onnx") and (O.ops[node.op] or M.module_ops[node.op])
    local why = ok and unsupported_use(node)
    if not ok or why then
      local key = (node.domain ~= "" and node.domain ~= "ai.onnx" and (node.domain .. ".") or "") .. node.op .. (why and (" with " .. why) or "")
      if not missing[key] then missing[key] = {}; order[#order + 1] = key end
      table.insert(missing[key], node.name)
    end
  end
  if #order == 0 then return end
  local parts = {}
  for _, k in ipairs(order) do
    local names = missing[k]
    parts[#parts + 1] = string.format("%s (node%s '%s'%s)", k, #names > 1 and "s" or "", table.concat(names, "', '", 1, math.min(#names, 3)),
      #names > 3 and string.format(" and %d more", #names - 3) or "")
  end
  error(string.format("onnx %s: unsupported operators: %s", path, table.concat(parts, ", ")), 0)
end

function Graph:__init(g, tensors, path)
  Module.__init(self)
  rawset(self, "_used", {})
  self.path = path
  local opset = g.opsets[""]
  if type(opset) ~= "number" then error("onnx " .. path .. ": the model imports no version of the default operator set", 0) end
  if opset < M.OPSET_MIN or opset > M.OPSET_MAX then
    error(string.format("onnx %s: operator set %d; nnrun reads %d to %d (re-export with opset_version in that range)", path, opset,
      M.OPSET_MIN, M.OPSET_MAX), 0)
  end
  self.opset = opset
  check_supported(g, path)
  -- the nodes' attributes: tensor attributes become tensors
  for _, node in ipairs(g.nodes) do
    for k, a in pairs(node.attrs) do if type(a) == "table" and a.tensor then node.attrs[k] = tensors[a.tensor].t end end
  end
  -- the initializers a child module may take: those one node alone reads
  local const, uses = {}, {}
  for _, node in ipairs(g.nodes) do for _, name in ipairs(node.inputs) do uses[name] = (uses[name] or 0) + 1 end end
  for _, v in ipairs(g.outputs) do uses[v.name] = (uses[v.name] or 0) + 1 end
  for _, k in ipairs(g.initializers) do if uses[tensors[k].name] == 1 then const[tensors[k].name] = tensors[k].t end end
  local owned, children = {}, {}
  for i, node in ipairs(g.nodes) do
    local mod, kind = lower(self, node, const, owned)
    if mod then
      local name = sanitize(self, (node.inputs[2] or node.name):gsub("%.weight$", ""))
      self:add_module(name, mod)
      children[i] = { name = name, kind = kind }
    end
  end
  -- the remaining initializers: float ones parameters, the rest (and batch norms' statistics) buffers
  local stats = {}
  for _, node in ipairs(g.nodes) do
    if node.op == "BatchNormalization" then stats[node.inputs[4] or ""], stats[node.inputs[5] or ""] = true, true end
  end
  self._values = {}
  for _, k in ipairs(g.initializers) do
    local name, t = tensors[k].name, tensors[k].t
    if not owned[name] then
      local key = sanitize(self, name)
      if t:is_floating_point() and not stats[name] then self:register_parameter(key, t) else self:register_buffer(key, t) end
      self._values[name] = key
    end
  end
  -- a Relu after a child, its only reader, runs inside the child's op where the child can (fuse_next: Linear,
  -- Conv2d and QuantizedLinear take a following ReLU, as in Sequential)
  local made_by = {}
  for i, node in ipairs(g.nodes) do for _, o in ipairs(node.outputs) do made_by[o] = i end end
  for i, node in ipairs(g.nodes) do
    local k = node.op == "Relu" and made_by[node.inputs[1]]
    if k and children[k] and uses[node.inputs[1]] == 1 then children[k].relu = i end
  end
  local inputs, is_init = {}, {}
  for _, k in ipairs(g.initializers) do is_init[tensors[k].name] = true end
  for _, v in ipairs(g.inputs) do if not is_init[v.name] then inputs[#inputs + 1] = v end end
  self.inputs, self.outputs, self.nodes, self._lowered = inputs, g.outputs, g.nodes, children
  self.producer = g.producer ~= "" and (g.producer .. " " .. g.producer_version) or "unknown"
end

function Graph:extra_repr()
  local ins, outs = {}, {}
  for i, v in ipairs(self.inputs) do ins[i] = v.name end
  for i, v in ipairs(self.outputs) do outs[i] = v.name end
  return string.format("%d nodes, inputs (%s), outputs (%s), opset %d, from %s", #self.nodes, table.concat(ins, ", "), table.concat(outs, ", "),
    self.opset, self.producer)
end

-- The graph as a plan, made on the first call: each value a slot of an array, each node its operand and
-- result slots, so that a call runs without string keys, pairs() (which LuaJIT does not compile) or a
-- table per node. Kept beside the module (weak keys), not in it: copies and state dicts never see it.
local plans = setmetatable({}, { __mode = "k" })
local fusions = setmetatable({}, { __mode = "k" })    -- graph -> node -> { module, fused function }

local function make_plan(self)
  local slot, n = {}, 0
  local function at(name)
    if name == "" then return 0 end
    local k = slot[name]
    if not k then n = n + 1; k = n; slot[name] = k end
    return k
  end
  local plan = { inputs = {}, init = {}, nodes = {}, outputs = {} }
  for i, v in ipairs(self.inputs) do plan.inputs[i] = at(v.name) end
  local names = {}
  for name in pairs(self._values) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do plan.init[#plan.init + 1] = { at(name), self._values[name] } end
  for i, node in ipairs(self.nodes) do
    local ins, outs = {}, {}
    for j, name in ipairs(node.inputs) do ins[j] = at(name) end
    for j, name in ipairs(node.outputs) do outs[j] = at(name) end
    plan.nodes[i] = { ins = ins, outs = outs, nin = #ins }
  end
  for i, v in ipairs(self.outputs) do plan.outputs[i] = at(v.name) end
  plan.nslots = n
  plan.skip, plan.calls = {}, 0         -- Relu nodes a fused child ran: skip[i] == the call's number
  plan.graph = { opset = self.opset }   -- what the functional ops read of the graph (training: set per call)
  -- each node's operands that no later node reads (nor the graph's outputs): dropped once it has run,
  -- so that the collector may take them during the forward rather than after it
  local last, keep = {}, {}
  for _, k in ipairs(plan.outputs) do keep[k] = true end
  for _, k in ipairs(plan.inputs) do keep[k] = true end
  for _, e in ipairs(plan.init) do keep[e[1]] = true end
  for i, step in ipairs(plan.nodes) do
    for _, k in ipairs(step.ins) do if k > 0 then last[k] = i end end
    for _, k in ipairs(step.outs) do if k > 0 and not last[k] then last[k] = i end end
  end
  for k, i in pairs(last) do
    if not keep[k] then local d = plan.nodes[i].drop or {}; d[#d + 1] = k; plan.nodes[i].drop = d end
  end
  plans[self] = plan
  return plan
end

local function plan_of(self) return plans[self] or make_plan(self) end

-- child's module with the Relu after it in one op, where it can (fuse_next), remembered per module
local function fused_of(self, i, mod)
  local f = fusions[self]
  if not f then f = {}; fusions[self] = f end
  local e = f[i]
  if not e or e[1] ~= mod then
    e = { mod, type(mod.fuse_next) == "function" and mod:fuse_next(RELU) or false }
    f[i] = e
  end
  return e[2]
end

function Graph:forward(...)
  -- the call's garbage kept small (at batch 1 the collector's share of an int8 MLP's forward was 13%):
  -- env sized once, and the skip marks, the graph's context and each node's operand list reused
  local plan, n = plan_of(self), select("#", ...)
  local env = table_new(plan.nslots, 0)
  local a1 = ...
  if #self.inputs == 1 and nnr.is_tensor(a1) then env[plan.inputs[1]] = a1
  elseif type(a1) == "table" and not nnr.is_tensor(a1) then
    for i, v in ipairs(self.inputs) do
      if a1[v.name] == nil then error(string.format("onnx: the model's input '%s' is missing", v.name), 0) end
      env[plan.inputs[i]] = a1[v.name]
    end
  else
    for i, v in ipairs(self.inputs) do
      local t = i <= n and select(i, ...) or nil
      if not nnr.is_tensor(t) then error(string.format("onnx: input %d ('%s') must be a tensor, got %s", i, v.name, type(t)), 0) end
      env[plan.inputs[i]] = t
    end
  end
  local init = plan.init
  for k = 1, #init do env[init[k][1]] = rawget(self, init[k][2]) end
  local graph = plan.graph
  graph.training = self.training
  -- a number per call: a nested call of the same graph (from a hook) has its own, and at worst the outer
  -- one runs a Relu again on values that are already non-negative
  local call, skip = plan.calls + 1, plan.skip
  plan.calls = call
  local nodes, steps, lowered = self.nodes, plan.nodes, self._lowered
  for i = 1, #steps do
    local step, node = steps[i], nodes[i]
    local ins = step.ins
    local child = lowered[i]
    local out1, outs
    if skip[i] == call then out1 = env[ins[1]]          -- (a Relu its child ran)
    elseif child then
      local mod = self[child.name]
      local f = child.relu and not rawget(mod, "_hooks") and fused_of(self, i, mod)
      if f then skip[child.relu] = call; out1 = f(env[ins[1]]) else out1 = mod(env[ins[1]]) end
    else
      -- the operands: the step's own list, emptied after the op (a nested call of the graph takes a new one)
      local x = step.x
      if x then step.x = nil else x = {} end
      for j = 1, step.nin do local k = ins[j]; if k > 0 then x[j] = env[k] end end
      -- on a device other than the host: every operand joins the first one there (constants and shape
      -- arithmetic are host tensors; the ops that read them as numbers do so from any device)
      local dev
      for j = 1, step.nin do local t = x[j]; if t and t.device ~= "cpu" then dev = t.device; break end end
      if dev then for j = 1, step.nin do if x[j] and x[j].device ~= dev then x[j] = x[j]:to(dev) end end end
      local fn = O.ops[node.op] or M.module_ops[node.op]
      if #step.outs == 1 then out1 = fn(node, x, graph) else outs = { fn(node, x, graph) } end
      for j = 1, step.nin do x[j] = nil end
      step.x = x
    end
    local so = step.outs
    if outs then for j = 1, #so do if so[j] > 0 then env[so[j]] = outs[j] end end
    elseif so[1] > 0 then env[so[1]] = out1 end
    local drop = step.drop
    if drop then for j = 1, #drop do env[drop[j]] = nil end end
  end
  local po = plan.outputs
  if #po == 1 then return env[po[1]] end
  local res = {}
  for i = 1, #po do res[i] = env[po[i]] end
  return unpack(res, 1, #po)
end

-- operators with weights or windows, run functionally (where no child module took them)
M.module_ops = {}
local mops = M.module_ops

function mops.Gemm(node, x)
  local a, b = x[1], x[2]
  if (node.attrs.transA or 0) == 1 then a = a:t() end
  if (node.attrs.transB or 0) == 1 then b = b:t() end
  local y = nnr.matmul(a, b)
  if (node.attrs.alpha or 1) ~= 1 then y = y * node.attrs.alpha end
  if x[3] then y = y + (x[3] * (node.attrs.beta or 1)) end
  return y
end

-- ONNX's pads [x1_begin, x2_begin, ..., x1_end, x2_end] as nnrun's (PyTorch's) last-dimension-first pairs
local function torch_pads(p, n)
  local out = {}
  for i = n, 1, -1 do out[#out + 1] = p[i]; out[#out + 1] = p[i + n] end
  return out
end

local function spatial(node, x, n, value)
  local pads = {}
  for i, v in ipairs(node.attrs.pads or {}) do pads[i] = v end
  local auto = node.attrs.auto_pad or "NOTSET"
  if auto ~= "NOTSET" and auto ~= "VALID" then fail(node, "auto_pad %s is not supported (export with explicit pads)", auto) end
  for i = 1, 2 * n do pads[i] = pads[i] or 0 end
  local sym = true
  for i = 1, n do if pads[i] ~= pads[i + n] then sym = false end end
  if not sym then return F.pad(x, torch_pads(pads, n), "constant", value or 0), {} end
  local p = {}
  for i = 1, n do p[i] = pads[i] end
  return x, p
end

function mops.Conv(node, x)
  local w = x[2]
  local n = w:dim() - 2
  if n ~= 1 and n ~= 2 then fail(node, "%d-D convolutions are not supported", n) end
  local input, p = spatial(node, x[1], n)
  local o = { stride = node.attrs.strides or 1, dilation = node.attrs.dilations or 1, groups = node.attrs.group or 1 }
  if n == 1 then
    local function first(v) return type(v) == "table" and v[1] or v end
    o.stride, o.dilation, o.padding = first(o.stride), first(o.dilation), p[1] or 0
    return F.conv1d(input, w, x[3], o)
  end
  o.padding = #p > 0 and p or 0
  return F.conv2d(input, w, x[3], o)
end

local function pool(kind)
  return function(node, x)
    local k = node.attrs.kernel_shape
    if type(k) ~= "table" or #k ~= 2 then fail(node, "needs a kernel_shape of 2 sizes (2-D pooling)") end
    local count_pad = (node.attrs.count_include_pad or 0) == 1
    -- padding that is not the same on both sides: max pools pad with -inf (it never wins), averages that count
    -- the padding with 0; an average that does not count it cannot be padded beforehand
    local input, p = spatial(node, x[1], 2, kind == "max" and -math.huge or 0)
    if #p == 0 and kind == "avg" and not count_pad then fail(node, "padding that differs between the sides with count_include_pad 0") end
    local o = { stride = node.attrs.strides or 1, padding = #p > 0 and p or 0, ceil_mode = (node.attrs.ceil_mode or 0) == 1 }
    if kind == "max" then
      o.dilation = node.attrs.dilations or 1
      return F.max_pool2d(input, k, o)
    end
    for _, d in ipairs(node.attrs.dilations or {}) do if d ~= 1 then fail(node, "dilations in an average pool are not supported") end end
    o.count_include_pad = count_pad
    return F.avg_pool2d(input, k, o)
  end
end
mops.MaxPool, mops.AveragePool = pool("max"), pool("avg")
function mops.GlobalAveragePool(_, x)
  local y = x[1]
  for d = y:dim(), 3, -1 do y = y:mean(d, true) end
  return y
end
function mops.GlobalMaxPool(_, x)
  local y = x[1]
  for d = y:dim(), 3, -1 do y = (y:max(d, true)) end
  return y
end

function mops.Pad(node, x, graph)
  local mode = ({ constant = "constant", reflect = "reflect", edge = "replicate", wrap = "circular" })[node.attrs.mode or "constant"]
  if not mode then fail(node, "mode '%s' is not one of constant, reflect, edge, wrap", tostring(node.attrs.mode)) end
  local r = x[1]:dim()
  local pads = x[2] and ints(x[2]) or node.attrs.pads
  local value = x[3] and x[3]:to("f64"):reshape(1):totable()[1] or 0
  local axes = x[4] and ints(x[4])
  local full = {}
  for i = 1, 2 * r do full[i] = 0 end
  if axes then
    for i, a in ipairs(axes) do
      local d = dim(node, a, r)
      full[d], full[d + r] = pads[i], pads[i + #axes]
    end
  else
    for i = 1, 2 * r do full[i] = pads[i] or 0 end
  end
  -- the leading dimensions without padding are left out (nnrun pads the last ones)
  local first = 1
  while first <= r and full[first] == 0 and full[first + r] == 0 do first = first + 1 end
  local n = r - first + 1
  if n == 0 then return x[1] end
  local p = {}
  for i = first, r do p[#p + 1] = full[i] end
  for i = first, r do p[#p + 1] = full[i + r] end
  return F.pad(x[1], torch_pads(p, n), mode, mode == "constant" and value or nil)
end

function mops.BatchNormalization(node, x)
  return F.batch_norm(x[1], x[4], x[5], x[2], x[3], false, 0.1, node.attrs.epsilon or 1e-5)
end

function mops.LayerNormalization(node, x)
  local r = x[1]:dim()
  local a = dim(node, node.attrs.axis or -1, r)
  local shape = {}
  for d = a, r do shape[#shape + 1] = x[1]:size(d) end
  local w, b = x[2], x[3]
  if b == nil then b = nnr.zeros(w:size(), { dtype = w.dtype, device = w.device }) end     -- (B is optional in ONNX)
  return F.layer_norm(x[1], shape, w, b, node.attrs.epsilon or 1e-5)
end

-- LSTM and GRU (one layer, forward or bidirectional), through nnrun's fused layers: ONNX's gates (LSTM
-- i o f c; GRU z r h) reordered to PyTorch's (i f g o; r z n)
local ORDER = { LSTM = { 1, 3, 4, 2 }, GRU = { 2, 1, 3 } }
local function recurrent(op)
  return function(node, x)
    local a = node.attrs
    if (a.layout or 0) ~= 0 then fail(node, "layout 1 (batch first) is not supported") end
    if a.clip or (a.input_forget or 0) ~= 0 then fail(node, "clip and input_forget are not supported") end
    if op == "GRU" and (a.linear_before_reset or 0) ~= 1 then fail(node, "linear_before_reset 0 is not supported (PyTorch's GRU has 1)") end
    if x[5] and x[5]:ne(x[1]:size(1)):any():item() then fail(node, "sequence_lens shorter than the sequence are not supported") end
    if x[8] then fail(node, "peepholes (input P) are not supported") end
    local W, R, B = x[2], x[3], x[4]
    local dirs, hidden = W:size(1), a.hidden_size or R:size(3)
    local order = ORDER[op]
    local function gates(t)
      local parts = {}
      for i, g in ipairs(order) do parts[i] = t:narrow(1, (g - 1) * hidden + 1, hidden) end
      return nnr.cat(parts, 1)
    end
    local m = (op == "LSTM" and nn.LSTM or nn.GRU)(W:size(3), hidden, { bidirectional = dirs == 2, bias = B ~= nil })
    for d = 1, dirs do
      local sfx = d == 2 and "_reverse" or ""
      m:register_parameter("weight_ih_l0" .. sfx, gates(W:select(1, d)))
      m:register_parameter("weight_hh_l0" .. sfx, gates(R:select(1, d)))
      if B then
        local n = #order * hidden
        m:register_parameter("bias_ih_l0" .. sfx, gates(B:select(1, d):narrow(1, 1, n)))
        m:register_parameter("bias_hh_l0" .. sfx, gates(B:select(1, d):narrow(1, n + 1, n)))
      end
    end
    local h0 = x[6]
    local y, state = m(x[1], op == "LSTM" and (h0 or x[7]) and { h0, x[7] } or h0)
    local T, N = x[1]:size(1), x[1]:size(2)
    local Y = y:reshape(T, N, dirs, hidden):permute(1, 3, 2, 4)
    if op == "LSTM" then return Y, state[1], state[2] end
    return Y, state
  end
end
mops.LSTM, mops.GRU = recurrent("LSTM"), recurrent("GRU")

-- nnr.onnx.load(path): the model as an nn.Module (in eval mode: a graph records inference)
function M.load(path)
  V.path("onnx.load", "path", path)
  local m = C.nnr_onnx_open(path)
  if m == nil then binding.raise() end
  m = ffi.gc(m, C.nnr_onnx_close)
  local g = json.decode(ffi.string(C.nnr_onnx_graph(m)))
  local tensors = {}
  for i = 0, C.nnr_onnx_count(m) - 1 do
    tensors[i + 1] = { name = ffi.string(C.nnr_onnx_name(m, i)), t = binding.own(C.nnr_onnx_tensor(m, i)) }
  end
  C.nnr_onnx_close(ffi.gc(m, nil))
  return Graph(g, tensors, path):eval()
end

-- nnr.onnx.export(model, example_input, path[, opts]): lua/nnr/onnx_export.lua
function M.export(...) return require("nnr.onnx_export").export(...) end

M.Graph = Graph
return M
