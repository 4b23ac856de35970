#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler (nvcc, nvvm, headers, runtime) from PyPI wheels into a folder,
# with no root and no system CUDA, so `cargo check --features cuda` (and, on a machine with an
# NVIDIA driver, `cargo build --features cuda`) works. About 100 MB to download.
#
#   scripts/cuda_toolkit.sh DIR          # installs into DIR (skips what is already there)
#   eval "$(scripts/cuda_toolkit.sh DIR --env)"   # installs, then sets CUDA_ROOT, PATH, …
#
# CUDA 13.0 exactly: cudarc 0.19 (candle 0.11's CUDA bindings) rejects 13.5. The wheels hold no
# driver (libcuda.so), so on a machine without one, binaries can be checked but not linked.
set -euo pipefail
DIR=${1:?usage: scripts/cuda_toolkit.sh DIR [--env]}
ENV=${2:-}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
ROOT="$DIR/nvidia/cu13"
WHEELS=(nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cuda-crt nvidia-nvvm)
PY=${PYTHON:-python3}

if [ ! -x "$ROOT/bin/nvcc" ] || [ ! -d "$ROOT/nvvm" ]; then
  mkdir -p "$DIR/wheels"
  specs=()
  for w in "${WHEELS[@]}"; do specs+=("$w==13.0.*"); done
  # stdout carries the --env lines; pip's progress goes to stderr.
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 \
    --dest "$DIR/wheels" "${specs[@]}" >&2
  for whl in "$DIR"/wheels/*.whl; do
    "$PY" -m zipfile -e "$whl" "$DIR" >&2
  done
  chmod +x "$ROOT"/bin/* "$ROOT"/nvvm/bin/* 2>/dev/null || true
  # candle's build scripts look for lib64 and the usual names of the runtime library.
  if [ -d "$ROOT/lib" ] && [ ! -e "$ROOT/lib64" ]; then ln -s lib "$ROOT/lib64"; fi
  rm -rf "$DIR/wheels"
fi
test -x "$ROOT/bin/nvcc" || { echo "cuda_toolkit.sh: no nvcc under $ROOT/bin after install" >&2; exit 1; }
"$ROOT/bin/nvcc" --version | tail -n 2 >&2

if [ "$ENV" = "--env" ]; then
  echo "export CUDA_ROOT='$ROOT' CUDA_PATH='$ROOT' CUDA_TOOLKIT_ROOT_DIR='$ROOT'"
  echo "export PATH='$ROOT/bin':\"\$PATH\""
  echo "export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}"
fi
