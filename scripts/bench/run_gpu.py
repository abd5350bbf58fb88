#!/usr/bin/env python3
"""GPU performance, nnrun vs PyTorch on the same card in one run (issue 6's table):
  - training throughput of the mlp and the cnn at batch 256 (and 64), SGD lr 0.01 momentum 0.9,
    data already on the device (train.lua / train_torch.py with NNR_BENCH_DEVICE / BENCH_DEVICE);
  - inference latency at batch 1 and throughput at batch 256;
  - f32 and bf16 matmul of 8192^3 against cuBLAS called directly (nnr_cublas_bench);
  - a large elementwise add and copy against cudaMemcpy device-to-device bandwidth.
nnrun and PyTorch alternate over ROUNDS rounds and the medians are compared.
Usage: scripts/bench/run_gpu.py [--quick] [--rounds=N] [OUT.md]  (NNRUN and NNR_CUBLAS_BENCH name the binaries;
scripts/gpu-check.sh sets them.) Prints the table and writes it as markdown to OUT.md."""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, find_torch_python  # noqa: E402

BENCH = os.path.join(ROOT, "scripts/bench")
NNRUN = os.environ.get("NNRUN", os.path.join(ROOT, "build/bin/nnrun"))
CUBLAS = os.environ.get("NNR_CUBLAS_BENCH", os.path.join(ROOT, "build/bin/nnr_cublas_bench"))
QUICK = "--quick" in sys.argv
ROUNDS = 1 if QUICK else int(next((a.split("=")[1] for a in sys.argv if a.startswith("--rounds=")), 3))
OUT = next((a for a in sys.argv[1:] if not a.startswith("--")), None)


def run_json(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours(*args):
    return run_json([NNRUN, os.path.join(BENCH, "train.lua"), *map(str, args)], {"NNR_BENCH_DEVICE": "cuda"})


def theirs(torch_py, *args):
    a = list(map(str, args))
    a.insert(3 if a[0] == "infer" else 2, "1")     # threads: irrelevant on the GPU
    return run_json([torch_py, os.path.join(BENCH, "train_torch.py"), *a], {"BENCH_DEVICE": "cuda"})


def main():
    avail = subprocess.run([NNRUN, "-e", "if not nnr.cuda.is_available() then print(nnr.cuda.status()) os.exit(77) end"],
                           capture_output=True, text=True)
    if avail.returncode != 0:
        print(f"run_gpu: no CUDA device: {avail.stdout.strip() or avail.stderr.strip()}")
        sys.exit(77)
    torch_py = find_torch_python()
    rows, lines = [], []
    try:
        card = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True).stdout.strip() or "unknown GPU"
    except OSError:
        card = "unknown GPU (no nvidia-smi)"
    version = subprocess.run([torch_py, "-c", "import torch; print(torch.__version__, torch.version.cuda)"], capture_output=True,
                             text=True).stdout.strip() if torch_py else "not installed"
    workloads = [("train", "mlp", 256, 300), ("train", "cnn", 256, 100), ("train", "mlp", 64, 300), ("train", "cnn", 64, 100),
                 ("infer", "mlp", 1, 300), ("infer", "cnn", 1, 300), ("infer", "mlp", 256, 300), ("infer", "cnn", 256, 200)]
    for mode, model, batch, steps in workloads:
        if QUICK:
            steps = max(20, steps // 4)
        args = (model, batch, steps) if mode == "train" else ("infer", model, batch, steps)
        o, t = [], []
        for _ in range(ROUNDS):
            try:
                o.append(ours(*args)["samples_per_s"])
            except Exception as e:  # noqa: BLE001
                print(f"nnrun {args}: {e}", file=sys.stderr)
            if torch_py:
                try:
                    t.append(theirs(torch_py, *args)["samples_per_s"])
                except Exception as e:  # noqa: BLE001
                    print(f"torch {args}: {e}", file=sys.stderr)
        mo = statistics.median(o) if o else None
        mt = statistics.median(t) if t else None
        name = f"{model} {'training' if mode == 'train' else 'inference'} b{batch}"
        unit = "us/batch" if mode == "infer" and batch == 1 else "samples/s"
        if unit == "us/batch":
            vo, vt = (batch / mo * 1e6 if mo else None), (batch / mt * 1e6 if mt else None)
        else:
            vo, vt = mo, mt
        ratio = (mo / mt) if mo and mt else None
        rows.append((name, unit, vo, vt, ratio))
        print(f"{name:28s} {unit:10s} nnrun {vo or 0:12.1f}  torch {vt or 0:12.1f}  ratio {ratio or 0:.2f}x", flush=True)
    ref = ours_mm = None
    try:
        ref = run_json([CUBLAS])
        print("cuBLAS direct:", ref, flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"cublas bench: {e}", file=sys.stderr)
    try:
        ours_mm = run_json([NNRUN, os.path.join(BENCH, "gpu.lua")])
        print("nnrun:", ours_mm, flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"gpu.lua: {e}", file=sys.stderr)
    lines.append(f"Card: {card}; PyTorch {version}; {ROUNDS} interleaved rounds, medians; ratio = nnrun's speed over PyTorch's.\n")
    lines.append("| workload | unit | nnrun | PyTorch | ratio |")
    lines.append("|---|---|---:|---:|---:|")
    for name, unit, vo, vt, ratio in rows:
        f = (lambda v: f"{v:,.1f}" if v else "-")
        lines.append(f"| {name} | {unit} | {f(vo)} | {f(vt)} | {f'{ratio:.2f}x' if ratio else '-'} |")
    if ref and ours_mm:
        lines.append("")
        lines.append("| kernel | nnrun | reference | share |")
        lines.append("|---|---:|---:|---:|")
        for dt in ("f32", "bf16"):
            a, b = ours_mm.get(f"{dt}_tflops"), ref.get(f"{dt}_tflops")
            lines.append(f"| matmul 8192^3 {dt} (TFLOP/s) | {a} | {b} (cuBLAS direct) | {a / b:.1%} |")
        for k in ("add", "copy"):
            a, b = ours_mm.get(f"{k}_gbs"), ref.get("d2d_copy_gbs")
            lines.append(f"| {k} of 2^28 f32 (GB/s) | {a} | {b} (cudaMemcpy d2d) | {a / b:.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if OUT:
        with open(OUT, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
