#!/usr/bin/env bash
# scripts/quantize_fashion_mnist.lua on a prefix of Fashion-MNIST: four variants, the metrics
# file's JSON lines, the int8 and pruned models smaller, and bad arguments refused.
set -eu
NNRUN=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$NNRUN" scripts/quantize_fashion_mnist.lua --limit 1200 --epochs 1 --threads 2 --seed 3 --metrics "$tmp/m.jsonl" --quiet >"$tmp/out.txt"
cat "$tmp/out.txt"
test "$(wc -l <"$tmp/m.jsonl")" -eq 4
python3 - "$tmp/m.jsonl" <<'PY'
import json, sys
rows = {r["variant"]: r for r in map(json.loads, open(sys.argv[1]))}
assert set(rows) == {"fp32", "int8", "pruned", "pruned+int8"}, rows
for r in rows.values():
    assert set(r) == {"variant", "accuracy", "bytes", "latency_b1_us", "throughput_b256"}, r
    assert 0 <= r["accuracy"] <= 1 and r["latency_b1_us"] > 0 and r["throughput_b256"] > 0, r
assert rows["fp32"]["bytes"] / rows["int8"]["bytes"] > 3.5, rows
assert rows["pruned"]["bytes"] < rows["fp32"]["bytes"] and rows["pruned+int8"]["bytes"] < rows["int8"]["bytes"], rows
assert abs(rows["int8"]["accuracy"] - rows["fp32"]["accuracy"]) < 0.05, rows
print("metrics ok")
PY
if "$NNRUN" scripts/quantize_fashion_mnist.lua --prune 1.5 2>"$tmp/err.txt"; then echo "--prune 1.5 accepted"; exit 1; fi
grep -q -- "--prune must be in" "$tmp/err.txt"
if "$NNRUN" scripts/quantize_fashion_mnist.lua --bogus 2>"$tmp/err.txt"; then echo "--bogus accepted"; exit 1; fi
grep -q "unknown option --bogus" "$tmp/err.txt"
echo "quantize script ok"
