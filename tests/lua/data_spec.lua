local nnr = require "nnr"
local H = require "helpers"
local data = nnr.data

local function batches(loader)
  local out = {}
  for x, y in loader:iter() do out[#out + 1] = { x = x:totable(), y = y and y:totable() } end
  return out
end

describe("DataLoader", function()
  local ds = data.TensorDataset(nnr.arange(23 * 2):view(23, 2), nnr.arange(1, 24, { dtype = "i64" }))

  it("gives the same batches whatever the number of workers", function()
    local ref = batches(data.DataLoader(ds, { batch_size = 5, shuffle = true, seed = 3, num_workers = 0 }))
    assert.equal(5, #ref)
    for workers = 1, 4 do
      local got = batches(data.DataLoader(ds, { batch_size = 5, shuffle = true, seed = 3, num_workers = workers, prefetch = workers + 1 }))
      assert.same(ref, got)
    end
    -- every sample once, rows kept together
    local seen = {}
    for _, b in ipairs(ref) do
      for i, label in ipairs(b.y) do
        assert.is_nil(seen[label])
        seen[label] = true
        assert.same({ 2 * (label - 1), 2 * (label - 1) + 1 }, b.x[i])
      end
    end
    for k = 1, 23 do assert.is_true(seen[k]) end
  end)

  it("reshuffles each epoch from the seed, keeps order without shuffle, and drops the last batch on request", function()
    local l = data.DataLoader(ds, { batch_size = 5, shuffle = true, seed = 3, num_workers = 2 })
    local e1, e2 = batches(l), batches(l)
    assert.are_not.same(e1, e2)
    local again = data.DataLoader(ds, { batch_size = 5, shuffle = true, seed = 3, num_workers = 1 })
    assert.same(e1, batches(again))
    assert.same(e2, batches(again))
    local plain = batches(data.DataLoader(ds, { batch_size = 10 }))
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, plain[1].y)
    assert.equal(3, #plain[3].y)
    local dropped = data.DataLoader(ds, { batch_size = 10, drop_last = true, num_workers = 2 })
    assert.equal(2, #dropped)
    assert.equal(2, #batches(dropped))
  end)

  it("resumes from a saved position", function()
    local l = data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 9, num_workers = 2 })
    local full = batches(l)
    local l2 = data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 9, num_workers = 3 })
    local it = l2:iter()
    it(); it()
    local sd = l2:state_dict()
    assert.same({ epoch = 1, position = 2 }, sd)
    local l3 = data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 9, num_workers = 0 })
    l3:load_state_dict(sd)
    local rest = batches(l3)
    assert.equal(#full - 2, #rest)
    assert.same(full[3], rest[1])
    assert.same(full[#full], rest[#rest])
  end)

  it("transforms in the workers: ToFloat, Normalize, crops, flips, resize", function()
    local img = nnr.arange(16, { dtype = "u8" }):view(1, 4, 4)
    local one = data.TensorDataset(img, nnr.ones(1, { dtype = "i64" }))
    local function first(tf)
      for x in data.DataLoader(one, { batch_size = 1, num_workers = 1, transform = tf }):iter() do return x end
    end
    local x = first(data.Compose { data.ToFloat(0.5), data.Normalize(1, 2) })
    assert.equal("f32", x.dtype)
    assert.same({ 1, 1, 4, 4 }, x:size())
    H.assert_close(x[{ 1, 1, 1 }], { (0 - 1) / 2, (0.5 - 1) / 2, (1 - 1) / 2, (1.5 - 1) / 2 }, 1e-6)
    x = first(data.Compose { data.ToFloat(1), data.RandomHorizontalFlip(1) })
    H.assert_close(x[{ 1, 1, 1 }], { 3, 2, 1, 0 }, 0)
    x = first(data.Compose { data.ToFloat(1), data.CenterCrop(2) })
    H.assert_close(x[{ 1, 1 }], { { 5, 6 }, { 9, 10 } }, 0)
    x = first(data.Compose { data.ToFloat(1), data.RandomCrop(6, 1) })      -- all of the padded image
    H.assert_close(x[{ 1, 1, 1 }], { 0, 0, 0, 0, 0, 0 }, 0)
    H.assert_close(x[{ 1, 1, 2 }], { 0, 0, 1, 2, 3, 0 }, 0)
    x = first(data.Compose { data.ToFloat(1), data.Resize(4) })
    H.assert_close(x, img:float():view(1, 1, 4, 4):totable(), 1e-6)
    x = first(data.Compose { data.ToFloat(1), data.Resize({ 2, 2 }) })
    H.assert_close(x[{ 1, 1 }], { { 2.5, 4.5 }, { 10.5, 12.5 } }, 1e-6)
    -- random transforms are seeded per sample: the same with any worker count
    local many = data.TensorDataset(nnr.randint(0, 256, { 50, 8, 8 }, { dtype = "u8" }), nnr.ones(50, { dtype = "i64" }))
    local tf = data.Compose { data.ToFloat(), data.RandomCrop(6, 2), data.RandomHorizontalFlip() }
    local a = batches(data.DataLoader(many, { batch_size = 7, shuffle = true, seed = 2, transform = tf }))
    local b = batches(data.DataLoader(many, { batch_size = 7, shuffle = true, seed = 2, num_workers = 4, transform = tf }))
    assert.same(a, b)
  end)

  it("reports waiting and work, and errors name the batch and the sample", function()
    local l = data.DataLoader(ds, { batch_size = 4, num_workers = 2 })
    batches(l)
    local s = l:stats()
    assert.equal(6, s.batches)
    assert.is_true(s.wait_seconds >= 0 and s.busy_seconds > 0)
    assert.equal("DataLoader(6 batches of 4 from TensorDataset(23 samples))", tostring(l))
    local bad = data.DataLoader(ds, { batch_size = 4, num_workers = 2, transform = data.Compose { data.ToFloat(), data.RandomCrop(5) } })
    local msg = H.errmsg(function() batches(bad) end)
    assert.matches("DataLoader over TensorDataset%(23 samples%): batch 1 of epoch 1: sample %d+: crop of 5x5 from an image of 1x2", msg)
    assert.matches("batch_size must be >= 1", H.errmsg(function() data.DataLoader(ds, { batch_size = 0 }) end))
    assert.matches("23 samples but 3 targets", H.errmsg(function() data.TensorDataset(nnr.ones(23), nnr.ones(3)) end))
  end)

  it("stops cleanly when a loop breaks early or the loader is dropped", function()
    for _ = 1, 20 do
      local l = data.DataLoader(ds, { batch_size = 2, shuffle = true, num_workers = 4, prefetch = 8 })
      for x in l:iter() do break end
      l = nil
      collectgarbage()
    end
    local l = data.DataLoader(ds, { batch_size = 2, num_workers = 2 })
    for x in l:iter() do break end
    assert.equal(12, #batches(l))          -- a new epoch after a break starts from the beginning
  end)
end)
