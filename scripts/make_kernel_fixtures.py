"""PyTorch fixtures for neka's CPU CNN kernels: convolution (+ ReLU), max pooling and
cross-entropy, forward values and every gradient.

    .venv/bin/python scripts/make_kernel_fixtures.py   # writes crates/neka-cnn/tests/fixtures/kernels.safetensors

For each case `<name>`: inputs (`<name>.x`, `.w`, `.b`, `.g` = upstream gradient), the output
`.y`, and the gradients `.dx`, `.dw`, `.db` of `sum(y * g)`. Read by crates/neka-cnn/tests/kernel.rs.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# name: (batch, C_in, H, W, C_out, kh, kw, stride, padding (h, w), dilation, relu)
CONV_CASES = {
    "mnist_conv1": (2, 1, 28, 28, 32, 3, 3, 1, (0, 0), 1, True),
    "mnist_conv2": (2, 32, 26, 26, 64, 3, 3, 1, (0, 0), 1, True),
    "lenet_conv1": (2, 1, 28, 28, 6, 5, 5, 1, (2, 2), 1, True),
    "lenet_conv2": (3, 6, 14, 14, 16, 5, 5, 1, (0, 0), 1, True),
    "pad1": (3, 3, 9, 11, 4, 3, 3, 1, (1, 1), 1, False),
    "pad2_stride2": (1, 2, 10, 9, 3, 5, 5, 2, (2, 2), 1, False),
    "dilation2": (5, 2, 12, 12, 3, 3, 3, 1, (2, 2), 2, True),
    "nonsquare": (7, 3, 8, 10, 5, 3, 2, 1, (1, 0), 1, False),
    "stride2_dilation2": (3, 2, 13, 11, 4, 3, 3, 2, (1, 2), 2, False),
}


def main() -> None:
    torch.manual_seed(0)
    out = {}
    for name, (b, c, h, w, o, kh, kw, s, p, d, relu) in CONV_CASES.items():
        x = torch.randn(b, c, h, w, requires_grad=True)
        wt = (torch.randn(o, c, kh, kw) * 0.3).requires_grad_()
        bias = torch.randn(o, requires_grad=True)
        y = F.conv2d(x, wt, bias, stride=s, padding=p, dilation=d)
        if relu:
            y = F.relu(y)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        out.update({f"{name}.x": x, f"{name}.w": wt, f"{name}.b": bias, f"{name}.g": g, f"{name}.y": y,
                    f"{name}.dx": x.grad, f"{name}.dw": wt.grad, f"{name}.db": bias.grad})
    # max pooling: (batch, C, H, W, kernel, stride, padding)
    for name, (b, c, h, w, k, s, p) in {"pool2": (2, 3, 8, 6, 2, 2, 0), "pool2_odd": (2, 2, 7, 9, 2, 2, 0), "pool3_s2_p1": (2, 2, 9, 7, 3, 2, 1)}.items():
        x = torch.randn(b, c, h, w, requires_grad=True)
        y = F.max_pool2d(x, k, s, p)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        out.update({f"{name}.x": x, f"{name}.g": g, f"{name}.y": y, f"{name}.dx": x.grad})
    # cross-entropy: logits (N, C), targets (N)
    z = torch.randn(13, 10, requires_grad=True) * 3
    z.retain_grad()
    t = torch.randint(0, 10, (13,))
    loss = F.cross_entropy(z, t)
    loss.backward()
    out.update({"ce.z": z, "ce.t": t.to(torch.int64), "ce.loss": loss.reshape(1), "ce.dz": z.grad})
    path = Path(__file__).resolve().parent.parent / "crates/neka-cnn/tests/fixtures/kernels.safetensors"
    save_file({k: v.detach().contiguous() for k, v in out.items()}, path)
    print(f"wrote {path} ({path.stat().st_size} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
