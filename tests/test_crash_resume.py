"""Crashes and concurrency on the real Snakemake DAG (docs/reliability.md).

One tiny experiment (digits 8x8, a digits8 teacher trained in the DAG, 2 trajectory shards, one Adv-KD student)
is run twice in two work directories:
- A, uninterrupted. While it runs, a second `snakemake` on the same directory must be refused (Snakemake's
  incomplete-files check or its lock), and one with `--rerun-incomplete` by the lock.
- B, SIGKILLed (the whole process group, like a lost node) three times: while the teacher trains, right after
  the first trajectory shard's job ends, and while the student trains. Each time the same command is run again
  after `snakemake --unlock` with `--rerun-incomplete`, as docs/reliability.md says.
B's teacher, shards and student must equal A's bit for bit, finished shards must not be recomputed, and the
interrupted jobs must have resumed from their checkpoints (their logs say so).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from advkd.io import load_tensors

ROOT = Path(__file__).resolve().parent.parent

EXP = "crash"
CONFIG = {
    "experiment": EXP, "seed": 0, "device": "cpu",
    "data": {"dataset": "digits", "resolution": 8, "channels": 1, "train_count": 256},
    "teacher": {"source": "train", "architecture": "digits8", "epochs": 8, "batch_size": 64, "warmup_steps": 2},
    "sampling": {"n": 16, "batch_size": 16, "seeds": [0], "grid": 16},
    "trajectories": {"sampler": "ddim-4", "count": 32, "checkpoints": 2, "shard_size": 16},
    "evaluator": {"source": "train", "epochs": 1},
    "metrics": {"kid_subsets": 2, "sanity_n": 32},
    "methods": {"student": {"family": "advkd", "epochs_scale": 1.0, "batch_size": 16}},
}
R = Path("results") / EXP
TEACHER_CKPT = R / "teacher/train/checkpoint.safetensors"
TEACHER_WEIGHTS = R / "teacher/train/pipeline/unet/diffusion_pytorch_model.safetensors"
SHARDS = [R / f"trajectories/shard-{i:05d}.safetensors" for i in range(2)]
STUDENT_CKPT = R / "students/student/checkpoint.safetensors"
STUDENT = R / "students/student/student.safetensors"
TARGETS = [str(STUDENT), *map(str, SHARDS)]


def _cmd(repo_root, workdir, *extra):
    snakemake = Path(sys.executable).parent / "snakemake"
    return [str(snakemake), "-s", str(repo_root / "Snakefile"), "-d", str(workdir), "--configfile",
            str(workdir / "cfg.yaml"), "--cores", "1", *extra]


def _setup(workdir):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    return workdir


def _start(cmd, log):
    # A session of its own, so one killpg reaches Snakemake and every job it started (a lost node, a kill -9).
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(proc, ready, timeout=600):
    """Wait until `ready` (a path, or a function returning a truth value) holds while `proc` runs."""
    check = ready if callable(ready) else ready.exists
    t0 = time.time()
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) before {ready} held")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{ready} did not hold within {timeout}s")
        time.sleep(0.02)


def _kill_when(repo_root, workdir, ready, name, extra=()):
    """Start the DAG, SIGKILL its whole process group as soon as `ready` holds (see _wait_for)."""
    p = _start(_cmd(repo_root, workdir, *extra, *TARGETS), workdir / f"kill-{name}.log")
    _wait_for(p, workdir / ready if isinstance(ready, Path) else ready)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def _unlock(repo_root, workdir):
    r = subprocess.run(_cmd(repo_root, workdir, "--unlock"), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _equal_tensors(a, b):
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys(), (a, b)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a} and {b} differ at {k}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Run A to the end; while it runs, try a second run on the same directory (the concurrency check)."""
    repo_root, wd = ROOT, _setup(tmp_path_factory.mktemp("uninterrupted"))
    first = _start(_cmd(repo_root, wd, *TARGETS), wd / "first.log")
    _wait_for(first, wd / R / "logs/prepare_data.log")   # the first run has started a job
    second = subprocess.run(_cmd(repo_root, wd, *TARGETS), capture_output=True, text=True)
    # what a user might type next: --rerun-incomplete skips the incomplete-files check, so only the lock stops it
    third = subprocess.run(_cmd(repo_root, wd, "--rerun-incomplete", *TARGETS), capture_output=True, text=True)
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


def test_killed_runs_resume_to_the_uninterrupted_result(uninterrupted, tmp_path, repo_root):
    a = uninterrupted[0]
    assert uninterrupted[1] == 0
    b = _setup(tmp_path / "killed")
    rerun = ("--rerun-incomplete",)

    # 1. killed while the teacher trains (after its first epoch's checkpoint)
    _kill_when(repo_root, b, TEACHER_CKPT, "teacher")
    assert not (b / R / "teacher/train/teacher.json").exists(), "the teacher finished before the kill"
    epoch = int(load_tensors(b / TEACHER_CKPT)["progress"][1])
    assert 1 <= epoch < CONFIG["teacher"]["epochs"]
    # After a kill -9 Snakemake wants --rerun-incomplete (the killed job's outputs are marked incomplete) and
    # --unlock (its lock stays behind). The plain rerun names one of them: the incomplete outputs when they were
    # already on disk at the kill (the kill races the job's next write), otherwise the lock. The rerun with
    # --rerun-incomplete always names the lock.
    r = subprocess.run(_cmd(repo_root, b, *TARGETS), capture_output=True, text=True)
    assert r.returncode != 0, r.stderr[-2000:]
    if "--rerun-incomplete" in r.stderr:
        assert "teacher/train/" in r.stderr, r.stderr[-2000:]
    else:
        assert "Directory cannot be locked" in r.stderr and "--unlock" in r.stderr, r.stderr[-2000:]
    r = subprocess.run(_cmd(repo_root, b, *rerun, *TARGETS), capture_output=True, text=True)
    assert r.returncode != 0 and "Directory cannot be locked" in r.stderr and "--unlock" in r.stderr
    _unlock(repo_root, b)

    # 2. resumed, then killed as soon as one trajectory shard's job is over and the other's has begun (Snakemake
    #    may run either first; one killed between writing its file and Snakemake recording it is redone, to the
    #    same bits)
    def one_shard_done_other_started():
        done = [s for s in SHARDS if (b / s).exists()]
        started = [s for s in SHARDS if (b / R / "logs/trajectories" / s.with_suffix(".log").name).exists()]
        return len(done) == 1 and len(started) == 2
    _kill_when(repo_root, b, one_shard_done_other_started, "shards", rerun)
    finished = next(s for s in SHARDS if (b / s).exists())
    assert f"resumed from {TEACHER_CKPT} at epoch {epoch}" in (b / R / "logs/train_teacher.log").read_text()
    first_shard = (b / finished).stat().st_mtime_ns
    _unlock(repo_root, b)

    # 3. killed while the student trains
    _kill_when(repo_root, b, STUDENT_CKPT, "student", rerun)
    assert not (b / STUDENT).exists(), "the student finished before the kill"
    shard_times = [(b / s).stat().st_mtime_ns for s in SHARDS]
    assert (b / finished).stat().st_mtime_ns == first_shard, "a finished shard was recomputed"
    _unlock(repo_root, b)

    # 4. the same command runs to the end
    r = subprocess.run(_cmd(repo_root, b, *rerun, *TARGETS), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming from" in (b / R / "logs/distill/student.log").read_text()
    assert [(b / s).stat().st_mtime_ns for s in SHARDS] == shard_times, "finished shards were recomputed"
    assert not list((b / R).rglob("*.tmp*"))

    # Bit for bit what the uninterrupted run produced (CPU, same thread count).
    for f in (TEACHER_WEIGHTS, *SHARDS, STUDENT):
        _equal_tensors(a / f, b / f)
    drop_seconds = lambda p: [row.rsplit(",", 2)[0] if "teacher" in str(p) else  # noqa: E731
                              ",".join(row.split(",")[:-1]) for row in p.read_text().splitlines()]
    for curve in (R / "teacher/train/loss.csv", R / "students/student/loss.csv"):
        assert drop_seconds(a / curve) == drop_seconds(b / curve), curve


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
