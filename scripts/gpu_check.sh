#!/usr/bin/env bash
# The GPU check: build with --features cuda (and cudnn when the machine has cuDNN), run the
# device-taking tests on the GPU, train MnistNet for one epoch, and time neka's benches next to
# PyTorch's on the same GPU. One run, at most ~9 minutes; everything measured lands in OUT.
#
#   scripts/gpu_check.sh pack [DATA_ROOT]       # here: vendored crates + data into .gpu/
#   scripts/gpu_check.sh light on|off           # here: keep models/ (43 MB) from travelling
#   scripts/gpu_check.sh run OUT [--device cuda:0]   # there (no internet; root; x86-64)
#   scripts/gpu_check.sh run OUT --device cpu   # the same on CPU: how its CPU part is tested
#
# What travels to a GPU machine is the working tree plus carried paths, 64 MiB in all. The
# tracked tree is ~52 MiB, 43 of them the pretrained models, and the vendored crates (xz) ~19 MiB
# and the data ~16 MiB, so `light on` takes models/ out of git's index (and ignores it) for the
# call, and `light off` puts it back. Then: run with carry [".gpu"] and the command
# `scripts/gpu_check.sh run $OUT`. Files back from OUT: at most 8, so the script writes 7:
#   env.txt  build.log  tests.log  train.log  bench.jsonl  summary.json  summary.md
#
# The run needs a Rust toolchain (cargo) on the GPU machine; it says so at once if there is none.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
GPU=$ROOT/.gpu
PY=${PYTHON:-python3} # the GPU machine's python3 holds PyTorch

usage() { sed -n '2,22p' "$0" >&2; exit 2; }

exclude() { # exclude PATTERN: adds it to .git/info/exclude once
  local f=$ROOT/.git/info/exclude
  mkdir -p "$(dirname "$f")"
  if [ -s "$f" ] && [ -n "$(tail -c1 "$f")" ]; then echo >>"$f"; fi
  grep -qxF "$1" "$f" 2>/dev/null || echo "$1" >>"$f"
}

travel_mib() { # what the device tool would send: tracked + untracked-not-ignored + .gpu
  { git ls-files -z; git ls-files -z --others --exclude-standard; } | du -cb --files0-from=- 2>/dev/null |
    tail -1 | cut -f1 | { read -r t; g=$(du -sb "$GPU" 2>/dev/null | cut -f1); echo $(( (t + ${g:-0}) / 1048576 )); }
}

pack() {
  local data=${1:-${NEKA_DATA_DIR:-}}
  [ -n "$data" ] && [ -d "$data/mnist" ] || { echo "pack: give the data root (or set NEKA_DATA_DIR)" >&2; exit 1; }
  command -v cargo-vendor-filterer >/dev/null ||
    { echo "pack: needs cargo-vendor-filterer: cargo install cargo-vendor-filterer" >&2; exit 1; }
  exclude "/.gpu/"
  rm -rf "$GPU" && mkdir -p "$GPU/data"
  # Only the crates a Linux x86-64 build uses (the others become empty stubs: the lock file still
  # names them), without their tests and benches, and without the C sources of the TLS crates
  # that only the `hub` feature compiles (the check builds with --no-default-features). Default
  # features stay on here: cargo-vendor-filterer 0.5 with --no-default-features stubs crates the
  # build needs (rand_core 0.9).
  local ex=() p
  for p in 'aws-lc-sys#aws-lc' 'aws-lc-sys#generated-include' 'ring#crypto' 'ring#pregenerated' \
           'ring#third_party' '*#tests' '*#benches'; do ex+=(--exclude-crate-path "$p"); done
  cargo vendor-filterer --platform x86_64-unknown-linux-gnu --features cuda,cudnn \
    --keep-dep-kinds all "${ex[@]}" "$GPU/vendor" >/dev/null || exit 1
  (cd "$GPU" && tar cf - vendor | xz -T0 -6 >vendor.tar.xz && rm -rf vendor)
  mkdir -p "$GPU/data/mnist" "$GPU/data/ud-english-ewt" "$GPU/data/multi30k"
  local f
  for f in "$data"/mnist/*-ubyte.gz; do gzip -dc "$f" | xz -T0 -9 >"$GPU/data/mnist/$(basename "${f%.gz}").xz"; done
  for s in train dev test; do xz -T0 -6 -c "$data/ud-english-ewt/en_ewt-ud-$s.conllu" >"$GPU/data/ud-english-ewt/en_ewt-ud-$s.conllu.xz"; done
  cp "$data"/multi30k/{train,val}.{de,en}.gz "$GPU/data/multi30k/"
  du -sh "$GPU"/* >&2
  local mib; mib=$(travel_mib)
  echo "pack: ${mib} MiB would travel with carry [\".gpu\"] (limit 64)" >&2
  [ "$mib" -le 63 ] || echo "pack: too much; run \`scripts/gpu_check.sh light on\` first" >&2
}

light() {
  case "${1:-}" in
    on) git diff --cached --quiet || { echo "light on: the index holds staged changes; commit or unstage them first" >&2; exit 1; }
        echo "light on: models/ leaves git's index: do not commit until \`light off\`" >&2
        git rm -r -q --cached models && exclude "/models/" && echo "models/ untracked for the call; \`light off\` restores it" >&2 ;;
    off) sed -i '\|^/models/$|d' .git/info/exclude; git reset -q -- models && echo "models/ tracked again" >&2 ;;
    *) usage ;;
  esac
  echo "would travel: $(travel_mib) MiB (+ carried paths not counted above)" >&2
}

run() {
  local OUT=${1:?run OUT [--device D]}; shift
  local DEV=cuda:0
  while [ $# -gt 0 ]; do case $1 in --device) [ $# -ge 2 ] || usage; DEV=$2; shift 2 ;; *) usage ;; esac; done
  mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
  local T0; T0=$(date +%s)
  local BUDGET=${GPU_CHECK_BUDGET_S:-540}
  left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
  # secs N: the time left minus N seconds kept for later steps, at least 30 (timeout 0 = none)
  secs() { local t=$(( $(left) - $1 )); (( t >= 30 )) || t=30; echo "$t"; }
  local WORK=${TMPDIR:-/tmp}/neka-gpu-check
  rm -rf "$WORK" && mkdir -p "$WORK"
  declare -A RC

  { echo "date: $(date -u +%FT%TZ)"; echo "commit: $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    echo "device: $DEV"; uname -a; echo "cpus: $(nproc)"
    nvidia-smi -L 2>&1; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    nvcc --version 2>&1 | tail -2; cargo -V 2>&1; rustc -V 2>&1
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1
  } >"$OUT/env.txt" 2>&1

  # A Rust toolchain: on PATH, or in the usual places.
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin /opt/rust/bin; do [ -x "$d/cargo" ] && PATH=$d:$PATH; done
  if ! command -v cargo >/dev/null; then
    echo "no cargo on this machine: the GPU check builds neka here and needs a Rust toolchain" | tee -a "$OUT/env.txt" >&2
    echo '{"ok": false, "why": "no Rust toolchain (cargo) on the machine"}' >"$OUT/summary.json"
    exit 3
  fi

  # One dev-profile build for tests and examples, every crate optimised (the benches time it).
  export CARGO_PROFILE_DEV_OPT_LEVEL=3
  local CARGO=(cargo) DATA=${NEKA_DATA_DIR:-}
  if [ -f "$GPU/vendor.tar.xz" ]; then
    tar xJf "$GPU/vendor.tar.xz" -C "$WORK"
    CARGO+=(--offline --config "source.crates-io.replace-with='neka-vendored'"
            --config "source.neka-vendored.directory='$WORK/vendor'")
  fi
  if [ -d "$GPU/data" ]; then
    DATA=$WORK/data; cp -r "$GPU/data" "$DATA"
    find "$DATA" -name '*.xz' -exec xz -d {} +
  fi
  [ -n "$DATA" ] || { echo "no data: run \`scripts/gpu_check.sh pack\` here, or set NEKA_DATA_DIR" >&2; exit 1; }
  echo "data: $DATA" >>"$OUT/env.txt"

  # Features: cuda (+ cudnn when libcudnn is found, falling back to cuda alone).
  local FEATURES="" DEVARGS=(--device "$DEV")
  if [[ $DEV == cuda* ]]; then
    FEATURES=cuda
    command -v nvcc >/dev/null || { echo "no nvcc on this machine: the CUDA build compiles candle's kernels with it" | tee -a "$OUT/env.txt" >&2; exit 3; }
    local cap; cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-${cap:-90}}
    local cudnn
    cudnn=$( (ldconfig -p 2>/dev/null | grep -o '/[^ ]*libcudnn\.so[.0-9]*' | head -1)
             python3 -c 'import nvidia.cudnn, os; d=os.path.join(nvidia.cudnn.__path__[0], "lib"); print(next(os.path.join(d, f) for f in sorted(os.listdir(d)) if f.startswith("libcudnn.so")))' 2>/dev/null)
    cudnn=$(echo "$cudnn" | head -1)
    if [ -n "$cudnn" ]; then
      mkdir -p "$WORK/lib" && ln -sf "$cudnn" "$WORK/lib/libcudnn.so"
      export LIBRARY_PATH=$WORK/lib:$(dirname "$cudnn"):${LIBRARY_PATH:-}
      export LD_LIBRARY_PATH=$(dirname "$cudnn"):${LD_LIBRARY_PATH:-}
      FEATURES=cuda,cudnn
    fi
  fi
  echo "features: ${FEATURES:-(none: cpu)}; CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-}" >>"$OUT/env.txt"

  local TARGETS=(--test parity --test pytorch_parity --test device
                 --example mnist_cnn --example bench_cnn --example bench_tagger --example bench_seq2seq)
  build() { timeout "$(secs 240)" "${CARGO[@]}" build --no-default-features ${FEATURES:+--features "$FEATURES"} "${TARGETS[@]}"; }
  local tb; tb=$(date +%s)
  build >"$OUT/build.log" 2>&1; RC[build]=$?
  if [ "${RC[build]}" != 0 ] && [ "$FEATURES" = cuda,cudnn ]; then
    echo "=== cudnn build failed (above); again with --features cuda" >>"$OUT/build.log"
    FEATURES=cuda; build >>"$OUT/build.log" 2>&1; RC[build]=$?
  fi
  local build_s=$(( $(date +%s) - tb ))
  BIN=${CARGO_TARGET_DIR:-target}/debug/examples

  local tt; tt=$(date +%s)
  if [ "${RC[build]}" = 0 ]; then
    # cuDNN and cuBLAS may use TF32 on Hopper; the tests hold the CPU's f32 tolerances.
    NVIDIA_TF32_OVERRIDE=0 NEKA_TEST_DEVICE=$DEV timeout "$(secs 200)" "${CARGO[@]}" test --no-default-features \
      ${FEATURES:+--features "$FEATURES"} --test parity --test pytorch_parity --test device \
      -- --nocapture --test-threads 1 >"$OUT/tests.log" 2>&1
    RC[tests]=$?
  fi
  local tests_s=$(( $(date +%s) - tt ))

  # One epoch of MnistNet on the full MNIST, then the benches (neka, then PyTorch).
  if [ "${RC[build]}" = 0 ]; then
    timeout "$(secs 150)" "$BIN/mnist_cnn" --model mnist-net --dataset mnist --epochs 1 \
      "${DEVARGS[@]}" --data-dir "$DATA" --out "$WORK/run" >"$OUT/train.log" 2>&1
    RC[train]=$?
    [ -f "$WORK/run/metrics.jsonl" ] && sed 's/^/metrics: /' "$WORK/run/metrics.jsonl" >>"$OUT/train.log"
  fi
  local B=$OUT/bench.jsonl; : >"$B"
  neka_bench() { local name=$1; shift
    [ "${RC[build]}" = 0 ] || return
    timeout "$(( $(left) > 120 ? 90 : 30 ))" "$BIN/$name" "$@" "${DEVARGS[@]}" 2>>"$OUT/train.log" |
      grep '^{' | sed "s/^{/{\"impl\":\"neka\",\"bench\":\"$name\",/" >>"$B"; RC[$name]=$?
  }
  torch_bench() { local suite=$1; shift
    "$PY" -c 'import torch' 2>/dev/null || return
    timeout "$(( $(left) > 120 ? 90 : 30 ))" "$PY" scripts/bench_pytorch.py "$suite" --device "$DEV" --threads "$(nproc)" "$@" \
      2>>"$OUT/train.log" | grep '^{' | sed "s/^{/{\"bench\":\"$suite\",/" >>"$B"; RC[torch_$suite]=$?
  }
  local S2S=() 
  [ -f models/seq2seq-multi30k-de-en/model.safetensors ] && S2S=(--model models/seq2seq-multi30k-de-en)
  neka_bench bench_cnn --conv kernels
  torch_bench cnn
  neka_bench bench_tagger --data-dir "$DATA"
  NEKA_DATA_DIR=$DATA torch_bench tagger --data-dir "$DATA"
  neka_bench bench_seq2seq --data-dir "$DATA" --sentences 100 ${S2S[@]+"${S2S[@]}"}
  [ ${#S2S[@]} -gt 0 ] && NEKA_DATA_DIR=$DATA torch_bench seq2seq --data-dir "$DATA" --sentences 100 "${S2S[@]}"

  local rcs="{"; for k in "${!RC[@]}"; do rcs+="\"$k\": ${RC[$k]},"; done; rcs="${rcs%,}}"
  python3 - "$OUT" "$DEV" "$FEATURES" "$build_s" "$tests_s" "$(( $(date +%s) - T0 ))" "$rcs" <<'PY'
import json, os, re, sys
out, dev, feats, build_s, tests_s, total_s, rcs = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{out}/bench.jsonl") if l.strip()]
read = lambda name: open(f"{out}/{name}", errors="replace").read() if os.path.exists(f"{out}/{name}") else ""
tests, train = read("tests.log"), read("train.log")
passed = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed", tests)
epoch = [json.loads(l[len("metrics: "):]) for l in train.splitlines() if l.startswith("metrics: ")]
final = [json.loads(l) for l in train.splitlines() if l.startswith("{") and "accuracy" in l]
key = lambda r: (r.get("bench", "").replace("bench_", ""), r.get("model") or r.get("case"))
table = []
for r in rows:
    if r.get("impl") != "neka":
        continue
    peer = [p for p in rows if p.get("impl", "").startswith("pytorch") and key(p) == key(r)]
    keys = ["train_images_per_sec", "infer_images_per_sec", "tokens_per_s", "target_tokens_per_s", "sentences_per_s"]
    for k in [k for k in keys if k in r]:
        p = peer[0].get(k) if peer else None
        table.append({"bench": key(r)[0], "case": key(r)[1], "metric": k, "neka": r[k], "pytorch": p,
                      "ratio": round(r[k] / p, 3) if p else None})
summary = {"device": dev, "features": feats, "build_seconds": int(build_s), "tests_seconds": int(tests_s),
           "total_seconds": int(total_s), "exit_codes": json.loads(rcs),
           "tests": [{"result": a, "passed": int(b), "failed": int(c)} for a, b, c in passed],
           "train_epoch": epoch[-1] if epoch else None, "train_final": final[-1] if final else None,
           "bench": table}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
md = [f"GPU check on {dev} (features {feats or 'none'}): build {build_s} s, tests {tests_s} s, total {total_s} s", ""]
md += [f"- tests: {', '.join(f'{a} ({b} passed, {c} failed)' for a, b, c in passed) or 'not run'}"]
if epoch:
    e = epoch[-1]
    md += [f"- MnistNet, 1 epoch: {e.get('samples_per_sec', 0):.0f} img/s, {e.get('seconds', 0):.1f} s, "
           f"test accuracy {final[-1]['accuracy'] * 100:.2f} %" if final else "- MnistNet: no final line"]
md += ["", "| bench | case | metric | neka | PyTorch | neka / PyTorch |", "|---|---|---|---:|---:|---:|"]
md += [f"| {t['bench']} | {t['case']} | {t['metric']} | {t['neka']:.1f} | {t['pytorch'] if t['pytorch'] is None else round(t['pytorch'], 1)} | {t['ratio']} |" for t in table]
open(f"{out}/summary.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
  local ok=0; for k in build tests train; do [ "${RC[$k]:-1}" = 0 ] || ok=1; done
  return $ok
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  light) shift; light "$@" ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
