local nnr = require "nnr"
local nn = nnr.nn

local function train(model, steps, x, y)
  local opt = nnr.optim.SGD(model:parameters(), { lr = 0.1, momentum = 0.9 })
  local losses = {}
  for i = 1, steps do
    opt:zero_grad()
    local loss = nn.functional.cross_entropy(model(x), y)
    loss:backward()
    opt:step()
    losses[i] = loss:item()
  end
  return losses
end

local function mlp()
  nnr.manual_seed(11)
  return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
end

describe("nnr.profiler", function()
  nnr.manual_seed(3)
  local x, y = nnr.randn(10, 6), nnr.randint(1, 4, { 10 })

  it("counts ops, modules and autograd nodes, and times nest", function()
    local model = mlp()
    local prof, losses = nnr.profiler.profile(train, { model = model }, model, 3, x, y)
    assert.equal(3, #losses)
    local by = function(rows, name) for _, r in ipairs(rows) do if r.name == name then return r end end end
    local mods = prof:modules()
    assert.equal(3, by(mods, "Sequential").calls)
    assert.equal(3, by(mods, "1 (Linear)+ReLU").calls)     -- Sequential fuses Linear then ReLU
    assert.equal(3, by(mods, "3 (Linear)").calls)
    local ops = prof:ops()
    assert.equal(6, by(ops, "linear").calls)              -- two forward linears per step
    assert.is_true(by(ops, "matmul").calls >= 6)           -- the backward's
    assert.is_true(by(ops, "sgd").calls >= 12)             -- one fused step per parameter per step
    assert.is_truthy(by(prof:summary({ "autograd" }), "LinearBackward"))
    assert.is_truthy(by(prof:summary({ "autograd" }), "LinearReluBackward"))
    -- the Sequential's time holds its children's; self time is what is left
    local seq, l1 = by(mods, "Sequential"), by(mods, "1 (Linear)+ReLU")
    assert.is_true(seq.total >= l1.total)
    assert.is_true(seq.self <= seq.total and seq.self >= 0)
    for _, r in ipairs(ops) do assert.is_true(r.share >= 0 and r.share <= 1.0001) end
    local text = prof:table()
    assert.matches("op%s+calls%s+total ms%s+self ms%s+mean us%s+share%s+alloc MiB", text)
    assert.matches("peak memory:", text)
    assert.matches("cpu", text)
    assert.is_true(prof.devices[1].peak_bytes > 0)
  end)

  it("charges each op the bytes its outputs took, from the first op of a profile on", function()
    local a, b = nnr.randn(1000), nnr.randn(1000)
    local keep = {}
    for i = 1, 50 do keep[i] = nnr.randn(100, 100) end      -- allocations before the profile are not charged
    local prof = nnr.profiler.profile(function() for i = 1, 5 do keep[i] = a + b end end)
    local add
    for _, r in ipairs(prof:ops()) do if r.name == "add" then add = r end end
    assert.equal(5, add.calls)
    assert.is_true(add.bytes >= 5 * 4000 and add.bytes <= 5 * 8192, "add charged " .. add.bytes .. " bytes")
  end)

  it("gives the same results with and without the profiler", function()
    local a = train(mlp(), 4, x, y)
    local _, b = nnr.profiler.profile(train, nil, mlp(), 4, x, y)
    assert.same(a, b)
    assert.is_false(nnr.profiler.is_enabled())
  end)

  it("writes a Chrome trace with thread names and the loader's workers on their own tracks", function()
    local data = nnr.data
    local loader = data.DataLoader(data.TensorDataset(nnr.randn(64, 1, 4, 4), nnr.arange(1, 65)),
      { batch_size = 8, num_workers = 2, transform = data.RandomHorizontalFlip() })
    local prof = nnr.profiler.profile(function() for bx in loader:iter() do local _ = bx:sum() end end)
    local workers = 0
    for tid, label in pairs(prof.threads) do if label == "DataLoader worker" then workers = workers + 1 end end
    assert.is_true(workers >= 1)
    local batch_events = 0
    for _, e in ipairs(prof.events) do
      if e.kind == 3 then
        batch_events = batch_events + 1
        assert.equal("DataLoader worker", prof.threads[e.tid])
      end
    end
    assert.equal(8, batch_events)
    local path = os.tmpname()
    prof:write_trace(path)
    local text = io.open(path):read("*a")
    os.remove(path)
    assert.matches('^{"displayTimeUnit": "ms", "traceEvents": %[', text)
    assert.matches('"name": "thread_name", "ph": "M", "pid": 1, "tid": %d+, "args": {"name": "DataLoader worker"}', text)
    assert.matches('"name": "DataLoader batch", "cat": "loader", "ph": "X"', text)
    assert.matches("%]}\n$", text)
    -- balanced braces: every event is a complete object
    local open, close = select(2, text:gsub("{", "")), select(2, text:gsub("}", ""))
    assert.equal(open, close)
  end)

  it("stops cleanly when the profiled function fails", function()
    local empty = nnr.profiler.stop()                      -- stopping a stopped profiler is harmless
    assert.is_true(empty.seconds >= 0 and empty.seconds < 3600)
    local ok, err = pcall(nnr.profiler.profile, function() error("boom", 0) end)
    assert.is_false(ok)
    assert.equal("boom", err)
    assert.is_false(nnr.profiler.is_enabled())
    assert.is_false(nn.Module._profiling.on)
  end)
end)
