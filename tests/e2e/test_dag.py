"""The real Snakemake DAG: lint, dry-run every experiment, and run the ci experiment end to end."""

import importlib.util
import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from advkd.config import experiment_files
from advkd.io import load_images

EXPERIMENTS = [p.name for p in experiment_files()]


def snakemake(venv_bin, repo_root, workdir, *args, env=None):
    return subprocess.run([venv_bin / "snakemake", "-s", repo_root / "Snakefile", "-d", workdir, *args],
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_lint_and_dry_run_load_no_torch(venv_bin, repo_root, tmp_path, experiment):
    """Planning is light: with a `torch` on the path that fails when imported, lint and the dry run still pass."""
    import os

    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('planning imported torch')\n")
    env = os.environ | {"PYTHONPATH": str(poison.parent)}
    cfg = repo_root / "experiments" / experiment
    r = snakemake(venv_bin, repo_root, tmp_path, "--lint", "--configfile", cfg, env=env)
    assert r.returncode == 0 and "Congratulations" in r.stdout + r.stderr, r.stdout + r.stderr
    r = snakemake(venv_bin, repo_root, tmp_path, "-n", "--cores", "2", "--configfile", cfg, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("args", [["-n"], ["--unl"], ["-l"], ["--list-changes", "params"], ["--summary"],
                                  ["--cores", "1"]])
def test_plan_only_commands_warn_and_a_real_run_refuses(venv_bin, repo_root, tmp_path, args):
    """paper.yaml without its data and weights: a dry run or bookkeeping command (as Snakemake parses it, joined
    and abbreviated options included) only warns; a real run stops before any job, also when a joined short option's
    value happens to hold the letters of -n, -S or -D."""
    real = args[0] == "--cores"
    if real:
        args = [*args, f"-d{tmp_path}/Downloads"]
    r = subprocess.run([venv_bin / "snakemake", "-s", repo_root / "Snakefile", *([] if real else ["-d", tmp_path]),
                        *args, "--configfile", repo_root / "experiments/paper.yaml"], capture_output=True, text=True)
    if real:
        assert r.returncode != 0 and "invalid experiment config" in r.stderr, r.stderr[-2000:]
        assert not (tmp_path / "Downloads/results").exists()
    else:
        assert r.returncode == 0 and "cannot run yet" in r.stderr, r.stderr[-2000:]


def test_ci_experiment_end_to_end(venv_bin, repo_root, tmp_path):
    cfg_path = repo_root / "experiments" / "ci.yaml"
    r = snakemake(venv_bin, repo_root, tmp_path, "--cores", "2", "--configfile", cfg_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cfg = yaml.safe_load(cfg_path.read_text())
    res = tmp_path / "results" / "ci"
    card = json.loads((res / "data" / "data_card.json").read_text())
    assert card["train"]["count"] == cfg["data"]["train_count"] and card["train"]["shape"] == [32, 32, 1]
    for method, block in cfg["methods"].items():
        for seed in cfg["sampling"]["seeds"]:
            images = load_images(res / "samples" / method / f"seed{seed}.npz")
            assert images.shape == (block.get("n", cfg["sampling"]["n"]), 32, 32, 1)
            stats = json.loads((res / "samples" / method / f"seed{seed}.json").read_text())
            assert stats["seed"] == seed and stats["seconds"] > 0 and "peak_gflops" not in stats   # no timing
            assert stats["provenance"]["versions"]["diffusers"]
            assert (res / "samples" / method / f"seed{seed}.png").stat().st_size > 0
    # The report's sampling-speed table: one row per method, from the timing job, fraction of the peak as measured.
    speed = pd.read_csv(res / "tables" / "sampling_speed.csv")
    assert sorted(speed.method) == sorted(cfg["methods"]) and (speed.batch_size == cfg["sampling"]["batch_size"]).all()
    assert np.allclose(speed.fraction_of_peak, speed.achieved_gflops / speed.peak_gflops)
    # a fraction above 1 means the yardstick is wrong: against the fastest probe and against the CPU's own peak
    # (the theoretical peak from the stated clock is shown only where no probe beat it: a VM may state its nominal
    # clock and boost above it)
    shown = speed.fraction_of_theoretical_peak.notna()
    assert shown.all() or not shown.any(), "the theoretical peak is shown for every method of the host or for none"
    assert (speed.fraction_of_peak <= 1).all() and (speed.fraction_of_theoretical_peak[shown] <= 1).all(), speed
    assert (speed.peak_gflops[shown] <= speed.theoretical_gflops[shown]).all()
    # the run's own profile: every job but the report's, each split into start-up and work
    profile = pd.read_csv(tmp_path / "paper_figures" / "ci" / "dag_profile.csv")
    assert len(profile) == len(list((res / "logs").rglob("*.log"))) - 1 and (profile.work_s > 0).all()
    assert "critical path" in (tmp_path / "paper_figures" / "ci" / "dag_profile.md").read_text().lower()
    md = (res / "tables" / "sampling_speed.md").read_text()
    assert "Teacher samplers: median fraction of peak" in md and "Peer ratio (ddim-5" in md
    compiled = ["suite loop, compiled"] if cfg["sampling"].get("compile") else []
    assert all(v in md for v in ("stock diffusers loop, eager", "suite loop, eager", *compiled))
    # teacher fidelity: ddim-5 made the distillation set, so it is the yardstick (0) and every other row is apart
    summary = pd.read_csv(res / "tables" / "summary.csv").set_index("method")
    assert summary.loc["ddim-5", "fidelity_relative_mean"] == 0
    others = summary.drop(index=["ddim-5", "real"]).fidelity_relative_mean.dropna()
    assert len(others) == len(cfg["methods"]) - 1 and (others > 0).all()
    assert summary.loc["ddim-5", "recipe"] == "sampler" and summary.loc["real", "recipe"] == "real"
    assert summary.fd_infinity_mean.drop(index="ddpm-10").notna().all()
    assert (tmp_path / "paper_figures" / "ci" / "teacher_fidelity.png").stat().st_size > 0
    # the noise-floor row and the small-n row: real held-out images at the matched n; ddpm-10 by KID alone
    summary = pd.read_csv(res / "tables" / "summary.csv").set_index("method")
    assert summary.loc["real", "n"] == cfg["sampling"]["n"] and summary.loc["real", "kind"] == "real"
    assert np.isnan(summary.loc["ddpm-10", "fd_mean"]) and summary.loc["ddpm-10", "kid_mean"] == \
        summary.loc["ddpm-10", "kid_mean"]
    # rows that differ only in sampling steps were trained once (in the folder of the first by name, though pd-2
    # comes first in the config) and costed at their own NFE
    assert (res / "students" / "pd-1").is_dir() and not (res / "students" / "pd-2").exists()
    assert summary.loc["pd-1", "nfe"] == 1 and summary.loc["pd-2", "nfe"] == 2
    assert summary.loc["pd-1", "train_flops"] == summary.loc["pd-2", "train_flops"] > 0
    a = load_images(res / "samples" / "ddim-5" / "seed0.npz")
    b = load_images(res / "samples" / "ddim-5" / "seed1.npz")
    assert not np.array_equal(a, b)
    # quality by phase (report.phase_quality): a row per phase of advkd-k4, its distance to its targets, the figure
    phases = pd.read_csv(res / "tables" / "phase_quality.csv")
    assert list(phases.run) == ["advkd-k4"] * 4 and list(phases.phase) == [0, 1, 2, 3]
    assert (phases.fd_to_target > 0).all() and phases.flops.is_monotonic_increasing
    assert (tmp_path / "paper_figures" / "ci" / "phase_quality.png").stat().st_size > 0
    assert (tmp_path / "paper_figures" / "ci" / "phase_grids.png").stat().st_size > 0   # the grids by phase
    assert (tmp_path / "paper_figures" / "ci" / "phase_losses.png").stat().st_size > 0   # the losses through them
    shards = sorted((res / "trajectories").glob("shard-*.safetensors"))
    assert len(shards) == -(-cfg["trajectories"]["count"] // cfg["trajectories"]["shard_size"])
    # Nothing half-written is left behind, and a rerun has nothing to do.
    assert not list(res.rglob("*.tmp*"))
    r = snakemake(venv_bin, repo_root, tmp_path, "-n", "--cores", "2", "--configfile", cfg_path)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout

    # Every key of every result JSON is known to compare_runs as a result or a measurement of the machine.
    spec = importlib.util.spec_from_file_location("compare_runs", repo_root / "scripts" / "compare_runs.py")
    compare_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_runs)
    for f in [*res.glob("samples/**/*.json"), *res.glob("metrics/**/*.json")]:
        assert compare_runs.unclassified(json.loads(f.read_text())) == [], f

    # A changed recipe is trained anew, never served by the old student's state.
    old = (res / "students/denoising-student/student.safetensors").read_bytes()
    cfg["methods"]["denoising-student"]["lr"] = 0.003
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(cfg))
    student = "results/ci/students/denoising-student/student.safetensors"
    r = snakemake(venv_bin, repo_root, tmp_path, "--cores", "2", student, "--configfile", tmp_path / "changed.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (res / "students/denoising-student/student.safetensors").read_bytes() != old
    assert json.loads((res / "students/denoising-student/student.json").read_text())["lr"] == 0.003

    # Snakemake's bookkeeping commands work as users type them, without --cores.
    # (--list-* and more forms: test_plan_only_commands_warn_and_a_real_run_refuses)
    for args in (["--unlock"], ["--summary"], ["--cleanup-metadata", "results/ci/tables/summary.md"]):
        r = snakemake(venv_bin, repo_root, tmp_path, *args, "--configfile", cfg_path)
        assert r.returncode == 0, (args, r.stdout[-2000:] + r.stderr[-2000:])


def test_sample_shards_are_separate_jobs(venv_bin, repo_root, tmp_path):
    """sampling.shard_size splits each method's run into jobs a cluster can run side by side; each job samples its
    shard for every seed of the method (the method built once), and each seed's run is joined from the shards."""
    from advkd.families import FAMILIES

    cfg = yaml.safe_load((repo_root / "experiments" / "ci.yaml").read_text())
    cfg["sampling"].update(batch_size=8, shard_size=16)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake(venv_bin, repo_root, tmp_path, "-n", "--cores", "2", "--configfile", tmp_path / "cfg.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    seeds = len(cfg["sampling"]["seeds"])
    shards = {kind: sum(-(-block.get("n", cfg["sampling"]["n"]) // 16) for block in cfg["methods"].values()
                       if FAMILIES[block["family"]].kind == kind) for kind in ("sampler", "student")}
    assert shards["sampler"] + shards["student"] > len(cfg["methods"])     # some runs were split
    assert int(jobs["sample"]) == shards["sampler"] + shards["student"]
    assert int(jobs["merge_samples"]) == len(cfg["methods"]) * seeds


def test_a_shipped_student_is_sampled_from_its_folder_and_never_trained(venv_bin, repo_root, tmp_path):
    """The default plus a shipped Denoising Student: the plan trains the default's students only and samples the
    shipped one from its folder; one that learnt from another distillation set is scored all the same but not
    compared with this experiment's set (memorisation); a card made with other seed streams stops the plan by
    name."""
    from advkd.config import load_config, teacher_weights_sha256
    from advkd.families import FAMILIES, trainers
    from advkd.io import write_json

    cfg = load_config(repo_root / "experiments" / "default.yaml")
    block = {"family": "denoising-student", "epochs": 100, "batch_size": 64}
    shipped = tmp_path / "student-ds-long"
    shipped.mkdir()
    for f in ("student.safetensors", "student.json", "train.json", "loss.csv", "panel.png", "grid.png"):
        (shipped / f).write_text("")   # the plan needs them to exist, not to load
    card = {"family": "denoising-student", "recipe": FAMILIES["denoising-student"].params.from_block(block)
            .training_dict(), "teacher_weights_sha256": teacher_weights_sha256(cfg["teacher"]),
            "data": cfg["data"], "trajectories": cfg["trajectories"], "seed": cfg["seed"]}
    write_json(shipped / "card.json", card)
    exp = yaml.safe_load((repo_root / "experiments" / "default.yaml").read_text())
    exp["methods"]["ds-long"] = block | {"shipped": str(shipped)}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))   # the order names the runs
    r = snakemake(venv_bin, repo_root, tmp_path, "-n", "-p", "--cores", "2", "--configfile", tmp_path / "cfg.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    distilled = re.findall(r"rule distill:.*?wildcards: method=(\S+)", r.stdout, re.S)
    trained_here = {k: b for k, b in cfg["methods"].items() if not b.get("shipped")}   # the default ships one too
    assert len(trained_here) < len(cfg["methods"])
    assert sorted(distilled) == sorted(set(trainers(trained_here).values()))   # the default's runs, not ds-long
    assert "--method ds-long " in r.stdout and f"--student-dir {shipped} " in r.stdout
    memorised = re.findall(r"rule memorisation:.*?wildcards: method=(\S+)", r.stdout, re.S)
    assert "ds-long" in memorised
    card["trajectories"] = card["trajectories"] | {"count": 20000, "sampler": "dpmsolver-21"}
    write_json(shipped / "card.json", card)
    r = snakemake(venv_bin, repo_root, tmp_path, "-n", "-p", "--cores", "2", "--configfile", tmp_path / "cfg.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "--method ds-long " in r.stdout and "metrics/quality/ds-long" in r.stdout
    assert sorted(re.findall(r"rule memorisation:.*?wildcards: method=(\S+)", r.stdout, re.S)) == sorted(
        set(memorised) - {"ds-long"})
    card["seed"] = card["seed"] + 1
    write_json(shipped / "card.json", card)
    r = snakemake(venv_bin, repo_root, tmp_path, "-n", "--cores", "2", "--configfile", tmp_path / "cfg.yaml")
    assert r.returncode != 0 and "methods.ds-long.shipped" in r.stderr and "seed" in r.stderr, r.stderr
