-- The backend conformance kit (nnrun --check-backend lib.so [--ops PATTERN]), as ggml's
-- test-backend-ops: every op of the table, one backend call at a time, on each device of the
-- backend and on the host backend (the cpu) from the same inputs, compared.
--
-- A row is one op, one dtype and one layout, called through nnr_run_op: a failure names the op at
-- fault, not a layer that used it. The row says how it ran: "native" when the backend's supports()
-- took that very call, "fallback" when the core ran it elsewhere (the host backend, or an extension
-- on host memory), "skip" when nothing could run it. Inputs are random, and for elementwise ops and
-- reductions also hold inf, -inf, nan, -0 and denormals; NaNs must fall where the reference's do.
-- When the backend under test is the host backend itself, the reference computes in f64.
--
-- Rows stream as they run, as protocol lines for nnrun's supervisor (core/host/conformance.c), which
-- runs the kit in a child process: a kernel that crashes yields a FAIL row naming its op, and the
-- kit goes on from the next row.
local nnr = require "nnr"
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C

local M = {}

local FLOATS = { "f32", "f64", "f16", "bf16" }
local INTS = { "i32", "i64" }
local TOL = { f32 = 1e-5, f64 = 1e-12, f16 = 2e-3, bf16 = 1.6e-2 }
local SPECIAL = { f32 = 1e-40, f64 = 5e-320, f16 = 3e-7, bf16 = 1e-40 }   -- a denormal of each dtype

local OP = setmetatable({}, { __index = function(_, k) return C["NNR_OP_" .. k] end })

local function is_float(dt) return dt == "f32" or dt == "f64" or dt == "f16" or dt == "bf16" end

-- a host tensor of shape with uniform values in [lo, hi) in dtype, from the case's own seed
local function uniform(dt, lo, hi, shape)
  return nnr.rand(unpack(shape)):mul_(hi - lo):add_(lo):to(dt)    -- integers: truncated toward zero
end

-- the same with inf, -inf, nan, -0 and a denormal at the first positions (floats only)
local function with_specials(dt, lo, hi, shape)
  local t = uniform("f64", lo, hi, shape)
  if is_float(dt) then
    local flat = t:view(-1)
    local values = { 1 / 0, -1 / 0, 0 / 0, -0.0, SPECIAL[dt], -SPECIAL[dt] }
    nnr.no_grad(function() for i, v in ipairs(values) do if i <= flat:numel() then flat[i] = v end end end)
  end
  return t:to(dt)
end

-- ---------------------------------------------------------------- the cases
-- Each case: op (id), name (the op's), dtype (the row's), variant (a word), and
-- build(dev) -> {ins = {...}, outs = {...}, params = {f = {...}, i = {...}}, expect_error = bool}
-- with tensors on dev. build runs under the case's seed, so both devices get the same values.

local cases = {}
local function case(op, dtype, variant, build) cases[#cases + 1] = { op = op, dtype = dtype, variant = variant, build = build } end
local function empty(shape, dt, dev) return nnr.empty(shape, { dtype = dt, device = dev }) end

local function unary_cases()
  local math_ops = { "EXP", "LOG", "SQRT", "TANH", "SIGMOID", "SIN", "COS", "RECIPROCAL", "ERF", "GELU" }
  local all = { "NEG", "ABS", "RELU", "SIGN" }
  local function add(op, dt, out_dt)
    for _, v in ipairs { "contiguous", "strided", "specials" } do
      case(OP[op], dt, v, function(dev)
        local x = (v == "specials" and with_specials or uniform)(dt, -3, 3, v == "strided" and { 9, 7 } or { 7, 9 }):to(dev)
        if v == "strided" then x = x:t() end
        return { ins = { x }, outs = { empty(x:size(), out_dt or dt, dev) } }
      end)
    end
  end
  for _, op in ipairs(math_ops) do for _, dt in ipairs(FLOATS) do add(op, dt) end end
  for _, op in ipairs(all) do
    for _, dt in ipairs(FLOATS) do add(op, dt) end
    for _, dt in ipairs(INTS) do add(op, dt) end
  end
  for _, dt in ipairs { "f32", "i64", "bool" } do add("LOGICAL_NOT", dt, "bool") end
end

local function binary_cases()
  local arith = { "ADD", "SUB", "MUL", "DIV", "POW", "MAXIMUM", "MINIMUM" }
  local compare = { "EQ", "NE", "LT", "LE", "GT", "GE", "LOGICAL_AND", "LOGICAL_OR" }
  local function add(op, dt, out_dt)
    local lo, hi = -3, 3
    if op == "POW" then lo, hi = is_float(dt) and 0.5 or 0, 3 end
    case(OP[op], dt, "broadcast", function(dev)
      local a, b = uniform(dt, lo, hi, { 5, 1, 6 }):to(dev), uniform(dt, lo, hi, { 4, 6 }):to(dev)
      return { ins = { a:expand(5, 4, 6), b:expand(5, 4, 6) }, outs = { empty({ 5, 4, 6 }, out_dt or dt, dev) } }
    end)
    if is_float(dt) then
      case(OP[op], dt, "specials", function(dev)
        local a, b = with_specials(dt, lo, hi, { 6, 7 }):to(dev), uniform(dt, lo, hi, { 6, 7 }):to(dev)
        return { ins = { b, a }, outs = { empty({ 6, 7 }, out_dt or dt, dev) } }
      end)
    end
    for first = 0, 1 do
      case(OP[op], dt, first == 1 and "scalar first" or "scalar", function(dev)
        local a = uniform(dt, lo, hi, { 33 }):to(dev)
        return { ins = { a }, outs = { empty({ 33 }, out_dt or dt, dev) }, params = { f = { 2 }, i = { first } } }
      end)
    end
  end
  for _, op in ipairs(arith) do
    for _, dt in ipairs(FLOATS) do add(op, dt) end
    if op ~= "DIV" then for _, dt in ipairs(INTS) do add(op, dt) end end
  end
  for _, op in ipairs(compare) do
    for _, dt in ipairs(FLOATS) do add(op, dt, "bool") end
    add(op, "i64", "bool")
  end
  for _, dt in ipairs(FLOATS) do
    case(OP.RELU_GRAD, dt, "contiguous", function(dev)
      local g, x = uniform(dt, -2, 2, { 6, 9 }):to(dev), with_specials(dt, -2, 2, { 6, 9 }):to(dev)
      return { ins = { g, x }, outs = { empty({ 6, 9 }, dt, dev) } }
    end)
    case(OP.GELU_GRAD, dt, "contiguous", function(dev)
      local g, x = uniform(dt, -2, 2, { 6, 9 }):to(dev), uniform(dt, -4, 4, { 6, 9 }):to(dev)
      return { ins = { g, x }, outs = { empty({ 6, 9 }, dt, dev) } }
    end)
  end
end

-- ACTIVATION and ACTIVATION_GRAD (ABI 1.9): each kind with parameters off their defaults, specials in x
local function activation_cases()
  local kinds = { { "silu", C.NNR_ACT_SILU, 0, 0 }, { "softplus", C.NNR_ACT_SOFTPLUS, 1.5, 2 }, { "elu", C.NNR_ACT_ELU, 0.7, 1.2 },
                  { "leaky_relu", C.NNR_ACT_LEAKY_RELU, 0.1, 0 }, { "mish", C.NNR_ACT_MISH, 0, 0 }, { "hardswish", C.NNR_ACT_HARDSWISH, 0, 0 } }
  for _, k in ipairs(kinds) do
    local params = { f = { k[3], k[4] }, i = { tonumber(k[2]) } }
    for _, dt in ipairs(FLOATS) do
      case(OP.ACTIVATION, dt, k[1] .. ", specials", function(dev)
        local x = with_specials(dt, -5, 5, { 7, 9 }):to(dev)
        return { ins = { x }, outs = { empty({ 7, 9 }, dt, dev) }, params = params }
      end)
      case(OP.ACTIVATION, dt, k[1] .. ", strided", function(dev)
        local x = uniform(dt, -5, 5, { 9, 7 }):to(dev):t()
        return { ins = { x }, outs = { empty({ 7, 9 }, dt, dev) }, params = params }
      end)
      case(OP.ACTIVATION_GRAD, dt, k[1], function(dev)
        local g, x = uniform(dt, -2, 2, { 6, 9 }):to(dev), uniform(dt, -5, 5, { 6, 9 }):to(dev)
        return { ins = { g, x }, outs = { empty({ 6, 9 }, dt, dev) }, params = params }
      end)
      -- a sum's backward gives an expanded g (stride 0); x strided, with specials
      case(OP.ACTIVATION_GRAD, dt, k[1] .. ", expanded g, strided x", function(dev)
        local g = uniform(dt, -2, 2, { 1, 9 }):to(dev):expand(7, 9)
        local x = with_specials(dt, -5, 5, { 9, 7 }):to(dev):t()
        return { ins = { g, x }, outs = { empty({ 7, 9 }, dt, dev) }, params = params }
      end)
    end
  end
end

local function select_cases()
  for _, dt in ipairs { "f32", "f64", "f16", "bf16", "i64" } do
    for _, v in ipairs { "tensors", "a scalar", "b scalar" } do
      case(OP.WHERE, dt, v, function(dev)
        local c = uniform("f32", -1, 1, { 6, 7 }):gt(0):to(dev)
        local a, b = uniform(dt, -2, 2, { 6, 7 }):to(dev), uniform(dt, -2, 2, { 7 }):to(dev):expand(6, 7)
        local ins = { c }
        if v ~= "a scalar" then ins[#ins + 1] = a end
        if v ~= "b scalar" then ins[#ins + 1] = b end
        local flags = (v == "a scalar" and 1 or 0) + (v == "b scalar" and 2 or 0)
        return { ins = ins, outs = { empty({ 6, 7 }, dt, dev) }, params = { f = { 3, -4 }, i = { flags } } }
      end)
    end
    for flags = 1, 3 do
      case(OP.CLAMP, dt, ({ "min", "max", "min and max" })[flags], function(dev)
        local x = (is_float(dt) and with_specials or uniform)(dt, -3, 3, { 50 }):to(dev)
        return { ins = { x }, outs = { empty({ 50 }, dt, dev) }, params = { f = { -1, 1.5 }, i = { flags } } }
      end)
    end
  end
end

local function copy_fill_cases()
  local all = { "f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool" }
  for _, from in ipairs(all) do
    for _, to in ipairs(all) do
      case(OP.COPY, from, "to " .. to, function(dev)
        local x = (is_float(from) and with_specials or uniform)(from, -50, 200, { 40 }):to(dev)
        return { ins = { x }, outs = { empty({ 40 }, to, dev) } }
      end)
    end
    case(OP.COPY, from, "strided", function(dev)
      local x = uniform(from, -5, 5, { 6, 9 }):to(dev):t()
      return { ins = { x }, outs = { empty({ 9, 6 }, from, dev) } }
    end)
    case(OP.FILL, from, "contiguous", function(dev)
      return { ins = {}, outs = { empty({ 3, 5 }, from, dev) }, params = { f = { is_float(from) and 2.5 or 3 } } }
    end)
  end
  for _, dt in ipairs { "f32", "f64", "i32", "i64" } do
    case(OP.ARANGE, dt, "contiguous", function(dev)
      return { ins = {}, outs = { empty({ 20 }, dt, dev) }, params = { f = { is_float(dt) and 0.5 or -4, 3 } } }
    end)
  end
end

local function random_cases()
  for _, dt in ipairs { "f32", "f64" } do
    for _, op in ipairs { "RAND_UNIFORM", "RAND_NORMAL" } do
      case(OP[op], dt, "contiguous", function(dev)
        return { ins = {}, outs = { empty({ 257 }, dt, dev) }, params = { f = { -1, 2 }, i = { 1234, 16 } } }
      end)
    end
  end
  for _, dt in ipairs { "i32", "i64" } do
    case(OP.RAND_INT, dt, "contiguous", function(dev)
      return { ins = {}, outs = { empty({ 257 }, dt, dev) }, params = { f = { -5, 5 }, i = { 99, 4 } } }
    end)
  end
end

-- input [4, 5, 6] viewed with the kept dims first and the last `reduced` dims reduced
local function reduce_cases()
  local function add(op, dt, out_dt, reduced, specials)
    local out_shape = ({ { 4, 5 }, { 4 }, {} })[reduced]
    case(OP[op], dt, string.format("%d dim%s%s", reduced, reduced > 1 and "s" or "", specials and ", specials" or ""), function(dev)
      local x = (specials and with_specials or uniform)(dt, op == "PROD" and 0.5 or -2, op == "PROD" and 1.5 or 2, { 4, 5, 6 }):to(dev)
      local var = op == "VAR" and { reduced, 1, reduced == 2 and 1 or 0 } or { reduced, 0, 0 }
      return { ins = { x }, outs = { empty(out_shape, out_dt or dt, dev) }, params = { i = var } }
    end)
  end
  for _, op in ipairs { "SUM", "PROD", "MAX", "MIN", "ARGMAX", "ARGMIN", "MEAN", "VAR" } do
    local arg = op == "ARGMAX" or op == "ARGMIN"
    for reduced = 1, 3 do
      for _, dt in ipairs(FLOATS) do add(op, dt, arg and "i64" or nil, reduced, false) end
      if op ~= "MEAN" and op ~= "VAR" then
        -- integer inputs: SUM and PROD come as i64 (the ABI); MAX, MIN and the args keep the dtype
        for _, dt in ipairs((op == "SUM" or op == "PROD") and { "i64" } or { "i32", "i64", "u8" }) do
          add(op, dt, arg and "i64" or nil, reduced, false)
        end
      end
    end
    for _, dt in ipairs { "f32", "f64" } do add(op, dt, arg and "i64" or nil, 1, true) end
  end
  for _, op in ipairs { "SOFTMAX", "LOG_SOFTMAX" } do
    for _, dt in ipairs(FLOATS) do
      case(OP[op], dt, "last dim", function(dev)
        local x = uniform(dt, -3, 3, { 5, 7 }):to(dev)
        return { ins = { x }, outs = { empty({ 5, 7 }, dt, dev) } }
      end)
    end
  end
end

local keyed_calls = 0
local function matmul_cases()
  for _, dt in ipairs { "f32", "f64", "f16", "bf16", "i32", "i64" } do
    case(OP.MATMUL, dt, "batched", function(dev)
      local a, b = uniform(dt, -3, 3, { 3, 17, 9 }):to(dev), uniform(dt, -3, 3, { 9, 5 }):to(dev)
      return { ins = { a, b:expand(3, 9, 5) }, outs = { empty({ 3, 17, 5 }, dt, dev) } }
    end)
    case(OP.MATMUL, dt, "strided", function(dev)
      local a, b = uniform(dt, -3, 3, { 2, 7, 13 }):to(dev), uniform(dt, -3, 3, { 7, 4 }):to(dev)
      return { ins = { a:transpose(2, 3), b:expand(2, 7, 4) }, outs = { empty({ 2, 13, 4 }, dt, dev) } }
    end)
  end
  for _, dt in ipairs(FLOATS) do
    for _, v in ipairs { "bias", "no bias", "bias, relu" } do
      case(OP.LINEAR, dt, v, function(dev)
        local x, w, b = uniform(dt, -1, 1, { 6, 9 }):to(dev), uniform(dt, -1, 1, { 5, 9 }):to(dev), uniform(dt, -1, 1, { 5 }):to(dev)
        return { ins = v == "no bias" and { x, w } or { x, w, b }, outs = { empty({ 6, 5 }, dt, dev) },
                 params = { i = { v == "bias, relu" and 1 or 0 } } }
      end)
    end
    -- ABI 1.6: a key for the weight's values (i[1], i[2]) changes nothing in the result. Every call
    -- makes new values, so a new key: far above the storage ids the core hands out (from 1 up)
    case(OP.LINEAR, dt, "keyed weight", function(dev)
      local x, w, b = uniform(dt, -1, 1, { 7, 40 }):to(dev), uniform(dt, -1, 1, { 70, 40 }):to(dev), uniform(dt, -1, 1, { 70 }):to(dev)
      keyed_calls = keyed_calls + 1
      return { ins = { x, w, b }, outs = { empty({ 7, 70 }, dt, dev) }, params = { i = { 0, 2 ^ 52 + keyed_calls, 0 } } }
    end)
  end
end

local function index_cases()
  local function idx(list, dev) return nnr.tensor(list, { dtype = "i64" }):to(dev) end
  for _, dt in ipairs { "f32", "f64", "i64" } do
    case(OP.GATHER, dt, "dim 2", function(dev)
      return { ins = { uniform(dt, -3, 3, { 3, 4 }):to(dev), idx({ { 3, 0 }, { 1, 1 }, { 0, 2 } }, dev) }, outs = { empty({ 3, 2 }, dt, dev) },
               params = { i = { 1 } } }
    end)
    case(OP.GATHER, dt, "bad index", function(dev)
      return { ins = { uniform(dt, -3, 3, { 3, 4 }):to(dev), idx({ { 3, 0 }, { 1, 4 }, { 0, 2 } }, dev) }, outs = { empty({ 3, 2 }, dt, dev) },
               params = { i = { 1 } }, expect_error = true }
    end)
    case(OP.INDEX_SELECT, dt, "dim 2", function(dev)
      return { ins = { uniform(dt, -3, 3, { 4, 5 }):to(dev), idx({ 4, 0, 2 }, dev) }, outs = { empty({ 4, 3 }, dt, dev) }, params = { i = { 1 } } }
    end)
    case(OP.INDEX_SELECT, dt, "bad index", function(dev)
      return { ins = { uniform(dt, -3, 3, { 4, 5 }):to(dev), idx({ 4, -1, 2 }, dev) }, outs = { empty({ 4, 3 }, dt, dev) },
               params = { i = { 1 } }, expect_error = true }
    end)
  end
  for _, dt in ipairs { "f32", "f64" } do
    case(OP.SCATTER_ADD, dt, "dim 1", function(dev)
      return { ins = { idx({ { 0, 1, 0 }, { 2, 0, 1 } }, dev), uniform(dt, -1, 1, { 2, 3 }):to(dev) }, outs = { uniform(dt, -1, 1, { 3, 3 }):to(dev) },
               params = { i = { 0 } } }
    end)
    case(OP.SCATTER_ADD, dt, "bad index", function(dev)
      return { ins = { idx({ { 0, 1, 0 }, { 2, 7, 1 } }, dev), uniform(dt, -1, 1, { 2, 3 }):to(dev) }, outs = { uniform(dt, -1, 1, { 3, 3 }):to(dev) },
               params = { i = { 0 } }, expect_error = true }
    end)
    case(OP.INDEX_ADD, dt, "dim 1", function(dev)
      return { ins = { idx({ 1, 3, 1 }, dev), uniform(dt, -1, 1, { 3, 3 }):to(dev) }, outs = { uniform(dt, -1, 1, { 5, 3 }):to(dev) },
               params = { i = { 0 } } }
    end)
  end
end

local function conv_cases()
  -- x [2, 4, 7, 6], w [6, 2, 3, 3] in 2 groups, stride 2, padding 1 -> y [2, 6, 4, 3]; dilated: x [2, 3, 9, 8], w [4, 3, 3, 2];
  -- and two single images
  local geoms = {
    grouped = { x = { 2, 4, 7, 6 }, w = { 6, 2, 3, 3 }, y = { 2, 6, 4, 3 }, i = { 2, 2, 1, 1, 1, 1, 2 } },
    dilated = { x = { 2, 3, 9, 8 }, w = { 4, 3, 3, 2 }, y = { 2, 4, 9, 8 }, i = { 1, 1, 2, 1, 2, 1, 1 } },
    -- one image: a backend with threads may split it by rows (the first) or by output channels (more
    -- weight than activations: the second)
    ["one image"] = { x = { 1, 5, 11, 9 }, w = { 12, 5, 3, 3 }, y = { 1, 12, 11, 9 }, i = { 1, 1, 1, 1, 1, 1, 1 } },
    ["one image, wide"] = { x = { 1, 64, 4, 5 }, w = { 40, 64, 3, 3 }, y = { 1, 40, 4, 5 }, i = { 1, 1, 1, 1, 1, 1, 1 } },
  }
  for _, dt in ipairs(FLOATS) do
    for name, g in pairs(geoms) do
      for relu = 0, 1 do
        local p = { unpack(g.i) }
        p[8] = relu
        case(OP.CONV2D, dt, name .. (relu == 1 and ", relu" or ""), function(dev)
          local x, w, b = uniform(dt, -1, 1, g.x):to(dev), uniform(dt, -1, 1, g.w):to(dev), uniform(dt, -1, 1, { g.w[1] }):to(dev)
          return { ins = { x, w, b }, outs = { empty(g.y, dt, dev) }, params = { i = p } }
        end)
        -- ABI 1.8: a key for the weight's values (f[0], f[1]) changes nothing in the result (a new key
        -- each call, as for LINEAR's)
        if g.i[7] == 1 then
          case(OP.CONV2D, dt, name .. (relu == 1 and ", relu" or "") .. ", keyed weight", function(dev)
            local x, w, b = uniform(dt, -1, 1, g.x):to(dev), uniform(dt, -1, 1, g.w):to(dev), uniform(dt, -1, 1, { g.w[1] }):to(dev)
            keyed_calls = keyed_calls + 1
            return { ins = { x, w, b }, outs = { empty(g.y, dt, dev) }, params = { i = p, f = { 2 ^ 52 + keyed_calls, 0 } } }
          end)
        end
        case(OP.CONV2D_GRAD_INPUT, dt, name .. (relu == 1 and ", mask" or ""), function(dev)
          local gy, w, y = uniform(dt, -1, 1, g.y):to(dev), uniform(dt, -1, 1, g.w):to(dev), uniform(dt, -1, 1, g.y):to(dev)
          return { ins = relu == 1 and { gy, w, y } or { gy, w }, outs = { empty(g.x, dt, dev) }, params = { i = p } }
        end)
        for with_bias = 0, 1 do
          case(OP.CONV2D_GRAD_WEIGHT, dt, name .. (relu == 1 and ", mask" or "") .. (with_bias == 1 and ", bias" or ""), function(dev)
            local x, gy, y = uniform(dt, -1, 1, g.x):to(dev), uniform(dt, -1, 1, g.y):to(dev), uniform(dt, -1, 1, g.y):to(dev)
            local outs = { empty(g.w, dt, dev) }
            if with_bias == 1 then outs[2] = empty({ g.w[1] }, dt, dev) end
            return { ins = relu == 1 and { x, gy, y } or { x, gy }, outs = outs, params = { i = p } }
          end)
        end
      end
    end
  end
end

local function pool_cases()
  local max_p = { 3, 3, 2, 2, 1, 1, 1, 1 }       -- kernel 3, stride 2, padding 1: [2, 3, 9, 8] -> [2, 3, 5, 4]
  for _, dt in ipairs(FLOATS) do
    for _, v in ipairs { "argmax", "no argmax" } do
      case(OP.MAXPOOL2D, dt, v, function(dev)
        local x = uniform(dt, -2, 2, { 2, 3, 9, 8 }):to(dev)
        local outs = { empty({ 2, 3, 5, 4 }, dt, dev) }
        if v == "argmax" then outs[2] = empty({ 2, 3, 5, 4 }, "i64", dev) end
        return { ins = { x }, outs = outs, params = { i = max_p } }
      end)
    end
    case(OP.MAXPOOL2D_BACKWARD, dt, "contiguous", function(dev)
      -- the argmax of the host backend's forward on the same input (in f64: the same argmax, exactly,
      -- and a forward every host backend has)
      local x = uniform(dt, -2, 2, { 2, 3, 9, 8 }):double()
      local y, arg = empty({ 2, 3, 5, 4 }, "f64", "cpu"), empty({ 2, 3, 5, 4 }, "i64", "cpu")
      local ok, err = M._run_op("max_pool2d", OP.MAXPOOL2D, { x }, { y, arg }, { i = max_p })
      if not ok then error("the host backend's max_pool2d (for the argmax): " .. err, 0) end
      return { ins = { uniform(dt, -1, 1, { 2, 3, 5, 4 }):to(dev), arg:to(dev) }, outs = { empty({ 2, 3, 9, 8 }, dt, dev) }, params = { i = max_p } }
    end)
    case(OP.MAXPOOL2D_BACKWARD, dt, "bad argmax", function(dev)
      local arg = nnr.full({ 2, 3, 5, 4 }, 0, { dtype = "i64" })
      arg[{ 2, 3, 5, 4 }] = 1000
      return { ins = { uniform(dt, -1, 1, { 2, 3, 5, 4 }):to(dev), arg:to(dev) }, outs = { empty({ 2, 3, 9, 8 }, dt, dev) }, params = { i = max_p },
               expect_error = true }
    end)
    for _, include in ipairs { 0, 1 } do
      local p = { 3, 3, 2, 2, 1, 1, include }
      case(OP.AVGPOOL2D, dt, include == 1 and "count_include_pad" or "contiguous", function(dev)
        return { ins = { uniform(dt, -2, 2, { 2, 3, 9, 8 }):to(dev) }, outs = { empty({ 2, 3, 5, 4 }, dt, dev) }, params = { i = p } }
      end)
      case(OP.AVGPOOL2D_BACKWARD, dt, include == 1 and "count_include_pad" or "contiguous", function(dev)
        return { ins = { uniform(dt, -2, 2, { 2, 3, 5, 4 }):to(dev) }, outs = { empty({ 2, 3, 9, 8 }, dt, dev) }, params = { i = p } }
      end)
    end
    case(OP.ADAPTIVE_AVGPOOL2D, dt, "9x7 to 4x3", function(dev)
      return { ins = { uniform(dt, -2, 2, { 2, 3, 9, 7 }):to(dev) }, outs = { empty({ 2, 3, 4, 3 }, dt, dev) } }
    end)
    case(OP.ADAPTIVE_AVGPOOL2D_BACKWARD, dt, "4x3 to 9x7", function(dev)
      return { ins = { uniform(dt, -2, 2, { 2, 3, 4, 3 }):to(dev) }, outs = { empty({ 2, 3, 9, 7 }, dt, dev) } }
    end)
  end
end

local function norm_cases()
  for _, dt in ipairs(FLOATS) do
    case(OP.BN_STATS, dt, "contiguous", function(dev)
      return { ins = { uniform(dt, -2, 2, { 4, 3, 5, 5 }):to(dev) }, outs = { empty({ 3 }, dt, dev), empty({ 3 }, dt, dev) }, params = { f = { 1e-5 } } }
    end)
    case(OP.BN_AFFINE, dt, "contiguous", function(dev)
      return { ins = { uniform(dt, -2, 2, { 4, 3, 5, 5 }):to(dev), uniform(dt, -1, 1, { 2, 3 }):to(dev) }, outs = { empty({ 4, 3, 5, 5 }, dt, dev) } }
    end)
    case(OP.BN_BACKWARD_REDUCE, dt, "contiguous", function(dev)
      return { ins = { uniform(dt, -1, 1, { 4, 3, 5, 5 }):to(dev), uniform(dt, -2, 2, { 4, 3, 5, 5 }):to(dev), uniform(dt, 0.5, 1.5, { 2, 3 }):to(dev) },
               outs = { empty({ 2, 3 }, dt, dev) } }
    end)
    case(OP.BN_BACKWARD_APPLY, dt, "contiguous", function(dev)
      return { ins = { uniform(dt, -1, 1, { 4, 3, 5, 5 }):to(dev), uniform(dt, -2, 2, { 4, 3, 5, 5 }):to(dev), uniform(dt, -1, 1, { 3, 3 }):to(dev) },
               outs = { empty({ 4, 3, 5, 5 }, dt, dev) } }
    end)
  end
end

local function optim_cases()
  for _, dt in ipairs(FLOATS) do
    local function state(lo, hi, dev) return uniform(dt, lo, hi, { 37 }):to(dev) end
    case(OP.SGD_STEP, dt, "momentum, nesterov", function(dev)
      return { ins = { state(-1, 1, dev) }, outs = { state(-1, 1, dev), state(-1, 1, dev) }, params = { f = { 0.1, 0.9, 0, 0.01 }, i = { 1, 0 } } }
    end)
    case(OP.SGD_STEP, dt, "new buffer", function(dev)
      return { ins = { state(-1, 1, dev) }, outs = { state(-1, 1, dev), state(-1, 1, dev) }, params = { f = { 0.1, 0.9, 0.1, 0 }, i = { 0, 1 } } }
    end)
    case(OP.SGD_STEP, dt, "plain", function(dev)
      return { ins = { state(-1, 1, dev) }, outs = { state(-1, 1, dev) }, params = { f = { 0.1, 0, 0, 0 } } }
    end)
    for decoupled = 0, 1 do
      case(OP.ADAM_STEP, dt, decoupled == 1 and "adamw" or "adam", function(dev)
        return { ins = { state(-1, 1, dev) }, outs = { state(-1, 1, dev), state(-0.1, 0.1, dev), state(0, 0.1, dev) },
                 params = { f = { 0.01, 0.9, 0.999, 1e-8, 0.01, 1 - 0.9 ^ 3, 1 - 0.999 ^ 3 }, i = { decoupled } } }
      end)
    end
    case(OP.RMSPROP_STEP, dt, "momentum", function(dev)
      return { ins = { state(-1, 1, dev) }, outs = { state(-1, 1, dev), state(0, 0.1, dev), state(-0.1, 0.1, dev) },
               params = { f = { 0.01, 0.99, 1e-8, 0.01, 0.5 } } }
    end)
  end
end

local function quant_cases()
  case(OP.QUANT_WEIGHT, "f32", "per channel", function(dev)
    return { ins = { uniform("f32", -2, 2, { 20, 9 }):to(dev) }, outs = { empty({ 20, 9 }, "i8", dev), empty({ 20 }, "f32", dev) } }
  end)
end

-- sort, topk, cumsum, cumprod; floor, ceil, round, trunc, isnan, isinf, isfinite; any, all; bernoulli,
-- multinomial, randperm (sampling: the same seed and offset must give the same draws on every backend)
local function sort_scan_cases()
  for _, dt in ipairs { "f32", "f64", "f16", "bf16", "i32", "i64", "u8" } do
    local values = is_float(dt) and with_specials or uniform
    for desc = 0, 1 do
      case(OP.SORT, dt, desc == 1 and "descending" or "ascending", function(dev)
        local x = values(dt, dt == "u8" and 0 or -50, 50, { 6, 37 }):to(dev)
        return { ins = { x }, outs = { empty({ 6, 37 }, dt, dev), empty({ 6, 37 }, "i64", dev) }, params = { i = { desc } } }
      end)
    end
    case(OP.SORT, dt, "strided, long rows", function(dev)
      local x = uniform(dt, 0, 50, { 300, 3 }):to(dev):t()
      return { ins = { x }, outs = { empty({ 3, 300 }, dt, dev), empty({ 3, 300 }, "i64", dev) }, params = { i = { 0 } } }
    end)
    for largest = 0, 1 do
      case(OP.TOPK, dt, largest == 1 and "largest" or "smallest", function(dev)
        local x = values(dt, dt == "u8" and 0 or -50, 50, { 5, 41 }):to(dev)
        return { ins = { x }, outs = { empty({ 5, 7 }, dt, dev), empty({ 5, 7 }, "i64", dev) }, params = { i = { 7, largest } } }
      end)
    end
  end
  for _, op in ipairs { "CUMSUM", "CUMPROD" } do
    for _, dt in ipairs { "f32", "f64", "f16", "bf16", "i64" } do
      for reverse = 0, 1 do
        case(OP[op], dt, reverse == 1 and "reverse" or "forward", function(dev)
          local lo, hi = -2, 2
          if op == "CUMPROD" then lo, hi = is_float(dt) and 0.7 or -3, is_float(dt) and 1.3 or 3 end
          local x = uniform(dt, lo, hi, { 9, 4 }):to(dev):t()
          return { ins = { x }, outs = { empty({ 4, 9 }, dt, dev) }, params = { i = { reverse } } }
        end)
      end
    end
    case(OP[op], "f64", "one long row", function(dev)
      return { ins = { uniform("f64", 0.9999, 1.0001, { 1, 100000 }):to(dev) }, outs = { empty({ 1, 100000 }, "f64", dev) }, params = { i = { 0 } } }
    end)
  end
  for _, op in ipairs { "FLOOR", "CEIL", "ROUND", "TRUNC", "ISNAN", "ISINF", "ISFINITE" } do
    local out = op:sub(1, 2) == "IS" and "bool" or nil
    for _, dt in ipairs { "f32", "f64", "f16", "bf16", "i32", "i64" } do
      for _, v in ipairs { "contiguous", "strided", "specials" } do
        if v ~= "specials" or is_float(dt) then
          case(OP[op], dt, v, function(dev)
            local x = (v == "specials" and with_specials or uniform)(dt, -4, 4, v == "strided" and { 9, 7 } or { 7, 9 }):to(dev)
            if v == "strided" then x = x:t() end
            return { ins = { x }, outs = { empty(x:size(), out or dt, dev) } }
          end)
        end
      end
    end
  end
  for _, op in ipairs { "ANY", "ALL" } do
    for _, dt in ipairs { "f32", "f64", "f16", "bf16", "i32", "i64", "u8", "bool" } do
      for reduced = 1, 3 do
        case(OP[op], dt, reduced .. " dims", function(dev)
          local x = uniform("f64", -1, 1, { 4, 5, 6 }):gt(op == "ANY" and 0.8 or -0.8):to(dt):to(dev)   -- mostly one answer, not all
          return { ins = { x }, outs = { empty(({ { 4, 5 }, { 4 }, {} })[reduced], "bool", dev) }, params = { i = { reduced } } }
        end)
      end
    end
  end
  for _, dt in ipairs { "f32", "f64", "i64" } do
    case(OP.BERNOULLI, dt, "scalar p", function(dev)
      return { ins = {}, outs = { empty({ 101 }, dt, dev) }, params = { f = { 0.3 }, i = { 77, 8 } } }
    end)
  end
  for _, dt in ipairs { "f32", "f64" } do
    case(OP.BERNOULLI, dt, "tensor p", function(dev)
      return { ins = { uniform(dt, 0, 1, { 7, 9 }):to(dev) }, outs = { empty({ 7, 9 }, dt, dev) }, params = { i = { 78, 12 } } }
    end)
    for replacement = 0, 1 do
      case(OP.MULTINOMIAL, dt, replacement == 1 and "with replacement" or "without replacement", function(dev)
        return { ins = { uniform(dt, 0.1, 1, { 3, 10 }):to(dev) }, outs = { empty({ 3, 6 }, "i64", dev) }, params = { i = { 79, 16, replacement } } }
      end)
    end
  end
  case(OP.RANDPERM, "i64", "contiguous", function(dev)
    return { ins = {}, outs = { empty({ 100 }, "i64", dev) }, params = { i = { 80, 20 } } }
  end)
end

-- RNN_CELL and its backward for each mode (tanh, relu, LSTM, GRU), rows of a wider buffer (a row stride)
-- LAYER_NORM and its backward, with and without weight and bias
local function layer_norm_cases()
  for _, dt in ipairs { "f32", "f64" } do
    for _, affine in ipairs { true, false } do
      local M, N, tag = 6, 37, affine and "affine" or "plain"
      case(OP.LAYER_NORM, dt, tag, function(dev)
        local ins = { uniform(dt, -3, 3, { M, N }):to(dev) }
        if affine then ins[2], ins[3] = uniform(dt, 0.5, 2, { N }):to(dev), uniform(dt, -1, 1, { N }):to(dev) end
        return { ins = ins, outs = { empty({ M, N }, dt, dev), empty({ M, 2 }, dt, dev) }, params = { f = { 1e-5 } } }
      end)
      case(OP.LAYER_NORM_BACKWARD, dt, tag, function(dev)
        local x = uniform(dt, -3, 3, { M, N })
        local mean = x:mean(2, true)
        local st = nnr.cat({ mean, (x:var(2, true, 0) + 1e-5):pow(-0.5) }, 2)
        local ins = { uniform(dt, -1, 1, { M, N }):to(dev), x:to(dev), st:contiguous():to(dev) }
        local outs = { empty({ M, N }, dt, dev) }
        if affine then ins[4], outs[2], outs[3] = uniform(dt, 0.5, 2, { N }):to(dev), empty({ N }, dt, dev), empty({ N }, dt, dev) end
        return { ins = ins, outs = outs }
      end)
    end
  end
end

-- CROSS_ENTROPY and its gradient (ABI 1.10): every reduction, 1-based labels with an ignored row
-- (-100) and with ignore_index a class, a NaN row (per-row losses), a -inf entry; 7 rows of 37 classes
-- (a vector body and a tail) and 70 of 10 (short rows, in blocks of 64 on the cpu)
local function cross_entropy_cases()
  for _, size in ipairs { { 7, 37 }, { 70, 10 } } do
    local N, Cn = size[1], size[2]
    -- a NaN row and a +inf row (both NaN) only where the loss is per row: a sum would be NaN; the
    -- ignored row (3) gets one too, since an ignored row is 0 whatever its scores
    local function scores(dt, dev, nan)
      local x = uniform(dt, -4, 4, { N, Cn })
      if nan then x[5][5], x[6][1], x[3][2] = 0 / 0, 1 / 0, 0 / 0 end
      x[4][2] = -1 / 0
      return x:to(dev)
    end
    local function labels(ignored)
      local l = {}
      for n = 1, N do l[n] = (n * 5) % Cn + 1 end
      l[1], l[2] = 1, Cn
      if ignored then l[3] = ignored end
      return l
    end
    local variants = { { labels(-100), -100, "ignored -100" }, { labels(3), 3, "ignore_index 3" } }
    for _, dt in ipairs { "f32", "f64" } do
      for red = 0, 2 do
        for _, l in ipairs(variants) do
          local tag = string.format("[%d, %d], reduction %d, %s", N, Cn, red, l[3])
          local params = { i = { l[2], red, 1 } }
          case(OP.CROSS_ENTROPY, dt, tag, function(dev)
            local t = nnr.tensor(l[1], { dtype = "i64" }):to(dev)
            return { ins = { scores(dt, dev, red == 0), t }, outs = { empty(red == 0 and { N } or {}, dt, dev), empty({ N }, dt, dev) },
                     params = params }
          end)
          case(OP.CROSS_ENTROPY_GRAD, dt, tag, function(dev)
            local x = scores(dt, "cpu", red == 0)
            local lse = x:exp():sum(2):log()
            local g = red == 0 and uniform(dt, -1, 1, { N }) or nnr.tensor(0.7, { dtype = dt })
            return { ins = { x:to(dev), nnr.tensor(l[1], { dtype = "i64" }):to(dev), lse:to(dev), g:to(dev) },
                     outs = { empty({ N, Cn }, dt, dev) }, params = params }
          end)
        end
      end
    end
  end
end

local function rnn_cases()
  local G, ins_fwd, outs_fwd = { 1, 1, 4, 3 }, { 2, 2, 3, 3 }, { 1, 1, 3, 2 }
  for mode = 0, 3 do
    for _, dt in ipairs { "f32", "f64" } do
      local B, H = 5, 19
      local function rows(n, lo, hi, dev) return uniform(dt, lo or -3, hi or 3, { B, n + 3 }):to(dev):narrow(2, 2, n) end
      case(OP.RNN_CELL, dt, "mode " .. mode, function(dev)
        local ins = { rows(G[mode + 1] * H, nil, nil, dev), rows(G[mode + 1] * H, nil, nil, dev), rows(H, nil, nil, dev) }
        local outs = { empty({ B, H }, dt, dev), empty({ B, 4 * H }, dt, dev), empty({ B, H }, dt, dev) }
        for k = #ins, ins_fwd[mode + 1] + 1, -1 do ins[k] = nil end
        for k = #outs, outs_fwd[mode + 1] + 1, -1 do outs[k] = nil end
        return { ins = ins, outs = outs, params = { i = { mode } } }
      end)
      case(OP.RNN_CELL_BACKWARD, dt, "mode " .. mode, function(dev)
        local act = mode <= 1 and rows(H, -0.9, 0.9, dev) or rows(4 * H, 0.05, 0.95, dev)
        local ins = mode == 2 and { rows(H, nil, nil, dev), rows(H, nil, nil, dev), act, rows(H, nil, nil, dev) }
                  or mode == 3 and { rows(H, nil, nil, dev), act, rows(H, nil, nil, dev) } or { rows(H, nil, nil, dev), act }
        local outs = mode == 2 and { empty({ B, 4 * H }, dt, dev), empty({ B, H }, dt, dev) }
                   or mode == 3 and { empty({ B, 3 * H }, dt, dev), empty({ B, 3 * H }, dt, dev), empty({ B, H }, dt, dev) }
                   or { empty({ B, H }, dt, dev) }
        return { ins = ins, outs = outs, params = { i = { mode } } }
      end)
    end
  end
end

-- ATTN_DECODE: 2 sequences of 3 heads of 5 against caches of 9 positions, the new ones at position 6;
-- the caches are outputs read and updated in place, so they start filled
local function attention_cases()
  for _, dt in ipairs { "f32", "f64" } do
    for _, scale in ipairs { 0 / 0, 0.3 } do
      case(OP.ATTN_DECODE, dt, scale == scale and "scale 0.3" or "default scale", function(dev)
        local N, H, d, cap = 2, 3, 5, 9
        return { ins = { uniform(dt, -2, 2, { N, 3 * H * d }):to(dev) },
                 outs = { empty({ N, H * d }, dt, dev), uniform(dt, -2, 2, { N * H, cap, d }):to(dev), uniform(dt, -2, 2, { N * H, cap, d }):to(dev) },
                 params = { i = { 6, H }, f = { scale } } }
      end)
    end
  end
end

for _, group in ipairs { unary_cases, binary_cases, activation_cases, select_cases, copy_fill_cases, random_cases, reduce_cases, matmul_cases, index_cases,
                         conv_cases, pool_cases, norm_cases, optim_cases, quant_cases, sort_scan_cases, rnn_cases, layer_norm_cases,
                         attention_cases, cross_entropy_cases } do
  group()
end
M.cases = cases

-- ---------------------------------------------------------------- running one case

local ins_buf, outs_buf = ffi.new("nnr_tensor *[4]"), ffi.new("nnr_tensor *[4]")

local function params_of(spec)
  local p = ffi.new("nnr_op_params")
  p.struct_size = ffi.sizeof(p)
  for k, v in ipairs(spec and spec.f or {}) do p.f[k - 1] = v end
  for k, v in ipairs(spec and spec.i or {}) do p.i[k - 1] = v end
  return p
end

local function fill_bufs(ins, outs)
  for k, t in ipairs(ins) do ins_buf[k - 1] = t.p end
  for k, t in ipairs(outs) do outs_buf[k - 1] = t.p end
end

-- runs one op call; true, or false and the message
function M._run_op(name, op, ins, outs, params)
  fill_bufs(ins, outs)
  if C.nnr_run_op(name, op, #ins, ins_buf, #outs, outs_buf, params_of(params)) ~= 0 then return false, binding.last_error() end
  return true
end

local function claims(op, ins, outs, params)
  fill_bufs(ins, outs)
  return C.nnr_op_supported(op, #ins, ins_buf, #outs, outs_buf, params_of(params)) ~= 0
end

-- the worst difference of got against ref (f64 host copies), nil and why when they disagree outright
local function compare(got, ref, dtype)
  if got:dim() ~= ref:dim() or nnr.shape_str(got:size()) ~= nnr.shape_str(ref:size()) then return nil, "shape differs" end
  local g, r = got:to("cpu", "f64"):contiguous():view(-1), ref:to("cpu", "f64"):contiguous():view(-1)
  local gn, rn = g:ne(g), r:ne(r)
  if gn:ne(rn):sum():item() > 0 then return nil, "NaN where the reference has none, or the other way" end
  local ginf, rinf = g:abs():eq(1 / 0), r:abs():eq(1 / 0)
  if ginf:ne(rinf):sum():item() > 0 or g:masked_fill(ginf:logical_not(), 0):ne(r:masked_fill(rinf:logical_not(), 0)):sum():item() > 0 then
    return nil, "infinities differ"
  end
  local finite = gn:logical_or(ginf):logical_not()
  if g:numel() == 0 then return 0 end
  local diff = (g - r):abs():masked_fill(finite:logical_not(), 0)
  local scale = r:abs():masked_fill(finite:logical_not(), 1):clamp(1)
  return (diff / scale):max():item()
end

local ACCUMULATES = { [C.NNR_OPCAT_REDUCE] = true, [C.NNR_OPCAT_SOFTMAX] = true, [C.NNR_OPCAT_MATMUL] = true, [C.NNR_OPCAT_CONV] = true,
                      [C.NNR_OPCAT_POOL] = true, [C.NNR_OPCAT_NORM] = true, [C.NNR_OPCAT_OPTIM] = true, [C.NNR_OPCAT_SCAN] = true,
                      [C.NNR_OPCAT_ATTENTION] = true }

local function tolerance(c, out)
  local tol = TOL[out.dtype] or 0
  if ACCUMULATES[C.nnr_op_category(c.op)] then tol = tol * 10 end
  if c.op == C.NNR_OP_RAND_NORMAL then tol = math.max(tol, 1e-6) end
  return tol
end

-- the reference call on the host backend; in f64 when the device under test is the host backend
local function reference(c, as_f64)
  local ok, spec = pcall(c.build, "cpu")
  if not ok then return nil, tostring(spec) end
  if as_f64 then
    for _, list in ipairs { spec.ins, spec.outs } do
      for k, t in ipairs(list) do if is_float(t.dtype) and t.dtype ~= "f64" then list[k] = t:double() end end
    end
  end
  local ran, err = M._run_op(C.nnr_op_name(c.op) ~= nil and ffi.string(C.nnr_op_name(c.op)) or "op", c.op, spec.ins, spec.outs, spec.params)
  return spec, ran and nil or err
end

-- one row: status ("native", "fallback", "skip", "FAIL") and its detail
function M.check_case(c, dev, is_host)
  local name = ffi.string(C.nnr_op_name(c.op))
  nnr.manual_seed(#c.variant * 7919 + c.op)
  local ref, ref_err = reference(c, is_host and is_float(c.dtype) and ACCUMULATES[C.nnr_op_category(c.op)])
  nnr.manual_seed(#c.variant * 7919 + c.op)
  local ok, spec = pcall(c.build, dev)
  if not ok then return "FAIL", "the kit cannot build the inputs: " .. tostring(spec) end
  local native = claims(c.op, spec.ins, spec.outs, spec.params)
  local before = tonumber(C.nnr_fallback_count(c.op))
  local ran, err = M._run_op(name, c.op, spec.ins, spec.outs, spec.params)
  local how = native and "native" or "fallback"
  if c.expect_error or spec.expect_error then
    if ran then return "FAIL", "accepted an invalid call (" .. c.variant .. ") that the reference refuses: " .. tostring(ref_err) end
    return how, "refused: " .. err
  end
  if not ref then return "skip", "no reference: " .. tostring(ref_err) end
  if ref_err then
    if not ran then return "skip", "neither this backend nor the reference has it: " .. ref_err end
    return "skip", "no reference (" .. ref_err .. ")"
  end
  if not ran then
    if not native and err:match("not supported") then return "skip", "not claimed, and the fallback cannot run it: " .. err end
    return "FAIL", err
  end
  if not native and tonumber(C.nnr_fallback_count(c.op)) == before then how = "extension" end   -- an extension on host memory took it
  local worst = 0
  for k, out in ipairs(spec.outs) do
    local err2, why = compare(out, ref.outs[k], c.dtype)
    if not err2 then return "FAIL", string.format("output %d: %s", k, why) end
    local tol = tolerance(c, out)
    if err2 > tol then return "FAIL", string.format("output %d: max relative error %.3g > %.3g", k, err2, tol) end
    worst = math.max(worst, err2)
  end
  return how, string.format("max rel err %.2g", worst)
end

-- ---------------------------------------------------------------- the run, as protocol lines

local function emit(...)
  io.stdout:write(string.format(...), "\n")
  io.stdout:flush()
end

-- the rows of the backend named plugin on each of its devices, from row `from` (1-based), those
-- whose op name matches the Lua pattern ops
function M.run(plugin, ops, from)
  from = from or 1
  local devices = {}
  for _, d in ipairs(nnr.devices()) do if d.type == plugin then devices[#devices + 1] = d end end
  if #devices == 0 then
    local i = C.nnr_plugin_find(plugin)
    emit("@@SKIP no device of backend '%s': %s", plugin, i >= 0 and ffi.string(C.nnr_plugin_message(i)) or "see nnrun --plugins")
    return
  end
  local host = nnr.devices()[1]
  local row = 0
  for _, dev in ipairs(devices) do
    for _, c in ipairs(cases) do
      local name = ffi.string(C.nnr_op_name(c.op))
      if not ops or name:match(ops) then
        row = row + 1
        if row >= from then
          emit("@@BEGIN %d\t%s\t%s\t%s\t%s", row, dev.name, name, c.dtype, c.variant)
          local ok, status, detail = pcall(M.check_case, c, dev.name, dev.type == host.type)
          if not ok then status, detail = "FAIL", "the kit: " .. tostring(status) end
          emit("@@ROW %d\t%s\t%s", row, status, (detail:gsub("[\n\t]", " ")))
          collectgarbage()
        end
      end
    end
  end
  emit("@@END %d", row)
end

return M
