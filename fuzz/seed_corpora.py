#!/usr/bin/env python3
"""Writes the initial fuzz corpora into fuzz/corpus-init/<target>/ from the committed fixtures,
models/*/config.json and the seed model directories in fuzz/seeds/ (regenerate those first:
`cargo test --test fuzz_corpora -- --ignored`; that also writes image seeds into
fuzz/corpus-init/image/).

Then minimise into the committed corpora, per target:
    cargo +nightly fuzz cmin T fuzz/corpus-init/T   # or: fuzz run T fuzz/corpus/T fuzz/corpus-init/T -- -merge=1
"""
import gzip
import hashlib
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus-init")
COMMON = os.path.join(ROOT, "crates", "neka-common", "tests", "fixtures")


def put(target, data, name=None):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(*p):
    with open(os.path.join(*p), "rb") as f:
        return f.read()


def idx(magic, dims, data):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def gz(b):
    return gzip.compress(b, mtime=0)


# idx: the MNIST sample (gzip) and small raw / gzip / corrupt files
mnist = os.path.join(COMMON, "mnist-sample")
for f in sorted(os.listdir(mnist)):
    b = read(mnist, f)
    put("idx", b)
    put("idx", gzip.decompress(b)[:4000])
imgs = idx(2051, [3, 2, 2], range(12))
labels = idx(2049, [5], [7, 2, 1, 0, 4])
for b in [imgs, labels, gz(imgs), gz(labels), gz(imgs) + gz(b""), imgs[:-1], labels + b"\0",
          idx(2051, [2**31 - 1, 28, 28], b"\0" * 64), gz(idx(2051, [2**31 - 1, 28, 28], b"\0" * 4096)),
          idx(2051, [0, 1, 1], b""), idx(2051, [1, 0, 5], b"")]:
    put("idx", b)

# conllu: the EWT sample, the malformed fixtures, and the edge cases of the reader
ud = os.path.join(COMMON, "ud")
for f in sorted(os.listdir(ud)):
    put("conllu", read(ud, f))
ewt = read(ud, "en_ewt-sample.conllu")
head = b"\n\n".join(ewt.split(b"\n\n")[:3]) + b"\n"
for b in [head, gz(head), b"\xef\xbb\xbf" + head, head.replace(b"\n", b"\r\n"), head.replace(b"\n", b"\r"),
          b"1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n1\tdo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n2\tn't\tnot\tPART\tRB\t_\t1\tadvmod\t_\t_\n"
          b"2.1\tx\t_\t_\t_\t_\t_\t_\t_\t_\n",
          b"-3\tx\tx\tX\tX\t_\t0\troot\t_\t_\n", b"1\tx\tx\tX\tX\t_\t0\troot\t_\t_\n\xff\n"]:
    put("conllu", b)

# parallel: Multi30k sample pairs, separated by 0xFF
m30k = os.path.join(COMMON, "multi30k")
for split in ["train", "val", "test_2016_flickr"]:
    de, en = read(m30k, split + ".de"), read(m30k, split + ".en")
    put("parallel", de + b"\xff" + en)
    put("parallel", b"\n".join(de.split(b"\n")[:5]) + b"\xff" + gz(b"\n".join(en.split(b"\n")[:5])))
for b in [b"Ein Hund.\r\nZwei.\xffA dog.\r\nTwo.", b"\xef\xbb\xbfa\xffb", b"a\rb\xffa\rb", b"a\n\n\xffb\nc\n", b"x y z"]:
    put("parallel", b)

# vocab: the shipped vocabularies, the seeds' and a few malformed ones
for m in ["pos-bilstm-ewt", "seq2seq-multi30k-de-en"]:
    for f in sorted(os.listdir(os.path.join(ROOT, "models", m))):
        if f.endswith(".json") and f != "config.json":
            put("vocab", read(ROOT, "models", m, f))
for b in [b'{"tokens":["<pad>","<unk>","a"],"unk":"<unk>"}', b'{"tokens":["a","a"]}', b'{"tokens":[],"unk":"x"}',
          b'{"tokens":["a"],"unk":null}', b'[]', b'\xef\xbb\xbf{"tokens":["a"]}']:
    put("vocab", b)

# model directories: selector byte (seed * 16 + file index) + that file's content
seeds = os.path.join(ROOT, "fuzz", "seeds")
for kind, target in [("cnn", "cnn"), ("tagger", "tagger"), ("translator", "translator")]:
    kd = os.path.join(seeds, kind)
    if not os.path.isdir(kd):
        sys.exit(f"{kd} missing: run `cargo test --test fuzz_corpora -- --ignored` first")
    for s, seed in enumerate(sorted(os.listdir(kd))):
        files = sorted(os.listdir(os.path.join(kd, seed)))
        for i, f in enumerate(files):
            b = read(kd, seed, f)
            put(target + "_model_dir", bytes([s * 16 + i]) + b)
            if f.endswith(".json") and f != "config.json":
                put("vocab", b)
            if f == "config.json":
                put(target + "_config", b)
        put(target + "_model_dir", bytes([s * 16 + len(files)]))  # delete the first file
for m, target in [("mnist-cnn", "cnn"), ("pos-bilstm-ewt", "tagger"), ("seq2seq-multi30k-de-en", "translator")]:
    put(target + "_config", read(ROOT, "models", m, "config.json"))
print("wrote", OUT)
