-- nnr.repl.complete: what the REPL's Tab offers (lua/nnr/repl.lua; the key press itself: tests/cli_test.sh)
local nnr = require "nnr"
local R = require "nnr.repl"

local function has(list, s)
  for _, v in ipairs(list) do if v == s then return true end end
  return false
end

describe("nnr.repl.complete", function()
  local env
  before_each(function()
    env = setmetatable({ x = nnr.randn(2, 3), lin = nnr.nn.Linear(3, 4), cfg = { lr = 0.1, layers = 2, _hidden = 1 },
                         seq = nnr.nn.Sequential(nnr.nn.Linear(2, 2), nnr.nn.ReLU()), word = "abc" }, { __index = _G })
    env.nnr = nnr
  end)

  it("completes names under nnr's tables, loading submodules as it goes", function()
    assert.are.same({ "nnr.nn.Linear" }, R.complete("nnr.nn.Li", env))
    assert.are.same({ "nnr.optim.Adagrad", "nnr.optim.Adam", "nnr.optim.AdamW" }, R.complete("nnr.optim.Ad", env))
    assert.is_true(has(R.complete("nnr.nn.functional.cross", env), "nnr.nn.functional.cross_entropy"))
  end)

  it("completes a tensor's methods after ':' and its methods and properties after '.'", function()
    local r = R.complete("x:su", env)
    assert.is_true(has(r, "x:sum") and has(r, "x:sub"))
    for _, s in ipairs(r) do assert.are.equal("x:su", s:sub(1, 4)) end
    assert.is_true(has(R.complete("x.sh", env), "x.shape"))
    assert.is_false(has(R.complete("x:sh", env), "x:shape"))        -- a property is not a method
  end)

  it("completes a module's fields, parameters and class methods up the chain", function()
    assert.is_true(has(R.complete("lin.we", env), "lin.weight"))
    local m = R.complete("lin:", env)
    assert.is_true(has(m, "lin:forward") and has(m, "lin:parameters") and has(m, "lin:state_dict"))
    assert.is_false(has(m, "lin:weight"))                             -- a tensor, not a method
    assert.is_false(has(m, "lin:__init"))                             -- private names wait for '_'
    assert.is_true(has(R.complete("lin:__", env), "lin:__init"))
    assert.is_true(has(R.complete("seq:nam", env), "seq:named_parameters"))
  end)

  it("completes globals, keywords, table fields and string methods", function()
    assert.are.same({ "print" }, R.complete("pri", env))
    assert.are.same({ "false", "for", "function" }, R.complete("f", setmetatable({}, { __index = {} })))
    assert.are.same({ "cfg.layers", "cfg.lr" }, R.complete("cfg.l", env))
    assert.are.same({}, R.complete("cfg._", {}))
    assert.are.same({ "cfg._hidden" }, R.complete("cfg._", env))
    assert.is_true(has(R.complete("word:up", env), "word:upper"))
  end)

  it("completes nothing for what does not resolve, and never runs code", function()
    local ran = false
    env.trap = setmetatable({}, { __index = function() ran = true; error("boom") end })
    assert.are.same({}, R.complete("nosuch.x", env))
    assert.are.same({}, R.complete("nnr.nn.Linearr.x", env))       -- nnr's misspelling error: nothing
    assert.are.same({}, R.complete("trap.a.b", env))
    assert.is_true(ran)                                              -- its own __index ran, and failed quietly
    ran = false
    assert.are.same({}, R.complete("(os.exit()).x", env))
    assert.are.same({}, R.complete("f(x).y", env))
    assert.are.same({}, R.complete("a..b", env))
    assert.is_false(ran)
  end)
end)
