#!/usr/bin/env python3
"""Foundation benchmark: nnrun and PyTorch side by side in one run.

Runs scripts/bench/tensor_ops.lua under nnrun, the same workloads under
PyTorch (1 and 2 threads, OMP_WAIT_POLICY=PASSIVE, the better of the two per
figure), a STREAM-style bandwidth probe and nnrun's start-up time against
`import torch`, prints a table with ratios, and rewrites the foundation
section of docs/perf.md. Usage: scripts/bench/run.py [--no-write]
PyTorch comes from Debian's python3-torch or pip's torch; without it the
PyTorch columns are left empty.

--baseline BUILD_DIR: the same nnrun workloads with another build's nnrun (an older commit, built
with `scripts/bench/build_baseline.sh COMMIT`), interleaved with this one N times (--rounds N,
default 5), no PyTorch; prints the medians and the median of the per-round speed ratios and leaves
the table in build/baseline_foundation.md, which run_cpu.py --baseline puts into the "baseline"
section of docs/perf.md with its own rows."""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("NNR_BUILD_DIR", os.path.join(ROOT, "build"))
NNRUN = os.path.join(BUILD, "bin", "nnrun")
STREAM = os.path.join(BUILD, "bin", "nnr_stream")


def find_torch_python():
    for py in [os.environ.get("TORCH_PYTHON"), "/usr/bin/python3", sys.executable, "python3"]:
        if py and subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0:
            return py
    return None


def option(name, default=None):
    """the value after --name on the command line, or default"""
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv[:-1] else default


BASELINE = option("--baseline")
BASE_NNRUN = os.path.join(BASELINE, "bin", "nnrun") if BASELINE else None
ROUNDS_COMPARED = int(option("--rounds", "5"))


def blas_env():
    """The OpenBLAS kernels nnrun picks (the cpu plugin sets them), given to every side alike."""
    env = dict(os.environ)
    if "OPENBLAS_CORETYPE" not in env:
        # the cpu plugin names them when it opens OpenBLAS, on the first product
        out = subprocess.run([NNRUN, "-e", "nnr.ones(1, 1):matmul(nnr.ones(1, 1)); io.write(os.getenv('OPENBLAS_CORETYPE') or '')"],
                             capture_output=True, text=True, env=env)
        if out.stdout:
            env["OPENBLAS_CORETYPE"] = out.stdout
    return env


def startup(cmd, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_classes():
    """the CPU classes nnrun's kernels choose between, as /proc/cpuinfo's flags show them"""
    names = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "VNNI"), ("avx512_bf16", "AVX512-BF16"), ("avx_vnni", "AVX-VNNI"), ("amx_tile", "AMX")]
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "flags unknown"
    return ", ".join(label for flag, label in names if flag in flags) or "no AVX2"


def package_versions(*packages):
    """'package version' for each installed Debian package named"""
    out = []
    for p in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout:
            out.append(f"{p} {r.stdout}")
    return ", ".join(out)


def torch_best(torch_py, script, args, thread_pos, env):
    """PyTorch at its best: runs script (a JSON line out) with 1 and 2 threads inserted at
    args[thread_pos], OMP_WAIT_POLICY=PASSIVE; returns (the faster result, its threads)"""
    best = None
    for t in (1, 2):
        a = list(map(str, args))
        a.insert(thread_pos, str(t))
        r = json.loads(subprocess.run([torch_py, script, *a], check=True, capture_output=True, text=True,
                                      env=dict(env, OMP_WAIT_POLICY="PASSIVE")).stdout)
        if best is None or r["samples_per_s"] > best[0]["samples_per_s"]:
            best = (r, t)
    return best


def write_perf_section(name, body):
    """Replaces the <!-- BEGIN name --> ... <!-- END name --> section of
    docs/perf.md with body (appends it the first time)."""
    section = f"<!-- BEGIN {name} -->\n{body}<!-- END {name} -->"
    path = os.path.join(ROOT, "docs", "perf.md")
    text = open(path).read() if os.path.exists(path) else "# Performance\n\n"
    if f"<!-- BEGIN {name} -->" in text:
        text = re.sub(f"<!-- BEGIN {name} -->.*?<!-- END {name} -->", lambda m: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


def compare_rows(rows):
    """rows: (workload, unit, lower_is_better, new values, old values), the values of one round side by side ->
    a table of medians and of the median per-round speed ratio (a round runs both back to back, so the
    machine's drift mostly cancels in its ratio), and the worst slowdown"""
    out = "| workload | this commit | baseline | this / baseline (speed, median of per-round ratios) |\n|---|---|---|---|\n"
    worst = 0
    for name, unit, lower, new, old in rows:
        n, o = statistics.median(new), statistics.median(old)
        speed = statistics.median([(b / a if lower else a / b) for a, b in zip(new, old)])
        worst = max(worst, 1 - speed)
        out += f"| {name} | {n:,.4g} {unit} | {o:,.4g} {unit} | {speed:.3f}x |\n"
    return out, worst


def both(run_new, run_old, k):
    """round k of a comparison: both sides back to back, the order alternating between rounds"""
    if k % 2 == 0:
        a = run_new()
        return a, run_old()
    b = run_old()
    return run_new(), b


def compare_foundation(env):
    """tensor_ops.lua with this nnrun and the baseline's, interleaved"""
    keys = [("small_add_us", "`a + b`, 4-element f32, from a loop", "us", True), ("add_alloc_gbs", "`c = a + b`, 2^25 f32", "GB/s", False),
            ("add_out_gbs", "`add(a, b, out=c)`, 2^25 f32", "GB/s", False), ("relu_gbs", "`relu(a)`, 2^25 f32", "GB/s", False),
            ("matmul_gflops", "f32 matmul 1024^3", "GFLOP/s", False)]
    def ops(exe):
        return json.loads(subprocess.run([exe, os.path.join(ROOT, "scripts/bench/tensor_ops.lua")], check=True, capture_output=True,
                                         text=True, env=env).stdout)
    runs = {"new": [], "old": []}
    for k in range(ROUNDS_COMPARED):
        a, b = both(lambda: ops(NNRUN), lambda: ops(BASE_NNRUN), k)
        runs["new"].append(a)
        runs["old"].append(b)
    rows = [(label, unit, lower, [r[k] for r in runs["new"]], [r[k] for r in runs["old"]]) for k, label, unit, lower in keys]
    starts = {"new": [], "old": []}
    for k in range(ROUNDS_COMPARED):
        a, b = both(lambda: startup([NNRUN, "-e", ""], 11), lambda: startup([BASE_NNRUN, "-e", ""], 11), k)
        starts["new"].append(a)
        starts["old"].append(b)
    rows.insert(0, ("start-up: `nnrun -e ''`", "ms", True, starts["new"], starts["old"]))
    return rows


def main():
    write = "--no-write" not in sys.argv
    if BASELINE:
        rows = compare_foundation(blas_env())
        table, worst = compare_rows(rows)
        print(table)
        print(f"worst slowdown: {100 * worst:.1f}%")
        with open(os.path.join(BUILD, "baseline_foundation.md"), "w") as f:
            f.write(table)
        return
    env = blas_env()
    nn = json.loads(subprocess.run([NNRUN, os.path.join(ROOT, "scripts/bench/tensor_ops.lua")], check=True,
                                   capture_output=True, text=True, env=env).stdout)
    stream = json.loads(subprocess.run([STREAM, "add", str(2 ** 25), "2", "11"], check=True, capture_output=True,
                                       text=True, env=env).stdout)
    nn_start = startup([NNRUN, "-e", ""], 31)
    torch_py = find_torch_python()
    th, torch_start, torch_version = {}, None, "not installed"
    if torch_py:
        tenv = dict(env, OMP_WAIT_POLICY="PASSIVE")
        runs = [json.loads(subprocess.run([torch_py, os.path.join(ROOT, "scripts/bench/tensor_ops_torch.py"), str(t)],
                                          check=True, capture_output=True, text=True, env=tenv).stdout) for t in (1, 2)]
        torch_version = runs[0]["version"]
        th = {"small_add_us": min(r["small_add_us"] for r in runs)}
        for k in ("add_alloc_gbs", "add_out_gbs", "relu_gbs", "matmul_gflops"):
            th[k] = max(r[k] for r in runs)
        torch_start = startup([torch_py, "-c", "import torch"], 5)

    bw = stream["median_gbs"]
    rows = [
        ("start-up: `nnrun -e ''` vs `python3 -c 'import torch'`", f"{nn_start:.1f} ms",
         f"{torch_start:.0f} ms" if torch_start else "-", f"{torch_start / nn_start:.0f}x faster" if torch_start else "-", "< 20 ms"),
        ("`a + b`, 4-element f32, from a loop", f"{nn['small_add_us']:.3f} us", f"{th['small_add_us']:.3f} us" if th else "-",
         f"{th['small_add_us'] / nn['small_add_us']:.2f}x less" if th else "-", ">= 3x less than PyTorch"),
        ("`c = a + b`, 2^25 f32 (allocating)", f"{nn['add_alloc_gbs']:.1f} GB/s = {nn['add_alloc_gbs'] / bw:.0%} of STREAM",
         f"{th['add_alloc_gbs']:.1f} GB/s" if th else "-", f"{nn['add_alloc_gbs'] / th['add_alloc_gbs']:.2f}x" if th else "-", ">= 70% of bandwidth"),
        ("`add(a, b, out=c)`, 2^25 f32", f"{nn['add_out_gbs']:.1f} GB/s = {nn['add_out_gbs'] / bw:.0%} of STREAM",
         f"{th['add_out_gbs']:.1f} GB/s" if th else "-", f"{nn['add_out_gbs'] / th['add_out_gbs']:.2f}x" if th else "-", ">= 70% of bandwidth"),
        ("`relu(a)`, 2^25 f32 (8 bytes/element)", f"{nn['relu_gbs']:.1f} GB/s = {nn['relu_gbs'] / bw:.0%} of STREAM",
         f"{th['relu_gbs']:.1f} GB/s" if th else "-", f"{nn['relu_gbs'] / th['relu_gbs']:.2f}x" if th else "-", ""),
        ("f32 matmul 1024^3", f"{nn['matmul_gflops']:.0f} GFLOP/s = {nn['matmul_gflops'] / nn['sgemm_gflops']:.0%} of direct sgemm ({nn['sgemm_gflops']:.0f})",
         f"{th['matmul_gflops']:.0f} GFLOP/s" if th else "-", f"{nn['matmul_gflops'] / th['matmul_gflops']:.2f}x" if th else "-", ">= 95% of cblas_sgemm"),
    ]
    header = "| workload | nnrun | PyTorch (best of 1, 2 threads) | ratio | target |\n|---|---|---|---|---|\n"
    table = header + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    machine = (f"{cpu_model()}, {os.cpu_count()} cores; STREAM-style add bandwidth (2 threads) {bw:.1f} GB/s; "
               f"OpenBLAS 0.3.21 ({nn['blas_core']} kernels); nnrun {nn['version']} ({nn['luajit']}, {nn['threads']} threads); "
               f"PyTorch {torch_version} (OMP_WAIT_POLICY=PASSIVE, same OpenBLAS kernels)")
    print(machine)
    print(table)
    if write:
        write_perf_section("foundation", f"## Foundation: per-op overhead, bandwidth, matmul\n\n"
                                         f"`scripts/bench/run.py`, {time.strftime('%Y-%m-%d')}. Medians of repeated runs.\n\n"
                                         f"Machine: {machine}.\n\n{table}")


if __name__ == "__main__":
    main()
