-- The cuda backend. Without a GPU (this machine, CI) the plugin must still load and
-- say why there is no device; the device tests are then pending with that reason.
-- With a GPU (scripts/gpu-check.sh on a lent machine) they run in full.
local nnr = require "nnr"
local F = nnr.nn.functional

local function plugin_built()
  local why = nnr.cuda.status()
  return why == nil or not why:match("^no cuda plugin")
end

describe("cuda without a device", function()
  if nnr.cuda.is_available() then
    it("has devices", function() assert.is_true(nnr.cuda.device_count() > 0) end)
    return
  end
  if not plugin_built() then pending("the cuda plugin was not built (no nvcc)") return end

  it("loads and reports no device with CUDA's reason", function()
    assert.is_false(nnr.cuda.is_available())
    assert.are.equal(0, nnr.cuda.device_count())
    local why = nnr.cuda.status()
    assert.is_truthy(why:match("CUDA"), why)
    local found
    for _, p in ipairs(nnr.plugins()) do if p.name == "cuda" then found = p end end
    assert.is_truthy(found and found.loaded, "the cuda plugin is loaded")
  end)

  it("turns device requests into errors that say why", function()
    for _, f in ipairs {
      function() return nnr.ones(2, { device = "cuda" }) end,
      function() return nnr.ones(2):to("cuda:0") end,
      function() return nnr.nn.Linear(2, 2):to("cuda") end,
      function() return nnr.cuda.memory_stats(0) end,
    } do
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):match("cuda") and tostring(err):match("no device"), tostring(err))
    end
  end)

  it("takes backend options and refuses unknown ones", function()
    nnr.backends.cuda.allow_tf32 = true
    assert.is_true(nnr.backends.cuda.allow_tf32)
    nnr.backends.cuda.allow_tf32 = false
    local ok, err = pcall(function() nnr.backends.cuda.no_such_option = 1 end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("unknown option 'no_such_option'"), tostring(err))
    ok, err = pcall(function() nnr.backends.no_such_backend.x = 1 end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("no no_such_backend plugin"), tostring(err))
  end)
end)

describe("cuda device", function()
  if not nnr.cuda.is_available() then pending("no CUDA device: " .. tostring(nnr.cuda.status())) return end

  local function close(a, b, tol)
    local d = (a:to("cpu", "f64") - b:to("cpu", "f64")):abs():max():item()
    assert.is_true(d <= tol, string.format("max difference %.3g > %.3g", d, tol))
  end

  it("moves tensors there and back", function()
    nnr.manual_seed(1)
    local x = nnr.randn(37, 5)
    local g = x:to("cuda")
    assert.are.equal("cuda:0", g.device)
    close(g:cpu(), x, 0)
    close(g:t():contiguous():t(), x, 0)
    assert.is_truthy(#nnr.cuda.get_device_name(0) > 0)
  end)

  it("trains the mlp and the cnn like the cpu does", function()
    for _, kind in ipairs { "mlp", "cnn" } do
      local results = {}
      for _, dev in ipairs { "cpu", "cuda" } do
        nnr.manual_seed(7)
        local model
        if kind == "mlp" then
          model = nnr.nn.Sequential(nnr.nn.Flatten(), nnr.nn.Linear(784, 64), nnr.nn.ReLU(), nnr.nn.Linear(64, 10))
        else
          model = nnr.nn.Sequential(nnr.nn.Conv2d(1, 8, 3, { padding = 1 }), nnr.nn.ReLU(), nnr.nn.MaxPool2d(2),
            nnr.nn.Flatten(), nnr.nn.Linear(8 * 14 * 14, 10))
        end
        model:to(dev)
        local opt = nnr.optim.SGD(model:parameters(), { lr = 0.05, momentum = 0.9 })
        nnr.manual_seed(8)
        local x, y = nnr.randn(32, 1, 28, 28), nnr.randint(1, 11, { 32 })
        x, y = x:to(dev), y:to(dev)
        local losses = {}
        for step = 1, 5 do
          local loss = F.cross_entropy(model(x), y)
          opt:zero_grad()
          loss:backward()
          opt:step()
          losses[step] = loss:item()
        end
        results[dev] = losses
      end
      for step = 1, 5 do
        assert.is_true(math.abs(results.cpu[step] - results.cuda[step]) < 1e-4 * math.max(1, math.abs(results.cpu[step])),
          string.format("%s step %d: cpu %.6f, cuda %.6f", kind, step, results.cpu[step], results.cuda[step]))
      end
    end
  end)

  it("passes gradient checks on the device in f64", function()
    nnr.manual_seed(3)
    local function t(...) return nnr.randn(...):double():to("cuda"):requires_grad_() end
    local checks = {
      { function(x, w, b) return F.linear(x, w, b) end, { t(3, 4), t(5, 4), t(5) } },
      { function(x, w, b) return F.conv2d(x, w, b, { padding = 1, stride = 2 }) end, { t(2, 2, 5, 5), t(3, 2, 3, 3), t(3) } },
      { function(x) return F.max_pool2d(x, 2) end, { t(1, 2, 4, 4) } },
      { function(x) return F.avg_pool2d(x, 3, { stride = 1, padding = 1 }) end, { t(1, 2, 4, 4) } },
      { function(x) return x:softmax(2) * x:tanh() end, { t(3, 4) } },
      { function(x, y) return (x:matmul(y) + x:sum(3, true)):sigmoid() end, { t(2, 3, 4), t(4, 2) } },
    }
    for i, c in ipairs(checks) do
      local ok, msg = nnr.autograd.gradcheck(c[1], c[2])
      assert.is_true(ok, "check " .. i .. ": " .. tostring(msg))
    end
  end)

  it("names bad indices, device mismatches and out-of-memory", function()
    local x = nnr.randn(4, 3):to("cuda")
    local ok, err = pcall(function() return x:index_select(1, nnr.tensor({ 1, 9 }, { dtype = "i64" }):to("cuda")) end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("index 9 is out of range"), tostring(err))
    ok, err = pcall(function() return x + nnr.randn(4, 3) end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("different devices"), tostring(err))
    ok, err = pcall(function() return nnr.empty({ 1e7, 1e7 }, { device = "cuda" }) end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):match("out of memory"), tostring(err))
    local y = x + 1      -- the device still works after the failures
    close(y - 1, x, 1e-6)
  end)

  it("reports and empties its memory", function()
    local before = nnr.cuda.memory_stats(0)
    local big = nnr.empty({ 1024, 1024 }, { device = "cuda" })
    local during = nnr.cuda.memory_stats(0)
    assert.is_true(during.allocated_bytes >= before.allocated_bytes + 4 * 1024 * 1024)
    big = nil
    collectgarbage()
    assert.is_true(nnr.cuda.memory_stats(0).cached_bytes > 0)
    nnr.cuda.empty_cache()
    assert.are.equal(0, nnr.cuda.memory_stats(0).cached_bytes)
  end)

  it("trains under autocast: bf16, and f16 with a GradScaler, master weights in f32", function()
    for _, dt in ipairs { "bf16", "f16" } do
      nnr.manual_seed(11)
      local model = nnr.nn.Sequential(nnr.nn.Conv2d(1, 8, 3, { padding = 1 }), nnr.nn.ReLU(), nnr.nn.MaxPool2d(2),
        nnr.nn.Flatten(), nnr.nn.Linear(8 * 14 * 14, 10)):to("cuda")
      local opt = nnr.optim.SGD(model:parameters(), { lr = 0.05, momentum = 0.9 })
      local scaler = nnr.amp.GradScaler({ enabled = dt == "f16" })
      nnr.manual_seed(12)
      local x, y = nnr.randn(64, 1, 28, 28):to("cuda"), nnr.randint(1, 11, { 64 }):to("cuda")
      local first, last
      for step = 1, 30 do
        local loss = nnr.autocast(dt, function()
          local h = model:get(1)(x)
          assert.are.equal(dt, h.dtype)               -- the convolution ran in half
          return F.cross_entropy(model(x), y)
        end)
        assert.are.equal("f32", loss.dtype)
        opt:zero_grad()
        scaler:scale(loss):backward()
        scaler:step(opt)
        scaler:update()
        first = first or loss:item()
        last = loss:item()
      end
      for _, p in ipairs(model:parameters()) do assert.are.equal("f32", p.dtype) end
      assert.is_true(last < 0.5 * first, string.format("%s: loss %.4f -> %.4f", dt, first, last))
    end
  end)

  it("copies pinned loader batches to the device", function()
    local ds = nnr.data.TensorDataset(nnr.randn(64, 3), nnr.arange(0, 64))
    local loader = nnr.data.DataLoader(ds, { batch_size = 16, num_workers = 1, pin_memory = true })
    local on_device, on_host = 0, 0
    for x in loader:iter() do
      assert.is_true(x:is_pinned())
      on_device = on_device + x:to("cuda"):sum():item()
      on_host = on_host + x:sum():item()
    end
    assert.is_true(math.abs(on_device - on_host) < 1e-4)
  end)
end)
