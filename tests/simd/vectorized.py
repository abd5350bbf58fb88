#!/usr/bin/env python3
"""Every CPU class vectorized: each CPU_MULTI body is compiled three times (plugins/cpu/isa.h), and a
loop that GCC vectorizes for AVX-512 but leaves scalar for AVX2 shows in the disassembly as an `_avx2`
copy with far fewer ymm instructions than its `_avx512` copy has zmm ones. That happened to the LSTM's
gates (88 ymm against 661 zmm: float selects that AVX2 cannot if-convert under -ftrapping-math), and
the AVX2 class ran them 4x slower. This reads the built plugin and fails on any such pair.
Usage: vectorized.py LIBNNR_CPU_SO. Exit 77 (skipped) where there are no multi-versioned copies
(not x86-64 GCC) or no objdump."""
import re
import shutil
import subprocess
import sys

# copies whose AVX2 form is narrower by design: gemv.c blocks 2 rows of x on AVX2 against 4 on
# AVX-512, since AVX2 has 16 vector registers (its comment says why); softmax_cols_f32 is six short
# loops over a block's columns, to which GCC's AVX-512 copy adds a masked epilogue each (its AVX2 copy:
# 258 ymm instructions, every loop vectorized; 0.50)
NARROWER = {"gemv_rows", "softmax_cols_f32"}
MIN_RATIO = 0.5     # ymm / zmm; every other pair measured 1.0-1.3, the scalar gates 0.13
MIN_ZMM = 20        # small functions (a call and a tail) say nothing


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: vectorized.py LIBNNR_CPU_SO")
    if not shutil.which("objdump"):
        print("skipped: no objdump")
        sys.exit(77)
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", sys.argv[1]], capture_output=True, text=True)
    if out.returncode != 0:
        print("skipped: objdump cannot read " + sys.argv[1] + ": " + out.stderr.strip()[:200])
        sys.exit(77)
    # counts per function, GCC's clone suffixes (.constprop.N, .isra.N, .part.N, .cold, .lto_priv.N)
    # folded into the function they came from, same-named statics of several files summed
    counts, cur = {}, None
    for line in out.stdout.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:", line)
        if m:
            cur = re.sub(r"(\.(constprop|isra|part|cold|lto_priv)(\.\d+)?)+$", "", m.group(1))
            counts.setdefault(cur, [0, 0])
        elif cur and "\t" in line:
            counts[cur][0] += "zmm" in line
            counts[cur][1] += "ymm" in line
    pairs, small, bad = 0, 0, []
    for name, (_, ymm) in counts.items():
        if not name.endswith("_avx2"):
            continue
        base = name[: -len("_avx2")]
        other = counts.get(base + "_avx512")
        if not other:
            continue
        if other[0] < MIN_ZMM:
            small += 1
            continue
        pairs += 1
        ratio = ymm / other[0]
        if base not in NARROWER and ratio < MIN_RATIO:
            bad.append(f"{name}: {ymm} ymm instructions against {other[0]} zmm in its AVX-512 copy ({ratio:.2f})")
    if pairs == 0:
        # (a build whose AVX-512 copies use 256-bit vectors, -mprefer-vector-width=256, lands here too)
        print(f"skipped: no multi-versioned copies with AVX-512 code in this build ({small} with under {MIN_ZMM} zmm instructions)")
        sys.exit(77)
    for b in bad:
        print("FAIL: a loop vectorized for AVX-512 stayed scalar for AVX2: " + b)
    print(f"{pairs - len(bad)} passed, {len(bad)} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
