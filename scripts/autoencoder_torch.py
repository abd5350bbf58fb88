"""scripts/train_autoencoder.lua in PyTorch: the same convolutional autoencoder on Fashion-MNIST with
the same settings (AdamW with weight decay 1e-4, OneCycleLR, EMA weights), printing the same lines.

    python3 scripts/autoencoder_torch.py [--epochs N] [--batch-size N] [--lr X] [--limit N] [--seed N]
                                         [--ema-decay X] [--threads N] [--data DIR]
"""
import argparse
import gzip
import json
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise SystemExit("%s: not an IDX image file" % path)
    return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).view(n, 1, rows, cols).float() / 255


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train_x = read_images(a.data + "/train-images-idx3-ubyte.gz")
    if 0 < a.limit < len(train_x):
        train_x = train_x[:a.limit]
    test_x = read_images(a.data + "/t10k-images-idx3-ubyte.gz")

    def block(conv, channels, groups):
        return [conv, nn.GroupNorm(groups, channels), nn.SiLU()]
    model = nn.Sequential(
        *block(nn.Conv2d(1, 32, 3, stride=2, padding=1), 32, 8),
        *block(nn.Conv2d(32, 64, 3, stride=2, padding=1), 64, 8),
        *block(nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), 32, 8),
        nn.ConvTranspose2d(32, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())
    n = len(train_x)
    steps_per_epoch = (n + a.batch_size - 1) // a.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, epochs=a.epochs, steps_per_epoch=steps_per_epoch)
    decay = a.ema_decay
    ema = torch.optim.swa_utils.AveragedModel(model, avg_fn=lambda avg, p, k: decay * avg + (1 - decay) * p)

    def test_loss(m):
        m.eval()
        total = 0.0
        with torch.no_grad():
            for s in range(0, len(test_x), 1000):
                x = test_x[s:s + 1000]
                total += F.mse_loss(m(x), x, reduction="sum").item()
        m.train()
        return total / test_x.numel()

    t0 = time.time()
    train_loss = 0.0
    for epoch in range(1, a.epochs + 1):
        perm = torch.randperm(n)
        total, count = 0.0, 0
        for s in range(0, n, a.batch_size):
            x = train_x[perm[s:s + a.batch_size]]
            loss = F.mse_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            ema.update_parameters(model)
            total += loss.item() * len(x)
            count += len(x)
        train_loss = total / count
        print("epoch %d  train loss %.6f  lr %.2e  %.1f s" % (epoch, train_loss, opt.param_groups[0]["lr"], time.time() - t0))
    seconds = time.time() - t0
    model_loss, ema_loss = test_loss(model), test_loss(ema)
    print("test reconstruction loss: model %.6f  ema %.6f" % (model_loss, ema_loss))
    print(json.dumps({"framework": "pytorch " + torch.__version__, "epochs": a.epochs, "train_images": n, "train_loss": round(train_loss, 6),
                      "test_loss": round(model_loss, 6), "test_loss_ema": round(ema_loss, 6), "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
