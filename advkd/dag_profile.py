"""The DAG profile of a run, part of the report: for every job, its wall and CPU seconds and how many of them were
its useful work (sampling batches, training epochs, scoring) against start-up (interpreter and imports, loading,
compiling), from the clock record each job writes to its log (advkd.jobclock); the run's elapsed time against its
critical path, from Snakemake's own record of each output (.snakemake/metadata: rule, inputs, log, start and end).

dag_profile.csv (one row per job), dag_profile.md (by rule, with the summary) and dag_profile.png (the jobs as
bars on the cores over time). The report job itself is not in it (it is running).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import jobclock
from .io import write_text

GAP_S = 600   # jobs further apart than this (no job running in between) belong to different runs


def job_table(results) -> pd.DataFrame:
    """One row per job of the latest run under `results` that left a clock record in its log."""
    rows = []
    for log in sorted((Path(results) / "logs").rglob("*.log")):
        rec = jobclock.parse(log.read_text(errors="replace"))
        if rec is None:
            continue
        work = sum(w["wall_s"] for w in rec["work"].values())
        wall = rec["ended"] - rec["process_start"]
        rows.append({"job": str(log.relative_to(Path(results) / "logs").with_suffix("")),
                     "rule": rec["stage"].replace("-", "_"), "log": str(log), "start": rec["process_start"],
                     "end": rec["ended"], "wall_s": wall, "cpu_s": rec["cpu_s"], "work_s": min(work, wall),
                     "startup_s": max(wall - work, 0.0), "imports_s": rec["imported"] - rec["process_start"],
                     "work": ", ".join(f"{k} {w['wall_s']:.1f} s" for k, w in rec["work"].items()),
                     "notes": rec.get("notes", {})})
    df = pd.DataFrame(rows, columns=["job", "rule", "log", "start", "end", "wall_s", "cpu_s", "work_s", "startup_s",
                                     "imports_s", "work", "notes"])
    # the report job profiles the run from inside it: a later call (make figures) would find it, so leave it out
    df = df[df.rule != "report"]
    return latest_run(df.sort_values("start").reset_index(drop=True))


def latest_run(df: pd.DataFrame) -> pd.DataFrame:
    """The jobs after the last stretch of more than GAP_S seconds in which no job ran (earlier invocations)."""
    if df.empty:
        return df
    cut, reach = 0, -np.inf
    for i, (s, e) in enumerate(zip(df.start, df.end)):
        if s > reach + GAP_S:
            cut = i
        reach = max(reach, e)
    return df.iloc[cut:].reset_index(drop=True)


def metadata_jobs(metadata_dir, logs: set) -> dict:
    """log path -> (input paths, output paths) of Snakemake's record of the job writing that log. Paths
    absolute: Snakemake records them relative to its working directory (the one holding .snakemake)."""
    jobs = {}
    folder = Path(metadata_dir)
    if not folder.is_dir():
        return jobs
    workdir = folder.resolve().parent.parent
    where = lambda p: str((workdir / p).resolve())   # noqa: E731
    logs = {str(Path(p).resolve()) for p in logs}
    for f in folder.rglob("*"):
        if not f.is_file():
            continue
        try:   # Snakemake names a record by its output's path, urlsafe base64, split into folders "@..." when long
            path = base64.urlsafe_b64decode("".join(p.lstrip("@") for p in f.relative_to(folder).parts)).decode()
            m = json.loads(f.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        for log in map(where, m.get("log") or []):
            if log in logs:
                inputs, outputs = jobs.get(log, (set(), set()))
                jobs[log] = (inputs | {where(i) for i in m.get("input") or []}, outputs | {where(path)})
    return jobs


def critical_path(df: pd.DataFrame, metadata_dir) -> tuple[float | None, list[str]]:
    """Seconds and jobs of the longest chain of dependent jobs (each job's wall from its clock record), from
    Snakemake's metadata; (None, []) without it."""
    meta = metadata_jobs(metadata_dir, set(df.log))
    if not meta:
        return None, []
    producer = {out: log for log, (_, outs) in meta.items() for out in outs}
    logs = [str(Path(p).resolve()) for p in df.log]
    wall = dict(zip(logs, df.wall_s))
    name = dict(zip(logs, df.job))
    best: dict[str, tuple[float, list[str]]] = {}
    # a job starts after the jobs it needs: start order is a topological order
    for log in [logs[i] for i in df.start.argsort()]:
        preds = [best[p] for p in {producer.get(i) for i in meta.get(log, (set(),))[0]} if p in best and p != log]
        length, chain = max(preds, key=lambda x: x[0], default=(0.0, []))
        best[log] = (length + wall[log], chain + [name[log]])
    return max(best.values(), key=lambda x: x[0])


TRAINING_GOAL = 0.5   # of the same-shaped convolution probe; set before the first measurement (issue 36, item 5)


def training_speed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per training job that noted its speed (advkd.students.training.TrainingSpeed): its segments' step
    GFLOP/s against their convolution probes, median and worst segment, slowest job first."""
    rows = []
    for job, notes in zip(df.job, df.notes):
        segs = notes.get("training_speed") if isinstance(notes, dict) else None
        if not segs:
            continue
        seg = pd.DataFrame(segs)
        worst = seg.loc[seg.fraction_of_probe.idxmin()]
        rows.append({"job": job, "segments": len(seg), "batch_size": "/".join(map(str, seg.batch_size.unique())),
                     "step_gflops": seg.step_gflops.median(), "probe_gflops": seg.probe_gflops.median(),
                     "fraction_of_probe": seg.fraction_of_probe.median(),
                     "worst_segment": f"{int(worst.segment)}: {worst.fraction_of_probe:.2f} ({worst.probe})"})
    cols = ["job", "segments", "batch_size", "step_gflops", "probe_gflops", "fraction_of_probe", "worst_segment"]
    return pd.DataFrame(rows, columns=cols).sort_values("fraction_of_probe").reset_index(drop=True)


def training_section(df: pd.DataFrame) -> str:
    t = training_speed(df)
    if t.empty:
        return ""
    disp = t.assign(step_gflops=t.step_gflops.map("{:.0f}".format),
                    probe_gflops=t.probe_gflops.map("{:.0f}".format),
                    fraction_of_probe=t.fraction_of_probe.map("{:.2f}".format))
    return ("## Training steps against the machine\n\n" + disp.to_markdown(index=False) + "\n\n"
            "A step's GFLOP/s: an epoch's FLOPs (its first step counted by torch's FlopCounterMode: forward, "
            "backward, critics and teacher calls included) over the epoch's wall time, the median over a segment's "
            "epochs (a segment: a phase, stage or round of the family). Its probe: the faster of the two convolutions "
            "of the step with the most FLOPs, run forward and backward alone at the same shapes and threads in the "
            "same job (advkd.metrics.cost.conv_training_probe). Columns are medians over the job's segments; goal: "
            f"a step at >= {TRAINING_GOAL} of its probe.\n")


def by_rule(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby("rule")
    out = pd.DataFrame({"jobs": g.size(), "wall_s": g.wall_s.sum(), "cpu_s": g.cpu_s.sum(), "work_s": g.work_s.sum(),
                        "startup_s": g.startup_s.sum(), "imports_s": g.imports_s.sum(),
                        "median_job_s": g.wall_s.median()})
    out["startup_share"] = out.startup_s / out.wall_s
    return out.sort_values("wall_s", ascending=False).reset_index()


def summary(df: pd.DataFrame, path_s: float | None, chain: list[str], cores: int | None = None) -> dict:
    elapsed = df.end.max() - df.start.min()
    job_s = df.wall_s.sum()
    given = bool(cores)
    cores = cores or max(lanes(df)) + 1   # else the most jobs that ran at once
    return {"jobs": len(df), "elapsed_s": elapsed, "job_seconds": job_s, "work_seconds": df.work_s.sum(),
            "startup_seconds": df.startup_s.sum(), "overhead_fraction": df.startup_s.sum() / job_s,
            "mean_parallelism": job_s / elapsed, "cpu_seconds": df.cpu_s.sum(), "cores": cores, "cores_given": given,
            "cpu_bound_s": df.cpu_s.sum() / cores, "critical_path_s": path_s, "critical_path_jobs": len(chain),
            "critical_path": chain}


def lanes(df: pd.DataFrame) -> list[int]:
    """A slot per job, each job on the first slot free at its start, so that the bars do not overlap (Snakemake's
    local jobs can run beside jobs that hold every core: a run may show more slots than cores)."""
    ends, lane = [], []
    for s, e in zip(df.start, df.end):
        i = next((i for i, t in enumerate(ends) if t <= s + 0.5), len(ends))
        ends[i:i + 1] = [e]
        lane.append(i)
    return lane


def figure(df: pd.DataFrame, out_png, title: str):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if df.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, title, ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(out_png, dpi=150)
        plt.close(fig)
        return
    t0 = df.start.min()
    rules = list(dict.fromkeys(df.sort_values("start").rule))
    colors = dict(zip(rules, plt.get_cmap("tab20").colors))
    lane = lanes(df)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.45 * (max(lane) + 1)))
    for (s, w, u, r), y in zip(df[["start", "wall_s", "startup_s", "rule"]].itertuples(index=False), lane):
        # start-up first (imports, loading, compiling), then the work: the pale part is what the job waited for
        ax.barh(y, u / 60, left=(s - t0) / 60, color=colors[r], alpha=0.35, height=0.8, edgecolor="none")
        ax.barh(y, (w - u) / 60, left=(s - t0 + u) / 60, color=colors[r], height=0.8, edgecolor="none")
    ax.set_yticks(range(max(lane) + 1), [f"slot {i + 1}" for i in range(max(lane) + 1)], fontsize=7)
    ax.set_xlabel("minutes since the run's first job (pale: start-up; solid: work)")
    ax.set_title(title, fontsize=8)
    handles = [Patch(color=colors[r], label=r) for r in rules]
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    plt.close(fig)


def dag_profile(results, out, metadata_dir=".snakemake/metadata", cores: int | None = None) -> dict | None:
    """dag_profile.{csv,md,png} in `out` for the latest run under `results` and its summary; None when no job left
    a clock record (results made by an older advkd: the files say so)."""
    df = job_table(results)
    out = Path(out)
    if df.empty:   # results of an older advkd, or none run yet: say so rather than leave the report's outputs out
        df.drop(columns=["log", "notes"]).to_csv(out / "dag_profile.csv", index=False)
        write_text(out / "dag_profile.md", "# DAG profile\n\nNo job of this run left a clock record in its log "
                   "(advkd.jobclock): they were run by an older advkd. Rerun them for a profile.\n")
        figure(df, out / "dag_profile.png", "no clock records (results of an older advkd)")
        return None
    path_s, chain = critical_path(df, metadata_dir)
    s = summary(df, path_s, chain, cores)
    df.drop(columns=["log", "notes"]).to_csv(out / "dag_profile.csv", index=False, float_format="%.3f")
    table = by_rule(df)
    head = (f"{s['jobs']} jobs (the report job not counted), elapsed {s['elapsed_s'] / 60:.1f} min, job seconds "
            f"{s['job_seconds']:.0f} (mean parallelism {s['mean_parallelism']:.2f}); useful work "
            f"{s['work_seconds']:.0f} s, start-up {s['startup_seconds']:.0f} s: **overhead fraction "
            f"{s['overhead_fraction']:.3f}** (start-up seconds over all job seconds; goal <= 0.15). "
            + (f"Critical path (the longest chain of dependent jobs, each at its wall time): "
               f"{s['critical_path_s'] / 60:.1f} min over {s['critical_path_jobs']} jobs, "
               f"{s['elapsed_s'] / s['critical_path_s']:.2f}x of it elapsed. "
               if path_s else "No Snakemake metadata here: no critical path. ")
            + f"CPU seconds of all jobs over the run's {s['cores']} cores"
            + ("" if s["cores_given"] else " (not given: the most jobs that ran at once)") + ": "
              f"{s['cpu_bound_s'] / 60:.1f} min ({s['cpu_bound_s'] / s['elapsed_s']:.2f} of elapsed): below the "
              "larger of this and the critical path, only less work, not better scheduling, shortens the run. ")
    notes = ("Per job, from the clock record advkd writes at the end of its log (advkd.jobclock): wall = process "
             "start to end; work = the stage's marked work (sampling batches, training epochs, scoring, timing; a "
             "stage that marks none counts its whole call); start-up = the rest (interpreter, imports, loading, "
             "building, compiling); imports = process start until the stage's module was imported. Snakemake's "
             "own seconds between jobs are in elapsed, not in any job. Per-job rows: dag_profile.csv.")
    fmt = {c: "{:.1f}" for c in ("wall_s", "cpu_s", "work_s", "startup_s", "imports_s", "median_job_s")}
    disp = table.assign(**{c: table[c].map(f.format) for c, f in fmt.items()},
                        startup_share=table.startup_share.map("{:.2f}".format))
    md = ("# DAG profile\n\n" + head + "\n\n" + disp.to_markdown(index=False) + "\n\n" + notes + "\n\n"
          + (f"Critical path: {' -> '.join(chain)}\n\n" if chain else "") + training_section(df))
    write_text(out / "dag_profile.md", md)
    figure(df, out / "dag_profile.png", f"{s['jobs']} jobs, elapsed {s['elapsed_s'] / 60:.1f} min, overhead "
           f"fraction {s['overhead_fraction']:.2f}" + (f", critical path {path_s / 60:.1f} min" if path_s else ""))
    return s
