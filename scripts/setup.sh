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
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
