#!/usr/bin/env python3
"""CPU performance, nnrun vs PyTorch in one run (issue 5's table):
  - training throughput: mlp and cnn at batch 64 and 256 (SGD lr 0.01 momentum 0.9);
  - inference: latency at batch 1 and throughput at batch 256 (eval, no gradients);
  - the OpenBLAS sgemm rate (1024^3, its own 2 threads) measured in the same run, and the
    share of it the mlp reaches at batch 256 (2.4 MFLOP per sample per step);
  - the profile's top ops for each training workload (nnr.profiler).
nnrun uses 2 threads; PyTorch its best of 1 or 2 threads with OMP_WAIT_POLICY=PASSIVE and
the same OpenBLAS kernels. The shared machine's speed drifts by tens of percent within
minutes, so each workload runs ROUNDS times with nnrun and PyTorch interleaved, and the
medians are compared. Prints the tables with ratios and rewrites the "training" section of
docs/perf.md.  Usage: scripts/bench/run_cpu.py [--no-write] [--quick]"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, STREAM, blas_env, cpu_model, find_torch_python, torch_best, write_perf_section  # noqa: E402

BENCH = os.path.join(ROOT, "scripts/bench")
QUICK = "--quick" in sys.argv
STEPS = {"mlp": 150 if QUICK else 300, "cnn": 30 if QUICK else 60}
ROUNDS = 1 if QUICK else 3
MLP_FLOP = 2.4e6   # per sample per training step (issue 5)


def ours(*args):
    return json.loads(subprocess.run([NNRUN, os.path.join(BENCH, "train.lua"), *map(str, args)], check=True,
                                     capture_output=True, text=True, env=dict(ENV, NNR_NUM_THREADS="2")).stdout)


def theirs(*args):
    """PyTorch's best of 1 or 2 threads; args as train_torch.py takes them, threads inserted"""
    return torch_best(TORCH, os.path.join(BENCH, "train_torch.py"), args, 3 if args[0] == "infer" else 2, ENV)[0]


def interleaved(args, torch_args):
    """ROUNDS rounds of (nnrun, PyTorch at its best): the median result of each side"""
    mine, theirs_runs = [], []
    for _ in range(ROUNDS):
        mine.append(ours(*args))
        if TORCH:
            theirs_runs.append(theirs(*torch_args))
    med = lambda runs: sorted(runs, key=lambda r: r["samples_per_s"])[len(runs) // 2] if runs else None  # noqa: E731
    return med(mine), med(theirs_runs)


def main():
    global ENV, TORCH
    ENV = blas_env()
    TORCH = find_torch_python()
    version = "not installed"
    def sgemm_rate():
        return json.loads(subprocess.run([STREAM, "sgemm", "1024", "15"], check=True, capture_output=True, text=True,
                                         env=dict(ENV, OPENBLAS_NUM_THREADS="2")).stdout)["median_gflops"]
    train = "| training | nnrun (2 threads) | PyTorch (best threads) | nnrun / PyTorch | target |\n|---|---|---|---|---|\n"
    tops = ""
    mlp256 = None
    for kind in ("mlp", "cnn"):
        for batch in (64, 256):
            steps = STEPS[kind] if batch == 64 else STEPS[kind] // 2
            o, t = interleaved((kind, batch, steps), (kind, batch, steps))
            o = o["samples_per_s"]
            if t:
                version = t["version"]
            if kind == "mlp" and batch == 256:
                mlp256 = o
                sgemm = sgemm_rate()      # right after the mlp, so the two see the machine alike
            train += f"| {kind}, batch {batch} | {o:,.0f} samples/s | " + (f"{t['samples_per_s']:,.0f} ({t['threads']})" if t else "-") + \
                     " | " + (f"{o / t['samples_per_s']:.2f}x" if t else "-") + " | >= 1.5x |\n"
            print(train.splitlines()[-1], flush=True)
            prof = ours("profile", kind, batch, max(10, steps // 3))["ops"]
            tops += f"| {kind}, batch {batch} | " + ", ".join(f"{n} {100 * s:.0f}%" for n, s in prof) + " |\n"
    infer = "| inference | nnrun (2 threads) | PyTorch (best threads) | nnrun / PyTorch | target |\n|---|---|---|---|---|\n"
    for kind in ("mlp", "cnn"):
        for batch, iters, target in ((1, 2000 if kind == "mlp" else 1000, ">= 2x"), (256, 100 if kind == "mlp" else 20, ">= 1.2x" if kind == "mlp" else ">= 2x")):
            o, t = interleaved(("infer", kind, batch, iters), ("infer", kind, batch, iters))
            if batch == 1:
                cell_o, cell_t = f"{o['us_per_batch']:.1f} us", (f"{t['us_per_batch']:.1f} us ({t['threads']})" if t else "-")
            else:
                cell_o, cell_t = f"{o['samples_per_s']:,.0f} samples/s", (f"{t['samples_per_s']:,.0f} samples/s ({t['threads']})" if t else "-")
            infer += f"| {kind}, batch {batch} | {cell_o} | {cell_t} | " + (f"{o['samples_per_s'] / t['samples_per_s']:.2f}x" if t else "-") + f" | {target} |\n"
            print(infer.splitlines()[-1], flush=True)
    share = mlp256 * MLP_FLOP / 1e9 / sgemm
    gemm = f"OpenBLAS sgemm 1024^3 with its own 2 threads: {sgemm:.0f} GFLOP/s (median of 15). The mlp at batch 256 trains at " \
           f"{mlp256 * MLP_FLOP / 1e9:.0f} GFLOP/s = {100 * share:.0f}% of it (target >= 60%)."
    print(gemm)
    machine = f"{cpu_model()}, {os.cpu_count()} cores; PyTorch {version} (OMP_WAIT_POLICY=PASSIVE, same OpenBLAS kernels)"
    print(machine)
    if "--no-write" not in sys.argv:
        write_perf_section("training", f"## CPU: training and inference against PyTorch\n\n`scripts/bench/run_cpu.py`, "
                           f"{time.strftime('%Y-%m-%d')}. Training: SGD lr 0.01 momentum 0.9, median over windows of steps after a "
                           f"warm-up. Inference: eval mode without gradients, the median pass. Each row: the median of {ROUNDS} "
                           f"interleaved rounds per side (this shared machine's speed drifts by tens of percent within minutes; "
                           f"PyTorch's cnn ran at 1,635-2,429 samples/s in runs an hour apart). Machine: {machine}.\n\n{train}\n{infer}\n"
                           f"{gemm}\n\nWhere the time goes (nnr.profiler, share of op time, top 6):\n\n| workload | top ops |\n|---|---|\n{tops}")


if __name__ == "__main__":
    main()
