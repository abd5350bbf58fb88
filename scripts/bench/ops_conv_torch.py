"""PyTorch side of the conv1d / transposed-convolution benchmark: the same workloads as ops_conv.lua.
Usage: ops_conv_torch.py THREADS. Prints one JSON object (median milliseconds)."""
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
out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
cases = [
    ("conv1d_audio", (8, 32, 8000), (64, 32, 9), lambda x, w: F.conv1d(x, w, padding=4)),
    ("conv_transpose1d_x4", (8, 64, 1000), (64, 32, 8), lambda x, w: F.conv_transpose1d(x, w, stride=4, padding=2)),
    ("conv_transpose2d_7to14", (32, 64, 7, 7), (64, 32, 3, 3), lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)),
    ("conv_transpose2d_16to32", (16, 64, 16, 16), (64, 32, 4, 4), lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1)),
]
for name, xs, ws, fn in cases:
    x, w = torch.randn(*xs), torch.randn(*ws) * 0.1

    def fwd():
        with torch.no_grad():
            return fn(x, w)
    out[name + "_fwd_ms"] = time_ms(fwd, 3, 15)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

    def fwdbwd():
        xg.grad = wg.grad = None
        fn(xg, wg).sum().backward()
    out[name + "_fwdbwd_ms"] = time_ms(fwdbwd, 2, 9)
print(json.dumps(out, sort_keys=True))
