"""What the ops_*_torch.py benchmark scripts share: argv[1] as the thread count, the median time
of a call, and the one JSON line each prints. No timing is asserted."""
import json
import statistics
import sys
import time

import torch


def threads():
    if len(sys.argv) > 1:
        torch.set_num_threads(int(sys.argv[1]))
    return torch.get_num_threads()


def time_ms(fn, warm=2, runs=11):
    """the median time of fn() in milliseconds over runs samples, after warm calls; a call under 1 ms
    is repeated within each sample to fill about 1 ms (as ops_timing.lua does)"""
    for _ in range(warm):
        fn()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    reps = min(1000, -(-1e-3 // max(first, 1e-6))) if first < 1e-3 else 1
    reps = int(reps)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        t.append((time.perf_counter() - t0) * 1e3 / reps)
    return statistics.median(t)


def print_json(out):
    out.setdefault("torch", torch.__version__)
    print(json.dumps(out, sort_keys=True))
