"""Issue 17's recurrent layers against PyTorch: nn.RNN, nn.LSTM (with a projection), nn.GRU and their
cells, loaded with the same weights through load_state_dict (strict: PyTorch's names, shapes and gate
order), on random (transposed, strided) inputs: outputs, final states, and the gradients of the
input, the initial states and every parameter."""
import harness

s = harness.Suite("recurrent")

def t(shape, **kw):
    return s.tensor(shape, low=-1, high=1, **kw)


def params(gates, input_size, hidden, layers=1, bidirectional=False, bias=True, proj=0, cell=False):
    """PyTorch's parameter names and shapes for the layer (or the cell)"""
    p = {}
    out = proj or hidden
    dirs = 2 if bidirectional else 1
    for l in range(1 if cell else layers):
        for d in range(dirs):
            sfx = "" if cell else "_l%d%s" % (l, "_reverse" if d else "")
            n_in = input_size if l == 0 else out * dirs
            p["weight_ih" + sfx] = t([gates * hidden, n_in])
            p["weight_hh" + sfx] = t([gates * hidden, hidden if cell else out])
            if bias:
                p["bias_ih" + sfx] = t([gates * hidden])
                p["bias_hh" + sfx] = t([gates * hidden])
            if proj:
                p["weight_hr" + sfx] = t([proj, hidden])
    return p


def case(name, inputs, lua, py, prm, lua_call, py_call):
    s.module_case(name, inputs, lua, py, lua_call, py_call, prm)


SEQ_LUA = "local y, h = m(x1%s); return {y, h}"
SEQ_PY = "y, h = m(x1%s); return y, h"
LSTM_LUA = "local y, s = m(x1%s); return {y, s[1], s[2]}"
LSTM_PY = "y, (h, c) = m(x1%s); return y, h, c"

# ---- RNN -----------------------------------------------------------------------------------------
case("RNN tanh, 2 layers (transposed input)", [t([5, 3, 4], layout="transposed")], "nn.RNN(4, 6, {num_layers = 2})",
     "nn.RNN(4, 6, num_layers=2)", params(1, 4, 6, 2), SEQ_LUA % "", SEQ_PY % "")
case("RNN relu, bidirectional, batch_first, with h0", [t([2, 5, 3]), t([2, 2, 4])],
     "nn.RNN(3, 4, {nonlinearity = 'relu', bidirectional = true, batch_first = true})",
     "nn.RNN(3, 4, nonlinearity='relu', bidirectional=True, batch_first=True)", params(1, 3, 4, 1, True), SEQ_LUA % ", x2",
     SEQ_PY % ", x2")
case("RNN without bias, unbatched [T, I]", [t([4, 3])], "nn.RNN(3, 5, {bias = false})", "nn.RNN(3, 5, bias=False)",
     params(1, 3, 5, bias=False), SEQ_LUA % "", SEQ_PY % "")

# ---- LSTM ----------------------------------------------------------------------------------------
case("LSTM, 2 layers, bidirectional (strided input)", [t([6, 2, 3], layout="strided")],
     "nn.LSTM(3, 5, {num_layers = 2, bidirectional = true})", "nn.LSTM(3, 5, num_layers=2, bidirectional=True)",
     params(4, 3, 5, 2, True), LSTM_LUA % "", LSTM_PY % "")
case("LSTM with h0 and c0, batch_first", [t([3, 4, 2]), t([1, 3, 6]), t([1, 3, 6])], "nn.LSTM(2, 6, {batch_first = true})",
     "nn.LSTM(2, 6, batch_first=True)", params(4, 2, 6), LSTM_LUA % ", {x2, x3}", LSTM_PY % ", (x2, x3)")
case("LSTM with proj_size 3, 2 layers", [t([4, 2, 3])], "nn.LSTM(3, 5, {num_layers = 2, proj_size = 3})",
     "nn.LSTM(3, 5, num_layers=2, proj_size=3)", params(4, 3, 5, 2, proj=3), LSTM_LUA % "", LSTM_PY % "")
case("LSTM with proj_size, bidirectional, h0 [2, B, proj]", [t([3, 2, 4]), t([2, 2, 2]), t([2, 2, 4])],
     "nn.LSTM(4, 4, {proj_size = 2, bidirectional = true})", "nn.LSTM(4, 4, proj_size=2, bidirectional=True)",
     params(4, 4, 4, 1, True, proj=2), LSTM_LUA % ", {x2, x3}", LSTM_PY % ", (x2, x3)")

# ---- GRU -----------------------------------------------------------------------------------------
case("GRU, 3 layers (transposed input)", [t([5, 2, 3], layout="transposed")], "nn.GRU(3, 4, {num_layers = 3})",
     "nn.GRU(3, 4, num_layers=3)", params(3, 3, 4, 3), SEQ_LUA % "", SEQ_PY % "")
case("GRU bidirectional, batch_first, with h0, no bias", [t([2, 4, 3]), t([2, 2, 5])],
     "nn.GRU(3, 5, {bidirectional = true, batch_first = true, bias = false})",
     "nn.GRU(3, 5, bidirectional=True, batch_first=True, bias=False)", params(3, 3, 5, 1, True, bias=False), SEQ_LUA % ", x2",
     SEQ_PY % ", x2")

# ---- cells ---------------------------------------------------------------------------------------
case("RNNCell relu with h", [t([3, 4]), t([3, 5])], "nn.RNNCell(4, 5, {nonlinearity = 'relu'})",
     "nn.RNNCell(4, 5, nonlinearity='relu')", params(1, 4, 5, cell=True), "return m(x1, x2)", "return m(x1, x2)")
case("LSTMCell with (h, c)", [t([2, 3]), t([2, 4]), t([2, 4])], "nn.LSTMCell(3, 4)", "nn.LSTMCell(3, 4)", params(4, 3, 4, cell=True),
     "local h, c = m(x1, {x2, x3}); return {h, c}", "return m(x1, (x2, x3))")
case("GRUCell unbatched, no state", [t([3])], "nn.GRUCell(3, 2)", "nn.GRUCell(3, 2)", params(3, 3, 2, cell=True),
     "return m(x1)", "return m(x1)")
case("GRUCell without bias, two steps", [t([2, 3]), t([2, 3])], "nn.GRUCell(3, 4, {bias = false})", "nn.GRUCell(3, 4, bias=False)",
     params(3, 3, 4, bias=False, cell=True), "local h = m(x1); return m(x2, h)", "h = m(x1); return m(x2, h)")

# ---- float32 ---------------------------------------------------------------------------------------
s.case("LSTM in float32 (the vectorized gates)", [t([7, 3, 8], dtype="f32")],
       lua="local m = nn.LSTM(8, 16); local sd = {}; for k, v in pairs(P) do sd[k] = v end; m:load_state_dict(sd); "
           "local y, st = m(x1); return {y, st[1], st[2]}",
       py="m = nn.LSTM(8, 16); m.load_state_dict(dict(vars(P))); y, (h, c) = m(x1); return y, h, c",
       params={k: s.tensor(v.shape, dtype="f32", low=-0.3, high=0.3) for k, v in params(4, 8, 16).items()}, grad=True,
       atol=2e-5, rtol=2e-5)

# ---- errors ----------------------------------------------------------------------------------------
s.raises("LSTM: input of the wrong size", [t([3, 2, 5])], lua="return nn.LSTM(4, 3)(x1)", py="return nn.LSTM(4, 3)(x1)")
s.raises("GRU: h0 of the wrong shape", [t([3, 2, 4]), t([2, 2, 3])], lua="return nn.GRU(4, 3)(x1, x2)",
         py="return nn.GRU(4, 3)(x1, x2)")
s.raises("LSTM: proj_size not below hidden_size", [], lua="return nn.LSTM(4, 3, {proj_size = 3})",
         py="return nn.LSTM(4, 3, proj_size=3)")
s.run()
