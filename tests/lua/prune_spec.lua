-- Pruning (lua/nnr/prune.lua): masks, training with masks, remove, global and structured
-- pruning, sparsity, and shrink giving the masked model's outputs with fewer neurons.
local nnr = require "nnr"
local nn, prune = nnr.nn, nnr.prune
local F = nn.functional

local function zeros(t) return t:eq(0):sum():item() end

describe("prune", function()
  it("masks the smallest weights and keeps them at zero through training", function()
    nnr.manual_seed(1)
    local lin = nn.Linear(10, 6)
    local opt = nnr.optim.SGD(lin:parameters(), { lr = 0.1, momentum = 0.9, weight_decay = 0.01 })
    local w0 = lin.weight:detach():clone()
    prune.l1_unstructured(lin, "weight", 0.25)
    assert.are.equal(15, zeros(lin.weight_mask))                   -- round(0.25 * 60)
    -- the zeros are the 15 smallest magnitudes
    local kept_min = w0:abs():masked_fill(lin.weight_mask:eq(0), math.huge):min():item()
    local dropped_max = w0:abs():masked_fill(lin.weight_mask:ne(0), -1):max():item()
    assert.is_true(dropped_max <= kept_min)
    local x, y = nnr.randn(8, 10), nnr.randint(1, 7, { 8 })
    for _ = 1, 5 do
      local loss = F.cross_entropy(lin(x), y)
      opt:zero_grad()
      loss:backward()
      assert.are.equal(0, lin.weight_orig.grad:masked_fill(lin.weight_mask:ne(0), 0):abs():sum():item())   -- no gradient where masked
      opt:step()
    end
    lin(x)
    assert.are.equal(15, zeros(lin.weight))
    assert.is_truthy(lin:state_dict()["weight_mask"])
    prune.remove(lin, "weight")
    assert.are.equal(15, zeros(lin.weight))
    assert.is_nil(rawget(lin, "weight_mask"))
    assert.is_true(lin.weight.requires_grad)
    assert.is_nil(lin:state_dict()["weight_orig"])
  end)

  it("prunes globally and by whole rows, and reports sparsity", function()
    nnr.manual_seed(2)
    local m = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    prune.global_unstructured({ { m:get(1), "weight" }, { m:get(3), "weight" } }, 0.5)
    assert.are.equal(36, zeros(m:get(1).weight) + zeros(m:get(3).weight))   -- half of 48 + 24
    assert.is_true(math.abs(prune.sparsity(m) - 0.5) < 1e-9)
    local m2 = nn.Linear(5, 4)
    prune.ln_structured(m2, "weight", 0.5, 2, 1)
    local rows_zero = 0
    for i = 1, 4 do if m2.weight[i]:abs():sum():item() == 0 then rows_zero = rows_zero + 1 end end
    assert.are.equal(2, rows_zero)
    prune.ln_structured(m2, "weight", 0.4, 1, 2)                 -- 2 of 5 columns by L1 norm, combined
    local cols_zero = 0
    for j = 1, 5 do if m2.weight:select(2, j):abs():sum():item() == 0 then cols_zero = cols_zero + 1 end end
    assert.is_true(cols_zero >= 2)
  end)

  it("shrinks pruned neurons away with identical outputs", function()
    nnr.manual_seed(3)
    local m = nn.Sequential(nn.Flatten(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 5))
    prune.ln_structured(m:get(2), "weight", 0.5, 2, 1)
    prune.ln_structured(m:get(4), "weight", 0.5, 2, 1)
    local x = nnr.randn(7, 5, 6)
    local masked = m(x)
    local params_before = m:num_parameters()
    local _, removed = prune.shrink(m)
    assert.are.equal(16, removed)
    assert.are.equal(10, m:get(2).out_features)
    assert.are.equal(6, m:get(4).out_features)
    assert.is_true(m:num_parameters() < params_before)
    assert.is_true((m(x) - masked):abs():max():item() < 1e-5)
  end)

  it("refuses amounts outside [0, 1] and unknown parameters", function()
    local lin = nn.Linear(3, 3)
    for _, a in ipairs { -0.1, 1.5, 0 / 0 } do
      local ok, err = pcall(prune.l1_unstructured, lin, "weight", a)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):match("outside %[0, 1%]"), tostring(err))
    end
    local ok, err = pcall(prune.l1_unstructured, lin, "nope", 0.5)
    assert.is_truthy(tostring(err):match("no parameter 'nope'"), tostring(err))
    ok, err = pcall(prune.remove, lin, "weight")
    assert.is_truthy(tostring(err):match("is not pruned"), tostring(err))
  end)
end)
