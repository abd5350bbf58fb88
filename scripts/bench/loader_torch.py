#!/usr/bin/env python3
"""PyTorch's DataLoader on the same jobs as loader.lua, shuffled, default collate,
persistent workers. Prints one JSON line (median of 3 timed passes of 20,000
samples after a warm-up pass; a full epoch takes seconds per configuration here).

  loader_torch.py idx BATCH WORKERS THREADS [DATA_DIR]
    Fashion-MNIST's training images as a uint8 tensor, a map-style Dataset whose
    __getitem__ applies ToFloat, Normalize, a 2-pixel-padded random crop and a
    random horizontal flip with torch ops (what torchvision's transforms do on
    tensors).
  loader_torch.py images BATCH WORKERS THREADS ROOT
    ImageFolder's job without torchvision (not installed): the same sorted
    folder scan, PIL's open + convert("RGB") as torchvision's default loader,
    then ToTensor, Normalize, RandomCrop(32, padding=4) and a flip in torch ops.
  loader_torch.py memory BATCH WORKERS THREADS EPOCHS [DATA_DIR]
    the idx job's memory: the proportional set size (PSS, so pages shared by the
    worker processes count once) of the process and its workers, after loading
    and after each epoch."""
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
        img = img[:, top:top + 28, left:left + 28]
        if torch.rand(1).item() < 0.5:
            img = torch.flip(img, (2,))
        return img, self.y[i]


class ImageFolder(torch.utils.data.Dataset):
    MEAN = torch.tensor([0.49, 0.48, 0.45]).view(3, 1, 1)
    STD = torch.tensor([0.25, 0.24, 0.26]).view(3, 1, 1)

    def __init__(self, root):
        from PIL import Image
        self.open = Image.open
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.samples = [(os.path.join(root, c, f), k) for k, c in enumerate(classes)
                        for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith((".jpg", ".jpeg", ".png"))]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = self.open(f).convert("RGB")
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.size[1], img.size[0], 3)
        x = (x.permute(2, 0, 1).float() / 255 - self.MEAN) / self.STD
        x = F.pad(x, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        x = x[:, top:top + 32, left:left + 32]
        if torch.rand(1).item() < 0.5:
            x = torch.flip(x, (2,))
        return x, label


def pss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except OSError:
            pass
    return total / 1024


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def memory(loader, epochs):
    me = os.getpid()
    rss = [pss_mib([me])]
    for _ in range(epochs):
        for _x, _y in loader:
            pass
        rss.append(pss_mib([me] + children(me)))
    return rss


def main():
    mode, batch, workers, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    if mode == "images":
        ds = ImageFolder(sys.argv[5])
    elif mode == "memory":
        d = sys.argv[6] if len(sys.argv) > 6 else "/usr/share/datasets/fashion-mnist"
        ds = FashionMNIST(read_idx(os.path.join(d, "train-images-idx3-ubyte.gz")), read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")))
    else:
        d = sys.argv[5] if len(sys.argv) > 5 else "/usr/share/datasets/fashion-mnist"
        ds = FashionMNIST(read_idx(os.path.join(d, "train-images-idx3-ubyte.gz")), read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    if mode == "memory":
        print(json.dumps({"workers": workers, "pss_mib": [round(v, 1) for v in memory(loader, int(sys.argv[5]))], "version": torch.__version__}))
        return
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
