"""PyTorch side of the training benchmark: the same models, batches drawn the
same way, SGD lr 0.01 momentum 0.9. Usage: train_torch.py MODEL BATCH THREADS STEPS.
Prints {"samples_per_s": ...} (median over windows of steps after a warm-up).
train_torch.py infer MODEL BATCH THREADS ITERS: eval mode under no_grad, the
median forward pass -> {"us_per_batch": ..., "samples_per_s": ...}.
BENCH_AUTOCAST=bf16: forward passes under torch.autocast (mixed precision, as nnrun's NNR_BENCH_AUTOCAST)."""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

infer = sys.argv[1] == "infer"
if infer:
    sys.argv.pop(1)
model_kind, batch, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
device = os.environ.get("BENCH_DEVICE", "cpu")   # run_gpu.py: the same on cuda (loss.item() waits for each step)
autocast_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(os.environ.get("BENCH_AUTOCAST", ""))


def forward(model, x):
    if autocast_dtype is None:
        return model(x)
    with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
        return model(x)

if model_kind == "mlp":
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
else:
    layers = [nn.Conv2d(1, 32, 3, padding=1)]
    if model_kind == "cnn-bn":
        layers.append(nn.BatchNorm2d(32))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1)]
    if model_kind == "cnn-bn":
        layers.append(nn.BatchNorm2d(64))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)]
    model = nn.Sequential(*layers)
model = model.to(device)
if infer:
    model.eval()
    x = torch.randn(batch, 1, 28, 28, device=device)
    ts = []
    with torch.no_grad():
        for _ in range(max(5, steps // 10)):
            forward(model, x).sum().item()
        for _ in range(steps):
            t0 = time.perf_counter()
            forward(model, x).sum().item()
            ts.append(time.perf_counter() - t0)
    med = statistics.median(ts)
    print(json.dumps({"us_per_batch": med * 1e6, "samples_per_s": batch / med, "version": torch.__version__, "threads": threads}))
    sys.exit(0)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
data = torch.randn(60000, 1, 28, 28, device=device)
labels = torch.randint(0, 10, (60000,), device=device)
perm = torch.randperm(60000, device=device)
loss_fn = nn.CrossEntropyLoss()
times = []
for s in range(steps):
    i = (s * batch) % (60000 - batch)
    idx = perm[i:i + batch]
    t0 = time.perf_counter()
    x, y = data.index_select(0, idx), labels.index_select(0, idx)
    loss = loss_fn(forward(model, x).float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    loss.item()
    times.append(time.perf_counter() - t0)
times = times[len(times) // 5:]
window = max(1, len(times) // 5)
rates = [batch * window / sum(times[k:k + window]) for k in range(0, len(times) - window + 1, window)]
print(json.dumps({"samples_per_s": statistics.median(rates), "version": torch.__version__, "threads": threads}))
