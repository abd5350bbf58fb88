"""PyTorch side of the conv1d / transposed-convolution benchmark: the same workloads as ops_conv.lua.
Usage: ops_conv_torch.py THREADS. Prints one JSON object (median milliseconds)."""

import torch
import torch.nn.functional as F

from ops_timing_torch import print_json, threads, time_ms

nthreads = threads()

torch.manual_seed(1)
out = {"threads": nthreads}
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
print_json(out)
