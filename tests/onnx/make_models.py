"""Models exported by PyTorch's torch.onnx.export for nnr.onnx.load's tests (tests/onnx_test.sh): an MLP, a
CNN with batch norm, an LSTM, a 2-layer transformer encoder and a ResNet-18 (torchvision's architecture,
written out here: Debian has no torchvision), random weights, seeded. For each NAME: NAME.onnx and NAME.json
({"input": [shape, values], "output": [shape, values]} at batch 2, PyTorch's result in eval mode).
Usage: make_models.py DIR [NAME...]"""
import json, os, sys
import torch
from torch import nn

torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class LSTMTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.enc(x))


def randomize_bn(m):
    for mod in m.modules():           # batch norm statistics that are not 0 and 1, so they are tested
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return m


MODELS = {
    "mlp": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.Sigmoid(), nn.Linear(64, 10)),
                    (2, 1, 28, 28), 13),
    "cnn_bn": lambda: (randomize_bn(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                                  nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Tanh(), nn.AvgPool2d(2),
                                                  nn.Flatten(), nn.Linear(16 * 7 * 7, 10), nn.Softmax(dim=1))), (2, 1, 28, 28), 17),
    "lstm": lambda: (LSTMTagger(), (2, 7, 16), 14),
    "transformer": lambda: (Encoder(), (2, 6, 32), 17),
    "resnet18": lambda: (randomize_bn(ResNet18()), (2, 3, 64, 64), 17),
}
# for scripts/bench/run_onnx.py, not the tests: ResNet-18 at ImageNet's size, the Fashion-MNIST MLP
EXTRA = {
    "resnet18_224": lambda: (randomize_bn(ResNet18()), (1, 3, 224, 224), 17),
    "fashion_mlp": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)),
                            (1, 1, 28, 28), 17),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name in sys.argv[2:] or MODELS:
        model, shape, opset = {**MODELS, **EXTRA}[name]()
        model.eval()
        x = torch.randn(*shape)
        with torch.no_grad():
            y = model(x)
        dyn = {"x": {0: "batch"}, "y": {0: "batch"}}
        torch.onnx.export(model, x, os.path.join(out, name + ".onnx"), input_names=["x"], output_names=["y"], dynamic_axes=dyn,
                          opset_version=opset)
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump({"opset": opset, "input": [list(x.shape), x.flatten().tolist()], "output": [list(y.shape), y.flatten().tolist()]}, f)
        print(name, "opset", opset, "->", os.path.join(out, name + ".onnx"))


if __name__ == "__main__":
    main()
