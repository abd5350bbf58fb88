"""PyTorch side of the LuaJIT kernel benchmark: PyTorch's own GELU (erf and tanh forms) and sum of
squares over 16M f32, for reference. Usage: ops_kernel_torch.py THREADS. Prints one JSON object."""

import torch
import torch.nn.functional as F

from ops_timing_torch import print_json, threads, time_ms

nthreads = threads()

torch.manual_seed(1)
x = torch.randn(16 * 1024 * 1024)
out = {"threads": nthreads}
out["builtin_gelu_ms"] = time_ms(lambda: F.gelu(x), 2, 9)
out["kernel_gelu_tanh_ms"] = time_ms(lambda: F.gelu(x, approximate="tanh"), 2, 9)
out["builtin_sumsq_ms"] = time_ms(lambda: (x * x).sum(), 2, 9)
print_json(out)
