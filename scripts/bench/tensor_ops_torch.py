"""PyTorch side of the foundation benchmark: the same workloads as
tensor_ops.lua. Usage: tensor_ops_torch.py THREADS. Prints one JSON object."""
import json
import statistics
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]))
clock = time.perf_counter
out = {}

a, b = torch.rand(4), torch.rand(4)
runs = []
for r in range(9):
    n = 100000
    t0 = clock()
    for i in range(n):
        c = a + b
    runs.append((clock() - t0) / n * 1e6)
out["small_add_us"] = statistics.median(runs)

n = 2 ** 25
a, b, c = torch.rand(n), torch.rand(n), torch.empty(n)
alloc, into, relu = [], [], []
for r in range(4):
    d = a + b
for r in range(11):
    t0 = clock()
    d = a + b
    t1 = clock()
    torch.add(a, b, out=c)
    t2 = clock()
    alloc.append(12 * n / (t1 - t0) / 1e9)
    into.append(12 * n / (t2 - t1) / 1e9)
    del d
for r in range(11):
    t0 = clock()
    e = torch.relu(a)
    relu.append(8 * n / (clock() - t0) / 1e9)
    del e
out["add_alloc_gbs"] = statistics.median(alloc)
out["add_out_gbs"] = statistics.median(into)
out["relu_gbs"] = statistics.median(relu)

N = 1024
a, b = torch.rand(N, N), torch.rand(N, N)
for r in range(20):
    a @ b
runs = []
for r in range(31):
    t0 = clock()
    d = a @ b
    runs.append(2 * N ** 3 / (clock() - t0) / 1e9)
out["matmul_gflops"] = statistics.median(runs)
out["version"] = torch.__version__
out["threads"] = torch.get_num_threads()
print(json.dumps(out))
