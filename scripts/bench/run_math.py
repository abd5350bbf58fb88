#!/usr/bin/env python3
"""The f32 elementwise math ops and activations, nnrun and PyTorch side by side in one run: exp, log,
sqrt, pow, tanh, sigmoid, sin, cos, erf and GELU, SiLU, softplus, ELU, leaky ReLU and Mish over 4M f32, each
as a user writes it (a new tensor per call; ops_math.lua, ops_math_torch.py).

    python3 scripts/bench/run_math.py [--nnrun build/bin/nnrun] [--rounds 3] [--torch PYTHON ...] [--no-write]

PyTorch runs in every interpreter given with --torch (default: Debian's /usr/bin/python3 and the
virtual environment of scripts/bench/torch_venv.sh when it exists), each at its best: the faster of 1
and 2 threads per op, OMP_WAIT_POLICY=PASSIVE. nnrun runs at 2 threads. The rounds are interleaved and
each figure is the median over rounds. Prints a markdown table (ratio = best PyTorch time / nnrun time:
above 1 means nnrun is faster) and rewrites the "math" section of docs/perf.md unless --no-write."""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from run import cpu_classes, cpu_model, write_perf_section  # noqa: E402
from side_by_side import run_json, torch_best_ms, torch_env, torch_names, torch_pythons  # noqa: E402

ROWS = [("exp", "`x:exp()`"), ("log", "`x:log()`"), ("sqrt", "`x:sqrt()`"), ("pow2", "`x:pow(2)`"), ("pow", "`x:pow(3.5)`"), ("tanh", "`x:tanh()`"), ("sigmoid", "`x:sigmoid()`"),
        ("sin", "`x:sin()`"), ("cos", "`x:cos()`"), ("erf", "`x:erf()`"), ("gelu", "`F.gelu(x)`"), ("silu", "`F.silu(x)`"),
        ("softplus", "`F.softplus(x)`"), ("elu", "`F.elu(x)`"), ("leaky_relu", "`F.leaky_relu(x, 0.01)`"), ("mish", "`F.mish(x)`")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnrun", default=os.path.join(ROOT, "build/bin/nnrun"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch", action="append", default=None)
    ap.add_argument("--no-write", action="store_true", help="print the table without rewriting docs/perf.md")
    a = ap.parse_args()
    pythons = torch_pythons(a.torch)
    env = torch_env()
    nn, th, versions = {}, {}, {}
    for r in range(a.rounds):
        for k, v in run_json([a.nnrun, os.path.join(HERE, "ops_math.lua"), "2"], timeout=900).items():
            if k.endswith("_ms"):
                nn.setdefault(k, []).append(v)
        for py in pythons:
            for k, v in torch_best_ms(py, os.path.join(HERE, "ops_math_torch.py"), env, versions, 900).items():
                th.setdefault(py, {}).setdefault(k, []).append(v)
        print("round %d of %d done" % (r + 1, a.rounds), file=sys.stderr)
    med = statistics.median
    names = torch_names(pythons, versions)
    lines = ["| op, 4M f32 (16 MiB) | nnrun (2 threads) | " + " | ".join(names[py] for py in pythons) + " | nnrun / best PyTorch |",
             "|" + "---|" * (3 + len(pythons))]
    for key, what in ROWS:
        n = med(nn[key + "_ms"])
        ts = [med(th[py][key + "_ms"]) if key + "_ms" in th.get(py, {}) else None for py in pythons]
        known = [t for t in ts if t is not None]
        lines.append("| %s | %.2f ms | %s | %s |" % (what, n, " | ".join("%.2f ms" % t if t is not None else "-" for t in ts),
                                                     "%.2fx" % (min(known) / n) if known else "-"))
    nnver = subprocess.run([a.nnrun, "-e", "io.write(nnr.backends.cpu.isa)"], capture_output=True, text=True).stdout.strip()
    body = ("## Elementwise math and activations against PyTorch\n\n"
            "`scripts/bench/run_math.py`: each op over 4M f32 making a new tensor per call, the median of %d interleaved "
            "rounds; nnrun at 2 threads, each PyTorch at its best of 1 and 2 threads (OMP_WAIT_POLICY=PASSIVE). "
            "Machine: %s, 2 cores (%s); nnrun's CPU class %s. Ratio above 1: nnrun is faster.\n\n"
            % (a.rounds, cpu_model(), cpu_classes(), nnver or "?")) + "\n".join(lines) + "\n"
    print(body)
    if not a.no_write:
        write_perf_section("math", body)


if __name__ == "__main__":
    main()
