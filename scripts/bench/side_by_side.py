"""What the side-by-side benchmarks of nnrun and PyTorch (run_ops16.py, run_seq17.py) share: a JSON line
from a command, the PyTorch interpreters to compare with (Debian's /usr/bin/python3 and the virtual
environment of scripts/bench/torch_venv.sh when it exists), each one's best of 1 and 2 threads with
OMP_WAIT_POLICY=PASSIVE, and their names in the tables."""
import json
import os
import subprocess


def run_json(cmd, env=None, timeout=1800):
    """the last line of cmd's output, as JSON; exits with its stderr when it fails"""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (" ".join(cmd), p.stderr[-2000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


def torch_pythons(given):
    """the interpreters given with --torch, else Debian's and the benchmarks' virtual environment's"""
    if given:
        return given
    pythons = ["/usr/bin/python3"]
    venv = os.environ.get("NNR_BENCH_VENV", os.path.expanduser("~/.cache/nnrun/bench-venv"))
    if os.path.exists(os.path.join(venv, "bin/python")):
        pythons.append(os.path.join(venv, "bin/python"))
    return pythons


def torch_env():
    return dict(os.environ, OMP_WAIT_POLICY="PASSIVE")


def torch_best_ms(py, script, env, versions, timeout=1800):
    """script (argument: the thread count) run with 1 and 2 threads: the smaller of each *_ms figure;
    records py's torch version in versions"""
    best = {}
    for threads in ("1", "2"):
        o = run_json([py, script, threads], env, timeout)
        versions[py] = o.get("torch") or o.get("version")
        for k, v in o.items():
            if k.endswith("_ms"):
                best[k] = min(best.get(k, v), v)
    return best


# a CPU class of nnrun (NNR_CPU_ISA) and the settings that cap PyTorch at the same class: ATen's kernels,
# oneDNN, MKL, FBGEMM (its int8 engines; it needs AVX2, so the c class leaves it alone)
ISA_CAPS = {"c": dict(ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41", MKL_ENABLE_INSTRUCTIONS="SSE4_2"),
            "avx2": dict(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2",
                         FBGEMM_ENABLE_INSTRUCTIONS="AVX2"),
            "avx512": dict(ATEN_CPU_CAPABILITY="avx512", ONEDNN_MAX_CPU_ISA="AVX512_CORE", MKL_ENABLE_INSTRUCTIONS="AVX512",
                           FBGEMM_ENABLE_INSTRUCTIONS="AVX512"),
            "avx512_vnni": dict(ATEN_CPU_CAPABILITY="avx512", ONEDNN_MAX_CPU_ISA="AVX512_CORE_VNNI", MKL_ENABLE_INSTRUCTIONS="AVX512",
                                FBGEMM_ENABLE_INSTRUCTIONS="AVX512_E1"),
            "avx512_bf16": dict(ATEN_CPU_CAPABILITY="avx512", ONEDNN_MAX_CPU_ISA="AVX512_CORE_BF16", MKL_ENABLE_INSTRUCTIONS="AVX512",
                                FBGEMM_ENABLE_INSTRUCTIONS="AVX512_E1")}


def cap_isa(argv):
    """--isa CLASS in argv: caps nnrun and PyTorch at that class in os.environ; returns the class or None"""
    if "--isa" not in argv[:-1]:
        return None
    isa = argv[argv.index("--isa") + 1]
    if isa not in ISA_CAPS:
        raise SystemExit(f"--isa: one of {', '.join(ISA_CAPS)}")
    os.environ.update(NNR_CPU_ISA=isa, **ISA_CAPS[isa])
    return isa


def torch_build(py):
    """which PyTorch an interpreter is: Debian's python3-torch or pip's (the benchmarks' virtual environment)"""
    return "Debian" if py == "/usr/bin/python3" else "pip"


def torch_names(pythons, versions):
    return {py: "PyTorch %s (%s)" % (versions.get(py), torch_build(py)) for py in pythons}
