#!/usr/bin/env python3
"""Cuts the committed MNIST test fixture from the full IDX files.

    python3 scripts/make_mnist_fixture.py ../shared/data/mnist crates/neka-common/tests/fixtures/mnist-sample

Writes the first 400 training and the first 200 test images (with labels) as gzip IDX
files with the standard names, so the fixture folder is a small but real MNIST data dir.
Standard library only.
"""
import gzip
import struct
import sys
from pathlib import Path

N = {"train": 400, "t10k": 200}


def cut(src: Path, dst: Path, split: str, what: str) -> None:
    n_dims = 3 if what == "images" else 1
    name = f"{split}-{what}-idx{n_dims}-ubyte.gz"
    raw = gzip.open(src / name).read()
    magic, *dims = struct.unpack(">" + "I" * (1 + n_dims), raw[: 4 + 4 * n_dims])
    item = 1
    for d in dims[1:]:
        item *= d
    n = N[split]
    header = struct.pack(">" + "I" * (1 + n_dims), magic, n, *dims[1:])
    body = raw[4 + 4 * n_dims : 4 + 4 * n_dims + n * item]
    # mtime=0 so the fixture is byte-for-byte reproducible
    with open(dst / name, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
            g.write(header + body)


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    for split in N:
        for what in ("images", "labels"):
            cut(src, dst, split, what)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
