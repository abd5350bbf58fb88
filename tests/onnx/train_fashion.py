"""Fashion-MNIST models trained in PyTorch, exported to ONNX, for tests/onnx_test.sh: the MLP and the CNN
with batch norm of scripts/fashion_mnist.lua (the same layers), trained one epoch (the CNN on the first
10,000 images, to keep the test short) with SGD, then evaluated on the 10,000 test images in PyTorch.
Writes DIR/fashion_mlp.onnx, DIR/fashion_cnn_bn.onnx and DIR/fashion_accuracy.json ({name: accuracy}).
The images are normalised as nnrun's fashion_mnist.lua does (mean 0.2860, std 0.3530).
Usage: train_fashion.py DATA_DIR DIR"""
import gzip, json, os, sys
import numpy as np
import torch
from torch import nn

data, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(2)


def idx(name):
    with gzip.open(os.path.join(data, name + ".gz")) as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def images(prefix):
    x = torch.from_numpy(idx(prefix + "-images-idx3-ubyte").astype(np.float32) / 255.0)
    return ((x - 0.2860) / 0.3530).reshape(-1, 1, 28, 28), torch.from_numpy(idx(prefix + "-labels-idx1-ubyte").astype(np.int64))


train_x, train_y = images("train")
test_x, test_y = images("t10k")
models = {
    "fashion_mlp": (nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)), 60000),
    "fashion_cnn_bn": (nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                     nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)), 10000),
}
acc = {}
for name, (m, n) in models.items():
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    m.train()
    for i in range(0, n, 64):
        opt.zero_grad()
        nn.functional.cross_entropy(m(train_x[i:i + 64]), train_y[i:i + 64]).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        pred = torch.cat([m(test_x[i:i + 500]).argmax(1) for i in range(0, 10000, 500)])
    acc[name] = float((pred == test_y).float().mean())
    torch.onnx.export(m, test_x[:2], os.path.join(out, name + ".onnx"), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    print(name, "PyTorch test accuracy", acc[name])
with open(os.path.join(out, "fashion_accuracy.json"), "w") as f:
    json.dump(acc, f)
