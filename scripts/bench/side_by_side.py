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


def torch_build(py):
    """which PyTorch an interpreter is: Debian's python3-torch or pip's (the benchmarks' virtual environment)"""
    return "Debian" if py == "/usr/bin/python3" else "pip"


def torch_names(pythons, versions):
    return {py: "PyTorch %s (%s)" % (versions.get(py), torch_build(py)) for py in pythons}
