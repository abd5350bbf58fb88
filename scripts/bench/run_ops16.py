"""Issue 16's speed targets, nnrun and PyTorch side by side in one run: sort / topk over 1M f32,
cumsum over 16M, an einsum contraction, conv1d and transposed convolutions, and a LuaJIT kernel
GELU against the built-in one.

    python3 scripts/bench/run_ops16.py [--nnrun build/bin/nnrun] [--rounds 3] [--torch PYTHON ...]

PyTorch runs in every interpreter given with --torch (default: Debian's /usr/bin/python3 and the
virtual environment of scripts/bench/torch_venv.sh when it exists), each at its best: the faster of
1 and 2 threads per workload, OMP_WAIT_POLICY=PASSIVE. nnrun runs at 2 threads. The rounds are
interleaved (nnrun, then each PyTorch, then again) and each figure is the median over rounds: the
machine is shared and its speed drifts. Prints a markdown table (ratio = best PyTorch time / nnrun
time: above 1 means nnrun is faster) and the versions."""
import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from side_by_side import run_json, torch_best_ms, torch_env, torch_names, torch_pythons  # noqa: E402
PAIRS = ["ops_sort_scan", "ops_einsum", "ops_conv", "ops_kernel"]
ROWS = [  # key, what, target
    ("sort_1m_f32_ms", "sort 1M f32 (stable)", ">= 1.0x"),
    ("sort_1m_f32_descending_ms", "sort 1M f32, descending", ">= 1.0x"),
    ("topk_1m_f32_k10_ms", "topk 1M f32, k = 10", ">= 1.0x"),
    ("topk_1m_f32_k1000_ms", "topk 1M f32, k = 1000", ">= 1.0x"),
    ("sort_1024x1024_f32_ms", "sort 1024 rows of 1024", ""),
    ("topk_1024x1024_f32_k10_ms", "topk 1024 rows of 1024, k = 10", ""),
    ("cumsum_16m_f32_ms", "cumsum 16M f32", ">= 1.0x"),
    ("cumsum_4096x4096_f32_ms", "cumsum 4096 rows of 4096", ""),
    ("einsum_bhqd_bhkd_ms", "einsum bhqd,bhkd->bhqk 8x8x256x64", ">= 1.0x"),
    ("einsum_bhqk_bhkd_ms", "einsum bhqk,bhkd->bhqd 8x8x256x64", ""),
    ("einsum_bik_kj_ms", "einsum bik,kj->bij 64x512x256 @ 256x512", ""),
    ("conv1d_audio_fwd_ms", "conv1d 8x32x8000, 64 out, 9 taps (forward)", ">= 1.0x"),
    ("conv1d_audio_fwdbwd_ms", "conv1d, forward + backward", ""),
    ("conv_transpose1d_x4_fwd_ms", "conv_transpose1d 8x64x1000 -> x4 (forward)", ">= 1.0x"),
    ("conv_transpose1d_x4_fwdbwd_ms", "conv_transpose1d, forward + backward", ""),
    ("conv_transpose2d_7to14_fwd_ms", "conv_transpose2d 32x64x7x7 -> 14x14 (forward)", ">= 1.0x"),
    ("conv_transpose2d_7to14_fwdbwd_ms", "conv_transpose2d 7->14, forward + backward", ""),
    ("conv_transpose2d_16to32_fwd_ms", "conv_transpose2d 16x64x16x16 -> 32x32 (forward)", ">= 1.0x"),
    ("conv_transpose2d_16to32_fwdbwd_ms", "conv_transpose2d 16->32, forward + backward", ""),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnrun", default=os.path.join(ROOT, "build/bin/nnrun"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch", action="append", default=None)
    a = ap.parse_args()
    pythons = torch_pythons(a.torch)
    env = torch_env()
    nn = {}                       # key -> [ms per round]
    th = {}                       # python -> key -> [best ms per round]
    versions = {}
    paths = {}                    # benchmark -> what oneDNN did in nnrun's last run
    for r in range(a.rounds):
        for pair in PAIRS:
            out = run_json([a.nnrun, os.path.join(HERE, pair + ".lua"), "2"], timeout=900)
            for k, v in out.items():
                if k.endswith("_ms"):
                    nn.setdefault(k, []).append(v)
            if "onednn" in out:
                paths[pair] = "oneDNN %s, %d calls" % (out["onednn"], out.get("onednn_calls", 0))
            for py in pythons:
                for k, v in torch_best_ms(py, os.path.join(HERE, pair + "_torch.py"), env, versions, 900).items():
                    th.setdefault(py, {}).setdefault(k, []).append(v)
        print("round %d of %d done" % (r + 1, a.rounds), file=sys.stderr)
    med = lambda xs: statistics.median(xs) if xs else None
    names = torch_names(pythons, versions)
    head = "| workload | nnrun (2 threads) | " + " | ".join(names[py] for py in pythons) + " | nnrun / best PyTorch | target |"
    print(head)
    print("|" + "---|" * (4 + len(pythons)))
    result = {}
    for key, what, target in ROWS:
        n = med(nn.get(key, []))
        ts = [med(th.get(py, {}).get(key, [])) for py in pythons]
        known = [t for t in ts if t is not None]
        if n is None:
            continue
        ratio = min(known) / n if known else None
        result[key] = {"nnrun": n, "torch": dict(zip(pythons, ts)), "ratio": ratio}
        print("| %s | %.2f ms | %s | %s | %s |" % (what, n, " | ".join("%.2f ms" % t if t is not None else "-" for t in ts),
                                                  "%.2fx" % ratio if ratio else "-", target))
    # the LuaJIT kernel against nnrun's own built-in GELU (the target), PyTorch's for reference
    k, b = med(nn["kernel_gelu_ms"]), med(nn["builtin_gelu_ms"])
    print()
    print("| GELU over 16M f32 | time | vs nnrun's built-in GELU |")
    print("|---|---|---|")
    print("| nnrun built-in `F.gelu` (erf) | %.2f ms | 1.00 |" % b)
    for key, what in [("kernel_gelu_ms", "`nnr.kernel.map` GELU (tanh form, written with exp)"),
                      ("kernel_gelu_out_ms", "the same into an existing tensor (`out =`)"),
                      ("kernel_gelu_tanh_ms", "`nnr.kernel.map` GELU with `math.tanh`")]:
        v = med(nn[key])
        print("| %s | %.2f ms | %.2f (target <= 1.5) |" % (what, v, v / b))
    for py in pythons:
        print("| %s `F.gelu` (erf) / tanh form | %.2f / %.2f ms | |" % (names[py], med(th[py]["builtin_gelu_ms"]), med(th[py]["kernel_gelu_tanh_ms"])))
    print("| nnrun `(x * x):sum()` / `nnr.kernel.reduce` sum of squares | %.2f / %.2f ms | |" % (med(nn["builtin_sumsq_ms"]), med(nn["kernel_sumsq_ms"])))
    print()
    print("nnrun paths: " + "; ".join("%s: %s" % kv for kv in sorted(paths.items())))
    print("versions: " + ", ".join("%s = %s" % (names[py], py) for py in pythons))
    result["kernel_gelu_vs_builtin"] = k / b
    print(json.dumps(result))


if __name__ == "__main__":
    main()
