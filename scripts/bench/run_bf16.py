#!/usr/bin/env python3
"""bf16 products on the CPU's bf16 engine (plugins/cpu/bf16.c: AMX tiles, or AVX512-BF16's vdpbf16ps),
nnrun vs PyTorch in one run:
  - nnrun's f32 models with nnr.backends.cpu.allow_bf16 = true (f32 tensors; the gemms round
    their operands to bf16 and sum in f32 on the engine), under nnr.autocast("bf16") (bf16 activations,
    bf16 matmuls on the engine), and in plain f32;
  - PyTorch at its best in f32, and at its best under torch.autocast("cpu", bfloat16) (oneDNN's
    bf16 kernels), the nearest PyTorch 1.13 has to the same trade.
mlp and cnn training at batch 64 and 256, inference throughput at batch 256. Each row the median
of ROUNDS interleaved rounds; ratios are nnrun allow_bf16 over each PyTorch column. Writes the
"cpu-bf16" section of docs/perf.md (AMX) or "cpu-bf16-dot" (AVX512-BF16).
Usage: scripts/bench/run_bf16.py [--no-write] [--quick] [--dot]
  --dot: the AVX512-BF16 engine even where its measured rate turned it off (NNR_CPU_BF16_DOT=1), and not AMX"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, blas_env, cpu_model, find_torch_python, torch_best, write_perf_section  # noqa: E402

BENCH = os.path.join(ROOT, "scripts/bench")
QUICK = "--quick" in sys.argv
ROUNDS = 1 if QUICK else 3


def ours(args, mode):
    env = dict(ENV, NNR_NUM_THREADS="2", NNR_BENCH_ALLOW_BF16="1" if mode == "allow" else "0", **ENGINE_ENV)
    if mode == "autocast":
        env["NNR_BENCH_AUTOCAST"] = "bf16"
    return json.loads(subprocess.run([NNRUN, os.path.join(BENCH, "train.lua"), *map(str, args)], check=True,
                                     capture_output=True, text=True, env=env).stdout)


def theirs(args, bf16):
    env = dict(ENV, BENCH_AUTOCAST="bf16") if bf16 else ENV
    return torch_best(TORCH, os.path.join(BENCH, "train_torch.py"), args, 3 if args[0] == "infer" else 2, env)[0]


def median(runs):
    return sorted(runs, key=lambda r: r["samples_per_s"])[len(runs) // 2]


def main():
    global ENV, TORCH
    ENV = blas_env()
    TORCH = find_torch_python()
    global ENGINE_ENV
    ENGINE_ENV = {"NNR_CPU_AMX": "0", "NNR_CPU_BF16_DOT": "1"} if "--dot" in sys.argv else {}
    probe = "local c = require('nnr').backends.cpu; io.write(tostring(c.amx), ' ', tostring(c.bf16_dot), ' ', c.bf16_dot_ratio)"
    amx, dot, ratio = subprocess.run([NNRUN, "-e", probe], capture_output=True, text=True, check=True,
                                     env=dict(os.environ, **ENGINE_ENV)).stdout.split()
    if amx == "true":
        engine, section = "on AMX tiles", ("cpu-bf16", "## CPU: bf16 products on AMX (opt-in) against PyTorch")
    elif dot == "true":
        engine = f"on AVX512-BF16 (vdpbf16ps, measured at {ratio}x FMA's multiply-adds a second" + \
                 (", forced on with NNR_CPU_BF16_DOT=1)" if ENGINE_ENV else ")")
        section = ("cpu-bf16-dot", "## CPU: bf16 products on AVX512-BF16 (opt-in) against PyTorch")
    else:
        print(f"this cpu runs bf16 products on no engine (amx = {amx}, bf16_dot = {dot}, vdpbf16ps at {ratio}x FMA): "
              "nothing to measure; --dot forces the AVX512-BF16 one where the class has it")
        return
    print(f"bf16 products {engine}")
    table = "| workload | nnrun allow_bf16 | nnrun autocast bf16 | nnrun f32 | PyTorch f32 | PyTorch autocast bf16 | " \
            "allow_bf16 vs nnrun f32 | allow_bf16 vs PyTorch f32 | allow_bf16 vs PyTorch bf16 | autocast vs PyTorch bf16 |\n" \
            "|---|---|---|---|---|---|---|---|---|---|\n"
    version = "not installed"
    work = [(("mlp", 64, 300), "mlp training, batch 64"), (("mlp", 256, 150), "mlp training, batch 256"),
            (("cnn", 64, 60), "cnn training, batch 64"), (("cnn", 256, 30), "cnn training, batch 256"),
            (("infer", "mlp", 256, 100), "mlp inference, batch 256"), (("infer", "cnn", 256, 20), "cnn inference, batch 256")]
    for args, name in work:
        runs = {"bf16": [], "ac": [], "f32": [], "t32": [], "t16": []}
        for _ in range(ROUNDS):
            runs["bf16"].append(ours(args, "allow"))
            runs["ac"].append(ours(args, "autocast"))
            runs["f32"].append(ours(args, "f32"))
            if TORCH:
                runs["t32"].append(theirs(args, False))
                runs["t16"].append(theirs(args, True))
        m = {k: median(v) for k, v in runs.items() if v}
        if "t32" in m:
            version = m["t32"]["version"]
        cell = lambda k: f"{m[k]['samples_per_s']:,.0f}" + (f" ({m[k]['threads']})" if "threads" in m[k] else "") if k in m else "-"  # noqa: E731
        ratio = lambda a, k: f"{m[a]['samples_per_s'] / m[k]['samples_per_s']:.2f}x" if k in m else "-"  # noqa: E731
        table += f"| {name} | {cell('bf16')} | {cell('ac')} | {cell('f32')} | {cell('t32')} | {cell('t16')} | " \
                 f"{ratio('bf16', 'f32')} | {ratio('bf16', 't32')} | {ratio('bf16', 't16')} | {ratio('ac', 't16')} |\n"
        print(table.splitlines()[-1], flush=True)
    machine = f"{cpu_model()}, {os.cpu_count()} cores; PyTorch {version} (OMP_WAIT_POLICY=PASSIVE, best of 1 or 2 threads)"
    print(machine)
    if "--no-write" not in sys.argv:
        write_perf_section(section[0], f"{section[1]}\n\n`scripts/bench/run_bf16.py{' --dot' if ENGINE_ENV else ''}`, "
                           f"{time.strftime('%Y-%m-%d')}, samples/s (PyTorch's threads in brackets), the median of {ROUNDS} "
                           f"interleaved rounds. nnrun allow_bf16: the same f32 models with `nnr.backends.cpu.allow_bf16 = true` "
                           f"(gemm operands rounded to bf16, f32 sums, {engine}); nnrun autocast bf16: the forward pass under "
                           f"`nnr.autocast(\"bf16\", ...)`; PyTorch autocast bf16: "
                           f"`torch.autocast(\"cpu\", torch.bfloat16)` around the forward pass. Machine: {machine}.\n\n{table}\n")


if __name__ == "__main__":
    main()
