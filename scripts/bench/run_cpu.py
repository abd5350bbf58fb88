#!/usr/bin/env python3
"""CPU performance, nnrun vs PyTorch in one run (issue 5's table):
  - training throughput: mlp and cnn at batch 64 and 256 (SGD lr 0.01 momentum 0.9);
  - inference: latency at batch 1 and throughput at batch 256 (eval, no gradients);
  - the OpenBLAS sgemm rate (1024^3, its own 2 threads) measured in the same run, and the
    share of it the mlp reaches at batch 256 (2.4 MFLOP per sample per step);
  - the profile's top ops for each training workload (nnr.profiler).
nnrun uses 2 threads; PyTorch its best of 1 or 2 threads with OMP_WAIT_POLICY=PASSIVE, for
each PyTorch found (Debian's python3-torch and pip's in the benchmarks' virtual environment,
scripts/bench/torch_venv.sh; TORCH_PYTHON=py, or --torch py ..., names them), the faster of them
per row. The shared machine's speed drifts by tens of percent within
minutes, so each workload runs ROUNDS times with nnrun and PyTorch interleaved, and the
medians are compared. Prints the tables with ratios and rewrites the "training" section of
docs/perf.md.  Usage: scripts/bench/run_cpu.py [--no-write] [--quick] [--isa CLASS] [--torch PY ...]
--isa avx2 (or another class below the machine's): both sides capped at that CPU class (nnrun by
NNR_CPU_ISA; PyTorch by ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS and FBGEMM_ENABLE_INSTRUCTIONS), the table
written to its own section ("training_avx2").
--baseline BUILD_DIR [--rounds N]: the same training and inference workloads with another build's
nnrun (an older commit: scripts/bench/build_baseline.sh), interleaved with this one N times (default
5), no PyTorch; with run.py --baseline's rows, rewrites the "baseline" section of docs/perf.md."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from side_by_side import cap_isa, torch_build, torch_pythons  # noqa: E402
from run import (BASE_NNRUN, BASELINE, BUILD, NNRUN, ROOT, ROUNDS_COMPARED, STREAM, blas_env, both, compare_rows,  # noqa: E402
                 cpu_classes, cpu_model, find_torch_python, package_versions, torch_best, write_perf_section)

BENCH = os.path.join(ROOT, "scripts/bench")
QUICK = "--quick" in sys.argv
STEPS = {"mlp": 150 if QUICK else 300, "cnn": 30 if QUICK else 60}
ROUNDS = 1 if QUICK else 3
MLP_FLOP = 2.4e6   # per sample per training step (issue 5)


def ours(*args):
    return json.loads(subprocess.run([NNRUN, os.path.join(BENCH, "train.lua"), *map(str, args)], check=True,
                                     capture_output=True, text=True, env=dict(ENV, NNR_NUM_THREADS="2")).stdout)


def theirs(*args):
    """the faster PyTorch, each at its best of 1 or 2 threads; args as train_torch.py takes them, threads
    inserted. The result names the build: "2.15.0 (pip)" or "1.13.0 (Debian)" """
    best = None
    for py in TORCHES:
        r, threads = torch_best(py, os.path.join(BENCH, "train_torch.py"), args, 3 if args[0] == "infer" else 2, ENV)
        r = dict(r, threads=threads, version=f"{r['version']} ({torch_build(py)})")
        VERSIONS.add(r["version"])
        if best is None or r["samples_per_s"] > best["samples_per_s"]:
            best = r
    return best


def interleaved(args, torch_args):
    """ROUNDS rounds of (nnrun, PyTorch at its best): the median result of each side"""
    mine, theirs_runs = [], []
    for _ in range(ROUNDS):
        mine.append(ours(*args))
        if TORCH:
            theirs_runs.append(theirs(*torch_args))
    med = lambda runs: sorted(runs, key=lambda r: r["samples_per_s"])[len(runs) // 2] if runs else None  # noqa: E731
    return med(mine), med(theirs_runs)


def run_train(exe, *args):
    return json.loads(subprocess.run([exe, os.path.join(BENCH, "train.lua"), *map(str, args)], check=True,
                                     capture_output=True, text=True, env=dict(ENV, NNR_NUM_THREADS="2")).stdout)


def compare_baseline():
    """every workload with this nnrun and the baseline's, interleaved ROUNDS_COMPARED times"""
    global ENV
    ENV = blas_env()
    workloads = []
    for kind in ("mlp", "cnn"):
        for batch in (64, 256):
            steps = STEPS[kind] if batch == 64 else STEPS[kind] // 2
            workloads.append((f"{kind} training, batch {batch}", "samples/s", False, (kind, batch, steps), "samples_per_s"))
    for kind in ("mlp", "cnn"):
        workloads.append((f"{kind} inference, batch 1", "us", True, ("infer", kind, 1, 2000 if kind == "mlp" else 1000), "us_per_batch"))
        workloads.append((f"{kind} inference, batch 256", "samples/s", False, ("infer", kind, 256, 100 if kind == "mlp" else 20),
                          "samples_per_s"))
    rows = []
    for name, unit, lower, args, key in workloads:
        new, old = [], []
        for k in range(ROUNDS_COMPARED):
            a, b = both(lambda: run_train(NNRUN, *args)[key], lambda: run_train(BASE_NNRUN, *args)[key], k)
            new.append(a)
            old.append(b)
        rows.append((name, unit, lower, new, old))
        print(compare_rows(rows[-1:])[0].splitlines()[-1], flush=True)
    table, worst = compare_rows(rows)
    found = os.path.join(BUILD, "baseline_foundation.md")
    foundation = open(found).read() if os.path.exists(found) else ""
    if foundation:
        worst = max(worst, compare_rows_worst(foundation))
    base_version = subprocess.run(["git", "-C", os.path.join(BASELINE, "src"), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
    text = (f"`scripts/bench/run.py --baseline` and `run_cpu.py --baseline`, {time.strftime('%Y-%m-%d')}: this commit's nnrun and "
            f"the baseline's ({BASELINE}{', ' + base_version if base_version else ''}) on the same workloads, interleaved, "
            f"{ROUNDS_COMPARED} rounds, medians; speed ratios above 1 mean this commit is faster. Machine: {cpu_model()}, "
            f"{os.cpu_count()} cores ({cpu_classes()}); {package_versions('libopenblas0-pthread', 'libluajit-5.1-2', 'gcc')}. "
            f"Worst slowdown: {100 * worst:.1f}%.\n\n{foundation}\n{table}")
    print(text)
    if "--no-write" not in sys.argv:
        write_perf_section("baseline", "## The layout refactor (issue 14) against the commit before it\n\n" + text)


def compare_rows_worst(table):
    """the worst slowdown in a table compare_rows made"""
    worst = 0
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[-1].endswith("x"):
            worst = max(worst, 1 - float(cells[-1][:-1]))
    return worst


def main():
    global ENV, TORCH
    if BASELINE:
        compare_baseline()
        return
    global TORCHES, VERSIONS
    isa = cap_isa(sys.argv)
    ENV = blas_env()
    given = [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--torch"]
    if os.environ.get("TORCH_PYTHON"):
        given.append(os.environ["TORCH_PYTHON"])
    TORCHES = [py for py in torch_pythons(given) if subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0]
    TORCH = TORCHES[0] if TORCHES else None
    VERSIONS = set()
    # which of nnrun's paths this machine runs (the CPU class, oneDNN, the small-batch kernel, the int8 kernel)
    probe = ("local c, q = nnr.backends.cpu, ''\n"
             "for _, b in ipairs(nnr.backends.list()) do if b.name == 'quant' then q = b.message:match(': (.-) kernels') or '?' end end\n"
             "io.write(string.format('{\"isa\": %q, \"onednn\": %q, \"gemv\": %s, \"quant\": %q}', c.isa, tostring(c.onednn_version), tostring(c.gemv), q))")
    paths = json.loads(subprocess.run([NNRUN, "-e", probe], check=True, capture_output=True, text=True, env=ENV).stdout)
    print("nnrun paths:", paths, flush=True)
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
            train += f"| {kind}, batch {batch} | {o:,.0f} samples/s | " + (f"{t['samples_per_s']:,.0f} ({t['version']}, {t['threads']})" if t else "-") + \
                     " | " + (f"{o / t['samples_per_s']:.2f}x" if t else "-") + " | >= 1.5x |\n"
            print(train.splitlines()[-1], flush=True)
            prof = ours("profile", kind, batch, max(10, steps // 3))["ops"]
            tops += f"| {kind}, batch {batch} | " + ", ".join(f"{n} {100 * s:.0f}%" for n, s in prof) + " |\n"
    infer = "| inference | nnrun (2 threads) | PyTorch (best threads) | nnrun / PyTorch | target |\n|---|---|---|---|---|\n"
    for kind in ("mlp", "cnn"):
        for batch, iters, target in ((1, 2000 if kind == "mlp" else 1000, ">= 2x"), (256, 100 if kind == "mlp" else 20, ">= 1.2x" if kind == "mlp" else ">= 2x")):
            o, t = interleaved(("infer", kind, batch, iters), ("infer", kind, batch, iters))
            if batch == 1:
                cell_o, cell_t = f"{o['us_per_batch']:.1f} us", (f"{t['us_per_batch']:.1f} us ({t['version']}, {t['threads']})" if t else "-")
            else:
                cell_o, cell_t = f"{o['samples_per_s']:,.0f} samples/s", (f"{t['samples_per_s']:,.0f} samples/s ({t['version']}, {t['threads']})" if t else "-")
            infer += f"| {kind}, batch {batch} | {cell_o} | {cell_t} | " + (f"{o['samples_per_s'] / t['samples_per_s']:.2f}x" if t else "-") + f" | {target} |\n"
            print(infer.splitlines()[-1], flush=True)
    share = mlp256 * MLP_FLOP / 1e9 / sgemm
    gemm = f"OpenBLAS sgemm 1024^3 with its own 2 threads: {sgemm:.0f} GFLOP/s (median of 15). The mlp at batch 256 trains at " \
           f"{mlp256 * MLP_FLOP / 1e9:.0f} GFLOP/s = {100 * share:.0f}% of it (target >= 60%)."
    print(gemm)
    machine = (f"{cpu_model()}, {os.cpu_count()} cores ({cpu_classes()}); nnrun's paths: CPU class {paths['isa']}, oneDNN "
               f"{paths['onednn']}, small-batch kernel {'on' if paths['gemv'] else 'off'}, int8 {paths['quant']}; PyTorch "
               f"{', '.join(sorted(VERSIONS)) or 'not installed'}, the faster per row (each at its best of 1 or 2 threads, "
               f"OMP_WAIT_POLICY=PASSIVE)")
    print(machine)
    if "--no-write" not in sys.argv:
        forced = f" (both sides capped at the {isa} class: `--isa {isa}`)" if isa else ""
        write_perf_section("training_" + isa if isa else "training", f"## CPU{': ' + isa + ' class' if isa else ''}: training and inference against PyTorch{forced}\n\n`scripts/bench/run_cpu.py`, "
                           f"{time.strftime('%Y-%m-%d')}. Training: SGD lr 0.01 momentum 0.9, median over windows of steps after a "
                           f"warm-up. Inference: eval mode without gradients, the median pass. Each row: the median of {ROUNDS} "
                           f"interleaved rounds per side (this shared machine's speed drifts by tens of percent within minutes; "
                           f"PyTorch's cnn ran at 1,635-2,429 samples/s in runs an hour apart). Machine: {machine}.\n\n{train}\n{infer}\n"
                           f"{gemm}\n\nWhere the time goes (nnr.profiler, share of op time, top 6):\n\n| workload | top ops |\n|---|---|\n{tops}")


if __name__ == "__main__":
    main()
