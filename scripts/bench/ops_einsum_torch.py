"""PyTorch side of the einsum benchmark: the same workloads as ops_einsum.lua.
Usage: ops_einsum_torch.py THREADS. Prints one JSON object (median milliseconds)."""

import torch

from ops_timing_torch import print_json, threads, time_ms

nthreads = threads()

torch.manual_seed(1)
B, H, T, D = 8, 8, 256, 64
q, k, v = torch.randn(B, H, T, D), torch.randn(B, H, T, D), torch.randn(B, H, T, D)
s = torch.randn(B, H, T, T)
out = {"threads": nthreads}
out["einsum_bhqd_bhkd_ms"] = time_ms(lambda: torch.einsum("bhqd,bhkd->bhqk", q, k), 5, 21)
out["matmul_qkt_ms"] = time_ms(lambda: q @ k.transpose(-1, -2), 5, 21)
out["einsum_bhqk_bhkd_ms"] = time_ms(lambda: torch.einsum("bhqk,bhkd->bhqd", s, v), 5, 21)
out["matmul_sv_ms"] = time_ms(lambda: s @ v, 5, 21)
x, w = torch.randn(64, 512, 256), torch.randn(256, 512)
out["einsum_bik_kj_ms"] = time_ms(lambda: torch.einsum("bik,kj->bij", x, w), 3, 11)
out["matmul_bik_kj_ms"] = time_ms(lambda: x @ w, 3, 11)
print_json(out)
