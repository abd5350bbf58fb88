#!/usr/bin/env python3
"""PyTorch's DataLoader on the same job as loader.lua: Fashion-MNIST's training
images as a uint8 tensor, a map-style Dataset whose __getitem__ applies
ToFloat, Normalize and a 2-pixel-padded random crop with torch ops (what
torchvision's transforms do on tensors), shuffled, default collate.
Prints one JSON line (median of 3 timed passes of 20,000 samples after a warm-up
pass; a full epoch takes seconds per configuration here).
Usage: loader_torch.py BATCH WORKERS THREADS [DATA_DIR]"""
import gzip
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


class FashionMNIST(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.x, self.y = images, labels.long()

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        img = (self.x[i].float() / 255 - 0.286) / 0.353
        img = F.pad(img.unsqueeze(0), (2, 2, 2, 2))
        top, left = torch.randint(0, 5, (2,)).tolist()
        return img[:, top:top + 28, left:left + 28], self.y[i]


def main():
    batch, workers, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    d = sys.argv[4] if len(sys.argv) > 4 else "/usr/share/datasets/fashion-mnist"
    torch.set_num_threads(threads)
    ds = FashionMNIST(read_idx(os.path.join(d, "train-images-idx3-ubyte.gz")), read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    rates = []
    for r in range(4):                     # the first pass warms up; each pass times 20,000 samples
        t0, n = time.perf_counter(), 0
        for x, _ in loader:
            n += x.shape[0]
            if n >= 20000:
                break
        if r > 0:
            rates.append(n / (time.perf_counter() - t0))
    print(json.dumps({"samples_per_s": statistics.median(rates), "version": torch.__version__}))


if __name__ == "__main__":
    main()
