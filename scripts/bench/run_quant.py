#!/usr/bin/env python3
"""Quantization and pruning, nnrun vs PyTorch in one run (issues 7 and 18):
  - scripts/quantize_fashion_mnist.lua: fp32, int8, pruned and pruned+int8 (accuracy, bytes,
    latency at batch 1, throughput at batch 256), on the mlp it trains (or --checkpoint PATH);
  - PyTorch's quantize_dynamic of the same weights (quant_torch.py), for each PyTorch found
    (Debian's python3-torch and pip's in the benchmarks' virtual environment, as run_cpu.py; --torch PY
    names them) on each int8 engine it has (x86, fbgemm, onednn, qnnpack) with 1 and 2 threads and
    OMP_WAIT_POLICY=PASSIVE: the best of all of them for each figure.
The machine's speed drifts, so the measurements run --rounds (3) times with nnrun and PyTorch interleaved
(the model trained once) and each figure is the median of its rounds.
--isa CLASS caps both sides at a CPU class below the machine's (as run_cpu.py: NNR_CPU_ISA; ATen, oneDNN,
MKL and FBGEMM's own settings) and writes its own section ("quantization_avx2").
Prints the table with ratios and rewrites the "quantization" section of docs/perf.md.
Usage: scripts/bench/run_quant.py [--no-write] [--checkpoint PATH] [--isa CLASS] [--rounds N] [--torch PY ...]"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, blas_env, cpu_classes, cpu_model, write_perf_section  # noqa: E402
from side_by_side import cap_isa, torch_build, torch_pythons  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def arg(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv[:-1] else default


def nnrun_rows(env, tmp, checkpoint, first):
    """one run of quantize_fashion_mnist.lua: its metrics rows by variant (the first also writes the fp32 weights)"""
    metrics = os.path.join(tmp, "m.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    cmd = [NNRUN, os.path.join(ROOT, "scripts/quantize_fashion_mnist.lua"), "--metrics", metrics, "--threads", "2", "--quiet"]
    # without --checkpoint the first round trains the mlp and keeps it; the others load it
    cmd += ["--save", checkpoint] if first and not arg("--checkpoint") else ["--checkpoint", checkpoint]
    if first:
        cmd += ["--save-fp32", os.path.join(tmp, "mlp.safetensors")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(" ".join(cmd) + " failed:\n" + p.stderr[-2000:])
    return {r["variant"]: r for r in map(json.loads, open(metrics).read().splitlines())}


def main():
    isa = cap_isa(sys.argv)
    rounds = int(arg("--rounds", "3"))
    env = blas_env()
    tmp = tempfile.mkdtemp()
    checkpoint = arg("--checkpoint") or os.path.join(tmp, "trained.safetensors")
    given = [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--torch"]
    torches = [py for py in torch_pythons(given) if subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0]
    engines = {}
    for py in torches:
        have = subprocess.run([py, "-c", "import torch; print(' '.join(torch.backends.quantized.supported_engines))"],
                              capture_output=True, text=True).stdout.split()
        engines[py] = [e for e in ENGINES if e in have]
    ours, theirs = [], []           # per round: nnrun's rows; PyTorch's runs
    for rnd in range(rounds):
        ours.append(nnrun_rows(env, tmp, checkpoint, rnd == 0))
        print(f"round {rnd + 1}: nnrun " + ", ".join(f"{v} {r['latency_b1_us']:.1f} us / {r['throughput_b256']:,.0f}/s"
                                                   for v, r in ours[-1].items()), flush=True)
        for py in torches:
            for engine in engines[py]:
                for threads in (1, 2):
                    r = subprocess.run([py, os.path.join(ROOT, "scripts/bench/quant_torch.py"), os.path.join(tmp, "mlp.safetensors"), engine,
                                        str(threads), DATA], capture_output=True, text=True, env=dict(env, OMP_WAIT_POLICY="PASSIVE"))
                    if r.returncode != 0:
                        print(f"  PyTorch {torch_build(py)} {engine} x{threads}: {r.stderr.strip()[-300:]}", file=sys.stderr)
                        continue
                    t = dict(json.loads(r.stdout), build=torch_build(py), round=rnd)
                    theirs.append(t)
                    print(f"  PyTorch {t['version']} ({t['build']}) {engine} x{threads}: {t['latency_b1_us']:.1f} us, "
                          f"{t['throughput_b256']:,.0f}/s", flush=True)
    med = {v: {k: statistics.median(o[v][k] for o in ours) for k in ("latency_b1_us", "throughput_b256")} | {
        "accuracy": ours[0][v]["accuracy"], "bytes": ours[0][v]["bytes"]} for v in ours[0]}
    # PyTorch: each configuration's median over the rounds, then the best configuration per figure
    configs = {}
    for t in theirs:
        configs.setdefault((t["version"], t["build"], t["engine"], t["threads"]), []).append(t)
    cm = [dict(ts[0], latency_b1_us=statistics.median(t["latency_b1_us"] for t in ts),
               throughput_b256=statistics.median(t["throughput_b256"] for t in ts)) for ts in configs.values()]
    f32, i8, pr, pq = med["fp32"], med["int8"], med["pruned"], med["pruned+int8"]
    q = subprocess.run([NNRUN, "-e", "for _, b in ipairs(nnr.backends.list()) do if b.name == 'quant' then "
                        "io.write(b.message:match(': (.-) kernels') or '?') end end; io.write(' ', nnr.backends.cpu.isa)"],
                       capture_output=True, text=True, env=env).stdout.split()
    versions = sorted({f"{c['version']} ({c['build']})" for c in cm})
    lines = [f"`scripts/bench/run_quant.py{' --isa ' + isa if isa else ''}`: machine {cpu_model()} ({cpu_classes()}), 2 threads for "
             f"nnrun (CPU class {q[-1] if q else '?'}, int8 kernel {' '.join(q[:-1]) if q else '?'}); PyTorch {', '.join(versions) or '-'} "
             f"quantize_dynamic on every int8 engine it has ({', '.join(ENGINES)}), 1 and 2 threads, OMP_WAIT_POLICY=PASSIVE: the best "
             f"configuration per figure. Medians of {rounds} interleaved rounds. The mlp of the main job (784-512-256-10) trained 5 "
             "epochs by scripts/quantize_fashion_mnist.lua.\n",
             "| variant | accuracy | bytes | smaller | latency b1 (us) | faster | b256 samples/s | faster |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v, r in med.items():
        lines.append(f"| nnrun {v} | {r['accuracy']:.4f} | {r['bytes']:,} | {f32['bytes'] / r['bytes']:.2f}x | "
                     f"{r['latency_b1_us']:.1f} | {f32['latency_b1_us'] / r['latency_b1_us']:.2f}x | {r['throughput_b256']:,.0f} | "
                     f"{r['throughput_b256'] / f32['throughput_b256']:.2f}x |")
    if cm:
        bl = min(cm, key=lambda t: t["latency_b1_us"])
        bt = max(cm, key=lambda t: t["throughput_b256"])
        name = lambda t: f"{t['version']} ({t['build']}) {t['engine']} x{t['threads']}"  # noqa: E731
        lines.append(f"| PyTorch int8 (latency: {name(bl)}; throughput: {name(bt)}) | "
                     f"{bl['accuracy']:.4f} | {bl['bytes']:,} | - | {bl['latency_b1_us']:.1f} | - | {bt['throughput_b256']:,.0f} | - |")
        lines.append("")
        lines.append(f"nnrun int8 against PyTorch's best int8: {bl['latency_b1_us'] / i8['latency_b1_us']:.2f}x at batch 1 (target 5x), "
                     f"{i8['throughput_b256'] / bt['throughput_b256']:.2f}x at batch 256 (target 1.2x); against nnrun's own fp32 at batch 256 "
                     f"{i8['throughput_b256'] / f32['throughput_b256']:.2f}x (target 1.5x). "
                     f"int8 accuracy {i8['accuracy'] - f32['accuracy']:+.4f} vs fp32; pruned {pr['accuracy'] - f32['accuracy']:+.4f}; "
                     f"pruned+int8 {pq['accuracy'] - f32['accuracy']:+.4f}.")
        lines.append("")
        lines.append("Each PyTorch configuration (median of the rounds): " + "; ".join(
            f"{name(c)} {c['latency_b1_us']:.0f} us / {c['throughput_b256']:,.0f}" for c in sorted(cm, key=name)) + ".")
    text = "\n".join(lines) + "\n"
    print(text)
    if "--no-write" not in sys.argv:
        title = f"## Quantization and pruning (CPU{': ' + isa + ' class, both sides capped' if isa else ''})\n\n"
        write_perf_section("quantization" + ("_" + isa if isa else ""), title + text)


if __name__ == "__main__":
    main()
