#!/usr/bin/env python3
"""ONNX models in nnrun against onnxruntime, side by side in one run (issue 20):
  - ResNet-18 (torchvision's architecture, random weights; exported by PyTorch's torch.onnx.export, opset 17)
    at 224x224, batch 1 and 32, fp32;
  - the Fashion-MNIST MLP (784-512-256-10) at batch 1, fp32 and int8: nnrun's nnr.quant.dynamic of the
    imported model against onnxruntime's quantize_dynamic (QInt8) of the same file.
nnrun runs scripts/onnx_run.lua --bench; onnxruntime (pip's, in a venv this script makes:
~/.cache/nnrun/onnx-venv or NNR_ONNX_VENV) its CPU provider. Each side at its best of 1 and 2 threads
(onnxruntime's intra-op threads; OMP_WAIT_POLICY=PASSIVE for both), the median time of its runs; --rounds
(3) rounds interleave the two sides and each figure is the median of its rounds.
Prints the table with ratios (onnxruntime's time / nnrun's: above 1, nnrun is faster) and rewrites the
"onnx" section of docs/perf.md (not with --only, which runs the cases whose name contains the word).
Usage: scripts/bench/run_onnx.py [--no-write] [--rounds N] [--only WORD]"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, cpu_classes, cpu_model, write_perf_section  # noqa: E402

ORT_RUN = r'''
import sys, time, numpy as np, onnxruntime as ort
path, shape, threads, iters = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
if sys.argv[5] == "int8":
    from onnxruntime.quantization import quantize_dynamic, QuantType
    q = path[:-5] + ".ort-int8.onnx"
    quantize_dynamic(path, q, weight_type=QuantType.QInt8)
    path = q
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
feed = {s.get_inputs()[0].name: x}
for _ in range(20 if shape[0] == 1 else 3): s.run(None, feed)
ts = []
for _ in range(iters):
    t = time.perf_counter(); s.run(None, feed); ts.append(time.perf_counter() - t)
print(sorted(ts)[len(ts) // 2] * 1e6)
'''

CASES = [  # name, model, shape, int8, iterations
    ("ResNet-18 224x224, batch 1", "resnet18_224", "1,3,224,224", False, 30),
    ("ResNet-18 224x224, batch 32", "resnet18_224", "32,3,224,224", False, 3),
    ("Fashion-MNIST MLP, batch 1, fp32", "fashion_mlp", "1,1,28,28", False, 500),
    ("Fashion-MNIST MLP, batch 1, int8", "fashion_mlp", "1,1,28,28", True, 500),
]


def venv():
    v = os.environ.get("NNR_ONNX_VENV", os.path.expanduser("~/.cache/nnrun/onnx-venv"))
    py = os.path.join(v, "bin", "python")
    if not os.path.exists(py) or subprocess.run([py, "-c", "import onnx, onnxruntime"], capture_output=True).returncode != 0:
        subprocess.run(["/usr/bin/python3", "-m", "venv", v], check=True)
        subprocess.run([os.path.join(v, "bin", "pip"), "install", "-q", "onnx", "onnxruntime"], check=True)
    return py


def nnrun_us(model, shape, int8, threads, iters, tmp):
    metrics = os.path.join(tmp, "m.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    cmd = [NNRUN, os.path.join(ROOT, "scripts/onnx_run.lua"), model, "--bench", "--shape", shape, "--threads", str(threads),
           "--iters", str(iters), "--metrics", metrics, "--quiet"] + (["--int8"] if int8 else [])
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    return json.loads(open(metrics).read())["median_us"]


def ort_us(py, model, shape, int8, threads, iters):
    out = subprocess.run([py, "-c", ORT_RUN, model, shape, str(threads), str(iters), "int8" if int8 else "fp32"], check=True,
                         capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--only", help="the cases whose name contains this (case-insensitive); docs/perf.md is not written")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    cases = [c for c in CASES if not a.only or a.only.lower() in c[0].lower()]
    if not cases:
        ap.error(f"--only {a.only}: no case matches (" + "; ".join(c[0] for c in CASES) + ")")
    rounds = a.rounds
    py = venv()
    versions = subprocess.run([py, "-c", "import onnx, onnxruntime; print(onnx.__version__, onnxruntime.__version__)"],
                              capture_output=True, text=True, check=True).stdout.split()
    tmp = tempfile.mkdtemp()
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tests/onnx/make_models.py"), tmp, "resnet18_224", "fashion_mlp"], check=True,
                   capture_output=True)
    res = {c[0]: ([], []) for c in cases}
    for _ in range(rounds):
        for name, model, shape, int8, iters in cases:
            path = os.path.join(tmp, model + ".onnx")
            res[name][0].append(min(nnrun_us(path, shape, int8, t, iters, tmp) for t in (1, 2)))
            res[name][1].append(min(ort_us(py, path, shape, int8, t, iters) for t in (1, 2)))
    lines = [f"CPU: {cpu_model()} ({cpu_classes()}); onnxruntime {versions[1]} (CPU provider), onnx {versions[0]}; models exported by "
             f"Debian's PyTorch; each side the best of 1 and 2 threads, OMP_WAIT_POLICY=PASSIVE, median of {rounds} interleaved rounds.",
             "", "| case | nnrun | onnxruntime | ratio (ort / nnrun) |", "|---|---|---|---|"]
    for name, *_ in cases:
        n, o = statistics.median(res[name][0]), statistics.median(res[name][1])
        lines.append(f"| {name} | {n / 1000:.3f} ms | {o / 1000:.3f} ms | {o / n:.2f}x |")
    body = "\n".join(lines) + "\n"
    print(body)
    if not a.no_write and not a.only:
        write_perf_section("onnx", "## ONNX models: nnrun against onnxruntime (`scripts/bench/run_onnx.py`)\n\n" + body)


if __name__ == "__main__":
    main()
