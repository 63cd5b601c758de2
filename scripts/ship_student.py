"""Ship a student the DAG trained: copy its folder under experiments/assets with a card, so that other
experiments sample and score it (a `shipped:` key in its block) without training it again.

    python scripts/ship_student.py --config experiments/long-student.yaml --method advkd-gan-reg-long \
        --out experiments/assets/student-advkd-gan-reg-long --selection "..."

The student must be finished (results/<experiment>/students/<method>/student.safetensors, written by the distill
rule). card.json records what config validation checks before any job of another experiment uses it (the
teacher's weight hashes, the data and seed blocks, the recipe), the trajectories block it learnt from (the caption
names it) and how it was made (the command, the distillation set's sha256, training steps, FLOPs, seconds, the
distill job's benchmark, the code's provenance, the CPU and an sgemm probe of the shipping host, how the host was
shared while it trained (`--conditions`) and, for a run resumed across stops, the CPU seconds its processes logged
(`--cpu-log`)), and how its recipe was chosen (`--selection`, quoted by the report's caption).
The folder's files are added to experiments/assets/SHA256SUMS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import pandas as pd

from advkd.assets import ASSETS, MANIFEST, _read_manifest
from advkd.config import load_config
from advkd.families import FAMILIES, trained_folder, trainers, training_recipe
from advkd.io import BadInputError, read_json, sha256_file, write_json, write_text
from advkd.metrics.cost import matmul_peak_gflops, theoretical_peak_gflops

FILES = ("student.safetensors", "student.json", "train.json", "loss.csv", "panel.png", "grid.png")


def host() -> dict:
    """What the training seconds were measured on, as far as the shipping host can tell (ship where you trained):
    this fleet's hosts differ by up to 2x, so a card's seconds mean little without the CPU and a probe of it. The
    vector width and clock are the ones the sampling-speed yardstick reads (cost.theoretical_peak_gflops)."""
    info = {}
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "cpu family", "model") and key not in info:
            info[key] = value
    theory = theoretical_peak_gflops()
    return {"machine": platform.machine(), **info, "logical_cpus": os.cpu_count(),
            "aten_cpu_capability": theory["capability"], "mhz": theory["mhz"], "mhz_source": theory["mhz_source"],
            "sgemm_gflops_at_shipping": round(matmul_peak_gflops("cpu"), 1)}


def logged_cpu_seconds(log, method: str) -> float:
    """The CPU seconds a method's distill processes spent, from a log of `TIME METHOD PID CPU_SECONDS [START]`
    lines (scripts/published_budget_run.sh writes one every 30 s; START, the process's start in clock ticks after
    boot, tells a reused pid apart): each process's last value, summed over its processes."""
    last = {}
    for line in Path(log).read_text().splitlines():
        parts = line.split()
        if len(parts) in (4, 5) and parts[1] == method:
            last[(parts[2], *parts[4:])] = float(parts[3])
    if not last:
        raise BadInputError(f"--cpu-log {log}: no line for method {method}")
    return sum(last.values())


def recipe_drift(block: dict, cfg: dict, run_name: str, trained: dict) -> dict:
    """key -> (this code's value, the run's) where the recipe this code resolves the block to (the family's resolve
    at the experiment's data and checkpoints) differs from the resolved recipe the run recorded: a default or a
    derivation changed since the run trained would make the card claim a recipe it did not have. A key one side
    lacks reads as null on it; the name and the teacher's location are no part of the recipe, and what the run took
    from the teacher (its UNet's config) is checked through the teacher's weight hashes."""
    fam = FAMILIES[block["family"]]
    resolved = fam.load().resolve(fam.params.from_block(block), run_name, cfg["trajectories"]["checkpoints"],
                                  cfg["data"]["resolution"], cfg["data"]["channels"])
    resolved = json.loads(json.dumps(resolved, default=str))   # as the run's record reads back
    return {k: (v, trained.get(k)) for k, v in resolved.items()
            if k not in ("name", "teacher") and trained.get(k) != v}


def ship(config_path, method: str, out, selection: str, conditions: str | None = None,
         cpu_log=None) -> dict:
    cfg = load_config(config_path)
    results = Path("results") / cfg["experiment"]
    block = cfg["methods"].get(method)
    if block is None or FAMILIES[block["family"]].kind != "student":
        raise BadInputError(f"{config_path}: methods.{method} is not a student of this experiment")
    run = trained_folder(results / "students", method, cfg["methods"])
    if run is None or not (run / "student.safetensors").exists():
        folder = results / "students" / trainers(cfg["methods"])[method]   # the run it samples from
        raise BadInputError(f"{folder}: not trained yet; run `snakemake {folder}/student.safetensors --cores 2 "
                            f"--configfile {config_path}` first")
    out = Path(out).resolve()
    if not out.is_relative_to(ASSETS):
        raise BadInputError(f"--out {out}: a shipped student lives under {ASSETS}")
    train = read_json(run / "train.json")
    differs = recipe_drift(block, cfg, run.name, train["run_identity"]["student"])
    if differs:
        raise BadInputError(f"{run}/train.json: the run trained with {({k: t for k, (_, t) in differs.items()})}, "
                            f"this code reads methods.{method} as {({k: v for k, (v, _) in differs.items()})}; make "
                            "the block say what the run trained with, or retrain it")
    teacher = read_json(results / "teacher" / "teacher.json")
    bench = results / "benchmarks" / "distill" / f"{run.name}.tsv"
    history = pd.read_csv(run / "loss.csv")
    # the target before --configfile, which takes every argument after it
    command = (f"snakemake {results}/students/{run.name}/student.safetensors --cores <N> --configfile {config_path}"
               " (rule distill; resumable after any stop)")
    card = {
        "method": method, "family": block["family"],
        "recipe": training_recipe(block),
        "teacher_weights_sha256": teacher["weights_sha256"],
        "data": cfg["data"], "trajectories": cfg["trajectories"], "seed": cfg["seed"],
        "distillation_set_sha256": train["run_identity"]["distillation_set_sha256"],
        "student_sha256": sha256_file(run / "student.safetensors"),
        "epochs": len(history), "steps": int(history["steps"].sum()), "train_flops": train["train_flops_total"],
        "train_seconds": train["train_seconds_total"],
        "distill_job": pd.read_csv(bench, sep="\t").iloc[0].to_dict() if bench.exists() else None,
        "command": command, "provenance": train["provenance"], "host": host(),
        # how the host was shared while it trained (e.g. at low priority beside other work): its seconds say
        # little without it
        "training_conditions": conditions,
        "cpu_seconds_logged": logged_cpu_seconds(cpu_log, run.name) if cpu_log else None,
        "selection": selection,
    }
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in FILES:
        shutil.copy2(run / f, out / f)
    write_json(out / "card.json", card)
    entries = _read_manifest(MANIFEST)
    prefix = out.relative_to(ASSETS).as_posix() + "/"
    entries = {k: v for k, v in entries.items() if not k.startswith(prefix)}
    entries |= {prefix + f: sha256_file(out / f) for f in (*FILES, "card.json")}
    write_text(MANIFEST, "".join(f"{v}  {k}\n" for k, v in sorted(entries.items())))
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the experiment that trained it")
    p.add_argument("--method", required=True)
    p.add_argument("--out", required=True, help="a new folder under experiments/assets")
    p.add_argument("--selection", required=True,
                   help="how its recipe was chosen: the published recipe, or the validation experiment and what it "
                        "found (docs/choices.md); the report's caption quotes it")
    p.add_argument("--conditions", help="how the host was shared while it trained, for the card")
    p.add_argument("--cpu-log", help="a log of the distill processes' CPU seconds (scripts/published_budget_run.sh)")
    a = p.parse_args(argv)
    try:
        card = ship(a.config, a.method, a.out, a.selection, a.conditions, a.cpu_log)
    except BadInputError as e:
        print(f"ship_student: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: card[k] for k in ("method", "family", "steps", "train_seconds", "student_sha256")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
