#!/usr/bin/env python3
"""PyTorch reference fixtures for neka-cnn (run by hand; the outputs are committed).

    .venv/bin/python scripts/make_pytorch_fixtures.py            # writes tests/fixtures/pytorch/
    .venv/bin/python scripts/make_pytorch_fixtures.py --check-neka models/mnist-cnn --data-dir ../shared/data

Fixtures: for pytorch/examples' MNIST `Net` and a LeNet-5 with neka's names,
* `<model>.safetensors`    — `model.state_dict()` exactly as PyTorch saves it (seeded init);
* `<model>_io.safetensors` — `input` (8 real MNIST test digits, normalised) and the expected
  `log_probs` = `log_softmax(model(input))` in eval mode.
`tests/pytorch_parity.rs` loads both into neka's models and compares.

`--check-neka DIR` goes the other way: loads a neka `model.safetensors` into `Net` with
`load_state_dict(strict=True)` and reports its accuracy on the MNIST test set.
Needs: pip install torch safetensors numpy.
"""
import argparse
import gzip
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


class Net(nn.Module):
    """Verbatim from pytorch/examples mnist/main.py."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if raw_is_gz(path) else path.read_bytes()
    magic = struct.unpack(">I", raw[:4])[0]
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, raw[4 : 4 + 4 * nd])
    return np.frombuffer(raw[4 + 4 * nd :], dtype=np.uint8).reshape(dims)


def raw_is_gz(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return ((x - 0.1307) / 0.3081).unsqueeze(1)


def make_fixtures(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fixture = ROOT / "crates/neka-common/tests/fixtures/mnist-sample"
    x = normalise(read_idx(fixture / "t10k-images-idx3-ubyte.gz")[:8])
    for name, cls, seed in [("mnist_net", Net, 0), ("lenet5", LeNet5, 1)]:
        torch.manual_seed(seed)
        model = cls().eval()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"{name}.safetensors")
        with torch.no_grad():
            log_probs = model(x)
        save_file({"input": x.contiguous(), "log_probs": log_probs.contiguous()}, out / f"{name}_io.safetensors")
        print(f"wrote {out / name}.safetensors and _io (torch {torch.__version__})")


def check_neka(model_dir: Path, data_dir: Path) -> None:
    net = Net()
    net.load_state_dict(load_file(model_dir / "model.safetensors"), strict=True)
    net.eval()
    images = read_idx(data_dir / "mnist/t10k-images-idx3-ubyte.gz")
    labels = torch.from_numpy(read_idx(data_dir / "mnist/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), 1000):
            pred = net(normalise(images[i : i + 1000])).argmax(1)
            correct += (pred == labels[i : i + 1000]).sum().item()
    print(f"PyTorch Net.load_state_dict(strict=True) of {model_dir}/model.safetensors: "
          f"test accuracy {correct / len(images):.4f} ({correct}/{len(images)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/pytorch")
    ap.add_argument("--check-neka", type=Path)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data")
    a = ap.parse_args()
    if a.check_neka:
        check_neka(a.check_neka, a.data_dir)
    else:
        make_fixtures(a.out)


if __name__ == "__main__":
    main()
