#!/usr/bin/env python3
"""Quantization and pruning, nnrun vs PyTorch in one run (issue 7's table):
  - scripts/quantize_fashion_mnist.lua: fp32, int8, pruned and pruned+int8 (accuracy, bytes,
    latency at batch 1, throughput at batch 256), on the mlp it trains (or --checkpoint PATH);
  - PyTorch's quantize_dynamic of the same weights (quant_torch.py), on each engine it has
    (onednn, qnnpack) with 1 and 2 threads and OMP_WAIT_POLICY=PASSIVE: its best for each figure.
Prints the table with ratios and rewrites the "quantization" section of docs/perf.md.
Usage: scripts/bench/run_quant.py [--no-write] [--checkpoint PATH]"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, blas_env, cpu_model, find_torch_python, write_perf_section  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def main():
    env = blas_env()
    tmp = tempfile.mkdtemp()
    metrics, weights = os.path.join(tmp, "m.jsonl"), os.path.join(tmp, "mlp.safetensors")
    cmd = [NNRUN, os.path.join(ROOT, "scripts/quantize_fashion_mnist.lua"), "--metrics", metrics, "--save-fp32", weights, "--threads", "2"]
    if "--checkpoint" in sys.argv:
        cmd += ["--checkpoint", sys.argv[sys.argv.index("--checkpoint") + 1]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    print(out)
    rows = {r["variant"]: r for r in map(json.loads, open(metrics).read().splitlines())}
    torch_py = find_torch_python()
    best, runs = {}, []
    if torch_py:
        for engine in ("onednn", "qnnpack"):
            for threads in (1, 2):
                r = subprocess.run([torch_py, os.path.join(ROOT, "scripts/bench/quant_torch.py"), weights, engine, str(threads), DATA],
                                   capture_output=True, text=True, env=dict(env, OMP_WAIT_POLICY="PASSIVE"))
                if r.returncode != 0:
                    print(f"torch {engine} x{threads}: {r.stderr.strip()[-300:]}", file=sys.stderr)
                    continue
                t = json.loads(r.stdout)
                runs.append(t)
                print(f"PyTorch {engine}, {threads} thread(s): {t}")
        if runs:
            best["lat"] = min(runs, key=lambda t: t["latency_b1_us"])
            best["thr"] = max(runs, key=lambda t: t["throughput_b256"])
    f32, i8, pr, pq = rows["fp32"], rows["int8"], rows["pruned"], rows["pruned+int8"]
    lines = [f"Machine: {cpu_model()}, 2 threads for nnrun; PyTorch {runs[0]['version'] if runs else '-'} "
             "(Debian python3-torch) quantize_dynamic at its best engine and thread count per figure, OMP_WAIT_POLICY=PASSIVE. "
             "The mlp of the main job (784-512-256-10) trained 5 epochs by scripts/quantize_fashion_mnist.lua; "
             "`scripts/bench/run_quant.py`.\n",
             "| variant | accuracy | bytes | smaller | latency b1 (us) | faster | b256 samples/s | faster |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (f32, i8, pr, pq):
        lines.append(f"| nnrun {r['variant']} | {r['accuracy']:.4f} | {r['bytes']:,} | {f32['bytes'] / r['bytes']:.2f}x | "
                     f"{r['latency_b1_us']:.1f} | {f32['latency_b1_us'] / r['latency_b1_us']:.2f}x | {r['throughput_b256']:,.0f} | "
                     f"{r['throughput_b256'] / f32['throughput_b256']:.2f}x |")
    if best:
        bl, bt = best["lat"], best["thr"]
        lines.append(f"| PyTorch int8 (latency: {bl['engine']} x{bl['threads']}; throughput: {bt['engine']} x{bt['threads']}) | "
                     f"{bl['accuracy']:.4f} | {bl['bytes']:,} | - | {bl['latency_b1_us']:.1f} | - | {bt['throughput_b256']:,.0f} | - |")
        lines.append("")
        lines.append(f"nnrun int8 vs PyTorch int8: {bl['latency_b1_us'] / i8['latency_b1_us']:.2f}x faster at batch 1, "
                     f"{i8['throughput_b256'] / bt['throughput_b256']:.2f}x at batch 256. "
                     f"int8 accuracy {i8['accuracy'] - f32['accuracy']:+.4f} vs fp32; pruned {pr['accuracy'] - f32['accuracy']:+.4f}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if "--no-write" not in sys.argv:
        write_perf_section("quantization", "## Quantization and pruning (CPU)\n\n" + text)


if __name__ == "__main__":
    main()
