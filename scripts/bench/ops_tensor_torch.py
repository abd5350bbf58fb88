"""PyTorch side of the tensor-op benchmark (run_math.py): the same ops as ops_tensor.lua (dims 0-based
here). Usage: ops_tensor_torch.py THREADS. Prints one JSON object."""

import torch
import torch.nn.functional as F

from ops_timing_torch import print_json, threads, time_ms

nthreads = threads()
torch.manual_seed(1)
x, y, v = torch.randn(2048, 2048), torch.randn(2048, 2048), torch.randn(2048)
idx = torch.randint(0, 2048, (2048,))
gidx = idx.view(2048, 1).expand(2048, 16).contiguous()
m = x > 0
img = torch.randn(32, 64, 56, 56)
out = {"threads": nthreads}


def bench(key, fn):
    out[key + "_ms"] = time_ms(fn, 2, 9)


bench("sum", lambda: x.sum())
bench("sum_rows", lambda: x.sum(1))
bench("mean_cols", lambda: x.mean(0))
bench("max", lambda: x.max())
bench("max_rows", lambda: x.max(1))
bench("norm", lambda: x.norm())
bench("var_rows", lambda: x.var(1))
bench("softmax_rows", lambda: x.softmax(1))
bench("softmax_cols", lambda: x.softmax(0))
bench("cumsum_cols", lambda: x.cumsum(0))
bench("index_select_rows", lambda: x.index_select(0, idx))
bench("index_select_cols", lambda: x.index_select(1, idx))
bench("gather", lambda: x.gather(1, gidx))
bench("cat", lambda: torch.cat([x, y], 1))
bench("transpose_contiguous", lambda: x.t().contiguous())
bench("where", lambda: torch.where(m, x, y))
bench("clamp", lambda: x.clamp(-1, 1))
bench("masked_fill", lambda: x.masked_fill(m, 0))
bench("add_row", lambda: x + v)
bench("eq", lambda: x == y)
bench("to_bf16", lambda: x.bfloat16())
bench("to_f64", lambda: x.double())
bench("max_pool", lambda: F.max_pool2d(img, 2))
bench("avg_pool", lambda: F.avg_pool2d(img, 2))
bench("batch_norm_eval", lambda: F.batch_norm(img, torch.zeros(64), torch.ones(64), None, None, False))
bench("randn", lambda: torch.randn(2048, 2048))
# a classifier's loss (labels 0-based here)
s10, s1000 = torch.randn(256, 10), torch.randn(256, 1000)
l10, l1000 = torch.randint(0, 10, (256,)), torch.randint(0, 1000, (256,))
bench("log_softmax_short", lambda: s10.log_softmax(1))


def ce(s, lab):
    xs = s.detach().requires_grad_()
    F.cross_entropy(xs, lab).backward()
    return xs.grad


bench("cross_entropy_10", lambda: ce(s10, l10))
bench("cross_entropy_1000", lambda: ce(s1000, l1000))
print_json(out)
