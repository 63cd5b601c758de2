"""Crashes and concurrency on the real Snakemake DAG (docs/reliability.md).

One tiny experiment (digits 8x8, a digits8 teacher trained in the DAG, 2 trajectory shards, one Adv-KD student,
one sampler) is run twice, each in a folder of its own that holds the repository's Snakefile, workflow/ and
experiments/ (links), so that Snakemake commands run there exactly as a user types them:
- A, uninterrupted. While it runs, a second `snakemake` on the same folder must be refused (Snakemake's
  incomplete-files check or its lock), and one with `--rerun-incomplete` by the lock.
- B, SIGKILLed (the whole process group, like a lost node) once in each long stage: teacher training, a
  trajectory shard, student training, sampling. Each kill lands at a random point of the stage's job (seeded:
  for a training job, a fraction of an epoch after its k-th epoch, k random in the first half; otherwise a
  fraction of that job's duration in A, counted from when B's job starts). After each kill the README's
  recovery commands, copied from the README, are run as written (the rerun with this experiment's
  `--configfile` and targets added, as the README says).
B's teacher, shards, student and samples must equal A's bit for bit, and the training jobs must have resumed from
their checkpoints (their logs say so). The stages are killed in the order their jobs start.
"""

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from advkd.io import load_tensors

ROOT = Path(__file__).resolve().parents[2]

EXP = "crash"
CONFIG = {
    "experiment": EXP, "seed": 0, "device": "cpu",
    "data": {"dataset": "digits", "resolution": 8, "channels": 1, "train_count": 256},
    "teacher": {"source": "train", "architecture": "digits8", "epochs": 8, "batch_size": 64, "warmup_steps": 2},
    "sampling": {"n": 64, "batch_size": 16, "seeds": [0], "grid": 16},
    "trajectories": {"sampler": "ddim-4", "count": 32, "checkpoints": 2, "shard_size": 16},
    "evaluator": {"source": "train", "epochs": 1},
    "metrics": {"kid_subsets": 2, "sanity_n": 32},
    # epochs_scale 4: 120 short epochs, so that a kill after the k-th still finds the student training
    "methods": {"student": {"family": "advkd", "epochs_scale": 4.0, "batch_size": 16},
                "ddpm-50": {"family": "ddpm", "steps": 50}},
}
R = Path("results") / EXP
TEACHER_CKPT = R / "teacher/train/checkpoint.safetensors"
TEACHER_WEIGHTS = R / "teacher/train/pipeline/unet/diffusion_pytorch_model.safetensors"
SHARDS = [R / f"trajectories/shard-{i:05d}.safetensors" for i in range(2)]
STUDENT = R / "students/student/student.safetensors"
SAMPLES = [R / f"samples/{m}/seed0.npz" for m in ("ddpm-50", "student")]
TARGETS = [str(STUDENT), *map(str, SHARDS), *map(str, SAMPLES)]
CORES = ["--cores", "2"]   # the README's; the thread count of a job is shard of its arithmetic

# Each long stage by the log file(s) of its job(s), relative to the logs folder; a job's benchmark file (Snakemake
# writes it when the job is over) has the same relative name under benchmarks/, with .tsv.
STAGES = {"train_teacher": "train_teacher.log", "trajectories": "trajectories/shard-*.log",
          "distill": "distill/student.log", "sample": "sample/ddpm-50-shard*.log"}


def readme_recovery_commands():
    """The README's recovery block, as written: [unlock command, rerun command] as argument lists."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Reliability"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    lines = [w for w in lines if w]
    assert len(lines) == 2 and "--unlock" in lines[0] and "--rerun-incomplete" in lines[1], lines
    return lines


def workdir(path):
    """A folder where `snakemake` finds this repository's workflow as it would in a clone, plus the config."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "experiments", "environment.yml"):
        (path / name).symlink_to(ROOT / name)
    (path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    return path


def run_args(*extra):
    # --configfile last: it takes every word after it up to the next option
    return ["snakemake", *CORES, *extra, *TARGETS, "--configfile", "cfg.yaml"]


def _start(cmd, cwd, log):
    # A session of its own, so one killpg reaches Snakemake and every job it started (a lost node, a kill -9).
    return subprocess.Popen(cmd, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(proc, ready, what, timeout=600):
    t0 = time.time()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) before {what}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)


def _equal_tensors(a, b):
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys(), (a, b)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a} and {b} differ at {k}"


def _job_seconds(benchmark: Path) -> float:
    header, row = benchmark.read_text().splitlines()[:2]
    return float(dict(zip(header.split("\t"), row.split("\t")))["s"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Run A to the end; while it runs, try a second run on the same folder (the concurrency check)."""
    wd = workdir(tmp_path_factory.mktemp("uninterrupted"))
    first = _start(run_args(), wd, wd / "first.log")
    _wait_for(first, (wd / R / "logs/prepare_data.log").exists, "the first run started a job")
    second = subprocess.run(run_args(), cwd=wd, capture_output=True, text=True)
    # what a user might type next: --rerun-incomplete skips the incomplete-files check, so only the lock stops it
    third = subprocess.run(run_args("--rerun-incomplete"), cwd=wd, capture_output=True, text=True)
    alive = first.poll() is None
    first_rc = first.wait()
    return wd, first_rc, second, third, alive


def test_second_run_on_the_same_results_is_refused(uninterrupted):
    wd, first_rc, second, third, alive = uninterrupted
    assert alive, "the first run ended before the others were tried; the check proved nothing"
    # Snakemake checks for incomplete outputs (the running job's) before it takes the lock: either refusal is fine
    assert second.returncode != 0
    assert re.search("Directory cannot be locked|Incomplete files", second.stdout + second.stderr), second.stderr
    assert third.returncode != 0
    assert "Directory cannot be locked" in third.stdout + third.stderr, third.stdout + third.stderr
    # ... and the first run went on to finish, its outputs whole and readable
    assert first_rc == 0, (wd / "first.log").read_text()[-3000:]
    for f in (STUDENT, *SHARDS, TEACHER_WEIGHTS):
        assert load_tensors(wd / f)
    assert not list((wd / R).rglob("*.tmp*"))


def test_killed_in_every_long_stage_the_readme_recovery_gives_the_uninterrupted_result(uninterrupted, tmp_path):
    a = uninterrupted[0]
    assert uninterrupted[1] == 0
    b = workdir(tmp_path / "killed")
    unlock, rerun = readme_recovery_commands()
    rerun = rerun + [*TARGETS, "--configfile", "cfg.yaml"]
    # Where in its job each stage is killed, drawn from a seeded generator. A training job: after k of its A
    # epochs (k in the first half, so that its checkpoint is there), plus a fraction of one epoch's time. Any other
    # job: a fraction of its duration in A (at most 0.6 of it, so the job still runs on a host that is faster now
    # than then), counted from the start of B's job.
    rng = random.Random(18)
    fraction = {stage: rng.uniform(0.0, 0.6) for stage in STAGES}
    curves = {"train_teacher": R / "teacher/train/loss.csv", "distill": R / "students/student/loss.csv"}
    epochs_before = {stage: rng.randint(1, (len((a / c).read_text().splitlines()) - 1) // 2)
                     for stage, c in curves.items()}
    command = run_args()
    while fraction:
        # A job announces itself by (re)writing its log: compare with what was there before this attempt (no
        # clocks involved).
        logs = b / R / "logs"
        before = {p: p.stat().st_mtime_ns for stage in fraction for p in logs.glob(STAGES[stage])}
        found = []

        def started():
            for stage in fraction:
                for log in logs.glob(STAGES[stage]):
                    if before.get(log) != log.stat().st_mtime_ns:
                        found.append((stage, log.relative_to(logs)))
                        return True
            return False

        p = _start(command, b, b / f"attempt-{len(STAGES) - len(fraction)}.log")
        _wait_for(p, started, f"a job of one of {sorted(fraction)} started")
        stage, log = found[0]
        bench = Path("benchmarks") / log.with_suffix(".tsv")
        if stage in curves:
            k = epochs_before[stage]
            _wait_for(p, lambda: (b / curves[stage]).exists()
                      and len((b / curves[stage]).read_text().splitlines()) > k, f"{stage} trained {k} epochs")
            epoch_s = np.median([float(r.split(",")[3 if stage == "train_teacher" else -1])
                                 for r in (a / curves[stage]).read_text().splitlines()[1:]])
            delay = fraction.pop(stage) * epoch_s
        else:
            delay = fraction.pop(stage) * _job_seconds(a / R / bench)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert not (b / R / bench).exists(), f"the {stage} job {log} was over before the kill ({delay:.1f} s)"
        # Snakemake refuses the same command until the recovery steps run: a plain rerun names the incomplete
        # outputs or the lock (whichever it meets first), the README's rerun without --unlock names the lock.
        r = subprocess.run(command, cwd=b, capture_output=True, text=True)
        assert r.returncode != 0 and re.search("--rerun-incomplete|--unlock", r.stderr), r.stderr[-2000:]
        r = subprocess.run(unlock, cwd=b, capture_output=True, text=True)
        assert r.returncode == 0 and "Unlocked" in r.stdout + r.stderr, r.stdout + r.stderr
        command = rerun   # from now on the README's rerun command, killed again in the next stage
    r = subprocess.run(rerun, cwd=b, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not list((b / R).rglob("*.tmp*"))

    # Bit for bit what the uninterrupted run produced (CPU, same thread count).
    for f in (TEACHER_WEIGHTS, *SHARDS, STUDENT):
        _equal_tensors(a / f, b / f)
    for f in SAMPLES:
        with np.load(a / f) as x, np.load(b / f) as y:
            assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), f
    drop_seconds = lambda p: [row.rsplit(",", 2)[0] if "teacher" in str(p) else  # noqa: E731
                              ",".join(row.split(",")[:-1]) for row in p.read_text().splitlines()]
    for curve in (R / "teacher/train/loss.csv", R / "students/student/loss.csv"):
        assert drop_seconds(a / curve) == drop_seconds(b / curve), curve
    # The training jobs continued from their checkpoints.
    assert "resumed from" in (b / R / "logs/train_teacher.log").read_text()
    assert "resuming from" in (b / R / "logs/distill/student.log").read_text()


def test_write_killed_midway_leaves_a_temp_file_the_next_write_removes(tmp_path):
    """kill -9 during an atomic write leaves the target as it was plus the writer's temporary file; the rerun's
    write of the same file removes that leftover, and leaves the temporary files of other targets alone."""
    from advkd.io import write_text

    target = tmp_path / "checkpoint.safetensors"
    write_text(target, "epoch 1")
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from advkd.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'w').write('half of epoch 2'); print('writing', flush=True); time.sleep(60)"), str(target)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    leftover = list(tmp_path.glob(".checkpoint.safetensors.*"))
    assert len(leftover) == 1 and target.read_text() == "epoch 1"
    other_tmp = tmp_path / ".checkpoint.safetensors.old.safetensors.abcd1234.tmp.safetensors"
    other_tmp.write_text("another target's write in progress")
    write_text(target, "epoch 2")
    assert target.read_text() == "epoch 2" and not leftover[0].exists() and other_tmp.exists()
