-- The cpu backend's bf16 engines (plugins/cpu/bf16.c): bf16 matmuls (autocast) and f32 gemms with bf16
-- products under nnr.backends.cpu.allow_bf16, on AMX tiles or on AVX512-BF16's VDPBF16PS. Each engine the
-- cpu class has is tested (the AVX512-BF16 one forced on with bf16_dot = true, whatever its measured
-- rate); with neither, the same tests check that the switches change nothing.
local nnr = require "nnr"
local F = nnr.nn.functional

local cpu = nnr.backends.cpu
local has_amx, dot_default = cpu.amx, cpu.bf16_dot
local RANK = { c = 1, avx2 = 2, avx512 = 3, avx512_vnni = 4, avx512_bf16 = 5, amx = 6 }
local has_dot = RANK[cpu.isa] >= RANK.avx512_bf16

-- the exact value of the product of the bf16-rounded operands
local function bf16_ref(a, b) return a:to("bf16"):double():matmul(b:to("bf16"):double()) end

local function rel(x, ref) return (x:double() - ref):abs():max():item() / (ref:abs():max():item() + 1e-30) end

local function operand(rows, cols, transposed)
  if transposed then return nnr.randn(cols, rows):t() end
  return nnr.randn(rows, cols)
end

local shapes = { { 1, 1, 1 }, { 3, 5, 7 }, { 16, 16, 32 }, { 17, 33, 70 }, { 64, 48, 100 }, { 100, 10, 256 }, { 5, 300, 2 },
                 { 70, 90, 513 } }

-- an engine on (amx or avx512_bf16), or neither
local function engines()
  local list = { { name = "none", active = false, set = function() cpu.amx = false; if has_dot then cpu.bf16_dot = false end end } }
  if has_amx then
    list[#list + 1] = { name = "amx", active = true, set = function(on) cpu.amx = on; if has_dot then cpu.bf16_dot = false end end }
  end
  if has_dot then list[#list + 1] = { name = "avx512_bf16", active = true, set = function(on) cpu.amx = false; cpu.bf16_dot = on end } end
  return list
end

local function restore()
  cpu.allow_bf16 = false
  cpu.amx = has_amx      -- as found (NNR_CPU_AMX=0 runs this file as on a cpu without AMX)
  if has_dot then cpu.bf16_dot = dot_default end
end

describe("cpu bf16 engines", function()
  after_each(restore)

  it("reports and takes its options, and names bad ones", function()
    assert.are.equal("boolean", type(nnr.backends.cpu.amx))
    nnr.backends.cpu.allow_bf16 = true
    local fast = tonumber(cpu.bf16_dot_ratio) >= 1.25      -- VDPBF16PS at 1.25x FMA's rate takes f32 gemms too
    assert.are.equal(has_amx or (dot_default ~= false and has_dot and (dot_default == true or fast)), cpu.allow_bf16)
    cpu.amx = false
    if has_dot then cpu.bf16_dot = false end
    assert.is_false(cpu.amx)
    assert.are.equal("f32 f32", cpu.bf16_engine)
    assert.is_false(cpu.allow_bf16)                         -- true only where an engine runs it
    assert.is_true(tonumber(cpu.bf16_dot_ratio) >= 0)
    if has_dot then
      assert.is_true(tonumber(cpu.bf16_dot_ratio) > 0)
      cpu.bf16_dot = "auto"
      assert.are.equal("auto", cpu.bf16_dot)
      assert.are.equal("avx512_bf16 " .. (fast and "avx512_bf16" or "f32"), cpu.bf16_engine)
      assert.are.equal(fast, cpu.allow_bf16)
      cpu.bf16_dot = true
      assert.is_true(cpu.bf16_dot)
      assert.are.equal("avx512_bf16 avx512_bf16", cpu.bf16_engine)
      assert.is_true(cpu.allow_bf16)
      cpu.amx = has_amx
      if has_amx then assert.are.equal("amx amx", cpu.bf16_engine) end   -- AMX, where it runs, comes first
    else
      local ok, err = pcall(function() cpu.bf16_dot = true end)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):match("bf16_dot cannot be turned on: the cpu class is " .. cpu.isa .. ", without AVX512%-BF16"), tostring(err))
      assert.are.equal(dot_default, cpu.bf16_dot)             -- unchanged
      assert.are.equal("f32 f32", cpu.bf16_engine)
    end
    local ok, err = pcall(function() cpu.bf16_dot = "maybe" end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("bf16_dot takes true, false or 'auto', got 'maybe'"), tostring(err))
    cpu.amx = has_amx
    ok, err = pcall(function() cpu.allow_bf16 = "maybe" end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("allow_bf16 takes true or false, got 'maybe'"), tostring(err))
    ok, err = pcall(function() nnr.backends.cpu.amxx = true end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("unknown option 'amxx' %(known: amx, allow_bf16, bf16_dot, onednn, onednn_gemm, onednn_conv, gemv, devices%)"), tostring(err))
  end)
end)

for _, e in ipairs(engines()) do
  local name, active = e.name, e.active
  local function engine(on) e.set(on) end
  describe("cpu bf16 engine " .. name, function()
    before_each(function() engine(true) end)
    after_each(restore)

    it("multiplies bf16 matrices within one rounding of the exact product, with and without AMX", function()
      nnr.manual_seed(11)
      for _, s in ipairs(shapes) do
        local M, N, K = s[1], s[2], s[3]
        for _, ta in ipairs { false, true } do
          for _, tb in ipairs { false, true } do
            local a, b = operand(M, K, ta):to("bf16"), operand(K, N, tb):to("bf16")
            local ref = bf16_ref(a, b)
            local outs = {}
            for _, on in ipairs { active, false } do
              engine(on)
              local c = a:matmul(b)
              assert.are.equal("bf16", c.dtype)
              assert.are.same({ M, N }, c.shape)
              -- bf16 keeps 8 bits: one rounding of each element, plus f32 sums
              local bad = ((c:double() - ref):abs() - ref:abs() * (2 ^ -8) - 1e-5 * ref:abs():max():item()):max():item()
              assert.is_true(bad <= 0, string.format("%dx%dx%d ta=%s tb=%s amx=%s: off by %g", M, N, K, tostring(ta), tostring(tb),
                                                     tostring(on), bad))
              outs[#outs + 1] = c:double()
            end
            -- the two paths sum in different orders: at most one bf16 step apart
            local d = ((outs[1] - outs[2]):abs() - outs[2]:abs() * (2 ^ -7) - 1e-6):max():item()
            assert.is_true(d <= 0, name .. " and the f32 path differ by more than one bf16 step: " .. d)
          end
        end
      end
    end)

    it("handles batched and broadcast bf16 operands", function()
      nnr.manual_seed(12)
      local a = nnr.randn(3, 40, 20):to("bf16"):transpose(2, 3)     -- [3, 20, 40], k along the rows
      local b = nnr.randn(40, 24):to("bf16")                          -- broadcast over the batch
      local c = a:matmul(b)
      assert.are.same({ 3, 20, 24 }, c.shape)
      for i = 1, 3 do
        local r = bf16_ref(a:select(1, i):float(), b:float())
        assert.is_true(rel(c:select(1, i), r) < 2 ^ -7)
      end
    end)

    it("runs f32 gemms with bf16 products under allow_bf16 (every layout), and exactly f32 without", function()
      nnr.manual_seed(13)
      for _, s in ipairs(shapes) do
        local M, N, K = s[1], s[2], s[3]
        for _, ta in ipairs { false, true } do
          for _, tb in ipairs { false, true } do
            local a, b = operand(M, K, ta), operand(K, N, tb)
            local exact = a:matmul(b)
            nnr.backends.cpu.allow_bf16 = true
            local c = a:matmul(b)
            nnr.backends.cpu.allow_bf16 = false
            assert.are.equal("f32", c.dtype)
            if active and M * N * K >= 32768 then
              -- bf16 products summed in f32: the exact product of the rounded operands, to f32 sums
              local e = rel(c, bf16_ref(a, b))
              assert.is_true(e < 1e-5, string.format("%dx%dx%d ta=%s tb=%s: %g from the bf16 product", M, N, K, tostring(ta), tostring(tb), e))
              assert.is_true(rel(c, exact:double()) > 1e-5, "allow_bf16 did not take the " .. name .. " path")
            else
              assert.are.equal(0, (c - exact):abs():max():item())         -- small, or no AMX: plain sgemm
            end
            assert.are.equal(0, (a:matmul(b) - exact):abs():max():item())   -- off again: exact f32
          end
        end
      end
    end)

    it("keeps linear's bias and relu, the convolution, NaN, and gives the same numbers on 1 or 2 threads", function()
      nnr.manual_seed(14)
      local x, w, bias = nnr.randn(64, 300), nnr.randn(200, 300), nnr.randn(200)
      local img, kw = nnr.randn(4, 8, 12, 12), nnr.randn(16, 8, 3, 3)
      nnr.backends.cpu.allow_bf16 = true
      local tol = active and 1e-5 or 1e-6
      local y = F.linear(x, w, bias)
      local ref = bf16_ref(x, w:t()) + bias:double()
      assert.is_true(rel(y, active and ref or (x:double():matmul(w:double():t()) + bias:double())) < tol)
      local lin = nnr.nn.Linear(300, 200)
      local yr = nnr.nn.Sequential(lin, nnr.nn.ReLU())
      nnr.no_grad(function() lin.weight:copy_(w); lin.bias:copy_(bias) end)
      local out = yr(x)                                                   -- the fused linear + relu
      assert.is_true(rel(out, (active and ref or (x:double():matmul(w:double():t()) + bias:double())):clamp(0, math.huge)) < tol)
      local conv = F.conv2d(img, kw, nil, { padding = 1 })
      local cref = F.conv2d((active and img:to("bf16") or img):double(), (active and kw:to("bf16") or kw):double(), nil, { padding = 1 })
      assert.is_true(rel(conv, cref) < tol, "conv2d: " .. rel(conv, cref))
      local xn = x:clone()
      xn:narrow(1, 3, 1):narrow(2, 5, 1):fill_(0 / 0)
      local yn = xn:matmul(w:t())
      local function at(t, i, j) return t:narrow(1, i, 1):narrow(2, j, 1):item() end
      assert.is_true(at(yn, 3, 7) ~= at(yn, 3, 7))                        -- row 3 is NaN
      assert.is_true(at(yn, 4, 7) == at(yn, 4, 7))
      local threads = nnr.get_num_threads()
      nnr.set_num_threads(1)
      local one = x:matmul(w:t())
      nnr.set_num_threads(2)
      local two = x:matmul(w:t())
      nnr.set_num_threads(threads)
      -- either engine: one task per 32x32 block over all of K (OpenBLAS's own kernels are not asked here:
      -- under valgrind, which hides AVX-512, their edge kernels differ between the splits)
      if active then assert.are.equal(0, (one - two):abs():max():item()) end
    end)

    it("trains a small mlp under allow_bf16 about as well as in f32", function()
      local final = {}
      for _, allow in ipairs { false, true } do
        nnr.backends.cpu.allow_bf16 = allow
        nnr.manual_seed(15)
        local model = nnr.nn.Sequential(nnr.nn.Linear(64, 128), nnr.nn.ReLU(), nnr.nn.Linear(128, 4))
        local opt = nnr.optim.SGD(model:parameters(), { lr = 0.05, momentum = 0.9 })
        local x = nnr.randn(256, 64)
        local y = x:narrow(2, 1, 4):argmax(2)
        local loss
        for _ = 1, 60 do
          loss = F.cross_entropy(model(x), y)
          opt:zero_grad()
          loss:backward()
          opt:step()
        end
        final[#final + 1] = loss:item()
      end
      assert.is_true(final[1] < 0.3, "f32 loss " .. final[1])
      assert.is_true(math.abs(final[2] - final[1]) < 0.05, string.format("f32 %g, allow_bf16 %g", final[1], final[2]))
    end)
  end)
end
