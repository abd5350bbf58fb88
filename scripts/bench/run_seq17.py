"""Issue 17's speed targets, nnrun and PyTorch side by side in one run: the character LSTM's and the
GPT's training steps (seq_lstm, seq_gpt) and the GPT's generation at batch 1 with a key/value cache,
f32 and int8 (seq_generate).

    python3 scripts/bench/run_seq17.py [--nnrun build/bin/nnrun] [--rounds 3] [--torch PYTHON ...] [--only lstm,gpt,generate]

PyTorch runs in every interpreter given with --torch (default: Debian's /usr/bin/python3 and the
virtual environment of scripts/bench/torch_venv.sh when it exists), each at its best: the faster of
1 and 2 threads, OMP_WAIT_POLICY=PASSIVE. nnrun runs at 2 threads. Rounds are interleaved and each
figure is the median over rounds. Prints a markdown table (ratio = best PyTorch time / nnrun time:
above 1 means nnrun is faster) and the versions."""
import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from side_by_side import run_json, torch_best_ms, torch_env, torch_names, torch_pythons  # noqa: E402
PAIRS = {"lstm": "seq_lstm", "gpt": "seq_gpt", "generate": "seq_generate"}
ROWS = [  # pair, nnrun key, PyTorch key, what, target
    ("lstm", "train_step_ms", "train_step_ms", "LSTM LM training step (2 x 512, seq 100, batch 32)", ">= 1.5x"),
    ("lstm", "lstm_forward_ms", "lstm_forward_ms", "nn.LSTM forward alone", ""),
    ("lstm", "lstm_fwdbwd_ms", "lstm_fwdbwd_ms", "nn.LSTM forward + backward", ""),
    ("gpt", "train_step_ms", "train_step_ms", "GPT training step (4 x 256, 4 heads, context 128, batch 32)", ">= 1.5x"),
    ("gpt", "forward_ms", "forward_ms", "GPT forward", ""),
    ("generate", "f32_ms", "generate_ms", "GPT generation, 256 tokens at batch 1, KV cache (f32)", ">= 3x"),
    ("generate", "f32_1thread_ms", "generate_ms", "the same, nnrun at 1 thread", ""),
    ("generate", "int8_ms", "generate_ms", "the same, nnrun int8 (nnr.quant.dynamic)", ""),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnrun", default=os.path.join(ROOT, "build/bin/nnrun"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch", action="append", default=None)
    ap.add_argument("--only", default="lstm,gpt,generate")
    a = ap.parse_args()
    pythons = torch_pythons(a.torch)
    pairs = [p for p in a.only.split(",") if p]
    for p in pairs:
        if p not in PAIRS:
            raise SystemExit("--only: unknown benchmark %r (lstm, gpt, generate)" % p)
    env = torch_env()
    nn, th, versions = {}, {}, {}
    for r in range(a.rounds):
        for pair in pairs:
            out = run_json([a.nnrun, os.path.join(HERE, PAIRS[pair] + ".lua"), "2"])
            for k, v in out.items():
                if isinstance(v, (int, float)):
                    nn.setdefault((pair, k), []).append(v)
            for py in pythons:
                for k, v in torch_best_ms(py, os.path.join(HERE, PAIRS[pair] + "_torch.py"), env, versions).items():
                    th.setdefault(py, {}).setdefault((pair, k), []).append(v)
        print("round %d of %d done" % (r + 1, a.rounds), file=sys.stderr)
    med = lambda xs: statistics.median(xs) if xs else None
    names = torch_names(pythons, versions)
    print("| workload | nnrun (2 threads) | " + " | ".join(names[py] for py in pythons) + " | nnrun / best PyTorch | target |")
    print("|" + "---|" * (4 + len(pythons)))
    result = {}
    for pair, nkey, tkey, what, target in ROWS:
        if pair not in pairs:
            continue
        n = med(nn.get((pair, nkey), []))
        ts = [med(th.get(py, {}).get((pair, tkey), [])) for py in pythons]
        known = [t for t in ts if t is not None]
        ratio = min(known) / n if known and n else None
        result["%s.%s" % (pair, nkey)] = {"nnrun": n, "torch": dict(zip(pythons, ts)), "ratio": ratio}
        print("| %s | %.1f ms | %s | %s | %s |" % (what, n, " | ".join("%.1f ms" % t if t is not None else "-" for t in ts),
                                                  "%.2fx" % ratio if ratio else "-", target))
    if "generate" in pairs:
        f32, i8 = med(nn[("generate", "f32_ms")]), med(nn[("generate", "int8_ms")])
        print()
        print("nnrun int8 / f32 generation speed: %.2fx (target >= 1.5x)" % (f32 / i8))
        result["generate.int8_over_f32"] = f32 / i8
    print("versions: " + ", ".join("%s = %s" % (names[py], py) for py in pythons))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
