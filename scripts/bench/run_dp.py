#!/usr/bin/env python3
"""DataParallel over two cpu devices with 1 thread each against one device with 1 thread, on the
cnn of the main job (scripts/bench/data_parallel.lua): training samples/s at batch 64 and 256,
one device and two devices interleaved over ROUNDS rounds, medians and their ratio (issue 8's
target: >= 1.7x, 85% parallel efficiency). Rewrites the "data parallel" section of docs/perf.md.
Usage: scripts/bench/run_dp.py [--no-write]"""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, blas_env, cpu_model, write_perf_section  # noqa: E402

ROUNDS = 5
env = dict(blas_env(), NNR_CPU_DEVICES="2", NNR_NUM_THREADS="1")
rows = []
for batch, steps in ((64, 40), (256, 16)):
    res = {1: [], 2: []}
    for _ in range(ROUNDS):
        for d in (1, 2):
            out = subprocess.run([NNRUN, os.path.join(ROOT, "scripts/bench/data_parallel.lua"), str(d), str(batch), str(steps)],
                                 check=True, capture_output=True, text=True, env=env).stdout
            res[d].append(json.loads(out)["samples_per_s"])
    one, two = statistics.median(res[1]), statistics.median(res[2])
    rows.append((batch, one, two, two / one))
    print(f"batch {batch}: one device {one:.0f}, two devices {two:.0f} samples/s: {two / one:.2f}x ({res})")
text = (f"Machine: {cpu_model()} (2 cores); cnn of the main job, SGD, 1 thread per device (NNR_NUM_THREADS=1, "
        f"NNR_CPU_DEVICES=2); {ROUNDS} interleaved rounds, medians; `scripts/bench/run_dp.py`.\n\n"
        "| batch | 1 device (samples/s) | DataParallel over cpu:0, cpu:1 | speedup | parallel efficiency |\n|---:|---:|---:|---:|---:|\n")
for batch, one, two, r in rows:
    text += f"| {batch} | {one:,.0f} | {two:,.0f} | {r:.2f}x | {r / 2:.0%} |\n"
print(text)
if "--no-write" not in sys.argv:
    write_perf_section("data parallel", "## DataParallel (CPU devices)\n\n" + text)
