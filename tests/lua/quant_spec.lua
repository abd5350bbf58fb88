-- Int8 dynamic quantization (plugins/quant, lua/nnr/quant.lua): the int8 gemm against an exact
-- integer reference computed here, every kernel variant in turn, saturation, error bounds,
-- modules, saving and loading, and bad input.
local nnr = require "nnr"
local ffi = require "ffi"
local nn = nnr.nn
local quant = nnr.quant

local f32 = ffi.new("float[1]")
local function fl(v) f32[0] = v; return f32[0] end          -- round a double to f32
local function rne(v)                                        -- round half to even
  local f = math.floor(v)
  local d = v - f
  if d > 0.5 or (d == 0.5 and f % 2 == 1) then return f + 1 end
  return f
end

-- the quantization of one row as the kernels do it (f32 arithmetic), and its scale
local function quant_row(row)
  local amax = 0
  for _, v in ipairs(row) do amax = math.max(amax, math.abs(v)) end
  local s = amax > 0 and fl(fl(amax) / 127) or 1
  local inv = fl(1 / s)
  local q = {}
  for k, v in ipairs(row) do q[k] = math.max(-127, math.min(127, rne(fl(fl(v) * inv)))) end
  return q, s
end

local function rows_of(t)
  local r = {}
  for i = 1, t:size(1) do
    r[i] = {}
    for j = 1, t:size(2) do r[i][j] = t[i][j] end      -- 1-based, a number
  end
  return r
end

local function kernels()
  local list = {}
  for _, name in ipairs { "c", "avx2", "avxvnni", "avx512vnni" } do list[#list + 1] = name end
  return list
end

describe("quant plugin", function()
  if not quant.available() then pending("the quant plugin is not loaded") return end

  it("quantizes weights per output channel within half a step", function()
    nnr.manual_seed(1)
    local w = nnr.randn(7, 13)
    w[3]:zero_()                                    -- a zero row keeps scale 1
    local q, scale = quant.quantize_weight(w)
    assert.are.equal("i8", q.dtype)
    assert.is_true(q:abs():max():item() <= 127)
    assert.are.equal(1, scale[3])
    local deq = q:float() * scale:view(7, 1)
    local err = (deq - w):abs()
    for i = 1, 7 do
      assert.is_true(err[i]:max():item() <= scale[i] / 2 + 1e-6, "row " .. i)
    end
  end)

  it("gives the exact integer products on random shapes, with every kernel", function()
    nnr.manual_seed(2)
    -- M, K (odd, < 4, ...), N, and the rows without negatives (the AVX2 kernel leaves out the sign for
    -- a block of 4 such rows). 53 x 70: row blocks of 8, 6 and 4 with rows left over, quantizers' vector
    -- bodies with a tail; 110 x 300 -> 130: tiles of 48 rows over the threads
    local shapes = { { 1, 5, 3 }, { 3, 4, 17 }, { 9, 33, 40 }, { 17, 7, 130 }, { 2, 1, 1 }, { 53, 70, 45, 13 },
                     { 110, 300, 130, 8 }, { 1, 64, 20, 1 } }
    for _, sh in ipairs(shapes) do
      local M, K, N = sh[1], sh[2], sh[3]
      local lin = nn.Linear(K, N)
      local x = nnr.randn(M, K) * 3
      for m = 1, sh[4] or 0 do x[m]:copy_(x[m]:abs()) end
      local q, scale = quant.quantize_weight(lin.weight)
      local qw, xr, sw, b = rows_of(q), rows_of(x), {}, {}
      for n = 1, N do sw[n] = scale[n]; b[n] = lin.bias[n] end
      -- reference: integer dot products, then fma(acc, sx * sw, bias) in f32
      local expect = {}
      for m = 1, M do
        local qx, sx = quant_row(xr[m])
        expect[m] = {}
        for n = 1, N do
          local acc = 0
          for k = 1, K do acc = acc + qx[k] * qw[n][k] end
          expect[m][n] = fl(acc * fl(sx * sw[n]) + b[n])     -- acc * scale is exact in double: one rounding, as fma
        end
      end
      for _, k in ipairs(kernels()) do
        local ok, ql = pcall(quant.QuantizedLinear, lin, { kernel = k })
        assert.is_true(ok, tostring(ql))
        local ok2, y = pcall(ql.forward, ql, x)
        if not ok2 and (tostring(y):match("this CPU has no") or tostring(y):match("above the CPU class running")) then
          -- a kernel this machine cannot run, or above the class NNR_CPU_ISA forced
        else
          assert.is_true(ok2, tostring(y))
          for m = 1, M do
            for n = 1, N do
              assert.are.equal(expect[m][n], y[m][n], string.format("%s kernel, shape %d x %d -> %d, [%d][%d]", k, M, K, N, m, n))
            end
          end
        end
      end
    end
  end)

  it("does not saturate where vpmaddubsw would (pytorch#44939)", function()
    -- all activations and weights at the extremes: pairs of 127 * 127 products
    local K, N = 64, 16
    local lin = nn.Linear(K, N)
    nnr.no_grad(function() lin.weight:fill_(1); lin.bias:zero_() end)
    local x = nnr.full({ 2, K }, 1)
    x[2]:fill_(-1)
    for _, k in ipairs(kernels()) do
      local ql = quant.QuantizedLinear(lin, { kernel = k })
      local ok, y = pcall(ql.forward, ql, x)
      if ok then
        -- acc = 64 * 127 * 127, times (1/127)^2: exactly 64
        assert.are.equal(64, y[1][1], k)
        assert.are.equal(-64, y[2][N], k)
      else
        assert.is_truthy(tostring(y):match("this CPU has no") or tostring(y):match("above the CPU class running"), tostring(y))
      end
    end
  end)

  it("stays close to the f32 model and fuses Linear + ReLU", function()
    nnr.manual_seed(3)
    local model = nn.Sequential(nn.Flatten(), nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    local q = quant.dynamic(model, { nn.Linear })
    assert.are.equal("QuantizedLinear", q:get(2).__name)
    assert.are.equal("Linear", model:get(2).__name)       -- the original is untouched
    local x = nnr.randn(8, 10, 20)
    local a, b = model(x), q(x)
    local rel = (a - b):abs():max():item() / a:abs():max():item()
    assert.is_true(rel < 0.05, "relative error " .. rel)
    assert.is_true(model:size_bytes() / q:size_bytes() > 3.5)
    assert.matches("QuantizedLinear", q:summary({ 1, 200 }))
  end)

  it("gives the same rows for any rank, layout and float dtype of the input", function()
    -- contiguous f32 goes straight to the kernel (QuantizedLinear's fast path), the rest is converted first
    nnr.manual_seed(5)
    local q = quant.QuantizedLinear(nn.Linear(12, 7))
    local x = nnr.randn(2, 3, 12)
    local ref = q(x:reshape(6, 12))
    assert.are.same({ 2, 3, 7 }, q(x):size())
    assert.are.equal(0, (q(x):reshape(6, 7) - ref):abs():max():item())
    assert.are.equal(0, (q(x:transpose(1, 2):contiguous():transpose(1, 2)):reshape(6, 7) - ref):abs():max():item())
    assert.are.equal(0, (q(x:double()):reshape(6, 7) - ref):abs():max():item())
    assert.are.same({ 7 }, q(x[1][1]):size())
    assert.are.equal(0, (q(x[1][1]) - ref[1]):abs():max():item())
    assert.are.same({ 0, 7 }, q(nnr.randn(0, 12)):size())
    -- split over the threads (a batch-1 row against 256 KiB, and a large product) or not: the same floats
    local big = quant.QuantizedLinear(nn.Linear(512, 512))
    local threads = nnr.get_num_threads()
    for _, rows in ipairs { 1, 3, 300 } do
      local xb = nnr.randn(rows, 512)
      nnr.set_num_threads(1)
      local one = big(xb)
      nnr.set_num_threads(2)
      assert.are.equal(0, (big(xb) - one):abs():max():item(), rows .. " rows")
    end
    nnr.set_num_threads(threads)
    local ok, err = pcall(q, nnr.randn(2, 3, 11))
    assert.is_false(ok)
    assert.matches("input of shape %[2, 3, 11%], expected %[..., 12%]", tostring(err))
  end)

  it("saves to and loads from safetensors", function()
    nnr.manual_seed(4)
    local model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    local q = quant.dynamic(model)
    local path = os.tmpname()
    nnr.save(path, q:state_dict())
    local sd = nnr.load(path)
    os.remove(path)
    assert.are.equal("i8", sd["1.weight"].dtype)
    local fresh = quant.dynamic(nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5)))
    fresh:load_state_dict(sd)
    local x = nnr.randn(4, 30)
    assert.are.equal(0, (fresh(x) - q(x)):abs():max():item())
  end)

  it("refuses bad input with the layer's name", function()
    local model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    nnr.no_grad(function() model:get(2).weight[2][3] = 0 / 0 end)
    local ok, err = pcall(quant.dynamic, model)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("layer '2' %(Linear 3 %-> 2%): weight row 2 holds NaN at column 3"), tostring(err))
    nnr.no_grad(function() model:get(2).weight[2][3] = math.huge end)
    ok, err = pcall(quant.dynamic, model)
    assert.is_truthy(tostring(err):match("an infinity"), tostring(err))
    -- unsupported module types are named and left in f32
    local m2 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    local q2 = quant.dynamic(m2, { nn.Conv2d, nn.Linear }, { quiet = true })
    assert.are.equal("Conv2d", q2:get(1).__name)
    assert.are.equal("QuantizedLinear", q2:get(3).__name)
    ok, err = pcall(quant.dynamic, m2, { nn.Linear }, { per_channel = false })
    assert.is_false(ok)
    local ql = quant.QuantizedLinear(nn.Linear(4, 3))
    ok, err = pcall(ql.forward, ql, nnr.randn(2, 5))
    assert.is_truthy(tostring(err):match("input of shape %[2, 5%], expected %[..., 4%]"), tostring(err))
    -- an int8 weight of -128 (a state dict from elsewhere): named, not packed (the kernels take -127..127)
    local sd = ql:state_dict()
    sd.weight = sd.weight:clone()
    sd.weight[2][3] = -128
    ok, err = pcall(ql.load_state_dict, ql, sd)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("holds %-128 at row 2, column 3"), tostring(err))
  end)

  it("quantizes a row of tiny values (1 / scale overflows) to zeros with every kernel", function()
    local lin = nn.Linear(40, 20)
    local x = nnr.randn(3, 40)
    x[2]:copy_(nnr.randn(40) * 1e-38)
    local ref
    for _, k in ipairs(kernels()) do
      local ok, y = pcall(function() return quant.QuantizedLinear(lin, { kernel = k })(x) end)
      if ok then
        for n = 1, 20 do assert.are.equal(lin.bias[n], y[2][n], k .. " kernel, column " .. n) end
        if ref then assert.are.same(ref, y:totable(), k .. " kernel") else ref = y:totable() end
      else
        assert.is_truthy(tostring(y):match("this CPU has no") or tostring(y):match("above the CPU class running"), tostring(y))
      end
    end
  end)
end)
