"""PyTorch doing exactly the work of neka's benches, for neka / PyTorch ratios.

    .venv/bin/python scripts/bench_pytorch.py cnn [--model mnist-net|lenet5] [--steps 20] [--infer-batches 3]

`cnn` mirrors `bench_cnn`: the same models (pytorch/examples' MNIST Net, LeNet-5), batch 64,
AdamW 1e-3, random N(0, 1) input, labels i % 10, correct predictions counted every step (the
trainer does the same), 2 warm-up steps; inference batch 1000 in eval mode under no_grad.
One JSON line per model with bench_cnn's keys. 2 threads, as neka uses on this machine.
Run by hand (like the fixture scripts); `scripts/bench_vs_pytorch.sh` alternates it with neka.
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_pytorch_fixtures import LeNet5, Net  # noqa: E402

MODELS = {"mnist-net": Net, "lenet5": LeNet5}


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def bench_cnn(name: str, steps: int, infer_batches: int, min_seconds: float) -> dict:
    torch.manual_seed(0)
    model = MODELS[name]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(64, 1, 28, 28)
    y = torch.arange(64) % 10

    def step() -> None:
        model.train()
        opt.zero_grad()
        logits = model(x)
        loss = F.nll_loss(logits, y)  # the models end in log_softmax: = cross-entropy of the logits
        correct = (logits.argmax(1) == y).sum().item()
        loss.backward()
        opt.step()
        loss.item(), correct

    for _ in range(2):
        step()
    t = time.perf_counter()
    n = 0
    while n < steps or time.perf_counter() - t < min_seconds:
        step()
        n += 1
    train_ips = n * 64 / (time.perf_counter() - t)

    model.eval()
    xi = torch.randn(1000, 1, 28, 28)
    with torch.no_grad():
        model(xi).sum().item()
        t = time.perf_counter()
        nb = 0
        while nb < infer_batches or (infer_batches > 0 and time.perf_counter() - t < min_seconds):
            model(xi).sum().item()
            nb += 1
        infer_ips = nb * 1000 / (time.perf_counter() - t)
    return {
        "model": name,
        "device": "cpu",
        "impl": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "train_batch": 64,
        "train_steps": n,
        "train_images_per_sec": round(train_ips, 1),
        "infer_batch": 1000,
        "infer_batches": nb,
        "infer_images_per_sec": round(infer_ips, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("suite", choices=["cnn"])
    p.add_argument("--model", choices=list(MODELS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--infer-batches", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for name in [a.model] if a.model else list(MODELS):
        print(json.dumps(bench_cnn(name, a.steps, a.infer_batches, a.min_seconds)), flush=True)


if __name__ == "__main__":
    main()
