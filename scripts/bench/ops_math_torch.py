"""PyTorch side of the elementwise math benchmark (run_math.py): the same ops as ops_math.lua over 4M
f32, a new tensor per call. Usage: ops_math_torch.py THREADS. Prints one JSON object."""

import torch
import torch.nn.functional as F

from ops_timing_torch import print_json, threads, time_ms

nthreads = threads()
torch.manual_seed(1)
n = 4 * 1024 * 1024
x = torch.randn(n)
pos = x.abs() + 0.01
out = {"threads": nthreads}


def bench(key, fn):
    out[key + "_ms"] = time_ms(fn, 3, 15)


bench("exp", lambda: x.exp())
bench("log", lambda: pos.log())
bench("sqrt", lambda: pos.sqrt())
bench("pow2", lambda: x.pow(2))
bench("pow", lambda: pos.pow(3.5))
bench("tanh", lambda: x.tanh())
bench("sigmoid", lambda: x.sigmoid())
bench("sin", lambda: x.sin())
bench("cos", lambda: x.cos())
bench("erf", lambda: x.erf())
bench("gelu", lambda: F.gelu(x))
bench("silu", lambda: F.silu(x))
bench("softplus", lambda: F.softplus(x))
bench("elu", lambda: F.elu(x))
bench("leaky_relu", lambda: F.leaky_relu(x, 0.01))
bench("mish", lambda: F.mish(x))
print_json(out)
