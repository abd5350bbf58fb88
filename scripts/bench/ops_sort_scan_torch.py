"""PyTorch side of the sort / topk / cumsum benchmark: the same workloads as ops_sort_scan.lua
(stable sorts, as nnrun's always are). Usage: ops_sort_scan_torch.py THREADS. Prints one
JSON object of medians in milliseconds."""

import torch

from ops_timing_torch import print_json, threads, time_ms

nthreads = threads()

torch.manual_seed(0)
out = {"threads": nthreads}
x = torch.randn(2 ** 20)
out["sort_1m_f32_ms"] = time_ms(lambda: torch.sort(x, stable=True))
out["sort_1m_f32_descending_ms"] = time_ms(lambda: torch.sort(x, descending=True, stable=True))
out["topk_1m_f32_k10_ms"] = time_ms(lambda: torch.topk(x, 10))
out["topk_1m_f32_k1000_ms"] = time_ms(lambda: torch.topk(x, 1000))
rows = torch.randn(1024, 1024)
out["sort_1024x1024_f32_ms"] = time_ms(lambda: torch.sort(rows, dim=1, stable=True))
out["topk_1024x1024_f32_k10_ms"] = time_ms(lambda: torch.topk(rows, 10, 1))
big = torch.randn(2 ** 24)
out["cumsum_16m_f32_ms"] = time_ms(lambda: torch.cumsum(big, 0))
grid = torch.randn(4096, 4096)
out["cumsum_4096x4096_f32_ms"] = time_ms(lambda: torch.cumsum(grid, 1))
out["version"] = torch.__version__
print_json(out)
