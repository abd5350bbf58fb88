"""PyTorch's side of the quantization benchmark: the mlp of the main job with the weights nnrun
trained (a safetensors file from quantize_fashion_mnist.lua --save-fp32), quantized with
torch.ao.quantization.quantize_dynamic on one engine.
Usage: quant_torch.py WEIGHTS ENGINE THREADS DATA_DIR
Prints {"accuracy": ..., "latency_b1_us": ..., "throughput_b256": ..., "bytes": ...} (medians)."""
import gzip
import io
import json
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn

weights, engine, threads, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        assert meta["dtype"] == "F32", meta["dtype"]
        out[name] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(meta["shape"]).copy())
    return out


def load_split(prefix):
    def idx(kind, dims):
        with gzip.open(f"{data}/{prefix}-{kind}-idx{dims}-ubyte.gz") as f:
            buf = f.read()
        return np.frombuffer(buf, dtype=np.uint8, offset=16 if dims == 3 else 8)
    x = torch.from_numpy(idx("images", 3).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    x = (x - 0.2860) / 0.3530
    y = torch.from_numpy(idx("labels", 1).astype(np.int64))
    return x, y


model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
sd = load_safetensors(weights)
# nnrun's Sequential keys are 1-based ("2.weight"); PyTorch's are 0-based ("1.weight")
model.load_state_dict({f"{int(k.split('.')[0]) - 1}.{k.split('.')[1]}": v for k, v in sd.items()})
model.eval()
torch.backends.quantized.engine = engine
q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)

x, y = load_split("t10k")
with torch.no_grad():
    acc = float((q(x).argmax(1) == y).float().mean())


def median_time(m, batch, iters):
    xb = torch.randn(batch, 1, 28, 28)
    with torch.no_grad():
        for _ in range(max(5, iters // 10)):
            m(xb)
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            m(xb).sum().item()
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


buf = io.BytesIO()
torch.save(q.state_dict(), buf)
print(json.dumps({"accuracy": acc, "latency_b1_us": median_time(q, 1, 2000) * 1e6, "throughput_b256": 256 / median_time(q, 256, 60),
                  "bytes": buf.getbuffer().nbytes, "engine": engine, "threads": threads, "version": torch.__version__}))
