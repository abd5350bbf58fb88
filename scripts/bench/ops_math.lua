-- nnrun side of the elementwise math benchmark (run_math.py runs it next to ops_math_torch.py): the f32
-- transcendental ops and the activations over 4M elements (16 MiB), each as a user writes it (a new
-- tensor per call). Usage: nnrun scripts/bench/ops_math.lua [THREADS]. Prints one JSON object of
-- median milliseconds. No timing is asserted.
local nnr = require "nnr"
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)
local F = nnr.nn.functional

nnr.manual_seed(1)
local n = 4 * 1024 * 1024
local x = nnr.randn(n)
local pos = x:abs() + 0.01
local out = { threads = threads }
local function bench(key, fn) out[key .. "_ms"] = timing.time_ms(fn, 3, 15) end
bench("exp", function() return x:exp() end)
bench("log", function() return pos:log() end)
bench("sqrt", function() return pos:sqrt() end)
bench("pow2", function() return x:pow(2) end)
bench("pow", function() return pos:pow(3.5) end)
bench("tanh", function() return x:tanh() end)
bench("sigmoid", function() return x:sigmoid() end)
bench("sin", function() return x:sin() end)
bench("cos", function() return x:cos() end)
bench("erf", function() return x:erf() end)
bench("gelu", function() return F.gelu(x) end)
bench("silu", function() return F.silu(x) end)
bench("softplus", function() return F.softplus(x) end)
bench("elu", function() return F.elu(x) end)
bench("leaky_relu", function() return F.leaky_relu(x, 0.01) end)
bench("mish", function() return F.mish(x) end)
timing.print_json(out)
