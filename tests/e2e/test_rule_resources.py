"""Every rule can be scheduled on a cluster: it declares threads, mem_mb and runtime, and a rule that runs a
network (its command takes --device) declares the gpu resource that the SLURM profile turns into --gpus."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advkd.config import experiment_files

# Loads the workflow through Snakemake's API in a child process (the API changes the working directory).
_LOAD = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

root, cfg, workdir = map(Path, sys.argv[1:4])
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=2), snakefile=root / "Snakefile", workdir=workdir,
                      config_settings=ConfigSettings(configfiles=[cfg]))._workflow
    print(json.dumps({r.name: {"resources": sorted(r.resources), "norun": r.norun,
                               "gpu": r.resources["gpu"].value if "gpu" in r.resources else None,
                               "shell": r.shellcmd or "", "file": str(r.snakefile)} for r in wf.rules}))
"""
ROOT = Path(__file__).resolve().parents[2]
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)


@pytest.fixture(scope="module")
def rules_of(tmp_path_factory):
    """Rules of the workflow under an experiment config (a dict), loaded once per config for this module."""
    cache = {}

    def load(cfg):
        key = json.dumps(cfg, sort_keys=True)
        if key not in cache:
            d = tmp_path_factory.mktemp("workflow")
            (d / "exp.yaml").write_text(yaml.safe_dump(cfg))
            # Loading is planning, not running: user-supplied inputs (paper.yaml's data) may be absent.
            r = subprocess.run([sys.executable, "-c", _LOAD, ROOT, d / "exp.yaml", d],
                               capture_output=True, text=True, env=os.environ | {"ADVKD_PLAN_ONLY": "1"})
            assert r.returncode == 0, r.stderr[-3000:]
            cache[key] = json.loads(r.stdout.strip().splitlines()[-1])
        return cache[key]

    return load


def experiment(repo_root, name):
    return yaml.safe_load((repo_root / "experiments" / name).read_text())


def declared_threads(repo_root):
    out = {}
    for smk in [repo_root / "Snakefile", *sorted((repo_root / "workflow" / "rules").glob("*.smk"))]:
        for name, body in RULE.findall(smk.read_text()):
            out[name] = bool(re.search(r"^\s+threads:", body, re.MULTILINE))
    return out


@pytest.mark.parametrize("name", [p.name for p in experiment_files()])
def test_every_rule_declares_cluster_resources(rules_of, repo_root, name):
    rules = rules_of(experiment(repo_root, name))
    threads = declared_threads(repo_root)
    problems = []
    for rule, r in sorted(rules.items()):
        if r["norun"]:  # rule all: nothing to run, never submitted
            continue
        missing = [k for k in ("mem_mb", "runtime") if k not in r["resources"]]
        if not threads.get(rule):
            missing.append("threads")
        if "--device" in r["shell"] and "gpu" not in r["resources"]:
            missing.append("gpu (runs a network)")
        if missing:
            problems.append(f"{rule} ({r['file']}): no {', '.join(missing)}")
    assert not problems, "rules a cluster cannot size:\n" + "\n".join(problems)


class _Resources(dict):
    __getattr__ = dict.__getitem__


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_slurm_plugin_asks_gpus_only_on_cuda(rules_of, repo_root, device):
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    rules = rules_of(experiment(repo_root, "ci.yaml") | {"device": device})
    gpus = {name: r["gpu"] for name, r in rules.items() if r["gpu"] is not None}
    for name in ("train_teacher", "sample", "trajectories"):
        assert gpus[name] == (1 if device == "cuda" else 0), name
    for name, gpu in gpus.items():
        # The sbatch flags the pinned plugin derives from the rule's resources (the profile adds none of its own).
        job = type("Job", (), {"resources": _Resources(gpu=gpu)})()
        assert set_gres_string(job) == (f" --gpus={gpu}" if gpu else ""), name
