-- Recurrent layers (core/ops/rnn.c, plugins/*/rnn.*, lua/nnr/nn/recurrent.lua): float64 gradient
-- checks of every mode and direction, the f32 gates against f64, saturation and NaN, PyTorch's
-- parameter names, and the errors. tests/torch_compare/recurrent.py checks the values against PyTorch.
local nnr = require "nnr"
local H = require "helpers"
local nn, F = nnr.nn, nnr.nn.functional

local GATES = { rnn_tanh = 1, rnn_relu = 1, lstm = 4, gru = 3 }
local d64 = { dtype = "f64" }
local function leaf(shape, scale) return nnr.randn(shape, d64):mul_(scale or 1):requires_grad_() end

describe("recurrent layers", function()
  before_each(function() H.reseed(17) end)

  it("pass gradcheck in every mode and direction, with and without biases", function()
    for mode, G in pairs(GATES) do
      for _, reverse in ipairs { false, true } do
        local T, B, I, Hs = 4, 3, 2, 3
        local inputs = { leaf({ T, B, I }), leaf({ B, Hs }), leaf({ G * Hs, I }, 0.6), leaf({ G * Hs, Hs }, 0.6) }
        local with_bias = not reverse
        if with_bias then inputs[5], inputs[6] = leaf({ G * Hs }), leaf({ G * Hs }) end
        local c0 = mode == "lstm" and leaf({ B, Hs }) or nil
        local ok, msg = nnr.autograd.gradcheck(function(x, h0, wih, whh, bih, bhh)
          local y, h, c = F.rnn_layer(mode, x, h0, c0, wih, whh, bih, bhh, nil, reverse)
          local r = (y * y):sum() + h:sum()
          if c then r = r + (c * c):sum() end
          return r
        end, inputs)
        assert(ok, mode .. (reverse and " reverse: " or ": ") .. tostring(msg))
      end
    end
  end)

  it("passes gradcheck for an LSTM with a projection, and for c0", function()
    local T, B, I, Hs, P = 3, 2, 3, 4, 2
    local x, h0, c0 = leaf({ T, B, I }), leaf({ B, P }), leaf({ B, Hs })
    local wih, whh, whr = leaf({ 4 * Hs, I }, 0.6), leaf({ 4 * Hs, P }, 0.6), leaf({ P, Hs }, 0.6)
    for _, reverse in ipairs { false, true } do
      local ok, msg = nnr.autograd.gradcheck(function(x_, h0_, c0_, wih_, whh_, whr_)
        local y, h, c = F.rnn_layer("lstm", x_, h0_, c0_, wih_, whh_, nil, nil, whr_, reverse)
        return y:sum() + (h * c:narrow(2, 1, P)):sum()
      end, { x, h0, c0, wih, whh, whr })
      assert(ok, msg)
    end
  end)

  it("passes gradcheck through a 2-layer bidirectional GRU module's parameters", function()
    local m = nn.GRU(3, 2, { num_layers = 2, bidirectional = true }):double()
    local x = leaf({ 3, 2, 3 })
    local params = m:parameters()
    local ok, msg = nnr.autograd.gradcheck(function(xx) local y, h = m(xx); return y:sum() + (h * h):sum() end, { x })
    assert(ok, msg)
    local y = m(x)
    y:pow(2):sum():backward()
    for _, p in ipairs(params) do assert(p.grad and p.grad:abs():sum():item() > 0, "a parameter got no gradient") end
  end)

  it("computes the f32 gates (vectorized exp) within float rounding of f64, saturates cleanly and keeps NaN", function()
    for _, mode in ipairs { "lstm", "gru", "rnn_tanh" } do
      local G, B, Hs = GATES[mode], 4, 37
      local x, h0 = nnr.randn(6, B, 5):mul(3), nnr.randn(B, Hs)
      local wih, whh, bih, bhh = nnr.randn(G * Hs, 5), nnr.randn(G * Hs, Hs):mul(0.3), nnr.randn(G * Hs), nnr.randn(G * Hs)
      local c0 = mode == "lstm" and nnr.randn(B, Hs) or nil
      local y32 = F.rnn_layer(mode, x, h0, c0, wih, whh, bih, bhh)
      local y64 = F.rnn_layer(mode, x:double(), h0:double(), c0 and c0:double(), wih:double(), whh:double(), bih:double(), bhh:double())
      local err = (y32:double() - y64):abs():max():item()
      assert(err < 2e-5, mode .. ": f32 differs from f64 by " .. err)
      local big = F.rnn_layer(mode, x:mul(1e4), h0, c0, wih, whh, bih, bhh)
      assert(big:isfinite():all():item(), mode .. ": saturated gates gave inf or NaN")
      local xn = x:clone()
      xn[{ 1, 1, 1 }] = 0 / 0
      local yn = F.rnn_layer(mode, xn, h0, c0, wih, whh, bih, bhh)
      local v = yn[{ 1, 1, 1 }]
      assert(v ~= v and not yn:select(2, 2):isnan():any():item(), mode .. ": NaN did not stay in its sequence")
    end
  end)

  it("names its parameters as PyTorch does, and drops out between layers only in training", function()
    local m = nn.LSTM(3, 4, { num_layers = 2, bidirectional = true, proj_size = 2, dropout = 0.5 })
    local names = {}
    for _, np in ipairs(m:named_parameters()) do names[#names + 1] = np[1] end
    assert.are.same({ "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0", "weight_ih_l0_reverse",
      "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse", "weight_hr_l0_reverse", "weight_ih_l1", "weight_hh_l1",
      "bias_ih_l1", "bias_hh_l1", "weight_hr_l1", "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse",
      "bias_hh_l1_reverse", "weight_hr_l1_reverse" }, names)
    assert.are.same({ 16, 4 }, m.weight_ih_l1:size())     -- 2 directions x proj 2
    local x = nnr.randn(5, 2, 3)
    m:eval()
    local a, b = m(x), m(x)
    assert.are.equal(0, (a - b):abs():max():item())
    m:train()
    local c, d = m(x), m(x)
    assert((c - d):abs():max():item() > 0, "no dropout in training")
  end)

  it("refuses a backward that records its own graph, naming the node", function()
    local x = nnr.randn({ 3, 2, 2 }, d64):requires_grad_()
    local y = nn.LSTM(2, 3):double()(x)
    H.fails("LSTMBackward", function() nnr.autograd.grad(y:sum(), { x }, { create_graph = true }) end)
  end)
end)

describe("recurrent layers' errors", function()
  it("name what is wrong", function()
    local m = nn.LSTM(4, 3)
    H.fails("input has shape %[5, 2, 3%], expected input_size 4", function() m(nnr.randn(5, 2, 3)) end)
    H.fails("input must be 2%-d %(unbatched%) or 3%-d", function() m(nnr.randn(2, 3, 4, 4)) end)
    H.fails("hx must be {h_0, c_0}", function() m(nnr.randn(5, 2, 4), nnr.randn(1, 2, 3)) end)
    H.fails("h_0 has shape %[1, 3, 3%], expected %[1, 2, 3%]", function() m(nnr.randn(5, 2, 4), { nnr.randn(1, 3, 3), nnr.randn(1, 2, 3) }) end)
    H.fails("proj_size %(3%) must be smaller than hidden_size %(3%)", function() nn.LSTM(4, 3, { proj_size = 3 }) end)
    H.fails("GRU: unknown option 'proj_size'", function() nn.GRU(4, 3, { proj_size = 2 }) end)
    H.fails("nonlinearity must be one of 'tanh', 'relu'", function() nn.RNN(4, 3, { nonlinearity = "sigmoid" }) end)
    H.fails("unknown option", function() nn.GRU(4, 3, { num_layer = 2 }) end)
    H.fails("every operand must be f32 or f64", function()
      F.rnn_layer("gru", nnr.ones({ 2, 1, 2 }, { dtype = "i64" }), nnr.zeros({ 1, 2 }, { dtype = "i64" }), nil,
        nnr.ones({ 6, 2 }, { dtype = "i64" }), nnr.ones({ 6, 2 }, { dtype = "i64" }))
    end)
    H.fails("weight_hh has shape %[12, 2%], expected %[12, 3%]", function()
      F.rnn_layer("lstm", nnr.randn(2, 1, 2), nnr.zeros(1, 3), nnr.zeros(1, 3), nnr.randn(12, 2), nnr.randn(12, 2))
    end)
    H.fails("a cell state is for LSTM only", function()
      F.rnn_layer("gru", nnr.randn(2, 1, 2), nnr.zeros(1, 3), nnr.zeros(1, 3), nnr.randn(9, 2), nnr.randn(9, 3))
    end)
    H.fails("give both biases or neither", function()
      F.rnn_layer("rnn_tanh", nnr.randn(2, 1, 2), nnr.zeros(1, 3), nil, nnr.randn(3, 2), nnr.randn(3, 3), nnr.randn(3))
    end)
    H.fails("mode must be rnn_tanh, rnn_relu, lstm or gru", function() F.rnn_layer("lstmm") end)
    H.fails("LSTMCell: hx must be {h, c}", function() nn.LSTMCell(2, 3)(nnr.randn(1, 2), nnr.randn(1, 3)) end)
  end)
end)
