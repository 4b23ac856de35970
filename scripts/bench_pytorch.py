"""PyTorch doing exactly the work of neka's benches, for neka / PyTorch ratios.

    .venv/bin/python scripts/bench_pytorch.py cnn [--model mnist-net|lenet5] [--steps 20] [--infer-batches 3]
    .venv/bin/python scripts/bench_pytorch.py lstm [--batch 32] [--steps 50] [--input 100] [--hidden 128] [--iters 10]
    .venv/bin/python scripts/bench_pytorch.py tagger [--data-dir D] [--batch-size 32] [--iters 30]
    .venv/bin/python scripts/bench_pytorch.py seq2seq --model models/seq2seq-multi30k-de-en [--data-dir D]
        [--batch-size 64] [--iters 20] [--sentences 200] [--beam 5] [--beam-chunk 128] [--show 0]
        [--pack-decoder]

`cnn` mirrors `bench_cnn`: the same models (pytorch/examples' MNIST Net, LeNet-5), batch 64,
AdamW 1e-3, random N(0, 1) input, labels i % 10, correct predictions counted every step (the
trainer does the same), 2 warm-up steps; inference batch 1000 in eval mode under no_grad.
One JSON line per model with bench_cnn's keys.

`lstm` mirrors `bench_lstm --neka-only`: one bidirectional `nn.LSTM` layer, x (B, T, F) with
requires_grad, g ~ N(0, 1) (B, T, 2H). `forward-only` (neka: `neka-forward-only`) = the forward
pass under no_grad; `train` (neka: `neka`) = forward, loss = Σ out ⊙ g, backward (gradients of
the weights and of x; no optimizer). 2 warm-ups, then the mean over `--iters`.

`tagger` mirrors `bench_tagger`: neka's POS tagger (word embedding 100 + char BiLSTM 2×50 over
50-dim char embeddings, run once per distinct word of a batch → dropout 0.33 → 2-layer BiLSTM
2×200 with dropout 0.33 between layers → dropout → Linear to the 17 UPOS tags), neka's
vocabularies (words lowercased, min count 2; chars min count 1; words over 24 chars keep their
first and last 12) and neka's batches: the first iters + 2 batches of `epoch_plan` (length-
bucketed, shuffled by neka's data RNG — ChaCha8 seed 0 stream 1 and rand 0.9's shuffle, ported
bit for bit below, so they are the same sentences). Packed sequences for both LSTMs. `train` =
forward + masked cross-entropy (+ the correct-tag count neka's step computes) + backward + AdamW
2e-3, tensors built before timing (neka times the same); `inference` = the whole EWT dev set in
batches of 32 sorted by length, eval mode, no_grad, argmax, batch building inside the timing
(as neka's `dev_set.batch(&idx)`).

`seq2seq` mirrors `bench_seq2seq --model DIR`: neka's encoder–decoder (BiLSTM encoder, tanh
bridges, LSTM decoder, Luong "general" attention, s̃ = tanh(W_c [c ; s]), output = tied target
embedding + out.bias, −1e9 on padded source positions) loaded from DIR/model.safetensors with
`load_state_dict(strict=True)`, neka's tokenizer and vocabularies. The encoder runs on packed
sources (unpacked when a batch has no padding, e.g. one sentence: the same result). `train`:
neka's first iters + 2 batches of 64 (same RNG port), 2 warm-ups, forward (full teacher forcing,
the decoder over the whole target in one call) + label-smoothed (0.1) cross-entropy + correct
count + `loss.item()`, backward, AdamW 1e-4, dropout 0.3; the decoder reads the padded targets
unpacked (same loss and gradients: it runs left to right and the steps past a target's end only
feed ignored logits; `--pack-decoder` packs them as neka's lengths do, slower in PyTorch).
Decoding uses the weights as loaded (the training steps are undone first; neka decodes with its
weights after its training steps, which changes a few outputs). `greedy`: the first
`--sentences` val sentences sorted by length in batches of 128, batched greedy search; `beam`:
beam search sentence by sentence with neka's rules (2k candidates by total log p, ties by
hypothesis then token; an <eos> outside the top k ignored; the best of finished + live by
log p / len^α, α = 1; max length 2·S + 10); `beam-batched` (PyTorch only): the same search over
(sentences × beams) rows at once in chunks of `--beam-chunk` sentences sorted by length,
finished sentences retired; `same_as_beam` counts results identical to the per-sentence beam's.
`--show N` prints the first N translations of each search to stderr.

One JSON line per case; every line has `impl`, `threads` and `peak_rss_mb` (the process's
peak so far). 2 threads, as neka uses on this machine. Run by hand (like the fixture scripts);
`scripts/bench_vs_pytorch.sh` alternates it with neka.
"""
import argparse
import copy
import gzip
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_pytorch_fixtures import LeNet5, Net  # noqa: E402

MODELS = {"mnist-net": Net, "lenet5": LeNet5}


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


DEVICE = "cpu"


def sync() -> None:
    """Waits for the device (timings on CUDA end when the work has run, not when it is queued)."""
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def impl_keys() -> dict:
    return {"impl": f"pytorch {torch.__version__}", "threads": torch.get_num_threads(), "device": DEVICE}


def emit(row: dict) -> None:
    row = {**row, **impl_keys(), "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(row), flush=True)


# ------------------------------------------------------------------------------------- cnn


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
        "device": DEVICE,
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


# ------------------------------------------------------------------------------------ lstm


def mean_seconds(iters: int, f) -> float:
    for _ in range(2):
        f()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        f()
    sync()
    return (time.perf_counter() - t) / iters


def bench_lstm(a) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(a.input, a.hidden, batch_first=True, bidirectional=True)
    x = torch.randn(a.batch, a.steps, a.input, requires_grad=True)
    g = torch.randn(a.batch, a.steps, 2 * a.hidden)
    tokens = a.batch * a.steps

    def case(name: str, secs: float) -> None:
        emit({"case": name, "batch": a.batch, "steps": a.steps, "input": a.input, "hidden": a.hidden,
              "ms_per_iter": round(secs * 1e3, 2), "tokens_per_s": round(tokens / secs)})

    def forward_only() -> None:
        with torch.no_grad():
            out, _ = lstm(x)
        assert out.shape[0] == a.batch

    def train() -> None:
        # Fresh gradients every iteration, as neka's `backward()` returns a new gradient store.
        lstm.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = lstm(x)
        (out * g).sum().backward()
        assert x.grad is not None

    case("forward-only", mean_seconds(a.iters, forward_only))
    case("train", mean_seconds(a.iters, train))


# ------------------------------------------------ neka's data RNG and batch plan, bit for bit

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


def _qr(x, a, b, c, d) -> None:
    x[a] = (x[a] + x[b]) & M32
    t = x[d] ^ x[a]
    x[d] = ((t << 16) | (t >> 16)) & M32
    x[c] = (x[c] + x[d]) & M32
    t = x[b] ^ x[c]
    x[b] = ((t << 12) | (t >> 20)) & M32
    x[a] = (x[a] + x[b]) & M32
    t = x[d] ^ x[a]
    x[d] = ((t << 8) | (t >> 24)) & M32
    x[c] = (x[c] + x[d]) & M32
    t = x[b] ^ x[c]
    x[b] = ((t << 7) | (t >> 25)) & M32


class ChaChaRng:
    """rand_chacha 0.9's ChaCha{8,12,20}Rng: 64-bit block counter in words 12–13, stream in 14–15,
    `next_u32` reads the key stream word by word."""

    def __init__(self, key_words, stream: int = 0, rounds: int = 8):
        self.key = list(key_words)
        self.stream = stream
        self.rounds = rounds
        self.counter = 0
        self.buf: list = []
        self.pos = 0

    @classmethod
    def seed_from_u64(cls, seed: int, rounds: int = 8) -> "ChaChaRng":
        """rand_core's `SeedableRng::seed_from_u64`: the 32-byte seed from PCG32 outputs."""
        key, s = [], seed & M64
        for _ in range(8):
            s = (s * 6364136223846793005 + 11634580027462260723) & M64
            xorshifted = (((s >> 18) ^ s) >> 27) & M32
            rot = s >> 59
            key.append(((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & M32)
        return cls(key, 0, rounds)

    def _block(self) -> list:
        c, st = self.counter, self.stream
        init = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *self.key,
                c & M32, (c >> 32) & M32, st & M32, (st >> 32) & M32]
        x = init[:]
        for _ in range(self.rounds // 2):
            _qr(x, 0, 4, 8, 12)
            _qr(x, 1, 5, 9, 13)
            _qr(x, 2, 6, 10, 14)
            _qr(x, 3, 7, 11, 15)
            _qr(x, 0, 5, 10, 15)
            _qr(x, 1, 6, 11, 12)
            _qr(x, 2, 7, 8, 13)
            _qr(x, 3, 4, 9, 14)
        self.counter = (c + 1) & M64
        return [(p + q) & M32 for p, q in zip(x, init)]

    def next_u32(self) -> int:
        if self.pos == len(self.buf):
            self.buf, self.pos = self._block(), 0
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def below(self, bound: int) -> int:
        """rand 0.9's `random_range(..bound)` for u32 (Canon's method, the default biased variant)."""
        x = self.next_u32() * bound
        result, lo = x >> 32, x & M32
        if lo > ((-bound) & M32):
            new_hi = (self.next_u32() * bound) >> 32
            if lo + new_hi > M32:
                result += 1
        return result

    def shuffle(self, xs: list) -> None:
        """rand 0.9's `SliceRandom::shuffle` (Fisher–Yates with `IncreasingUniform`)."""
        if len(xs) <= 1:
            return
        n, chunk, remaining = 0, 0, 1  # IncreasingUniform::new(rng, 0)
        for i in range(len(xs)):
            nn_ = n + 1
            if remaining == 0:
                product, current = nn_, nn_ + 1  # calculate_bound_u32(nn_)
                while product * current <= M32:
                    product *= current
                    current += 1
                chunk = self.below(product)
                next_remaining = current - nn_ - 1
            else:
                next_remaining = remaining - 1
            if next_remaining == 0:
                j = chunk
            else:
                j = chunk % nn_
                chunk //= nn_
            remaining, n = next_remaining, nn_
            xs[i], xs[j] = xs[j], xs[i]


def data_rng(seed: int) -> ChaChaRng:
    """neka_common::rng::data_rng: ChaCha8 seeded from `seed`, stream 1."""
    r = ChaChaRng.seed_from_u64(seed, 8)
    r.stream = 1
    return r


def bucketed_plan(lengths: list, batch_size: int, rng) -> list:
    """neka_common::data::bucketed_plan: shuffled pools of 50 batches sorted by length (stable),
    cut, the batches shuffled; without rng: sorted by length, cut in order."""
    bs = max(batch_size, 1)
    idx = list(range(len(lengths)))
    if rng is None:
        idx.sort(key=lambda i: lengths[i])
        return [idx[i:i + bs] for i in range(0, len(idx), bs)]
    rng.shuffle(idx)
    batches = []
    for p in range(0, len(idx), bs * 50):
        pool = sorted(idx[p:p + bs * 50], key=lambda i: lengths[i])
        batches.extend(pool[i:i + bs] for i in range(0, len(pool), bs))
    rng.shuffle(batches)
    return batches


# -------------------------------------------------------------------------- text and vocabs


def data_root(flag):
    root = flag or os.environ.get("NEKA_DATA_DIR") or None
    if not root:
        sys.exit("pass --data-dir DIR (or set NEKA_DATA_DIR)")
    return Path(root)


def find_file(d: Path, name: str):
    for p in (d / name, d / f"{name}.gz"):
        if p.is_file():
            return p
    return None


def read_text(path: Path) -> str:
    """Plain or gzip (detected from the first bytes, as neka does)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8")


def read_lines(path: Path) -> list:
    """Rust's `str::lines` (and a stripped `\\r`)."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [l[:-1] if l.endswith("\r") else l for l in lines]


SPECIALS_PAD_UNK = ["<pad>", "<unk>"]


def build_vocab(items, min_freq: int, specials: list) -> list:
    """neka's `Vocab::build`: specials, then by descending count, ties alphabetically."""
    counts = Counter(items)
    rest = [(t, c) for t, c in counts.items() if c >= max(min_freq, 1) and t not in specials]
    rest.sort(key=lambda tc: (-tc[1], tc[0]))
    return list(specials) + [t for t, _ in rest]


# ------------------------------------------------------------------------------------ tagger

UPOS_TAGS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
             "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"]
MAX_WORD_CHARS = 24


def read_conllu(path: Path) -> list:
    """(forms, upos) per sentence; comments, multiword ranges and empty nodes skipped."""
    sents, forms, upos = [], [], []
    for line in read_lines(path):
        if not line.strip():
            if forms:
                sents.append((forms, upos))
                forms, upos = [], []
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ValueError(f"{path}: bad line {line!r}")
        if "-" in cols[0] or "." in cols[0]:
            continue
        forms.append(cols[1])
        upos.append(cols[3])
    if forms:
        sents.append((forms, upos))
    return sents


def load_ewt(flag) -> dict:
    root = data_root(flag)
    d = next((d for d in (root / "ud-english-ewt", root) if find_file(d, "en_ewt-ud-train.conllu")), None)
    if d is None:
        sys.exit(f"UD English EWT not found under {root}")
    return {s: read_conllu(find_file(d, f"en_ewt-ud-{s}.conllu")) for s in ("train", "dev")}


class TaggingVocabs:
    def __init__(self, train: list):
        self.words = build_vocab((w.lower() for f, _ in train for w in f), 2, SPECIALS_PAD_UNK)
        self.chars = build_vocab((c for f, _ in train for w in f for c in w), 1, SPECIALS_PAD_UNK)
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.char_ids_ = {c: i for i, c in enumerate(self.chars)}
        self.tag_ids = {t: i for i, t in enumerate(UPOS_TAGS)}

    def word_id(self, form: str) -> int:
        return self.word_ids.get(form.lower(), 1)

    def char_ids(self, form: str) -> list:
        ids = [self.char_ids_.get(c, 1) for c in form]
        if len(ids) <= MAX_WORD_CHARS:
            return ids
        h = MAX_WORD_CHARS // 2
        return ids[:h] + ids[-h:]

    def encode(self, sent) -> tuple:
        forms, upos = sent
        return ([self.word_id(f) for f in forms], [tuple(self.char_ids(f)) for f in forms],
                [self.tag_ids[t] for t in upos])

    def word_counts(self, train: list) -> list:
        counts = [0] * len(self.words)
        for forms, _ in train:
            for f in forms:
                counts[self.word_id(f)] += 1
        return counts


class TagBatch:
    """neka's `TagBatch`: padded words and tags, lengths, and the characters of the N distinct
    words of the batch with each token's row (`word_index`)."""

    def __init__(self, sents: list):
        b = len(sents)
        t = max(len(s[0]) for s in sents)
        words = [0] * (b * t)
        tags = [-100] * (b * t)  # ignore_index at padding
        word_index = [0] * (b * t)
        distinct: dict = {}
        for i, (ws, cs, ts) in enumerate(sents):
            for j, w in enumerate(ws):
                k = i * t + j
                words[k] = w
                tags[k] = ts[j]
                c = cs[j] or (1,)
                word_index[k] = distinct.setdefault(c, len(distinct))
        forms = list(distinct)
        l_max = max(len(f) for f in forms)
        chars = [list(f) + [0] * (l_max - len(f)) for f in forms]
        self.shape = (b, t)
        self.lengths = torch.tensor([len(s[0]) for s in sents])
        self.words = torch.tensor(words).view(b, t)
        self.tags = torch.tensor(tags).view(b, t)
        self.mask = self.tags != -100
        self.chars = torch.tensor(chars)
        self.char_lengths = torch.tensor([len(f) for f in forms])
        self.word_index = torch.tensor(word_index)
        self.tokens = int(self.lengths.sum())


class Tagger(nn.Module):
    """neka_lstm::tagger::Tagger with its default config, neka's tensor names."""

    def __init__(self, word_vocab: int, char_vocab: int, num_tags: int = 17, word_dim: int = 100,
                 char_dim: int = 50, char_hidden: int = 50, hidden: int = 200, layers: int = 2,
                 dropout: float = 0.33):
        super().__init__()
        self.word_embed = nn.Embedding(word_vocab, word_dim)
        self.char_embed = nn.Embedding(char_vocab, char_dim)
        self.char_rnn = nn.LSTM(char_dim, char_hidden, batch_first=True, bidirectional=True)
        self.rnn = nn.LSTM(word_dim + 2 * char_hidden, hidden, num_layers=layers, batch_first=True,
                           bidirectional=True, dropout=dropout)
        self.fc = nn.Linear(2 * hidden, num_tags)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("drop_probs", torch.zeros(word_vocab), persistent=False)

    def set_word_counts(self, counts: list, alpha: float = 0.25) -> None:
        """Frequency-aware word dropout p(w) = α / (α + count(w)) (0 for <pad>, <unk>)."""
        c = torch.tensor(counts, dtype=torch.float32)
        p = alpha / (alpha + c)
        p[:2] = 0.0
        self.drop_probs = p

    def forward(self, bt: TagBatch) -> torch.Tensor:
        b, t = bt.shape
        words = bt.words
        if self.training:
            drop = torch.rand(words.shape) < self.drop_probs[words]
            words = words.masked_fill(drop, 1)  # <unk>
        x = self.word_embed(words)
        c = self.char_embed(bt.chars)
        packed = pack_padded_sequence(c, bt.char_lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.char_rnn(packed)  # (2, N, Hc), in the words' order
        per_word = torch.cat([h_n[-2], h_n[-1]], dim=1)
        per_token = per_word.index_select(0, bt.word_index).view(b, t, -1)
        x = self.dropout(torch.cat([x, per_token], dim=-1))
        packed = pack_padded_sequence(x, bt.lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=t)
        return self.fc(self.dropout(h))


def bench_tagger(a) -> None:
    bank = load_ewt(a.data_dir)
    vocabs = TaggingVocabs(bank["train"])
    train = [vocabs.encode(s) for s in bank["train"]]
    dev = [vocabs.encode(s) for s in bank["dev"]]
    torch.manual_seed(0)
    model = Tagger(len(vocabs.words), len(vocabs.chars))
    model.set_word_counts(vocabs.word_counts(bank["train"]))
    params = sum(p.numel() for p in model.parameters())

    plan = bucketed_plan([len(s[0]) for s in train], a.batch_size, data_rng(0))
    batches = [TagBatch([train[i] for i in idx]) for idx in plan[: a.iters + 2]]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    tokens, secs = 0, 0.0
    for i, bt in enumerate(batches):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(bt).view(-1, len(UPOS_TAGS))
        tags = bt.tags.view(-1)
        loss = F.cross_entropy(logits, tags, ignore_index=-100)  # mean over the real tokens
        (logits.argmax(1) == tags).logical_and(bt.mask.view(-1)).sum().item()
        loss.backward()
        opt.step()
        sync()
        if i >= 2:
            secs += time.perf_counter() - t0
            tokens += bt.tokens
    emit({"case": "train", "cell": "lstm", "parameters": params, "batch_size": a.batch_size,
          "steps": a.iters, "tokens": tokens, "tokens_per_s": tokens / secs if tokens else None})

    model.eval()
    t0 = time.perf_counter()
    tokens = 0
    with torch.no_grad():
        for idx in bucketed_plan([len(s[0]) for s in dev], a.batch_size, None):
            bt = TagBatch([dev[i] for i in idx])
            tokens += bt.tokens
            ids = model(bt).argmax(-1).tolist()
            [row[:n] for row, n in zip(ids, bt.lengths.tolist())]
    s = time.perf_counter() - t0
    emit({"case": "inference", "cell": "lstm", "batch_size": a.batch_size, "sentences": len(dev),
          "tokens": tokens, "tokens_per_s": tokens / s})


# ----------------------------------------------------------------------------------- seq2seq

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def tokenize(text: str) -> list:
    """neka_common::data::text::tokenize: whitespace, and every punctuation or symbol character
    a token of its own, except ' ’ - between letters and . , between digits."""
    out = []
    for word in text.split():
        cur = []
        n = len(word)
        for i, c in enumerate(word):
            prev = word[i - 1] if i > 0 else ""
            nxt = word[i + 1] if i + 1 < n else ""
            if c in "'’-":
                joins = prev.isalpha() and nxt.isalpha()
            elif c in ".,":
                joins = prev in "0123456789" and prev != "" and nxt in "0123456789" and nxt != ""
            else:
                joins = False
            if c.isalnum() or joins:
                cur.append(c)
            else:
                if cur:
                    out.append("".join(cur))
                    cur = []
                out.append(c)
        if cur:
            out.append("".join(cur))
    return out


def read_parallel(src: Path, tgt: Path, max_tokens: int = 100) -> list:
    """Lowercased, tokenized pairs; pairs with an empty side or a side over 100 tokens skipped."""
    pairs = []
    for a, b in zip(read_lines(src), read_lines(tgt), strict=True):
        a, b = tokenize(a.lower()), tokenize(b.lower())
        if a and b and max(len(a), len(b)) <= max_tokens:
            pairs.append((a, b))
    return pairs


def multi30k(root: Path, split: str) -> list:
    d = root / "multi30k"
    s, t = find_file(d, f"{split}.de"), find_file(d, f"{split}.en")
    if s is None or t is None:
        sys.exit(f"Multi30k {split}.de / {split}.en not found in {d}")
    return read_parallel(s, t)


def pad_ids(seqs: list, fill: int = PAD_ID):
    t = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [fill] * (t - len(s)) for s in seqs]), torch.tensor([len(s) for s in seqs])


class SourceBatch:
    def __init__(self, seqs: list):
        self.ids, self.lengths = pad_ids(seqs)
        self.mask = (torch.arange(self.ids.shape[1]).unsqueeze(0) < self.lengths.unsqueeze(1)).float()


class Seq2SeqBatch:
    def __init__(self, pairs: list):
        self.src = SourceBatch([p[0] for p in pairs])
        self.tgt_in, self.tgt_lengths = pad_ids([[BOS_ID] + p[1] for p in pairs])
        self.tgt_out, _ = pad_ids([p[1] + [EOS_ID] for p in pairs], fill=-100)
        self.tgt_tokens = int(self.tgt_lengths.sum())


class Bias(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n))


class Seq2Seq(nn.Module):
    """neka_seq2seq::Seq2Seq for cell = lstm, attention = luong, tie_embeddings = true, with
    neka's (PyTorch's) tensor names, so `load_state_dict(strict=True)` takes model.safetensors."""

    def __init__(self, c: dict):
        super().__init__()
        assert c["cell"] == "lstm" and c["attention"] == "luong" and c["tie_embeddings"], c
        e, he, hd, layers = c["embed_dim"], c["enc_hidden"], c["dec_hidden"], c["enc_layers"]
        self.src_embed = nn.Embedding(c["src_vocab"], e)
        self.encoder = nn.LSTM(e, he, num_layers=layers, batch_first=True, bidirectional=True,
                               dropout=c["dropout"] if layers > 1 else 0.0)
        self.bridge_h = nn.Linear(2 * he, hd)
        self.bridge_c = nn.Linear(2 * he, hd)
        self.tgt_embed = nn.Embedding(c["tgt_vocab"], e)
        self.decoder = nn.LSTM(e, hd, batch_first=True)
        self.attention = nn.ModuleDict({"w_a": nn.Linear(2 * he, hd, bias=False)})
        self.combine = nn.Linear(2 * he + hd, e)
        self.out = Bias(c["tgt_vocab"])
        self.dropout = nn.Dropout(c["dropout"])
        self.pack_decoder = False

    def encode(self, src: SourceBatch):
        s = src.ids.shape[1]
        x = self.dropout(self.src_embed(src.ids))
        if bool((src.lengths == s).all()):  # no padding (e.g. one sentence): nothing to pack
            outputs, (h_n, c_n) = self.encoder(x)
        else:
            packed = pack_padded_sequence(x, src.lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, (h_n, c_n) = self.encoder(packed)
            outputs, _ = pad_packed_sequence(out, batch_first=True, total_length=s)  # 0 past lengths
        h = torch.tanh(self.bridge_h(torch.cat([h_n[-2], h_n[-1]], 1))).unsqueeze(0)
        c = torch.tanh(self.bridge_c(torch.cat([c_n[-2], c_n[-1]], 1))).unsqueeze(0)
        keys = self.attention["w_a"](outputs)
        mask_bias = ((src.mask - 1.0) * 1e9).unsqueeze(1)  # (B, 1, S)
        return (outputs, keys, mask_bias), (h, c)

    def output(self, s, enc):
        outputs, keys, mask_bias = enc
        alpha = torch.softmax(s @ keys.transpose(1, 2) + mask_bias, dim=-1)  # (B, T, S)
        ctx = alpha @ outputs
        h = torch.tanh(self.combine(torch.cat([ctx, s], -1)))
        return F.linear(self.dropout(h), self.tgt_embed.weight, self.out.bias), alpha

    def forward_parallel(self, batch: Seq2SeqBatch) -> torch.Tensor:
        enc, state = self.encode(batch.src)
        t = batch.tgt_in.shape[1]
        emb = self.dropout(self.tgt_embed(batch.tgt_in))
        if self.pack_decoder:  # neka's runner (lengths): outputs past a target's length are 0
            packed = pack_padded_sequence(emb, batch.tgt_lengths.cpu(), batch_first=True, enforce_sorted=False)
            s, _ = pad_packed_sequence(self.decoder(packed, state)[0], batch_first=True, total_length=t)
        else:
            # The same loss and gradients: the decoder reads left to right and the steps past a
            # target's length only feed logits that the loss ignores. PyTorch's packed LSTM is
            # slower on CPU (a slice per step, and zero-filled gradients for each in backward).
            s, _ = self.decoder(emb, state)
        return self.output(s, enc)[0]

    def decode_step(self, y, state, enc):
        s, state = self.decoder(self.dropout(self.tgt_embed(y)).unsqueeze(1), state)
        logits, alpha = self.output(s, enc)
        return logits.squeeze(1), alpha.squeeze(1), state


def max_len(s: int) -> int:
    return 2 * s + 10  # DecodeConfig: max_len_a = 2, max_len_b = 10


class Hyp:
    __slots__ = ("ids", "log_prob", "attention")

    def __init__(self, ids, log_prob, attention):
        self.ids, self.log_prob, self.attention = ids, log_prob, attention


def greedy(model: Seq2Seq, src: SourceBatch) -> list:
    lengths = src.lengths.tolist()
    b = len(lengths)
    enc, state = model.encode(src)
    y = torch.full((b,), BOS_ID)
    hyps = [Hyp([], 0.0, []) for _ in range(b)]
    done = [False] * b
    for _ in range(max(max_len(l) for l in lengths)):
        logits, alpha, state = model.decode_step(y, state, enc)
        logp = F.log_softmax(logits, -1)
        best = logp.argmax(-1)
        lp = logp.gather(1, best.unsqueeze(1)).squeeze(1).tolist()
        att = alpha.tolist()
        for i, tok in enumerate(best.tolist()):
            if done[i]:
                continue
            h = hyps[i]
            h.ids.append(tok)
            h.log_prob += lp[i]
            h.attention.append(att[i][: lengths[i]])
            done[i] = tok == EOS_ID or len(h.ids) >= max_len(lengths[i])
        if all(done):
            break
        y = best
    return hyps


def select_candidates(cand: list, beams: list, k: int, att, row0: int, s: int, finished: list):
    """neka's rules for one sentence: `cand` = its 2k best (score, hypothesis, token); an <eos>
    outside the top k is ignored; returns the next beams and their rows (row0 + hypothesis)."""
    cand.sort(key=lambda c: (-c[0], c[1], c[2]))
    nxt, parents = [], []
    for rank, (score, i, v) in enumerate(cand):
        if v == EOS_ID and rank >= k:
            continue
        h = Hyp(beams[i].ids + [v], score, beams[i].attention + [att[row0 + i][:s]])
        if v == EOS_ID:
            finished.append(h)
        else:
            nxt.append(h)
            parents.append(row0 + i)
            if len(nxt) == k:
                break
    return nxt, parents


def best_hyp(hyps: list, length_penalty: float = 1.0) -> Hyp:
    """The highest log p / len^α; among equal scores the last one (Rust's `max_by`)."""
    best, best_score = None, None
    for h in hyps:
        score = h.log_prob / max(len(h.ids), 1) ** length_penalty
        if best is None or score >= best_score:
            best, best_score = h, score
    return best


def beam_search(model: Seq2Seq, src: list, k: int) -> Hyp:
    s = len(src)
    enc1, state = model.encode(SourceBatch([src]))
    beams, finished = [Hyp([], 0.0, [])], []
    for _ in range(max_len(s)):
        n = len(beams)
        enc = tuple(e.expand(n, *e.shape[1:]) for e in enc1)  # the sentence once per hypothesis
        y = torch.tensor([h.ids[-1] if h.ids else BOS_ID for h in beams])
        logits, alpha, nxt = model.decode_step(y, state, enc)
        scores = F.log_softmax(logits, -1).double() + torch.tensor([h.log_prob for h in beams],
                                                                   dtype=torch.float64).unsqueeze(1)
        v = scores.shape[1]
        vals, idx = scores.view(-1).topk(min(2 * k, scores.numel()))
        cand = [(sc, ix // v, ix % v) for sc, ix in zip(vals.tolist(), idx.tolist())]
        beams, parents = select_candidates(cand, beams, k, alpha.tolist(), 0, s, finished)
        if len(finished) >= k or not beams:
            break
        p = torch.tensor(parents)
        state = (nxt[0].index_select(1, p), nxt[1].index_select(1, p))
    return best_hyp(finished + beams)


def beam_search_batched(model: Seq2Seq, srcs: list, k: int) -> list:
    """Beam search for several sentences at once: one decoder call per step for the live
    hypotheses of all unfinished sentences; each sentence follows `beam_search`'s rules."""
    lengths = [len(s) for s in srcs]
    enc_all, state = model.encode(SourceBatch(srcs))
    beams = [[Hyp([], 0.0, [])] for _ in srcs]
    finished = [[] for _ in srcs]
    live = list(range(len(srcs)))  # unfinished sentences, in row order
    rows_sent = torch.arange(len(srcs))  # sentence of each live row
    step = 0
    while live:
        enc = tuple(e.index_select(0, rows_sent) for e in enc_all)
        y = torch.tensor([h.ids[-1] if h.ids else BOS_ID for j in live for h in beams[j]])
        base = torch.tensor([h.log_prob for j in live for h in beams[j]], dtype=torch.float64)
        logits, alpha, nxt = model.decode_step(y, state, enc)
        scores = F.log_softmax(logits, -1).double() + base.unsqueeze(1)  # (R, V)
        v = scores.shape[1]
        kk = 2 * k
        # The 2k best of a sentence are among its rows' 2k best: top 2k per row, then per sentence.
        row_vals, row_idx = scores.topk(kk, dim=1)
        n_beams = [len(beams[j]) for j in live]
        width = max(n_beams)
        slot_sent = torch.repeat_interleave(torch.arange(len(live)), torch.tensor(n_beams))
        starts = [0]
        for n in n_beams[:-1]:
            starts.append(starts[-1] + n)
        slot_beam = torch.arange(len(slot_sent)) - torch.tensor(starts).repeat_interleave(torch.tensor(n_beams))
        grid = torch.full((len(live), width, kk), float("-inf"), dtype=torch.float64)
        grid[slot_sent, slot_beam] = row_vals
        vals, flat = grid.view(len(live), -1).topk(kk, dim=1)
        flat, row_idx = flat.tolist(), row_idx.tolist()
        vals = vals.tolist()
        att = alpha.tolist()
        step += 1
        new_live, parents = [], []
        for a, j in enumerate(live):
            cand = [(sc, f // kk, row_idx[starts[a] + f // kk][f % kk]) for sc, f in zip(vals[a], flat[a])]
            nb, par = select_candidates(cand, beams[j], k, att, starts[a], lengths[j], finished[j])
            beams[j] = nb
            if len(finished[j]) >= k or not nb or step >= max_len(lengths[j]):
                continue  # this sentence is done: its rows leave the batch
            new_live.append(j)
            parents.extend(par)
        live = new_live
        if not live:
            break
        p = torch.tensor(parents)
        state = (nxt[0].index_select(1, p), nxt[1].index_select(1, p))
        rows_sent = torch.tensor([j for j in live for _ in beams[j]])
    return [best_hyp(finished[j] + beams[j]) for j in range(len(srcs))]


class Translator:
    def __init__(self, model_dir: Path):
        cfg = json.loads((model_dir / "config.json").read_text())
        if cfg.get("model") != "seq2seq":
            sys.exit(f"{model_dir}: not a neka seq2seq model")
        self.cfg = cfg["config"]
        load = lambda f: json.loads((model_dir / f).read_text())["tokens"]  # noqa: E731
        self.src_tokens, self.tgt_tokens = load("src_vocab.json"), load("tgt_vocab.json")
        self.src_ids = {t: i for i, t in enumerate(self.src_tokens)}
        self.tgt_ids = {t: i for i, t in enumerate(self.tgt_tokens)}
        from safetensors.torch import load_file
        self.model = Seq2Seq(self.cfg)
        self.model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)

    def encode_src(self, toks: list) -> list:
        return [self.src_ids.get(t, UNK_ID) for t in toks]

    def encode_tgt(self, toks: list) -> list:
        return [self.tgt_ids.get(t, UNK_ID) for t in toks]

    def decode_tgt(self, ids: list) -> list:
        out = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (BOS_ID, PAD_ID):
                out.append(self.tgt_tokens[i])
        return out

    @torch.no_grad()
    def translate_tokens(self, sentences: list, beam: int, batched: bool = False, chunk: int = 128) -> list:
        """neka's `Translator::translate_tokens`: greedy in batches of 128 sorted by length for
        beam ≤ 1, else beam search sentence by sentence (or, `batched`, in batches like greedy)."""
        ids = [self.encode_src(s) for s in sentences]
        out = [Hyp([], 0.0, []) for _ in ids]
        order = [i for i in range(len(ids)) if ids[i]]
        if beam <= 1 or batched:
            order.sort(key=lambda i: len(ids[i]))
            for c in range(0, len(order), chunk):
                part = order[c:c + chunk]
                srcs = [ids[i] for i in part]
                hyps = greedy(self.model, SourceBatch(srcs)) if beam <= 1 else \
                    beam_search_batched(self.model, srcs, beam)
                for i, h in zip(part, hyps):
                    out[i] = h
        else:
            for i in order:
                out[i] = beam_search(self.model, ids[i], beam)
        return out


def bench_seq2seq(a) -> None:
    root = data_root(a.data_dir)
    train, val = multi30k(root, "train"), multi30k(root, "val")
    tr = Translator(Path(a.model))
    model = tr.model
    model.pack_decoder = a.pack_decoder
    torch.manual_seed(0)

    pairs = [(tr.encode_src(s), tr.encode_tgt(t)) for s, t in train]
    plan = bucketed_plan([len(p[0]) for p in pairs], a.batch_size, data_rng(0))
    batches = [Seq2SeqBatch([pairs[i] for i in idx]) for idx in plan[: a.iters + 2]]
    loaded = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    tokens, secs = 0, [0.0, 0.0, 0.0]
    for i, bt in enumerate(batches):
        t0 = time.perf_counter()
        logits = model.forward_parallel(bt)
        logits = logits.reshape(-1, logits.shape[-1])
        tgt = bt.tgt_out.view(-1)
        loss = F.cross_entropy(logits, tgt, ignore_index=-100, label_smoothing=tr.cfg["label_smoothing"])
        (logits.argmax(1) == tgt).sum().item()  # correct count (padding is -100: never equal)
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        if i >= 2:
            secs[0] += t1 - t0
            secs[1] += t2 - t1
            secs[2] += t3 - t2
            tokens += bt.tgt_tokens
    emit({"case": "train", "attention": tr.cfg["attention"], "cell": tr.cfg["cell"],
          "batch_size": a.batch_size, "steps": a.iters, "target_tokens_per_s": tokens / sum(secs) if tokens else None,
          "seconds_forward_backward_optimizer": secs, "decoder_packed": a.pack_decoder})

    # Decoding with the weights as loaded (undo the training steps), eval mode.
    model.load_state_dict(loaded)
    del opt, batches
    model.eval()
    srcs = [p[0] for p in val[: a.sentences]]
    results = {}
    for name, beam, batched in [("greedy", 1, False), ("beam", a.beam, False), ("beam-batched", a.beam, True)]:
        t0 = time.perf_counter()
        hyps = tr.translate_tokens(srcs, beam, batched=batched, chunk=128 if beam <= 1 else a.beam_chunk)
        s = time.perf_counter() - t0
        results[name] = hyps
        row = {"case": name, "beam": beam, "trained": True, "sentences": len(srcs),
               "sentences_per_s": len(srcs) / s, "output_tokens": sum(len(h.ids) for h in hyps)}
        if batched:
            row["same_as_beam"] = sum(h.ids == g.ids for h, g in zip(hyps, results["beam"]))
        emit(row)
    for i in range(min(a.show, len(srcs))):
        print(f"[{i}] src:    {' '.join(srcs[i])}\n    ref:    {' '.join(val[i][1])}", file=sys.stderr)
        for name in results:
            print(f"    {name + ':':<13} {' '.join(tr.decode_tgt(results[name][i].ids))}", file=sys.stderr)


# -------------------------------------------------------------------------------------- main


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=2)
    common.add_argument("--device", default="cpu", help="cpu or cuda[:N] (every tensor is made there)")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="suite", required=True)

    c = sub.add_parser("cnn", parents=[common], help="bench_cnn's work")
    c.add_argument("--model", choices=list(MODELS))
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--infer-batches", type=int, default=3)
    c.add_argument("--min-seconds", type=float, default=2.0)

    c = sub.add_parser("lstm", parents=[common], help="bench_lstm --neka-only's work")
    c.add_argument("--batch", type=int, default=32)
    c.add_argument("--steps", type=int, default=50)
    c.add_argument("--input", type=int, default=100)
    c.add_argument("--hidden", type=int, default=128)
    c.add_argument("--iters", type=int, default=10, help="timed iterations (after 2 warm-ups)")

    c = sub.add_parser("tagger", parents=[common], help="bench_tagger's work")
    c.add_argument("--data-dir", help="data root holding ud-english-ewt/ (default: $NEKA_DATA_DIR)")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--iters", type=int, default=30, help="training steps timed (after 2 warm-ups)")

    c = sub.add_parser("seq2seq", parents=[common], help="bench_seq2seq --model DIR's work")
    c.add_argument("--model", required=True, help="a neka seq2seq model directory")
    c.add_argument("--data-dir", help="data root holding multi30k/ (default: $NEKA_DATA_DIR)")
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--iters", type=int, default=20, help="training steps timed (after 2 warm-ups)")
    c.add_argument("--sentences", type=int, default=200, help="validation sentences to decode")
    c.add_argument("--beam", type=int, default=5)
    c.add_argument("--beam-chunk", type=int, default=128, help="sentences per batch of beam-batched")
    c.add_argument("--show", type=int, default=0, help="print the first N translations to stderr")
    c.add_argument("--pack-decoder", action="store_true",
                   help="train the decoder on packed targets too (same loss; slower in PyTorch)")

    a = p.parse_args()
    torch.set_num_threads(a.threads)
    global DEVICE
    DEVICE = a.device
    if a.device != "cpu":
        # Every tensor on the GPU without touching each constructor; not on CPU, where the
        # mode it installs would cost time on every torch call.
        torch.set_default_device(a.device)
    if a.suite == "cnn":
        for name in [a.model] if a.model else list(MODELS):
            print(json.dumps(bench_cnn(name, a.steps, a.infer_batches, a.min_seconds)), flush=True)
    elif a.suite == "lstm":
        bench_lstm(a)
    elif a.suite == "tagger":
        bench_tagger(a)
    else:
        bench_seq2seq(a)


if __name__ == "__main__":
    main()
