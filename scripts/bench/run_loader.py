#!/usr/bin/env python3
"""The data loader against PyTorch's DataLoader, in one run:
  1. throughput: Fashion-MNIST training images through ToFloat, Normalize, a
     padded random crop and a horizontal flip, batch 64 and 256, 0 and 2 workers;
  2. throughput: an ImageFolder of 10,000 small JPEGs (made by
     make_image_folder.lua from the Fashion-MNIST test set), batch 64, 2 workers;
  3. memory (PSS) over 5 epochs with 0 and 4 workers;
  4. the share of a training epoch spent waiting for data
     (train_fashion_mnist.lua --model cnn --augment --workers 2, one epoch).
PyTorch at its best (the faster of 1 or 2 threads, OMP_WAIT_POLICY=PASSIVE).
Prints tables with ratios and rewrites the loader section of docs/perf.md.
Usage: scripts/bench/run_loader.py [--no-write] [--quick]"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NNRUN, ROOT, blas_env, cpu_model, find_torch_python, torch_best, write_perf_section  # noqa: E402

BENCH = os.path.join(ROOT, "scripts/bench")
IMAGES = os.environ.get("NNR_BENCH_IMAGES", os.path.join(tempfile.gettempdir(), "nnr-bench-images"))


def ours(env, *args):
    return json.loads(subprocess.run([NNRUN, os.path.join(BENCH, "loader.lua"), *map(str, args)],
                                     check=True, capture_output=True, text=True, env=env).stdout)


def theirs(env, torch_py, *args):
    """the faster of 1 or 2 threads: (result, threads)"""
    return torch_best(torch_py, os.path.join(BENCH, "loader_torch.py"), args, 3, env)


def ratio_row(label, o, t):
    if t is None:
        return f"| {label} | {o:,.0f} samples/s | - | - |\n"
    return f"| {label} | {o:,.0f} samples/s | {t[0]['samples_per_s']:,.0f} samples/s ({t[1]}) | {o / t[0]['samples_per_s']:.1f}x |\n"


def main():
    env = blas_env()
    torch_py = find_torch_python()
    version = "not installed"
    quick = "--quick" in sys.argv
    head = "| job | nnrun | PyTorch DataLoader (best threads) | nnrun / PyTorch |\n|---|---|---|---|\n"

    table = head
    for batch in ((64,) if quick else (64, 256)):
        for workers in (0, 2):
            o = ours(env, "idx", batch, workers)["samples_per_s"]
            t = theirs(env, torch_py, "idx", batch, workers) if torch_py else None
            version = t[0]["version"] if t else version
            table += ratio_row(f"Fashion-MNIST, batch {batch}, {workers} workers", o, t)
            print(table.splitlines()[-1], flush=True)

    subprocess.run([NNRUN, os.path.join(BENCH, "make_image_folder.lua"), IMAGES], check=True, env=env, capture_output=True)
    o = ours(env, "images", 64, 2, IMAGES)["samples_per_s"]
    try:       # PyTorch's side needs PIL (Debian: python3-pil)
        t = theirs(env, torch_py, "images", 64, 2, IMAGES) if torch_py else None
    except subprocess.CalledProcessError as e:
        print(f"PyTorch ImageFolder run failed (is python3-pil installed?): {e.stderr[-300:] if e.stderr else e}", file=sys.stderr)
        t = None
    table += ratio_row("ImageFolder, 10,000 JPEGs 32x32, batch 64, 2 workers", o, t)
    print(table.splitlines()[-1], flush=True)

    epochs = 3 if quick else 5
    mem = "| loader | after loading | after each epoch | 4 workers over 0 |\n|---|---|---|---|\n"
    base = {}
    for who in ("nnrun", "PyTorch"):
        for workers in (0, 4):
            if who == "nnrun":
                series = ours(env, "memory", workers, epochs)["pss_mib"]
            elif torch_py:
                series = json.loads(subprocess.run([torch_py, os.path.join(BENCH, "loader_torch.py"), "memory", "64", str(workers), "1", str(epochs)],
                                                   check=True, capture_output=True, text=True,
                                                   env=dict(env, OMP_WAIT_POLICY="PASSIVE")).stdout)["pss_mib"]
            else:
                continue
            base.setdefault(who, series[-1])
            extra = f"+{series[-1] - base[who]:.1f} MiB" if workers else ""
            mem += f"| {who}, {workers} workers | {series[0]:.1f} MiB | " + ", ".join(f"{v:.1f}" for v in series[1:]) + f" | {extra} |\n"
            print(mem.splitlines()[-1], flush=True)

    with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
        subprocess.run([NNRUN, os.path.join(ROOT, "scripts/train_fashion_mnist.lua"), "--model", "cnn", "--augment", "--workers", "2",
                        "--epochs", "1", "--metrics", f.name], check=True, capture_output=True, env=env)
        rows = [json.loads(line) for line in open(f.name) if line.strip()]
    epoch = [r for r in rows if "data_wait_fraction" in r][-1]
    wait = f"`train_fashion_mnist.lua --model cnn --augment --workers 2`, one epoch: the training loop waited for data " \
           f"{100 * epoch['data_wait_fraction']:.2f}% of the epoch ({epoch['samples_per_s']:,.0f} samples/s, test accuracy {epoch['test_accuracy']:.4f})."
    print(wait)

    machine = f"{cpu_model()}, {os.cpu_count()} cores; PyTorch {version} (OMP_WAIT_POLICY=PASSIVE)"
    print(machine)
    if "--no-write" not in sys.argv:
        write_perf_section("loader", f"## Data loading\n\n`scripts/bench/run_loader.py`, {time.strftime('%Y-%m-%d')}. Machine: {machine}.\n\n"
                           "Throughput: shuffled epochs, batches consumed and dropped; nnrun the median of 3 epochs after a warm-up, "
                           "PyTorch the median of 3 passes of 20,000 samples (persistent workers, default collate). Fashion-MNIST: "
                           "ToFloat, Normalize, a 2-pixel-padded 28x28 RandomCrop and RandomHorizontalFlip, in torch ops for PyTorch "
                           "(torchvision is not installed). ImageFolder: the 10,000 Fashion-MNIST test images as tinted 32x32 RGB JPEGs "
                           "in 10 class folders; nnrun decodes with libjpeg-turbo in its workers, PyTorch with PIL (torchvision's "
                           "default loader) then ToTensor, Normalize, RandomCrop(32, padding 4) and a flip in torch ops.\n\n"
                           f"{table}\nMemory: proportional set size (PSS: pages shared between PyTorch's worker processes count once) "
                           f"after loading the dataset and after each of {epochs} epochs (batch 64, the Fashion-MNIST job).\n\n{mem}\n"
                           "nnrun's workers are threads over one read-only copy of the dataset; what 4 workers add is the prefetched "
                           "batches (8 of 64 samples, 1.5 MiB), the batch in use and the threads' stacks and malloc arenas. "
                           "Batches made on a worker bypass the per-thread tensor free lists, which otherwise filled the consumer's "
                           "lists with blocks it never asked for (+0.4 MiB per epoch until they capped out).\n\n"
                           f"{wait}\n")


if __name__ == "__main__":
    main()
