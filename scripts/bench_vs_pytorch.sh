#!/usr/bin/env bash
# neka / PyTorch on the same work, from one run on this machine: runs alternated, medians.
#
#   scripts/bench_vs_pytorch.sh cnn [ROUNDS=3]
#
# Needs the PyTorch venv (.venv: see DEVELOPERS.md / README). Each round runs, per model, neka's
# bench then PyTorch's, each in its own process (so peak RSS is that case's alone). Pause other
# jobs first: the machine has 2 cores. Prints the raw JSON lines, a markdown table of medians
# and ratios, and one JSON summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:?usage: scripts/bench_vs_pytorch.sh cnn [ROUNDS]}
rounds=${2:-3}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "no PyTorch venv at $PY: python3 -m venv .venv && .venv/bin/pip install torch safetensors numpy" >&2; exit 1; }
case "$suite" in
  cnn) models="mnist-net lenet5"; cargo build --release --quiet --example bench_cnn ;;
  *) echo "unknown suite $suite (cnn)" >&2; exit 1 ;;
esac
out=$(mktemp)
trap 'rm -f "$out"' EXIT
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
