#!/usr/bin/env bash
# The paper-scale cost experiment (experiments/paper-cost.yaml) on one GPU, in a few minutes:
#   bash scripts/gpu_cost.sh                 # on a machine with the project's environment and a GPU
# then `advkd report --results results/paper-cost-gpu --out paper_figures/paper-cost/gpu` writes the table
# beside the CPU one (paper_figures/paper-cost/), naming the GPU in every row.
# On a bare GPU machine with PyTorch only, carry the diffusers/PyYAML/jsonschema wheels in .whl/ (see
# docs/cluster.md); the script installs them into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import diffusers" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT_DIR=${OUT_DIR:-results/paper-cost-gpu}
nvidia-smi -L || true
python3 scripts/gpu_cost.py experiments/paper-cost.yaml --device cuda --out "$OUT_DIR" \
  --throughput-batch 16 --repeats 10 --full-sample-max-nfe 100
if [ -n "${OUT:-}" ]; then tar czf "$OUT/paper-cost-gpu.tgz" "$OUT_DIR"; fi
