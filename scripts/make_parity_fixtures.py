#!/usr/bin/env python3
"""PyTorch reference fixtures for neka's recurrent layers (run by hand; outputs are committed).

    .venv/bin/python scripts/make_parity_fixtures.py [--out tests/fixtures/parity]

One `<name>.safetensors` per case, checked by `cargo test --test parity`:
* tensors: the module's parameters under their PyTorch names (`weight_ih_l0`, …,
  `bias_hh_l1_reverse`); `input` (B,T,F) f32; optional `lengths` (B) i64; optional `h0`, `c0`
  ((L·D),B,H); expected `output` (B,T,D·H, zeros past each length), `h_n`, and `c_n` for the
  LSTM; `grad_output` (shape of output) and the expected gradients `grad.input` and
  `grad.<parameter name>` of the scalar loss `sum(output * grad_output)`.
* `__metadata__`: kind (rnn_tanh | rnn_relu | lstm | gru), input_size, hidden_size,
  num_layers, bidirectional, bias ("true"/"false").
Variable lengths go through pack_padded_sequence(enforce_sorted=False) / pad_packed_sequence.
Needs: pip install torch safetensors numpy.
"""
import argparse
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent

# (name suffix, num_layers, bidirectional, bias, lengths?, h0?)
CASES = [
    ("l1_uni", 1, False, True, False, False),
    ("l2_bi_len_h0", 2, True, True, True, True),
    ("l3_uni_len", 3, False, True, True, False),
    ("l1_bi_nobias_h0", 1, True, False, False, True),
    ("l2_uni_nobias_len_h0", 2, False, False, True, True),
    ("l3_bi_len", 3, True, True, True, False),
]
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
B, T, F, H = 3, 6, 5, 4


def make(kind, num_layers, bidirectional, bias):
    kw = dict(input_size=F, hidden_size=H, num_layers=num_layers, bias=bias,
              batch_first=True, bidirectional=bidirectional)
    if kind.startswith("rnn"):
        return nn.RNN(nonlinearity=kind[4:], **kw)
    return {"lstm": nn.LSTM, "gru": nn.GRU}[kind](**kw)


def case(kind, suffix, num_layers, bidirectional, bias, use_lengths, use_h0, seed):
    torch.manual_seed(seed)
    m = make(kind, num_layers, bidirectional, bias)
    d = 2 if bidirectional else 1
    x = torch.randn(B, T, F, requires_grad=True)
    lengths = torch.tensor([T, 2, 4][:B], dtype=torch.int64) if use_lengths else None
    state = None
    tensors = {}
    if use_h0:
        h0 = torch.randn(num_layers * d, B, H)
        tensors["h0"] = h0
        if kind == "lstm":
            c0 = torch.randn(num_layers * d, B, H)
            tensors["c0"] = c0
            state = (h0, c0)
        else:
            state = h0
    if lengths is not None:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, hn = m(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        tensors["lengths"] = lengths
    else:
        out, hn = m(x, state)
    grad_output = torch.randn_like(out)
    (out * grad_output).sum().backward()
    for name, p in m.named_parameters():
        tensors[name] = p.detach().clone()
        tensors[f"grad.{name}"] = p.grad.detach().clone()
    tensors["input"] = x.detach().clone()
    tensors["output"] = out.detach().clone()
    if kind == "lstm":
        tensors["h_n"], tensors["c_n"] = hn[0].detach().clone(), hn[1].detach().clone()
    else:
        tensors["h_n"] = hn.detach().clone()
    tensors["grad_output"] = grad_output
    tensors["grad.input"] = x.grad.detach().clone()
    meta = {
        "kind": kind,
        "input_size": str(F),
        "hidden_size": str(H),
        "num_layers": str(num_layers),
        "bidirectional": str(bidirectional).lower(),
        "bias": str(bias).lower(),
    }
    return {k: v.contiguous() for k, v in tensors.items()}, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/parity")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seed = 0
    for kind in KINDS:
        for suffix, layers, bi, bias, use_len, use_h0 in CASES:
            seed += 1
            tensors, meta = case(kind, suffix, layers, bi, bias, use_len, use_h0, seed)
            path = args.out / f"{kind}_{suffix}.safetensors"
            save_file(tensors, str(path), metadata=meta)
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
