"""The report's DAG profile: per-job start-up against work from the jobs' clock records, the run's critical path
from Snakemake's metadata, and only the latest run of a results folder."""

import base64
import json

import pandas as pd
import pytest

from advkd import jobclock
from advkd.dag_profile import critical_path, dag_profile, job_table, lanes


def _job(results, log, stage, start, startup, work, kind="sampling", notes=None):
    rec = {"stage": stage, "pid": 1, "process_start": start, "entered": start + 0.5, "imported": start + 1.0,
           "called": start + startup, "ended": start + startup + work, "cpu_s": startup + work,
           "work": {kind: {"wall_s": work, "cpu_s": work}}, **({"notes": notes} if notes else {})}
    path = results / "logs" / log
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("some progress output\n" + jobclock.line(rec) + "\n")
    return str(path)


def _meta(folder, output, log, inputs, start, end):
    """A Snakemake metadata record as Snakemake 8-9 writes it (urlsafe base64 of the output path)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = base64.urlsafe_b64encode(output.encode()).decode()
    (folder / name).write_text(json.dumps({"rule": "x", "input": inputs, "log": [log], "starttime": start,
                                           "endtime": end}))


@pytest.fixture
def run(tmp_path):
    """A diamond: data (10 s) -> two sample jobs side by side (a: 2 s start-up + 20 s, b: 8 + 4) -> quality of a
    (1 + 5); an old job of an earlier run a day before."""
    res = tmp_path / "results" / "x"
    t = 1_000_000.0
    logs = {"data": _job(res, "prepare_data.log", "prepare-data", t, 0.0, 10.0, "call"),
            "a": _job(res, "sample/a.log", "sample", t + 10, 2.0, 20.0),
            "b": _job(res, "sample/b.log", "sample", t + 10, 8.0, 4.0),
            "qa": _job(res, "quality/a.log", "quality", t + 32, 1.0, 5.0, "scoring"),
            "old": _job(res, "quality/old.log", "quality", t - 86400, 1.0, 5.0, "scoring")}
    meta = tmp_path / "metadata"
    _meta(meta, "results/x/data.npz", logs["data"], [], t, t + 10)
    _meta(meta, "results/x/a.npz", logs["a"], ["results/x/data.npz"], t + 10, t + 32)
    _meta(meta, "results/x/b.npz", logs["b"], ["results/x/data.npz"], t + 10, t + 22)
    _meta(meta, "results/x/qa.json", logs["qa"], ["results/x/a.npz", "results/x/data.npz"], t + 32, t + 38)
    return res, meta


def test_start_up_and_work_come_from_each_jobs_clock_record_of_the_latest_run(run):
    res, _ = run
    df = job_table(res).set_index("job")
    assert sorted(df.index) == ["prepare_data", "quality/a", "sample/a", "sample/b"]   # the day-old job is apart
    assert df.loc["sample/b", "startup_s"] == pytest.approx(8.0) and df.loc["sample/b", "work_s"] == 4.0
    assert df.loc["sample/a", "rule"] == "sample" and df.loc["prepare_data", "rule"] == "prepare_data"
    assert lanes(job_table(res)) == [0, 0, 1, 0]   # the two sample jobs side by side on two lanes


def test_the_critical_path_follows_dependencies_not_start_order(run):
    res, meta = run
    seconds, chain = critical_path(job_table(res), meta)
    assert chain == ["prepare_data", "sample/a", "quality/a"] and seconds == pytest.approx(10 + 22 + 6)
    assert critical_path(job_table(res), meta.parent / "none") == (None, [])


def test_the_profile_states_overhead_and_elapsed_against_the_critical_path(run, tmp_path):
    res, meta = run
    out = tmp_path / "paper"
    out.mkdir()
    s = dag_profile(res, out, meta)
    assert s["jobs"] == 4 and s["elapsed_s"] == pytest.approx(38.0)
    assert s["overhead_fraction"] == pytest.approx((2 + 8 + 1) / (10 + 22 + 12 + 6))
    assert s["critical_path_s"] == pytest.approx(38.0)
    assert s["cores"] == 2 and s["cpu_bound_s"] == pytest.approx((10 + 22 + 12 + 6) / 2)   # CPU = wall here
    md = (out / "dag_profile.md").read_text()
    assert "overhead fraction 0.220" in md and "1.00x of it elapsed" in md
    per_job = pd.read_csv(out / "dag_profile.csv")
    assert len(per_job) == 4 and (out / "dag_profile.png").stat().st_size > 0


def test_training_jobs_steps_against_their_probes_slowest_first(run, tmp_path):
    from advkd.dag_profile import training_speed

    res, meta = run
    seg = lambda i, step, probe: {"segment": i, "batch_size": 64, "epochs": 3, "step_gflops": step,  # noqa: E731
                                  "probe": f"conv fwd+bwd 64->64 k3 {32 >> i}x{32 >> i} b64", "probe_gflops": probe,
                                  "fraction_of_probe": step / probe}
    _job(res, "distill/fast.log", "distill", 1_000_040.0, 1.0, 50.0, "training",
         {"training_speed": [seg(0, 90.0, 100.0)]})
    _job(res, "distill/phased.log", "distill", 1_000_100.0, 1.0, 50.0, "training",
         {"training_speed": [seg(0, 80.0, 100.0), seg(1, 30.0, 100.0), seg(2, 60.0, 100.0)]})
    t = training_speed(job_table(res))
    assert list(t.job) == ["distill/phased", "distill/fast"]          # the slowest first: where to start
    assert t.fraction_of_probe.tolist() == pytest.approx([0.6, 0.9]) and t.segments.tolist() == [3, 1]
    assert t.worst_segment[0].startswith("1: 0.30 (conv fwd+bwd 64->64 k3 16x16")
    out = tmp_path / "paper"
    out.mkdir()
    dag_profile(res, out, meta)
    md = (out / "dag_profile.md").read_text()
    assert "## Training steps against the machine" in md and "goal: a step at >= 0.5 of its probe" in md


def test_results_without_clock_records_say_so(tmp_path):
    res, out = tmp_path / "results" / "x", tmp_path / "paper"
    (res / "logs").mkdir(parents=True)
    out.mkdir()
    (res / "logs" / "old.log").write_text("a log of an older advkd\n")
    assert dag_profile(res, out, tmp_path / "none") is None
    assert "older advkd" in (out / "dag_profile.md").read_text() and (out / "dag_profile.png").exists()


@pytest.mark.skipif(jobclock.process_start() is None, reason="Linux /proc only")
def test_a_jobs_process_start_is_when_its_process_started_not_a_second_earlier():
    # the start-up the profile charges a job is measured from here: a second early (whole-second btime) made every
    # small job look like a second of start-up
    import subprocess
    import sys
    import time

    before = time.time()
    out = subprocess.run([sys.executable, "-S", "-c", "from advkd import jobclock; print(jobclock.process_start())"],
                         capture_output=True, text=True, check=True).stdout
    after = time.time()
    assert before - 0.02 <= float(out) <= after   # /proc's resolution: 10 ms
