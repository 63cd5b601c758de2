#!/usr/bin/env bash
# Idempotent set-up: the Debian data package and a pinned Python environment in .venv.
# Safe to rerun: each step is skipped when already done. Called by `make reproduce` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: the Debian package dataset-fashion-mnist is missing; install it as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall only when the pins or the package metadata changed.
stamp=.venv/.advkd-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # The pinned torch is a CUDA build: ~6 GB in .venv, and pip needs scratch space in $TMPDIR. A full disk
  # stops pip half-way with a bare OSError, so say what is missing before starting.
  for dir in . "${TMPDIR:-/tmp}"; do
    free_gb=$(( $(df -Pk "$dir" | awk 'NR==2 {print $4}') / 1048576 ))
    if [ "$free_gb" -lt 8 ]; then
      echo "setup: $(cd "$dir" && pwd) has ${free_gb} GB free; installing the pinned environment needs ~8 GB" \
           "there (.venv ~6 GB, pip's scratch space in \$TMPDIR)." \
           "Free some space (or point TMPDIR elsewhere) and rerun." >&2
      exit 1
    fi
  done
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
