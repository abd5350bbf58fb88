-- nnr.quant: int8 dynamic quantization (docs/quantization.md), on the kernels of the quant
-- extension plugin (plugins/quant).
--
--   local q = nnr.quant.dynamic(model, {nn.Linear})    -- a copy; every Linear a QuantizedLinear
--   print(q(x), q:size_bytes())
--
-- Weights: symmetric int8 per output channel in [-127, 127] with an f32 scale, packed for the
-- int8 dot-product instructions with their row sums. Activations: quantized per row at run time.
-- Products summed in int32; bias in f32. Inference only: QuantizedLinear records no gradient.
local nnr = require "nnr"
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C
local nn = nnr.nn
local Module = nn.Module

local M = {}

local OP_WEIGHT, OP_PACK, OP_LINEAR = 208, 209, 210
local F32, HOST = binding.dtype_id("f32"), 0         -- device 0 is the host device
M.kernels = { best = 0, c = 1, avx2 = 2, avxvnni = 3, avx512vnni = 4 }

function M.available()
  local i = C.nnr_plugin_find("quant")
  return i >= 0 and C.nnr_plugin_loaded(i) ~= 0
end

local function need_plugin(what)
  if M.available() then return end
  local i = C.nnr_plugin_find("quant")
  error(string.format("%s: the quant plugin (libnnr_quant.so) is not loaded%s", what,
    i >= 0 and (": " .. ffi.string(C.nnr_plugin_message(i))) or " (see nnrun --plugins)"), 3)
end

local ins, outs = ffi.new("nnr_tensor*[4]"), ffi.new("nnr_tensor*[4]")
local params = ffi.new("nnr_op_params")

local function run(name, op, inputs, outputs, i0, i1, i2)
  for k = 1, #inputs do ins[k - 1] = inputs[k].p end
  for k = 1, #outputs do outs[k - 1] = outputs[k].p end
  params.struct_size = ffi.sizeof(params)
  params.i[0], params.i[1], params.i[2] = i0 or 0, i1 or 0, i2 or 0
  binding.check(C.nnr_run_op(name, op, #inputs, ins, #outputs, outs, params))
end

-- W f32 [N, K] -> int8 q [N, K] and f32 scale [N] (per output channel, symmetric)
function M.quantize_weight(w)
  need_plugin("quantize_weight")
  w = w:detach():to("cpu", "f32"):contiguous()
  local q = nnr.empty(w:size(1), w:size(2), { dtype = "i8" })
  local scale = nnr.empty(w:size(1))
  run("quantize", OP_WEIGHT, { w }, { q, scale })
  return q, scale
end

-- q i8 [N, K] -> packed i8 [ceil(N/16), ceil(K/4), 16, 4] and row sums i32 [N]
local function pack(q)
  local N, K = q:size(1), q:size(2)
  local packed = nnr.empty(math.ceil(N / 16), math.ceil(K / 4), 16, 4, { dtype = "i8" })
  local wsum = nnr.empty(N, { dtype = "i32" })
  run("quantize", OP_PACK, { q:contiguous() }, { packed, wsum })
  return packed, wsum
end

-- the int8 linear on quantized weights: x [M, K] f32 -> [M, N] f32
local y_sizes = ffi.new("int64_t[2]")
function M.linear(x, packed, meta, relu, kernel)
  y_sizes[0], y_sizes[1] = C.nnr_tensor_size(x.p, 0), C.nnr_tensor_size(meta.p, 1)
  local y = binding.own(C.nnr_empty(F32, 2, y_sizes, HOST))
  ins[0], ins[1], ins[2], outs[0] = x.p, packed.p, meta.p, y.p        -- run()'s work without its tables: 17 calls a token
  params.struct_size = ffi.sizeof(params)
  params.i[0], params.i[1], params.i[2] = relu and 1 or 0, C.nnr_tensor_size(x.p, 1), kernel or 0
  binding.check(C.nnr_run_op("quantized linear", OP_LINEAR, 3, ins, 1, outs, params))
  return y
end

-- QuantizedLinear ------------------------------------------------------------------------------

local QuantizedLinear = Module:extend("QuantizedLinear")
M.QuantizedLinear = QuantizedLinear

-- from a Linear (its weight quantized now), or from sizes (then load_state_dict fills it)
function QuantizedLinear:__init(in_features, out_features, opts)
  Module.__init(self)
  local check = require "nnr.check"
  if type(in_features) == "table" and opts == nil then opts = out_features end   -- QuantizedLinear(linear[, opts])
  opts = check.options("QuantizedLinear", opts, { kernel = true, bias = true })
  if type(in_features) == "table" then         -- a Linear
    local lin = in_features
    self.in_features, self.out_features = lin.in_features, lin.out_features
    local q, scale = M.quantize_weight(lin.weight)
    self:register_buffer("weight", q)
    self:register_buffer("scale", scale)
    if lin.bias then self:register_buffer("bias", lin.bias:detach():to("cpu", "f32"):clone()) end
  else
    self.in_features = check.integer("QuantizedLinear", "in_features", in_features, 1)
    self.out_features = check.integer("QuantizedLinear", "out_features", out_features, 1)
    self:register_buffer("weight", nnr.zeros(out_features, in_features, { dtype = "i8" }))
    self:register_buffer("scale", nnr.ones(out_features))
    if opts.bias ~= false then self:register_buffer("bias", nnr.zeros(out_features)) end
  end
  self.kernel = M.kernels[opts.kernel or "best"] or error("QuantizedLinear: unknown kernel '" .. tostring(opts.kernel) ..
    "' (best, c, avx2, avxvnni, avx512vnni)", 0)
  self:after_load()
end

-- packs the int8 weights with their row sums into the kernels' layout (after quantizing or loading)
function QuantizedLinear:after_load()
  local packed, wsum = pack(self.weight)
  rawset(self, "_packed", packed)
  local N = self.out_features
  local bias = self.bias or nnr.zeros(N)
  rawset(self, "_meta", nnr.cat({ self.scale:view(1, N), wsum:float():view(1, N), bias:float():view(1, N) }, 1):contiguous())
end

-- a contiguous f32 input on the cpu, of any rank: the rows straight to the kernel and the output shaped
-- in C (a decoding step makes 17 of these calls a token; forward's checks and shape tables cost as much
-- as the product), or nil for the general path
local dims, rows_k = ffi.new("int64_t[8]"), ffi.new("int64_t[2]")
local function run_contiguous(self, x, relu)
  local p = x.p
  local nd = C.nnr_tensor_ndim(p)
  local K, N = self.in_features, self.out_features
  if nd < 1 or nd > 8 or C.nnr_tensor_dtype(p) ~= F32 or C.nnr_tensor_is_contiguous(p) == 0 or C.nnr_tensor_device(p) ~= HOST
     or C.nnr_tensor_size(p, nd - 1) ~= K then
    return nil
  end
  local rows = 1
  for d = 0, nd - 2 do dims[d] = C.nnr_tensor_size(p, d); rows = rows * dims[d] end
  rows_k[0], rows_k[1] = rows, K
  local x2 = nd == 2 and x or binding.own(C.nnr_view(p, 2, rows_k))
  local y = M.linear(x2, self._packed, self._meta, relu, self.kernel)
  if nd == 2 then return y end
  dims[nd - 1] = N
  return binding.own(C.nnr_view(y.p, nd, dims))
end

function QuantizedLinear:_run(x, relu)
  if nnr.is_tensor(x) then
    local y = run_contiguous(self, x, relu)
    if y then return y end
  end
  local K, nd = self.in_features, x:dim()
  if nd < 1 or x:size(nd) ~= K then
    error(string.format("QuantizedLinear(%d -> %d): input of shape %s, expected [..., %d]", self.in_features, self.out_features,
      nnr.shape_str(x:size()), self.in_features), 0)
  end
  if x.device ~= "cpu" then
    error(string.format("QuantizedLinear: input on %s; the int8 kernels run on the cpu (move the model and input there)", x.device), 0)
  end
  -- the common case (a contiguous f32 matrix) goes straight to the kernel: at batch 1 the
  -- conversions would cost more than the int8 product itself
  local x2 = x
  if x2.dtype ~= "f32" then x2 = x2:to("f32") end
  if not x2:is_contiguous() then x2 = x2:contiguous() end
  if nd ~= 2 then x2 = x2:view(-1, K) end
  local y = M.linear(x2, self._packed, self._meta, relu, self.kernel)
  if nd ~= 2 then
    local shape = x:size()
    shape[nd] = self.out_features
    y = y:view(shape)
  end
  return y
end

function QuantizedLinear:forward(x) return self:_run(x, false) end
-- a ReLU after it runs in the same kernel (i[0] = 1 of QUANT_LINEAR)
function QuantizedLinear:fuse_next(next_module)
  if self.forward ~= QuantizedLinear.forward or next_module:fusable_activation() ~= "relu" then return nil end
  return function(x) return self:_run(x, true) end
end
function QuantizedLinear:num_weights() return self.weight:numel() + (self.bias and self.bias:numel() or 0) end

function QuantizedLinear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s, int8 per channel", self.in_features, self.out_features,
    tostring(self.bias ~= nil))
end

-- dynamic quantization of a model ------------------------------------------------------------

-- a deep copy of a module tree (tensors cloned)
function M.copy(model) return nn.utils.deep_copy(model) end

local function type_name(cls)
  for name, c in pairs(nn) do if c == cls then return "nn." .. name end end
  return tostring(cls.__name or cls)
end

-- a MultiheadAttention's packed input projection (in_proj_weight [3E, E], in_proj_bias) as one
-- QuantizedLinear, in_proj_int8, which the module then runs in place of the f32 weight (out_proj is a
-- Linear and goes as the others do); separate q/k/v weights (kdim or vdim other than E) stay f32
local function quantize_attention(mha, path, opts)
  local w = rawget(mha, "in_proj_weight")
  if not w then return end
  local ok, res = pcall(QuantizedLinear, { in_features = w:size(2), out_features = w:size(1), weight = w, bias = rawget(mha, "in_proj_bias") },
    { kernel = opts.kernel })
  if not ok then error(string.format("nnr.quant.dynamic: the input projection of '%s': %s", path, tostring(res)), 0) end
  res.training = mha.training
  mha:add_module("in_proj_int8", res)
  -- the f32 weights go: the int8 copy replaces them (and the state dict holds it instead)
  local kept = {}
  for _, n in ipairs(mha._params) do if n ~= "in_proj_weight" and n ~= "in_proj_bias" then kept[#kept + 1] = n end end
  rawset(mha, "_params", kept)
  rawset(mha, "in_proj_weight", nil)
  rawset(mha, "in_proj_bias", nil)
end

-- nnr.quant.dynamic(model[, types = {nn.Linear}][, opts]) -> a quantized copy
--   opts.per_channel (true; per-tensor scales are not offered), opts.kernel ("best", "c", "avx2",
--   "avxvnni", "avx512vnni": force one, for tests), opts.inplace (quantize model itself), opts.quiet
function M.dynamic(model, types, opts)
  need_plugin("nnr.quant.dynamic")
  if type(types) == "table" and getmetatable(types) == nil and types[1] == nil and next(types) ~= nil then
    opts, types = types, nil            -- dynamic(model, opts)
  end
  types, opts = types or { nn.Linear }, opts or {}
  for k in pairs(opts) do
    if not ({ per_channel = 1, kernel = 1, inplace = 1, quiet = 1 })[k] then error("nnr.quant.dynamic: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if opts.per_channel == false then
    error("nnr.quant.dynamic: per_channel = false is not offered: weights are quantized per output channel", 2)
  end
  if opts.kernel ~= nil and not M.kernels[opts.kernel] then
    error("nnr.quant.dynamic: unknown kernel '" .. tostring(opts.kernel) .. "' (best, c, avx2, avxvnni, avx512vnni)", 0)
  end
  local want_linear = false
  for _, t in ipairs(types) do
    if t == nn.Linear then want_linear = true
    elseif not opts.quiet then
      io.stderr:write(string.format("nnr.quant.dynamic: %s is not supported (only nn.Linear); those modules stay f32\n", type_name(t)))
    end
  end
  local q = opts.inplace and model or M.copy(model)
  if not want_linear then return q end
  local function walk(m, prefix)
    for _, name in ipairs(m._children) do
      local child = m[name]
      local path = prefix == "" and name or (prefix .. "." .. name)
      if getmetatable(child) == nn.Linear then
        local ok, res = pcall(QuantizedLinear, child, { kernel = opts.kernel })
        if not ok then
          error(string.format("nnr.quant.dynamic: layer '%s' (Linear %d -> %d): %s", path, child.in_features, child.out_features,
            tostring(res):gsub("^quantize: ", "")), 0)
        end
        res.training = child.training
        m:add_module(name, res)
      else
        if getmetatable(child) == nn.MultiheadAttention then quantize_attention(child, path, opts) end
        walk(child, path)
      end
    end
  end
  if getmetatable(q) == nn.Linear then
    return QuantizedLinear(q, { kernel = opts.kernel })
  end
  if getmetatable(q) == nn.MultiheadAttention then quantize_attention(q, "", opts) end
  walk(q, "")
  return q
end

return M
