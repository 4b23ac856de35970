#!/usr/bin/env bash
# neka / PyTorch on the same work, from one run on this machine: runs alternated, medians.
#
#   scripts/bench_vs_pytorch.sh cnn [ROUNDS=3]
#   scripts/bench_vs_pytorch.sh lstm|tagger|seq2seq [ROUNDS=3] [ARGS...]
#
# Needs the PyTorch venv (.venv: see DEVELOPERS.md / README). Each round runs, per model, neka's
# bench then PyTorch's, each in its own process (so peak RSS is that case's alone). Pause other
# jobs first: the machine has 2 cores. Prints the raw JSON lines, a markdown table of medians
# and ratios, and one JSON summary line.
#
# lstm: `bench_lstm --neka-only` vs `bench_pytorch.py lstm` (neka `neka` ↔ PyTorch `train`,
# `neka-forward-only` ↔ `forward-only`). tagger: `bench_tagger` vs `bench_pytorch.py tagger`.
# seq2seq: `bench_seq2seq --model $S2S_MODEL` vs `bench_pytorch.py seq2seq --model $S2S_MODEL`
# (S2S_MODEL defaults to models/seq2seq-multi30k-de-en; both run `beam` one sentence at a time
# and `beam-batched` across sentences). tagger and seq2seq read the data root from NEKA_DATA_DIR.
# ARGS go to both sides (the flags have the same names and defaults), e.g. `lstm 3 --iters 20`.
# Rows are matched by `case`; the peak RSS row is each process's peak (neka's measured around
# its process, PyTorch's the last `peak_rss_mb` it printed).
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:?usage: scripts/bench_vs_pytorch.sh cnn|lstm|tagger|seq2seq [ROUNDS] [ARGS...]}
rounds=${2:-3}
extra=("${@:3}")
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "no PyTorch venv at $PY: python3 -m venv .venv && .venv/bin/pip install torch safetensors numpy" >&2; exit 1; }
S2S_MODEL=${S2S_MODEL:-models/seq2seq-multi30k-de-en}
case "$suite" in
  cnn) models="mnist-net lenet5"; cargo build --release --quiet --example bench_cnn ;;
  lstm) neka=(./target/release/examples/bench_lstm --neka-only); torch=(lstm) ;;
  tagger) neka=(./target/release/examples/bench_tagger); torch=(tagger) ;;
  seq2seq) neka=(./target/release/examples/bench_seq2seq --model "$S2S_MODEL"); torch=(seq2seq --model "$S2S_MODEL") ;;
  *) echo "unknown suite $suite (cnn, lstm, tagger, seq2seq)" >&2; exit 1 ;;
esac
if [ "$suite" = tagger ] || [ "$suite" = seq2seq ]; then
  [ -n "${NEKA_DATA_DIR:-}" ] || { echo "set NEKA_DATA_DIR to the data root (ud-english-ewt/, multi30k/)" >&2; exit 1; }
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT

if [ "$suite" = cnn ]; then
for r in $(seq "$rounds"); do
  for m in $models; do
    ./target/release/examples/bench_cnn --conv kernels --model "$m" | sed "s/^{/{\"impl\":\"neka\",\"round\":$r,/" | tee -a "$out"
    "$PY" scripts/bench_pytorch.py cnn --model "$m" | sed "s/^{/{\"round\":$r,/" | tee -a "$out"
  done
done
"$PY" - "$out" "$rounds" <<'PY'
import json, platform, statistics, subprocess, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(model, impl, key):
    v = [r[key] for r in rows if r["model"] == model and r["impl"].startswith(impl)]
    return statistics.median(v)
torch_v = next(r["impl"] for r in rows if r["impl"].startswith("pytorch"))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"\n{datetime.date.today()}, {cpu}, {rows[0]['threads']} threads, neka (candle 0.11) vs {torch_v}, medians of {sys.argv[2]} alternated rounds\n")
print("| case | neka | PyTorch | neka / PyTorch |\n|---|---|---|---|")
summary = {}
for model in dict.fromkeys(r["model"] for r in rows):
    for key, label in [("train_images_per_sec", "training, img/s"), ("infer_images_per_sec", "inference, img/s"), ("peak_rss_mb", "peak RSS, MB")]:
        a, b = med(model, "neka", key), med(model, "pytorch", key)
        summary[f"{model}.{key}"] = {"neka": a, "pytorch": b, "ratio": round(a / b, 3)}
        print(f"| {model} {label} | {a:,.0f} | {b:,.0f} | **{a / b:.2f}** |")
print(json.dumps({"suite": "cnn", "rounds": int(sys.argv[2]), "pytorch": torch_v, "cases": summary}))
PY
exit 0
fi

# lstm, tagger, seq2seq: neka's binary (its peak RSS measured around the process), then PyTorch.
cargo build --release --quiet --example "bench_$suite"
with_peak_rss() {
  "$PY" -c 'import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
print(json.dumps({"case": "process", "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}), flush=True)
sys.exit(rc)' "$@"
}
for r in $(seq "$rounds"); do
  with_peak_rss "${neka[@]}" ${extra[@]+"${extra[@]}"} | sed "s/^{/{\"impl\":\"neka\",\"round\":$r,/" | tee -a "$out"
  "$PY" scripts/bench_pytorch.py "${torch[@]}" ${extra[@]+"${extra[@]}"} | sed "s/^{/{\"round\":$r,/" | tee -a "$out"
done
"$PY" - "$suite" "$out" "$rounds" <<'PY'
import json, platform, statistics, sys, datetime
suite, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(path) if l.startswith("{")]
# (row label, neka case, PyTorch case, key)
PAIRS = {
    "lstm": [
        ("forward + backward, tokens/s", "neka", "train", "tokens_per_s"),
        ("forward only, tokens/s", "neka-forward-only", "forward-only", "tokens_per_s"),
    ],
    "tagger": [
        ("training, tokens/s", "train", "train", "tokens_per_s"),
        ("inference (dev set), tokens/s", "inference", "inference", "tokens_per_s"),
    ],
    "seq2seq": [
        ("training, target tokens/s", "train", "train", "target_tokens_per_s"),
        ("greedy, sentences/s", "greedy", "greedy", "sentences_per_s"),
        ("beam 5, one sentence at a time, sentences/s", "beam", "beam", "sentences_per_s"),
        ("beam 5, batched across sentences, sentences/s", "beam-batched", "beam-batched", "sentences_per_s"),
        ("greedy, output tokens", "greedy", "greedy", "output_tokens"),
        ("beam, output tokens", "beam", "beam", "output_tokens"),
        ("beam batched, output tokens", "beam-batched", "beam-batched", "output_tokens"),
    ],
}[suite]
def med(impl, case, key):
    v = [r[key] for r in rows if r["impl"].startswith(impl) and r.get("case") == case and r.get(key) is not None]
    return statistics.median(v) if v else None
def peak_rss(impl):
    per_round = {}
    for r in rows:
        if r["impl"].startswith(impl) and "peak_rss_mb" in r and (impl == "pytorch" or r.get("case") == "process"):
            per_round[r["round"]] = max(per_round.get(r["round"], 0), r["peak_rss_mb"])
    return statistics.median(per_round.values()) if per_round else None
def fmt(x):
    return "–" if x is None else f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
torch_rows = [r for r in rows if r["impl"].startswith("pytorch")]
torch_v = torch_rows[0]["impl"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"\n{datetime.date.today()}, {cpu}, {torch_rows[0]['threads']} threads, neka (candle 0.11) vs {torch_v}, {suite}, medians of {rounds} alternated rounds\n")
print("| case | neka | PyTorch | neka / PyTorch |\n|---|---|---|---|")
summary = {}
for label, neka_case, torch_case, key in PAIRS + [("peak RSS of the process, MB", "process", "process", "peak_rss_mb")]:
    if key == "peak_rss_mb":
        a, b = peak_rss("neka"), peak_rss("pytorch")
    else:
        a, b = med("neka", neka_case, key), med("pytorch", torch_case, key)
    ratio = round(a / b, 3) if a is not None and b else None
    summary[f"{torch_case}.{key}"] = {"neka": a, "pytorch": b, "ratio": ratio}
    print(f"| {label} | {fmt(a)} | {fmt(b)} | **{'–' if ratio is None else f'{ratio:.2f}'}** |")
print(json.dumps({"suite": suite, "rounds": rounds, "pytorch": torch_v, "cases": summary}))
PY
