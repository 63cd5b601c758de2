# Validation and target lists shared by every rule file.
import json
import os
import re
import sys

from advkd.config import validate_config
from advkd.io import BadInputError
from advkd.methods import FAMILIES
from advkd.trajectories import shard_ranges

try:
    validate_config(config, source="experiment config (" + ", ".join(map(str, workflow.configfiles)) + ")")
except BadInputError as e:
    sys.exit(f"advkd: {e}")

# Every rule runs in the project's pinned environment (`--sdm conda` builds it from this file).
ENV = "../../environment.yml"

R = f"results/{config['experiment']}"
LOGS = f"{R}/logs"
DEVICE = config["device"]
SEEDS = config["sampling"]["seeds"]
METHODS = config["methods"]
SAMPLER_METHODS = [m for m, p in METHODS.items() if FAMILIES[p["family"]].kind == "sampler"]
STUDENT_METHODS = [m for m, p in METHODS.items() if FAMILIES[p["family"]].kind == "student"]
N_SHARDS = len(shard_ranges(config["trajectories"]["count"], config["trajectories"]["shard_size"]))


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def method_n(method):
    return METHODS[method].get("n", config["sampling"]["n"])


def sample_files(methods):
    return expand(f"{R}/samples/{{method}}/seed{{seed}}.npz", method=methods, seed=SEEDS)


def quality_files(methods):
    return expand(f"{R}/metrics/quality/{{method}}/seed{{seed}}.json", method=list(methods), seed=SEEDS)


def cost_inputs(wildcards):
    """Samplers are costed from the teacher; a student from its own weights (and the teacher it may wrap)."""
    if FAMILIES[METHODS[wildcards.method]["family"]].kind == "student":
        return [f"{R}/teacher/teacher.json", f"{R}/students/{wildcards.method}/student.safetensors"]
    return [f"{R}/teacher/teacher.json"]


def all_targets():
    return [
        f"{R}/data/data_card.json",
        f"{R}/teacher/teacher.json",
        *sample_files(SAMPLER_METHODS),
        *sample_files(STUDENT_METHODS),
        *expand(f"{R}/trajectories/shard-{{shard:05d}}.safetensors", shard=range(N_SHARDS)),
        *quality_files(METHODS),
        *expand(f"{R}/metrics/cost/{{method}}.json", method=METHODS),
        f"{R}/metrics/sanity.json",
    ]

# Rules that run networks ask a cluster for one GPU only when the experiment runs on CUDA.
GPU = 1 if DEVICE.startswith("cuda") else 0
