#!/usr/bin/env python3
"""Training throughput, nnrun vs PyTorch in one run: mlp and cnn at batch 64
and 256, 2 threads for nnrun; PyTorch at its best (the faster of 1 or 2
threads, OMP_WAIT_POLICY=PASSIVE, the same OpenBLAS kernels). Prints a table
with ratios and rewrites the training section of docs/perf.md.
Usage: scripts/bench/run_train.py [--no-write]"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, blas_env, cpu_model, find_torch_python, write_perf_section  # noqa: E402

STEPS = {"mlp": 300, "cnn": 60}


def main():
    env = blas_env()
    torch_py = find_torch_python()
    rows, version = [], "not installed"
    for kind in ("mlp", "cnn"):
        for batch in (64, 256):
            steps = str(STEPS[kind] if batch == 64 else STEPS[kind] // 2)
            ours = json.loads(subprocess.run([NNRUN, os.path.join(ROOT, "scripts/bench/train.lua"), kind, str(batch), steps],
                                             check=True, capture_output=True, text=True, env=env).stdout)["samples_per_s"]
            theirs, best_threads = None, None
            if torch_py:
                for t in (1, 2):
                    r = json.loads(subprocess.run([torch_py, os.path.join(ROOT, "scripts/bench/train_torch.py"), kind, str(batch), str(t), steps],
                                                  check=True, capture_output=True, text=True, env=dict(env, OMP_WAIT_POLICY="PASSIVE")).stdout)
                    version = r["version"]
                    if theirs is None or r["samples_per_s"] > theirs:
                        theirs, best_threads = r["samples_per_s"], t
            rows.append((kind, batch, ours, theirs, best_threads))
    table = "| model | batch | nnrun (2 threads) | PyTorch (best threads) | nnrun / PyTorch |\n|---|---|---|---|---|\n"
    for kind, batch, ours, theirs, t in rows:
        table += f"| {kind} | {batch} | {ours:,.0f} samples/s | " + (f"{theirs:,.0f} samples/s ({t})" if theirs else "-") + \
                 " | " + (f"{ours / theirs:.2f}x" if theirs else "-") + " |\n"
    machine = f"{cpu_model()}, {os.cpu_count()} cores; PyTorch {version} (OMP_WAIT_POLICY=PASSIVE, same OpenBLAS kernels)"
    print(machine)
    print(table)
    if "--no-write" not in sys.argv:
        write_perf_section("training", f"## Training throughput (Fashion-MNIST models)\n\n`scripts/bench/run_train.py`, "
                                       f"{time.strftime('%Y-%m-%d')}: SGD lr 0.01 momentum 0.9, median over windows of steps after a warm-up.\n\n"
                                       f"Machine: {machine}.\n\n{table}")


if __name__ == "__main__":
    main()
