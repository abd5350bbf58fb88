#!/usr/bin/env python3
"""The f32 elementwise math ops and activations, and common tensor ops (reductions, softmax along either
dim, indexing, joins, casts, pooling, batch norm: ops_tensor.lua, ops_tensor_torch.py), nnrun and
PyTorch side by side in one run. The math: exp, log,
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

TENSOR_ROWS = [("sum", "`x:sum()`"), ("sum_rows", "`x:sum(2)`"), ("mean_cols", "`x:mean(1)`"), ("max", "`x:max()`"),
               ("max_rows", "`x:max(2)` (values and indices)"), ("norm", "`x:norm()`"), ("var_rows", "`x:var(2)`"),
               ("softmax_rows", "`x:softmax(2)`"), ("softmax_cols", "`x:softmax(1)`"), ("cumsum_cols", "`x:cumsum(1)`"),
               ("index_select_rows", "`x:index_select(1, idx)`, 2048 rows"), ("index_select_cols", "`x:index_select(2, idx)`, 2048 columns"),
               ("gather", "`x:gather(2, idx)`, 16 a row"), ("cat", "`nnr.cat({x, y}, 2)`"), ("transpose_contiguous", "`x:t():contiguous()`"),
               ("where", "`nnr.where(m, x, y)`"), ("clamp", "`x:clamp(-1, 1)`"), ("masked_fill", "`x:masked_fill(m, 0)`"),
               ("add_row", "`x + v` (a row broadcast)"), ("eq", "`x:eq(y)`"), ("to_bf16", "`x:bfloat16()`"), ("to_f64", "`x:double()`"),
               ("max_pool", "`F.max_pool2d`, [32, 64, 56, 56], 2"), ("avg_pool", "`F.avg_pool2d`, [32, 64, 56, 56], 2"),
               ("batch_norm_eval", "`F.batch_norm` (eval), [32, 64, 56, 56]"), ("randn", "`nnr.randn(2048, 2048)`"),
               ("log_softmax_short", "`s:log_softmax(2)`, [256, 10]"),
               ("cross_entropy_10", "`F.cross_entropy(s, labels)` and its backward, [256, 10]"),
               ("cross_entropy_1000", "`F.cross_entropy(s, labels)` and its backward, [256, 1000]")]
ROWS = [("exp", "`x:exp()`"), ("log", "`x:log()`"), ("sqrt", "`x:sqrt()`"), ("pow2", "`x:pow(2)`"), ("pow", "`x:pow(3.5)`"), ("tanh", "`x:tanh()`"), ("sigmoid", "`x:sigmoid()`"),
        ("sin", "`x:sin()`"), ("cos", "`x:cos()`"), ("erf", "`x:erf()`"), ("gelu", "`F.gelu(x)`"), ("silu", "`F.silu(x)`"),
        ("softplus", "`F.softplus(x)`"), ("elu", "`F.elu(x)`"), ("leaky_relu", "`F.leaky_relu(x, 0.01)`"), ("mish", "`F.mish(x)`")]


def fmt_ms(t):
    """a time in ms, small ones in us (a [256, 10] op takes microseconds)"""
    return "%.2f ms" % t if t >= 0.1 else "%.1f us" % (t * 1e3)


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
        for pair in ("ops_math", "ops_tensor"):
            for k, v in run_json([a.nnrun, os.path.join(HERE, pair + ".lua"), "2"], timeout=900).items():
                if k.endswith("_ms"):
                    nn.setdefault(k, []).append(v)
            for py in pythons:
                for k, v in torch_best_ms(py, os.path.join(HERE, pair + "_torch.py"), env, versions, 900).items():
                    th.setdefault(py, {}).setdefault(k, []).append(v)
        print("round %d of %d done" % (r + 1, a.rounds), file=sys.stderr)
    med = statistics.median
    names = torch_names(pythons, versions)
    lines = []
    for title, rows in (("op, 4M f32 (16 MiB)", ROWS), ("op, [2048, 2048] f32 unless named", TENSOR_ROWS)):
        if lines:
            lines.append("")
        lines += ["| %s | nnrun (2 threads) | " % title + " | ".join(names[py] for py in pythons) + " | nnrun / best PyTorch |",
                  "|" + "---|" * (3 + len(pythons))]
        for key, what in rows:
            n = med(nn[key + "_ms"])
            ts = [med(th[py][key + "_ms"]) if key + "_ms" in th.get(py, {}) else None for py in pythons]
            known = [t for t in ts if t is not None]
            lines.append("| %s | %s | %s | %s |" % (what, fmt_ms(n), " | ".join(fmt_ms(t) if t is not None else "-" for t in ts),
                                                     "%.2fx" % (min(known) / n) if known else "-"))
    nnver = subprocess.run([a.nnrun, "-e", "io.write(nnr.backends.cpu.isa)"], capture_output=True, text=True).stdout.strip()
    body = ("## Elementwise math, activations and tensor ops against PyTorch\n\n"
            "`scripts/bench/run_math.py`: each op making a new tensor per call (a call under 1 ms repeated to fill "
            "about 1 ms a sample, on both sides), the median of %d interleaved "
            "rounds; nnrun at 2 threads, each PyTorch at its best of 1 and 2 threads (OMP_WAIT_POLICY=PASSIVE). "
            "Machine: %s, 2 cores (%s); nnrun's CPU class %s. Ratio above 1: nnrun is faster.\n\n"
            % (a.rounds, cpu_model(), cpu_classes(), nnver or "?")) + "\n".join(lines) + "\n"
    print(body)
    if not a.no_write:
        write_perf_section("math", body)


if __name__ == "__main__":
    main()
