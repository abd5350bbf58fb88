local nnr = require "nnr"
local H = require "helpers"

describe("printing", function()
  it("prints values, shape, dtype and device like PyTorch", function()
    assert.equal("tensor([[1., 2.],\n        [3., 4.]], shape=[2, 2], dtype=f32, device=cpu)", tostring(nnr.tensor({ { 1, 2 }, { 3, 4 } })))
    assert.equal("tensor([ 0.5000, -1.2500], shape=[2], dtype=f64, device=cpu)", tostring(nnr.tensor({ 0.5, -1.25 }, { dtype = "f64" })))
    assert.equal("tensor([1, 2, 3], shape=[3], dtype=i64, device=cpu)", tostring(nnr.tensor({ 1, 2, 3 }, { dtype = "i64" })))
    assert.equal("tensor([ true, false], shape=[2], dtype=bool, device=cpu)", tostring(nnr.tensor({ true, false })))
    assert.equal("tensor(2.5000, shape=[], dtype=f32, device=cpu)", tostring(nnr.tensor(2.5)))
    assert.equal("tensor([1.0000e-05, 1.0000e+00], shape=[2], dtype=f32, device=cpu)", tostring(nnr.tensor({ 1e-5, 1 })))
    assert.equal("tensor([], shape=[0], dtype=f32, device=cpu)", tostring(nnr.zeros(0)))
  end)

  it("summarises large tensors", function()
    local s = tostring(nnr.arange(2000):view(40, 50))
    assert.matches("%.%.%.", s)
    assert.matches("shape=%[40, 50%]", s)
    assert.matches("%[%[   0.,    1.,    2., %.%.%.,   47.,   48.,   49.%],\n", s)
    assert.is_true(#s < 1000)
  end)
end)

describe("runtime", function()
  it("lists devices and plugins", function()
    local devs = nnr.devices()
    assert.is_true(#devs >= 1)
    assert.equal("cpu", devs[1].name)
    assert.equal("cpu", devs[1].type)
    local found = false
    for _, p in ipairs(nnr.plugins()) do
      if p.name == "cpu" then found = p.loaded end
    end
    assert.is_true(found)
    assert.equal("cpu", tostring(nnr.device("cpu")))
  end)

  it("counts live tensor bytes and frees them when collected", function()
    collectgarbage(); collectgarbage()
    local before = nnr.memory_stats().live_bytes
    local t = nnr.empty(1024, 1024)
    assert.equal(before + 4 * 1024 * 1024, nnr.memory_stats().live_bytes)
    t = nil
    collectgarbage(); collectgarbage()
    assert.equal(before, nnr.memory_stats().live_bytes)
  end)

  it("keeps memory flat in a loop without collectgarbage()", function()
    collectgarbage(); collectgarbage()      -- what earlier specs left behind is not this loop's:
    require("nnr.binding").C.nnr_gc_done()   -- the GC pacing starts from what is live now, as after its own collections
    local x = nnr.rand(1024, 1024)          -- 4 MiB per temporary
    local peak = 0
    for i = 1, 200 do                        -- 800 MiB allocated in all
      local y = x * 2 + 1
      peak = math.max(peak, nnr.memory_stats().live_bytes)
    end
    assert.is_true(peak < 200 * 1024 * 1024, "live bytes peaked at " .. peak)
  end)

  it("sets the thread count", function()
    local n = nnr.get_num_threads()
    nnr.set_num_threads(1)
    assert.equal(1, nnr.get_num_threads())
    local a = nnr.rand(300000)
    local s1 = (a * 3):sum():item()
    nnr.set_num_threads(2)
    local s2 = (a * 3):sum():item()
    assert.is_true(math.abs(s1 - s2) < 1e-3 * s1)
    nnr.set_num_threads(n)
  end)

  it("gives the same products on 1 and 2 threads, batch-1 layers included", function()
    -- a few rows (M <= 16) against a large weight run in the same fixed column blocks, one OpenBLAS call
    -- each, on any thread count (plugins/cpu/gemm.c): the same floats. Larger products are split into one
    -- block per thread, and OpenBLAS may pick another kernel for a block than for the whole (seen under
    -- valgrind for 17x1024x256): those agree to rounding
    local n = nnr.get_num_threads()
    nnr.manual_seed(3)
    for _, dt in ipairs { "f32", "f64" } do
      for _, s in ipairs { { 1, 1024, 256 }, { 2, 1024, 256 }, { 3, 777, 333 }, { 5, 256, 1024 }, { 8, 1024, 256 }, { 16, 4096, 64 },
                           { 17, 1024, 256 }, { 64, 1024, 256 }, { 1, 40, 30 } } do
        local x, w, b = nnr.randn(s[1], s[3], { dtype = dt }), nnr.randn(s[2], s[3], { dtype = dt }), nnr.randn(s[2], { dtype = dt })
        nnr.set_num_threads(1)
        local y1, m1 = nnr.nn.functional.linear(x, w, b), x:mm(w:t())
        nnr.set_num_threads(2)
        local y2, m2 = nnr.nn.functional.linear(x, w, b), x:mm(w:t())
        local tol = s[1] <= 16 and 0 or (dt == "f32" and 1e-5 or 1e-13) * y1:abs():max():item()
        assert.is_true((y1 - y2):abs():max():item() <= tol, dt .. " linear " .. table.concat(s, "x"))
        assert.is_true((m1 - m2):abs():max():item() <= tol, dt .. " mm " .. table.concat(s, "x"))
        local ref = (x:double():unsqueeze(2) * w:double():unsqueeze(1)):sum(3) + b:double()
        assert.is_true((y2:double() - ref):abs():max():item() < (dt == "f32" and 1e-3 or 1e-10), dt .. " against the f64 sum")
      end
    end
    nnr.set_num_threads(n)
  end)

  it("stops a long kernel when interrupted", function()
    local C = require("nnr.binding").C
    C.nnr_interrupt()
    local ok, err = pcall(function() return nnr.ones(10) + 1 end)
    assert.is_false(ok)
    assert.matches("interrupted", err)
    assert.equal(11, (nnr.ones(10) + 0.1):sum():item())   -- the flag was cleared
  end)
end)
