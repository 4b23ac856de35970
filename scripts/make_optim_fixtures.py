#!/usr/bin/env python3
"""PyTorch reference values for neka's RMSprop and warm-up-cosine schedule (run by hand; the
output is committed).

    /path/to/venv/bin/python scripts/make_optim_fixtures.py   # writes tests/fixtures/pytorch/optim.safetensors

* `rmsprop_<case>` — `(STEPS + 1, 3, 4)` f64: θ before the first step and after each of STEPS
  `torch.optim.RMSprop` steps on `loss = Σ c·θ³` (so `g = 3cθ²`), for the hyper-parameters in
  CASES (the case name lists them); `rmsprop_theta0` and `rmsprop_c` are the start and `c`.
* `warmup_cosine_<W>_<T>_<ETA>` — `(T,)` f64: the learning rate of each epoch (base 0.1) under
  `SequentialLR(opt, [LinearLR(opt, start_factor=1/(W+1), end_factor=1.0, total_iters=W),
  CosineAnnealingLR(opt, T_max=T-W, eta_min=ETA)], milestones=[W])`, stepped once per epoch.

`tests/optim_pytorch.rs` recomputes both with neka and compares (relative error ≤ 1e-6).
Needs: pip install torch safetensors numpy.
"""
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/pytorch/optim.safetensors"
STEPS = 6

# name -> RMSprop keyword arguments (lr, alpha, eps, weight_decay, momentum, centered)
CASES = {
    "default": dict(lr=0.01),
    "momentum_decay": dict(lr=0.01, alpha=0.9, weight_decay=0.1, momentum=0.9),
    "centered": dict(lr=0.005, centered=True, eps=1e-6),
    "centered_momentum_decay": dict(lr=0.02, alpha=0.95, weight_decay=0.05, momentum=0.5, centered=True),
}

# (W, T, eta_min)
SCHEDULES = [(1, 5, 0.0), (2, 10, 0.0), (3, 8, 0.001)]


def rmsprop(theta0, c, kwargs):
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.RMSprop([theta], **kwargs)
    out = [theta.detach().clone()]
    for _ in range(STEPS):
        opt.zero_grad()
        (c * theta**3).sum().backward()
        opt.step()
        out.append(theta.detach().clone())
    return torch.stack(out)


def warmup_cosine(w, t, eta_min, base=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = torch.optim.lr_scheduler.SequentialLR(
            opt,
            [
                torch.optim.lr_scheduler.LinearLR(
                    opt, start_factor=1 / (w + 1), end_factor=1.0, total_iters=w
                ),
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t - w, eta_min=eta_min),
            ],
            milestones=[w],
        )
        lrs = []
        for _ in range(t):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return torch.tensor(lrs, dtype=torch.float64)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    theta0 = torch.randn(3, 4, dtype=torch.float64)
    c = torch.rand(3, 4, dtype=torch.float64) + 0.5
    tensors = {"rmsprop_theta0": theta0, "rmsprop_c": c}
    for name, kwargs in CASES.items():
        tensors[f"rmsprop_{name}"] = rmsprop(theta0, c, kwargs)
    for w, t, eta in SCHEDULES:
        tensors[f"warmup_cosine_{w}_{t}_{eta}"] = warmup_cosine(w, t, eta)
    meta = {"torch": torch.__version__, "steps": str(STEPS)}
    meta.update({f"case:{k}": repr(v) for k, v in CASES.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    print(f"wrote {OUT}: {', '.join(sorted(tensors))}")


if __name__ == "__main__":
    main()
