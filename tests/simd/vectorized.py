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
# AVX-512, since AVX2 has 16 vector registers (its comment says why)
NARROWER = {"gemv_rows"}
MIN_RATIO = 0.5     # ymm / zmm; every other pair measured 1.0-1.3, the scalar gates 0.13
MIN_ZMM = 20        # small functions (a call and a tail) say nothing


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: vectorized.py LIBNNR_CPU_SO")
    if not shutil.which("objdump"):
        print("skipped: no objdump")
        sys.exit(77)
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", sys.argv[1]], capture_output=True, text=True, check=True).stdout
    counts, cur = {}, None
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:", line)
        if m:
            cur = m.group(1)
            counts[cur] = [0, 0]
        elif cur and "\t" in line:
            counts[cur][0] += "zmm" in line
            counts[cur][1] += "ymm" in line
    pairs, bad = 0, []
    for name, (_, ymm) in counts.items():
        if "_avx2" not in name:
            continue
        other = counts.get(name.replace("_avx2", "_avx512"))
        base = name.split("_avx2")[0]
        if not other or other[0] < MIN_ZMM:
            continue
        pairs += 1
        ratio = ymm / other[0]
        if base not in NARROWER and ratio < MIN_RATIO:
            bad.append(f"{name}: {ymm} ymm instructions against {other[0]} zmm in its AVX-512 copy ({ratio:.2f})")
    if pairs == 0:
        print("skipped: no multi-versioned copies in this build")
        sys.exit(77)
    for b in bad:
        print("FAIL: a loop vectorized for AVX-512 stayed scalar for AVX2: " + b)
    print(f"{pairs - len(bad)} passed, {len(bad)} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
