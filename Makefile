# The two commands of the README's Quick start. Each runs the idempotent set-up first.
SHELL := /bin/bash
CORES ?= 2
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: setup reproduce test figures

setup:
	bash scripts/setup.sh

reproduce: setup
	snakemake --cores $(CORES)

# Lint, then both test tiers: tests/unit (no Snakemake run) on CORES pytest workers and its timing tests alone, then
# tests/e2e (the Snakemake DAG runs, one at a time: each takes every core).
test: setup
	ruff check .
	pytest -q -n $(CORES) tests/unit
	pytest -q -m timing tests/unit
	pytest -q tests/e2e

# Tables and figures again from existing results (reads files only; retrains and resamples nothing).
EXPERIMENT ?= default
figures:
	advkd report --results results/$(EXPERIMENT) --out paper_figures/$(EXPERIMENT) --config experiments/$(EXPERIMENT).yaml
