-- Did-you-mean: unknown names are errors naming the closest existing ones.
local nnr = require "nnr"
local H = require "helpers"
local nn = nnr.nn

local fails = H.fails

describe("did you mean", function()
  it("names the closest on nnr and its namespaces", function()
    fails("nnr.nn has no 'Linaer'; did you mean Linear%?", function() return nn.Linaer(2, 3) end)
    fails("nnr has no 'zeross'; did you mean zeros%?", function() return nnr.zeross(2) end)
    fails("nnr.optim has no 'Adma'; did you mean Adam", function() return nnr.optim.Adma end)
    fails("nnr.data has no 'DataLoder'; did you mean DataLoader%?", function() return nnr.data.DataLoder end)
    fails("nnr has no 'qwertyuiop'$", function() return nnr.qwertyuiop end)      -- nothing close: no suggestion
  end)

  it("names the closest tensor methods", function()
    fails("tensor has no 'sofmax'; did you mean softmax", function() return nnr.ones(2):sofmax(1) end)
    fails("tensor has no 'reshpae'; did you mean reshape%?", function() return nnr.ones(2):reshpae(2) end)
  end)

  it("names near misses on modules, and reads missing settings as nil", function()
    local m = nn.Linear(2, 3)
    fails("Linear has no 'forwrd'; did you mean forward%?", function() return m:forwrd(nnr.ones(2)) end)
    fails("Linear has no 'wieght'; did you mean weight%?", function() return m.wieght end)
    fails("Sequential has no 'paramters'; did you mean parameters%?", function() return nn.Sequential(m):paramters() end)
    assert.is_nil(m.some_optional_setting)
    assert.is_nil(nn.Linear(2, 3, { bias = false }).bias)
  end)

  it("remembers a missing setting, until a near name is declared", function()
    local m = nn.Linear(2, 3)
    assert.is_nil(m.gamma_scale)
    assert.is_nil(m.gamma_scale)                 -- the second read comes from the cache
    m:register_parameter("gamma_scal", nnr.ones(1))
    fails("Linear has no 'gamma_scale'; did you mean gamma_scal%?", function() return m.gamma_scale end)
    local l = nn.Linear(2, 3, { bias = false })
    for _ = 1, 3 do assert.is_nil(l.bias) end
    l:register_buffer("bias2", nnr.zeros(3))
    fails("Linear has no 'bias'; did you mean bias2%?", function() return l.bias end)
  end)

  it("ranks by edit distance with transpositions", function()
    local names = require "nnr.names"
    assert.are.equal(1, names.distance("forwrad", "forward"))
    assert.are.same({ "Linear" }, names.closest("Linaer", { "Linear", "LayerNorm", "Conv2d" }))
  end)
end)
