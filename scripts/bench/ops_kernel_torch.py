"""PyTorch side of the LuaJIT kernel benchmark: PyTorch's own GELU (erf and tanh forms) and sum of
squares over 16M f32, for reference. Usage: ops_kernel_torch.py THREADS. Prints one JSON object."""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
clock = time.perf_counter


def time_ms(fn, warm, runs):
    for _ in range(warm):
        fn()
    t = []
    for _ in range(runs):
        t0 = clock()
        fn()
        t.append((clock() - t0) * 1e3)
    return statistics.median(t)


torch.manual_seed(1)
x = torch.randn(16 * 1024 * 1024)
out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
out["builtin_gelu_ms"] = time_ms(lambda: F.gelu(x), 2, 9)
out["kernel_gelu_tanh_ms"] = time_ms(lambda: F.gelu(x, approximate="tanh"), 2, 9)
out["builtin_sumsq_ms"] = time_ms(lambda: (x * x).sum(), 2, 9)
print(json.dumps(out, sort_keys=True))
