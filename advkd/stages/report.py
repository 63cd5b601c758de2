"""Tables and figures from finished results: reads JSON/PNG/CSV files only, so it never retrains anything.

`advkd report --results results/<exp> --out paper_figures/<exp>` regenerates every table and figure.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import REAL, load_config, real_source
from ..config import memorised as memorised_of
from ..dag_profile import dag_profile
from ..families import FAMILIES, params_of, recipe_class, report_figures, shipped_folder, trained_folder
from ..io import BadInputError, atomic_path, read_json, write_text
from ..method import SHIPPED
from ..metrics.cost import MIN_BLOCK_S
from ..metrics.quality import aggregate_seeds
from ..students.advkd.phases import figure as phase_figure
from ..students.advkd.phases import grids_figure as phase_grids_figure
from ..students.advkd.phases import load_runs, table
from ..students.advkd.phases import losses_figure as phase_losses_figure

QUALITY = ("fd", "fd_judge2", "fd_infinity", "fd_infinity_judge2", "kid", "kid_std_subsets", "inception_score",
           "inception_score_std_splits", "precision", "recall", "classes_covered", "largest_share", "fidelity_psnr",
           "fidelity_relative", "fidelity_relative_judge2")
FIG_STYLE = {"figure.dpi": 120, "savefig.bbox": "tight", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}
# A row whose samples the judge puts in fewer classes than this, or whose recall is below COLLAPSED_RECALL, has
# collapsed: it is marked and never on a Pareto front, whatever its FD.
COLLAPSED_CLASSES = 9
COLLAPSED_RECALL = 0.05


def ours(paths, methods, name=lambda p: p.stem) -> list[Path]:
    """The result files of `methods` (each file's method from its path); every file when methods is None. A folder
    keeps the files of a method since removed from the experiment, and its row must not look like part of it."""
    paths = sorted(paths)
    return paths if methods is None else [p for p in paths if name(p) in {*methods, REAL}]


def collect(results, reference: str | None = None, methods: list[str] | None = None) -> pd.DataFrame:
    """One row per method: cost JSON + per-seed quality aggregated to mean/std + how it was measured; the ratios
    against the `reference` method (the config's report.reference); and the noise-floor row `real` (real images
    the reference never saw, scored at the same n and seeds), which has no cost. `methods`: the experiment's rows
    (None: every result under `results`)."""
    results = Path(results)
    agg = aggregate_seeds(ours((results / "metrics" / "quality").glob("*/seed*.json"), methods,
                               lambda p: p.parent.name))
    timing_path = results / "metrics" / "timing.json"
    timing = read_json(timing_path) if timing_path.exists() else {}
    times = timing.get("timing", {})
    cost_paths = ours((results / "metrics" / "cost").glob("*.json"), methods)
    missing = sorted(set(methods or ()) - {p.stem for p in cost_paths})
    if missing:
        raise FileNotFoundError(f"no cost result for {missing} under {results}/metrics/cost; run the DAG first")
    rows = []
    for cost_path in cost_paths:
        c = read_json(cost_path)
        if "parameters_training_only" not in c or c["method"] not in times:
            raise BadInputError(f"{cost_path}: written by an older version of advkd, or {timing_path} has no "
                                f"timing of {c['method']!r}; results are reproducible: rerun the cost and timing "
                                "rules (delete the files, then snakemake)")
        t = times[c["method"]]
        lat, ips = t["latency_s_per_image_batch1"], t["images_per_s"]
        rows.append({"method": c["method"], "family": c["family"], "kind": c["kind"], "nfe": c["nfe"],
                     "params_inference": c["parameters_inference"], "params_all": c["parameters_all"],
                     "params_training_only": c["parameters_training_only"],
                     "gflops_per_image": c["flops_per_image"] / 1e9,
                     "latency_ms_batch1": 1e3 * lat["median"], "latency_ms_q1": 1e3 * lat["q1"],
                     "latency_ms_q3": 1e3 * lat["q3"], "latency_extrapolated": t["extrapolated"],
                     "images_per_s": ips["median"], "images_per_s_q1": ips["q1"], "images_per_s_q3": ips["q3"],
                     "timing_rounds": ips["repeats"], "throughput_batch": t["throughput_batch"],
                     "device": c["device"], "threads": c["threads"],
                     "params": params_of(c["provenance"]["method"]).as_dict(), "block": c["provenance"]["method"],
                     "recipe": recipe_class(c["provenance"]["method"])}
                    | _quality(agg.get(c["method"], {})))
    # a student row's training cost is its recipe's run, which methods differing in sampling keys share
    blocks = {r["method"]: r.pop("block") for r in rows}
    for r in rows:
        if r["kind"] == "student":
            run = trained_folder(results / "students", r["method"], blocks)
            r |= training_cost(run, results / "benchmarks" / "distill" / f"{run.name}.tsv") if run else {}
            r["trained_as"] = run.name if run else r["method"]
            r["run_dir"] = str(run) if run else None
            r["shipped"] = bool(blocks[r["method"]].get(SHIPPED))
            if r["shipped"]:   # how its recipe was chosen and what it learnt from, for the caption
                card = read_json(shipped_folder(blocks[r["method"]][SHIPPED]) / "card.json")
                traj = card.get("trajectories") or {}
                # the runs it used (a recipe's max_runs takes fewer than the set holds), as its training wrote them
                used = r.get("trajectory_runs") or traj.get("count")
                r["selection"] = card.get("selection")
                r["distilled_on"] = f"{used:,} teacher runs by {traj['sampler']}" if traj else None
    if not rows:
        raise FileNotFoundError(f"no cost results under {results}/metrics/cost; run the DAG first")
    if REAL in agg:
        rows.append({"method": REAL, "family": REAL, "kind": REAL, "recipe": REAL, "nfe": 0,
                     "latency_extrapolated": False, "params": {}} | _quality(agg[REAL]))
    df = pd.DataFrame(rows)
    if reference is not None and reference not in set(df.method):
        raise FileNotFoundError(f"report.reference: no cost result for method {reference!r} under "
                                f"{results}/metrics/cost")
    ref = df.set_index("method").loc[reference] if reference is not None else None
    # Three speed-ups: exact (FLOPs), measured in bulk (images/s) and at batch 1 (latency); reference / row.
    df["flop_ratio"] = ref.gflops_per_image / df.gflops_per_image if ref is not None else math.nan
    df["throughput_ratio"] = df.images_per_s / ref.images_per_s if ref is not None else math.nan
    # its spread: the interquartile ranges of both, at their least and most favourable
    df["throughput_ratio_lo"] = df.images_per_s_q1 / ref.images_per_s_q3 if ref is not None else math.nan
    df["throughput_ratio_hi"] = df.images_per_s_q3 / ref.images_per_s_q1 if ref is not None else math.nan
    df["speedup"] = ref.latency_ms_batch1 / df.latency_ms_batch1 if ref is not None else math.nan
    df.attrs["reference"] = reference
    df.attrs["scoring"] = scoring_info(results, methods)
    # how the speed columns were timed: the timing job's own record, not the cost jobs'
    df.attrs["timing"] = {k: timing.get(k) for k in ("device", "timing_warmup_rounds")}
    df["collapsed"] = (df.classes_covered_mean < COLLAPSED_CLASSES) | (df.recall_mean < COLLAPSED_RECALL)
    df.attrs["judges"] = judge_agreement(df)
    df["pareto_flops"] = pareto_front(df, "gflops_per_image")
    df["pareto_throughput"] = pareto_front(df, "images_per_s", higher_is_better=True,
                                           spread=("images_per_s_q1", "images_per_s_q3"))
    order = {"real": 0, "sampler": 1, "student": 2}
    return df.sort_values(by=["kind", "family", "nfe", "method"], key=lambda s: s.map(order).fillna(s)
                          if s.name == "kind" else s).reset_index(drop=True)


def training_cost(run: Path, bench: Path) -> dict:
    """A trained student's distillation compute: FLOPs (counted by its training loop, its folder's train.json),
    wall seconds of its epochs and the CPU-seconds of its whole distill job (Snakemake's benchmark file `bench`,
    start-up included; none for a shipped student, whose card says how it was trained, nor for a run resumed from
    a checkpoint, whose benchmark counts only its last invocation)."""
    summary = run / "train.json"
    if not summary.exists():   # a cost-only experiment trains nothing
        return {}
    s = read_json(summary)
    if "train_flops_total" not in s:
        raise BadInputError(f"{summary}: written by an older version of advkd (no train_flops_total); results are "
                            "reproducible: delete the student's folder and rerun the distill rule")
    whole = bench.exists() and s.get("resumed_from") is None
    cpu = pd.read_csv(bench, sep="\t").cpu_time.iloc[0] if whole else math.nan
    return {"train_flops": s["train_flops_total"], "train_seconds": s["train_seconds_total"],
            "train_cpu_seconds": cpu, "trajectory_runs": s.get("trajectory_runs"),
            "distillation_set_sha256": s.get("run_identity", {}).get("distillation_set_sha256")}


def judge_agreement(df: pd.DataFrame) -> dict | None:
    """Spearman rank correlation of FD under the two judges over every row that has both, again over the methods
    that compete (scored, not collapsed, not the real row: the easy orderings left out), and the pairs of rows
    whose order flips between them (None with one judge)."""
    from scipy.stats import spearmanr

    both = df[df.fd_mean.notna() & df.fd_judge2_mean.notna()]
    if len(both) < 3:
        return None
    rho = spearmanr(both.fd_mean, both.fd_judge2_mean).statistic
    scored = both[(both.kind != REAL) & ~both.collapsed.astype(bool)]
    rho_scored = spearmanr(scored.fd_mean, scored.fd_judge2_mean).statistic if len(scored) >= 3 else math.nan
    rows = list(both.itertuples())
    flips = [(a.method, b.method) for i, a in enumerate(rows) for b in rows[i + 1:]
             if (a.fd_mean - b.fd_mean) * (a.fd_judge2_mean - b.fd_judge2_mean) < 0]
    return {"spearman": float(rho), "rows": len(both), "spearman_scored": float(rho_scored),
            "rows_scored": len(scored), "flips": flips}


def scoring_info(results: Path, methods: list[str] | None = None) -> dict:
    """What the quality numbers were measured against, for the caption: the judge, the data's border, the
    reference set and its size, the half, where the noise floor's images come from and the coverage threshold (from
    the quality files of `methods`; None: any on disk)."""
    ev_path = results / "evaluator" / "evaluator.json"
    if not ev_path.exists():
        return {}
    ev = read_json(ev_path)
    judge = ("Inception pool3 features" if ev.get("kind") == "inception" else
             f"the {ev.get('source', '')} classifier judge, {ev.get('architecture', {}).get('features', '?')}-d "
             f"features") + f", sha256 {ev['sha256'][:12]}"
    info = {"judge": judge, "border": ev.get("border", 0)}
    judge2 = results / "judge2" / "evaluator.json"
    if judge2.exists():
        j2 = read_json(judge2)
        info["judge2"] = (f"an autoencoder's {j2['feature_dim']}-d bottleneck, trained without labels to "
                          f"reconstruct the training split, sha256 {j2['sha256'][:12]}")
    first = next(iter(ours((results / "metrics" / "quality").glob("*/seed*.json"), methods,
                           lambda p: p.parent.name)), None)
    if first is not None:
        q = read_json(first)
        half = q["reference"]
        card = read_json(results / "metrics" / "reference" / "evaluator" / f"{half}.json")
        info |= {"reference": f"the judge's statistics of the {half} half ({card['n']:,} images)", "half": half,
                 "real_source": real_source(half),
                 "coverage_threshold": (q.get("class_coverage") or {}).get("threshold")}
    return info


def _quality(q: dict) -> dict:
    row = {"n": min(q["n"]) if q else 0, "seeds": ",".join(map(str, q.get("seeds", []))),
           "n_seeds": q.get("n_seeds", 0)}
    for m in QUALITY:
        row[f"{m}_mean"] = q[m]["mean"] if m in q else math.nan
        row[f"{m}_std"] = q[m]["std"] if m in q else math.nan
    return row


def pareto_front(df: pd.DataFrame, cost: str, higher_is_better: bool = False, spread=None) -> pd.Series:
    """True for the rows no other row dominates in (FD, `cost`). Only rows with an FD at the matched n that have
    not collapsed compete. Row j dominates row i when it is at least as good on both axes and better beyond the
    spread on one: FDs when their mean ± std over seeds do not overlap; a measured cost when its `spread`
    columns (low, high: the interquartile range) do not overlap; an exact cost (FLOPs) when it differs at all."""
    ok = df.fd_mean.notna() & ~df.collapsed & df[cost].notna()
    sign = -1.0 if higher_is_better else 1.0
    c = sign * df[cost]
    lo, hi = (c, c) if spread is None else (sign * df[spread[0]], sign * df[spread[1]])
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)   # a sign flip swaps the quartiles
    fd, sd = df.fd_mean, df.fd_std.fillna(0.0)
    out = pd.Series(False, index=df.index)
    for i in df.index[ok]:
        j = ok & (df.index != i) & (c <= c[i]) & (fd <= fd[i])
        clearly = ((hi < lo[i]) if spread is not None else (c < c[i])) | (fd + sd < fd[i] - sd[i])
        out[i] = not (j & clearly).any()
    return out


def _pm(mean, std, n_seeds, fmt="{:.2f}"):
    """mean ± std over seeds; one seed has no spread to show, and says so."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{fmt.format(mean)} ± " + (fmt.format(std) if n_seeds > 1 else "n/a (1 seed)")


def _x(v):
    return "—" if v is None or math.isnan(v) else f"{v:,.0f}x" if v >= 10 else f"{v:.2g}x"


def _sig(v, digits=3):
    return "—" if v is None or math.isnan(v) else f"{v:.{digits}g}"


def _col(df: pd.DataFrame, col: str, fmt) -> list:
    """A column only some rows have (students' training cost): blank where a row has none."""
    values = df[col] if col in df else [math.nan] * len(df)
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt(v) for v in values]


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    real = df.kind == REAL
    shipped = df["shipped"].fillna(False).astype(bool) if "shipped" in df else pd.Series(False, index=df.index)
    extrapolated = df.latency_extrapolated.fillna(False).astype(bool)
    mark = np.where(df.pareto_flops, " *", "") + np.where(df.pareto_throughput, " †", "") + np.where(
        extrapolated, " ‡", "") + np.where(df.collapsed, " (collapsed)", "") + np.where(shipped, " (shipped)", "")
    cost = lambda col, fmt: [("" if r else fmt(v)) for r, v in zip(real, df[col])]  # noqa: E731
    out = pd.DataFrame({
        "method": df.method + mark,
        "family": df.family, "recipe": df.recipe, "NFE": [("" if r else v) for r, v in zip(real, df.nfe)],
        "params (M)": cost("params_inference", lambda v: f"{v / 1e6:.2f}"),
        "all params (M)": cost("params_all", lambda v: f"{v / 1e6:.2f}"),
        "training-only (M)": cost("params_training_only", lambda v: f"{v / 1e6:.2f}" if v else "0"),
        "training TFLOP": _col(df, "train_flops", lambda v: f"{v / 1e12:.3g}"),
        "training CPU-s": _col(df, "train_cpu_seconds", lambda v: f"{v:.0f}"),
        "GFLOPs/img": cost("gflops_per_image", lambda v: f"{v:.2f}"),
        "latency b=1 (ms)": cost("latency_ms_batch1", lambda v: f"{v:.1f}"),
        # two significant digits below 1 img/s, so paper-scale samplers on a CPU do not print as 0
        "img/s": cost("images_per_s", lambda v: f"{v:.1f}" if v >= 1 else f"{v:.2g}"),
        "FLOP ratio": cost("flop_ratio", _x),
        "throughput ratio": [("" if r else f"{_x(v)} ({_x(a)}-{_x(b)})") for r, v, a, b in
                             zip(real, df.throughput_ratio, df.throughput_ratio_lo, df.throughput_ratio_hi)],
        "latency ratio": cost("speedup", _x),
        "FD": [_pm(m, s, k) for m, s, k in zip(df.fd_mean, df.fd_std, df.n_seeds)],
        "FD judge 2": [_pm(m, s, k) for m, s, k in zip(df.fd_judge2_mean, df.fd_judge2_std, df.n_seeds)],
        "FD∞": [_pm(m, s, k) for m, s, k in zip(df.fd_infinity_mean, df.fd_infinity_std, df.n_seeds)],
        "FD∞ judge 2": [_pm(m, s, k) for m, s, k in zip(df.fd_infinity_judge2_mean, df.fd_infinity_judge2_std,
                                                      df.n_seeds)],
        "KID": [_pm(m, s, k, "{:.3g}") for m, s, k in zip(df.kid_mean, df.kid_std, df.n_seeds)],
        "KID sd (subsets)": df.kid_std_subsets_mean.map(_sig),
        "IS": [_pm(m, s, k) for m, s, k in zip(df.inception_score_mean, df.inception_score_std, df.n_seeds)],
        "IS sd (splits)": df.inception_score_std_splits_mean.map(lambda v: _sig(v, 2)),
        "precision": [_pm(m, s, k, "{:.3f}") for m, s, k in zip(df.precision_mean, df.precision_std, df.n_seeds)],
        "recall": [_pm(m, s, k, "{:.3f}") for m, s, k in zip(df.recall_mean, df.recall_std, df.n_seeds)],
        "classes": df.classes_covered_mean.map(lambda v: "—" if math.isnan(v) else f"{v:.1f}".removesuffix(".0")),
        "top class": df.largest_share_mean.map(lambda v: "—" if math.isnan(v) else f"{v:.0%}"),
        # the teacher's own row is the yardstick (distance 0): it says so instead of an infinite PSNR
        "fidelity PSNR (dB)": _fidelity(df, "fidelity_psnr", "{:.1f}"),
        "fidelity judge 1": _fidelity(df, "fidelity_relative", "{:.3f}"),
        "fidelity judge 2": _fidelity(df, "fidelity_relative_judge2", "{:.3f}"),
        "n": df.n, "seeds": df.seeds,
    })
    if df.kid_mean.isna().all():  # cost-only experiment: no quality columns to show
        out = out.drop(columns=["FD", "FD judge 2", "FD∞", "FD∞ judge 2", "KID", "KID sd (subsets)", "IS",
                                "IS sd (splits)", "precision", "recall", "classes", "top class", "fidelity PSNR (dB)",
                                "fidelity judge 1", "fidelity judge 2", "n", "seeds"])
        out["method"] = df.method
    return out


def _fidelity(df: pd.DataFrame, col: str, fmt: str) -> list:
    teacher = df.fidelity_relative_mean == 0
    return ["teacher" if t else _pm(m, s, k, fmt)
            for t, m, s, k in zip(teacher, df[f"{col}_mean"], df[f"{col}_std"], df.n_seeds)]


def _batches(df: pd.DataFrame) -> str:
    """The throughput batch(es) the timing job timed img/s at, for captions."""
    return "/".join(str(int(b)) for b in sorted(set(df.get("throughput_batch", pd.Series(dtype=float)).dropna()))) \
        or "?"


def _real_images(scoring: dict) -> str:
    """Where the noise floor's images come from (advkd.config.real_source), in words."""
    return {"validation": "images of the validation half (held out from all training)",
            "train": "images of the training split (the teacher's training data; the held-out test half stays "
                     "unseen by a validation-half experiment)"}.get(scoring.get("real_source"), "real images")


def footnotes(df: pd.DataFrame, scoring: dict | None = None) -> str:
    dev = "; ".join(sorted(set(str(d) for d in df.device.dropna())))
    ref = df.attrs.get("reference") or "(no report.reference set)"
    params = ("params = parameters on the sampling path; all params = the model's, as stored; training-only = "
              "networks trained beside it and never part of it (Adv-KD's critics); training TFLOP = a student's "
              "distillation FLOPs (forward, backward and critic steps, torch.utils.flop_counter on each epoch's first "
              "step, scaled to its images; not the teacher's runs that made the distillation set) and training CPU-s "
              "= the CPU-seconds of its distill job (blank for a run resumed from a checkpoint: the job's benchmark "
              "counts its last invocation only). ")
    rounds = int(df.timing_rounds.dropna().iloc[0]) if df.timing_rounds.notna().any() else 0
    timing = df.attrs.get("timing") or {}
    warm = timing.get("timing_warmup_rounds")
    speed = (f"img/s = images per second at batch {_batches(df)}, latency = seconds per "
             f"image at batch 1: each the median over {rounds} rounds "
             + (f"after {warm} warm-up round(s)" if warm else "(no warm-up)") + " of the time per call (a call "
             f"shorter than {MIN_BLOCK_S} s repeated back to back within its round, the block's mean counting), "
             f"on {timing.get('device') or dev}, eager (no torch.compile); "
             "every method timed in one process, round-robin, the order rotated each round, so the ratios share "
             "the host's conditions (sampling_speed.md times each method as its sample jobs run it: their batch, "
             "threads and compilation). ")
    ratios = params + speed + (f"Ratios against {ref} (reference / row; throughput: row / reference): FLOP ratio "
              "exact (torch.utils.flop_counter, multiply-add = 2); throughput ratio from the median images/s, in "
              "brackets its range over both interquartile ranges (row q1 / reference q3 to row q3 / reference q1); "
              "latency ratio from the median latency. ‡ = timed as one network call x NFE (a full sample was too "
              "slow to time): its latency, images/s and the ratios against it leave out the scheduler's arithmetic "
              "between calls.")
    if df.kid_mean.isna().all():
        return f"Measured on {dev}, fp32, random weights (cost depends only on architecture and schedule). " + ratios
    scoring = scoring or {}
    judge = scoring.get("judge", "the judge")
    border = scoring.get("border", 0)
    region = (f"The judge sees the region the data defines: the data's {border}-pixel zero border is set to zero in "
              "every set, real or generated, before scoring. " if border else "")
    agree = df.attrs.get("judges")
    second = ""
    if scoring.get("judge2"):
        second = (f"FD judge 2 = FD under a second, independent judge ({scoring['judge2']}). " + (
            f"The two judges' FDs rank the {agree['rows']} rows with a Spearman correlation of "
            f"{agree['spearman']:.3f}, the {agree['rows_scored']} competing rows (not real, not collapsed) with "
            f"{agree['spearman_scored']:.3f}; " + ("pairs whose order flips between them: "
                                            + ", ".join(f"{a} / {b}" for a, b in agree['flips']) + ". "
                                            if agree["flips"] else "no pair of rows changes order. ")
            if agree else ""))
    return (f"Measured on {dev}. Every quality number is comparable only within its judge ({judge}): n = "
            f"samples per seed scored against {scoring.get('reference', 'the held-out reference')}; ± is the "
            "standard deviation over seeds (a row with one seed says so). " + second + region
            + "KID is raw (the unbiased cubic-kernel MMD² on the judge's features, not scaled), its sd (subsets) "
            "the mean over seeds of its standard deviation over the random subsets; IS is the mean over 10 splits, "
            "its sd (splits) the mean over seeds of the standard deviation over splits. Every n-dependent column "
            "(FD, IS, precision, recall, classes) compares rows at one n (the matched n); a row scored at a "
            "smaller n (scored_by: kid) shows — there and is compared by KID alone; a speed yardstick "
            "(scored_by: none) is costed and timed but never sampled, so every quality cell of its row is —. The "
            f"row real = {_real_images(scoring)} the reference never saw, at the same n and seeds: the noise floor. "
            "* = on the Pareto front of FD against FLOPs per image, † = of FD against measured images/s; a row "
            "is dominated only when another "
            "is at least as good on both and better beyond the spread on one; a row whose samples fill fewer than "
            f"{COLLAPSED_CLASSES} judge classes or whose recall is below {COLLAPSED_RECALL} is marked collapsed and "
            "never starred; (shipped) = a student trained beforehand and shipped with the repository (its "
            "card.json), sampled and scored here like the others. " + ratios
            + f" classes = judge classes with at least {scoring.get('coverage_threshold') or 0.01:.0%} of the "
            "samples and top class = "
            "the largest share, means over the seeds. FD∞ = FD extrapolated to infinitely many samples (Chong & "
            "Forsyth 2020: FD of random subsets of 40% to 100% of each seed's set, fitted linearly in 1/N and read "
            "at 1/N = 0), free of FD's bias in n. recipe: published = the authors' Adv-KD recipe (networks, losses, "
            "critic, schedule; the embedded preset's widths) at the budget its training TFLOP says; control = that "
            "recipe trained by regression alone; deviation = an Adv-KD row that changes the published recipe; peer "
            "= another distillation method; sampler = the teacher under a diffusers scheduler. Teacher fidelity "
            "(every row of a seed starts from the same x_T as the teacher's sampler that made the distillation set, "
            "row 'teacher'): PSNR of each image against the teacher's from the same x_T, and the mean judge-feature "
            "distance to it over the distance between teacher images paired at random (0 = the teacher's image, "
            "about 1 = no closer than an unrelated teacher sample). It tells which students learnt the teacher's "
            "map and which only its distribution: a GAN-trained student need not match per sample to score well."
            + _selections(df))


def _selections(df: pd.DataFrame) -> str:
    """What each shipped student's card says of how its recipe was chosen (a caption must not let a reader take
    it for a validation pick when it is not)."""
    if "selection" not in df:
        return ""
    picked = df.dropna(subset=["selection"])
    learnt = (picked.distilled_on if "distilled_on" in picked else pd.Series(None, index=picked.index)).map(
        lambda d: f", learnt from {d}" if isinstance(d, str) else "")
    return "".join(f" {m} (shipped{on}): {sel}" for m, on, sel in zip(picked.method, learnt, picked.selection))


def knob_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per method of every family with several methods in the experiment, and a column for each of the
    family's parameters whose value differs between them (an ablation's knobs), beside the headline numbers."""
    parts = []
    for family, rows in df.groupby("family", sort=True):
        if len(rows) < 2:
            continue
        params = pd.DataFrame(list(rows.params), index=rows.index, dtype=object)   # keeps None apart from NaN
        varying = [k for k in params if params[k].map(repr).nunique() > 1]
        shown = params[varying].map(lambda v: "—" if v is None else v)
        disp = display_table(rows)
        results = disp[[c for c in KNOB_RESULTS if c in disp]]
        parts.append(pd.concat([rows[["family", "method"]], shown, results], axis=1))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


KNOB_RESULTS = ("NFE", "params (M)", "latency b=1 (ms)", "training TFLOP", "training CPU-s", "FD", "KID", "recall",
                "classes", "top class", "n")


def knob_blocks(knobs: pd.DataFrame) -> list[pd.DataFrame]:
    """The knob table as one block per family: only that family's knobs, then the results columns."""
    blocks = []
    for _, block in knobs.groupby("family", sort=True):
        block = block.dropna(axis=1, how="all")   # the other families' knobs
        results = [c for c in block if c in KNOB_RESULTS]
        blocks.append(block[[c for c in block if c not in results] + results])
    return blocks


def write_tables(df: pd.DataFrame, out_dirs) -> None:
    disp = display_table(df)
    notes = footnotes(df, df.attrs.get("scoring"))
    md = disp.to_markdown(index=False) + "\n\n" + notes + "\n"
    tex = disp.to_latex(index=False, escape=True, caption=notes.replace("±", r"$\pm$"), label="tab:advkd")
    knobs = knob_table(df)
    knobs_md = ("\n\n".join(b.to_markdown(index=False) for b in knob_blocks(knobs)) + "\n\nOne table per method "
                "family with several methods: the "
                "columns between the method and NFE are the family's parameters that differ between them (— = "
                "null, the family's default rule); the rest as in summary.md.\n") if len(knobs) else \
        "No family has several methods in this experiment.\n"
    for d in out_dirs:
        _write_csv_md(Path(d), "summary", df.drop(columns=["params"]), md)
        write_text(Path(d) / "summary.tex", tex)
        _write_csv_md(Path(d), "knobs", knobs, knobs_md)


def _write_csv_md(d: Path, stem: str, df: pd.DataFrame, md: str) -> None:
    with atomic_path(d / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_text(d / f"{stem}.md", md)


def _save(fig, out: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "pdf"):
        with atomic_path(out / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(out / f"{name}.{ext}")
    plt.close(fig)
    return paths


def _palette() -> dict:
    """One colour per family of the registry, in registry order, so that a family has the same colour in every
    figure whichever rows a figure draws."""
    import seaborn as sns

    colours = sns.color_palette("tab10") + sns.color_palette("Dark2")
    return dict(zip(FAMILIES, colours))


# The recipe column's mark in every scatter figure (colour = family); a collapsed row is drawn hollow.
RECIPE_MARKERS = {"sampler": "s", "published": "o", "control": "D", "deviation": "^", "peer": "v", REAL: "*"}


def _point(ax, x, y, r, color, yerr=None, **kw):
    ax.errorbar(x, y, yerr=yerr, fmt=RECIPE_MARKERS.get(r.recipe, "o"), color=color, capsize=2, ms=5,
                mfc="none" if bool(r.get("collapsed", False)) else color, **kw)


def _label(ax, texts: list) -> None:
    """Labels moved apart from each other and from the points (adjustText), inside the axes; points that fall on
    one spot (within 1% of the axes) share one label, since no placement keeps several apart there."""
    from adjustText import adjust_text

    if not texts:
        return
    to_axes = ax.transData + ax.transAxes.inverted()
    spots: dict = {}
    for t in texts:
        x, y = to_axes.transform(t.get_position())
        spots.setdefault((round(x, 2), round(y, 2)), []).append(t)
    kept = []
    for group in spots.values():
        group[0].set_text(", ".join(t.get_text() for t in group))
        for t in group[1:]:
            t.remove()
        kept.append(group[0])
    points = np.array([t.get_position() for t in kept], dtype=float)   # the labels keep off every point too
    adjust_text(kept, x=points[:, 0], y=points[:, 1], ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6",
                "lw": 0.4}, expand=(1.3, 1.6), force_text=(0.3, 0.5), ensure_inside_axes=True)


def _scale(ax, axis: str, values, label: str) -> None:
    """Log scale where the values span more than a decade, linear otherwise (a log axis inside one decade labels
    its minor ticks in overlapping scientific notation); the axis label says which."""
    v = np.asarray([x for x in values if x == x and x > 0], dtype=float)
    log = len(v) > 1 and v.max() / v.min() > 10
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log" if log else "linear")
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(label + (" (log scale)" if log else ""))


def _legend(ax, pal: dict, rows: pd.DataFrame) -> None:
    """Family colours and recipe marks of the rows drawn, beside the axes (right of them, inside the figure) so
    that it hides no point or label."""
    from matplotlib.lines import Line2D

    families = set(rows.family)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f) for f, c in pal.items() if f in families]
    handles += [Line2D([], [], ls="", marker=RECIPE_MARKERS[r], color="0.3", mfc="none", label=f"recipe: {r}")
                for r in RECIPE_MARKERS if r in set(rows.recipe) and r != REAL]
    handles += [h for h, lab in zip(*ax.get_legend_handles_labels()) if lab in ("real images (noise floor)",
                                                                              "Pareto front")]
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)


def _log_ticks(ax, axis: str) -> None:
    """Labels at 1, 2 and 5 times the powers of ten only: within a decade or two matplotlib labels every minor
    tick and the labels run into each other."""
    from matplotlib.ticker import LogLocator, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    a.set_minor_formatter(NullFormatter())


def _measured(df: pd.DataFrame, speed: bool = False) -> str:
    """A figure's line on how its numbers were measured: n and seeds of the scored rows, the half and judge (and,
    with `speed`, how the speed columns were timed), as the summary's caption says in full."""
    scored = df[df.fd_mean.notna()]
    scoring = df.attrs.get("scoring") or {}
    line = (f"n = {int(scored.n.min())} per seed, seeds {scored.seeds.mode().iloc[0]}, {scoring.get('half', '?')} half"
            if len(scored) else "no row scored")
    if speed:
        timing = df.attrs.get("timing") or {}
        line += f"; img/s at batch {_batches(df)}, eager, on {timing.get('device') or '?'}"
    return line


def fig_fd_vs(df, out, x, xlabel, name, front: str | None = None):
    """FD (mean ± std over seeds) against a cost column; the noise floor (row real) as a band; `front`: the
    Pareto column whose rows the dashed line joins."""
    import matplotlib.pyplot as plt

    pal = _palette()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    texts = []
    for _, r in df[(df.kind != REAL) & df.fd_mean.notna()].iterrows():
        _point(ax, r[x], r.fd_mean, r, pal[r.family], yerr=r.fd_std if r.n_seeds > 1 else None)
        texts.append(ax.text(r[x], r.fd_mean, r.method, fontsize=6))
    real = df[(df.kind == REAL) & df.fd_mean.notna()]
    if len(real):
        r = real.iloc[0]
        ax.axhspan(r.fd_mean - r.fd_std, r.fd_mean + r.fd_std, color="0.85", zorder=0)
        ax.axhline(r.fd_mean, color="0.5", lw=0.8, label="real images (noise floor)")
    if front is not None:
        line = df[df[front]].sort_values(x)
        ax.plot(line[x], line.fd_mean, "k--", lw=0.8, label="Pareto front")
    drawn = df[(df.kind != REAL) & df.fd_mean.notna()]
    _scale(ax, "x", drawn[x], xlabel)
    _scale(ax, "y", [*drawn.fd_mean, *df[df.kind == REAL].fd_mean], "Fréchet distance (judge features)")
    _legend(ax, pal, drawn)
    _label(ax, texts)
    ax.set_title(f"rows at the matched n; hollow = collapsed; KID-only rows are not drawn\n"
                 f"{_measured(df, speed=x == 'images_per_s')}", fontsize=7)
    return _save(fig, out, name)


def fig_fidelity(df, out):
    """Teacher fidelity beside FD: each row's distance to the teacher's image from the same x_T (judge features,
    relative to unrelated teacher pairs) against its FD, under both judges."""
    import matplotlib.pyplot as plt

    rows = df[(df.kind != REAL) & df.fd_mean.notna() & df.fidelity_relative_mean.notna()
              & (df.fidelity_relative_mean > 0)]
    if rows.empty:
        return []
    pal = _palette()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"wspace": 0.35})
    for ax, (fd, fid, judge) in zip(axes, [("fd", "fidelity_relative", "judge 1"),
                                           ("fd_judge2", "fidelity_relative_judge2", "judge 2")]):
        texts = []
        for _, r in rows.iterrows():
            _point(ax, r[f"{fd}_mean"], r[f"{fid}_mean"], r, pal[r.family])
            texts.append(ax.text(r[f"{fd}_mean"], r[f"{fid}_mean"], r.method, fontsize=6))
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        _scale(ax, "x", rows[f"{fd}_mean"], f"FD ({judge})")
        ax.set_ylabel(f"distance to the teacher's image, {judge}\n(1 = as far as an unrelated teacher sample)")
        _label(ax, texts)
    _legend(axes[1], pal, rows)   # one legend for both panels: the same rows
    fig.suptitle("teacher fidelity against FD (seed means): low = the student learnt the teacher's map, not only "
                 f"its distribution (a GAN student need not match per sample)\n{_measured(df)}", fontsize=7)
    return _save(fig, out, "teacher_fidelity")


def fig_cost(df, out):
    import matplotlib.pyplot as plt

    pal = _palette()
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.25 * len(df) + 1.5), sharey=True)
    colors = [pal[f] for f in df.family]
    axes[0].barh(df.method, df.params_inference / 1e6, color=colors)
    axes[0].set_xlabel("parameters on the sampling path (M)")
    axes[1].barh(df.method, df.gflops_per_image, color=colors)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("GFLOPs per image (torch.utils.flop_counter)")
    axes[0].invert_yaxis()
    return _save(fig, out, "params_flops")


def fig_latency(df, out):
    """Latency per image at batch 1 (log) with the speed-up over the reference method written on each bar."""
    import matplotlib.pyplot as plt

    pal = _palette()
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(df) + 1.2))
    bars = ax.barh(df.method, df.latency_ms_batch1 / 1e3, color=[pal[f] for f in df.family],
                   hatch=None)
    for bar, extrap in zip(bars, df.latency_extrapolated):
        if extrap:
            bar.set_hatch("//")
    for y, (lat, sp) in enumerate(zip(df.latency_ms_batch1 / 1e3, df.speedup)):
        if not math.isnan(sp):
            ax.text(lat, y, f" {sp:,.0f}x", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 3)   # room for the speed-up written after the longest bar
    ax.set_xlabel(f"seconds per image at batch 1 (log; hatched = per-call x NFE) on {df.device.iloc[0]}")
    ax.invert_yaxis()
    return _save(fig, out, "latency")


def fig_grids(methods, out, name, file_fn, title_fn=lambda m: m, ncols=4):
    """One panel per method: the image file_fn(method) names (None or missing: no panel)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    items = [(m, file_fn(m)) for m in methods]
    items = [(m, p) for m, p in items if p is not None and Path(p).exists()]
    if not items:
        return []
    rows = -(-len(items) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(2.6 * ncols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (m, p) in zip(axes.flat, items):
        ax.imshow(np.asarray(Image.open(p)), cmap="gray", interpolation="nearest")
        ax.set_title(title_fn(m), fontsize=8)
    return _save(fig, out, name)


def fig_training(methods: dict, out):
    """Each student's training loss per epoch: the first of its family's loss columns (methods: name -> (family,
    its training run's loss.csv))."""
    import matplotlib.pyplot as plt

    curves = [(m, f, p) for m, (f, p) in methods.items() if p.exists()]
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m, f, p in curves:
        col = FAMILIES[f].loss_columns[0]
        c = pd.read_csv(p)
        # runs differ 100-fold in epochs: on a shared epoch axis the short ones would be a line at zero
        ax.plot(np.arange(1, len(c) + 1) / len(c), c[col], label=f"{m} ({col}, {len(c)} epochs)", lw=1)
    ax.set_title("training loss per epoch (each family's first loss column)")
    ax.set_xlabel("fraction of the run's epochs (all segments in order)")
    ax.set_yscale("log")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)   # off the curves
    return _save(fig, out, "training_curves")


def compute_curves(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Students that share a recipe and a distillation set and differ only in their family's budget keys, each set
    in budget order (a shipped student that learnt from another teacher-run set is a point of its own)."""
    rows = df[(df.kind == "student") & df.get("train_flops", pd.Series(dtype=float)).notna()]
    curves = {}
    for i, r in rows.iterrows():
        keys = FAMILIES[r.family].params.budget_keys
        recipe = (r.family, repr(sorted((k, v) for k, v in r.params.items() if k not in keys)),
                  r.get("distillation_set_sha256"))
        curves.setdefault(recipe, []).append(i)
    out = []
    for idx in curves.values():
        c = df.loc[idx].sort_values("train_flops")
        out.append((c.method.iloc[0] if len(c) == 1 else f"{c.family.iloc[0]}: " + ", ".join(c.method), c))
    return out


def fig_training_compute(df, out):
    """Quality against distillation compute: FD and recall (mean ± std over seeds) against training FLOPs and
    against CPU-seconds, one line per recipe through its budgets; the noise floor as a band."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    curves = compute_curves(df)
    if not curves or df.fd_mean.isna().all():
        return []
    colours = dict(zip([label for label, _ in curves], sns.color_palette("tab20", len(curves))))
    # CPU-seconds come from Snakemake's benchmark files: a report of results made outside the DAG has none
    xs = [(x, label) for x, label in [("train_flops", "distillation FLOPs (log)"),
                                      ("train_cpu_seconds", "distillation CPU-seconds (the distill job, log)")]
          if pd.concat([c[x] for _, c in curves]).notna().any()]
    fig, axes = plt.subplots(2, len(xs), figsize=(4.5 * len(xs), 7), sharex="col", squeeze=False)
    for col, (x, xlabel) in enumerate(xs):
        for row, (y, ylabel) in enumerate([("fd", "FD (judge features, log)"), ("recall", "recall")]):
            ax = axes[row, col]
            texts = []
            for label, c in curves:   # one colour per recipe, its mark the recipe column's
                ax.errorbar(c[x], c[f"{y}_mean"], yerr=c[f"{y}_std"], marker=RECIPE_MARKERS.get(c.recipe.iloc[0], "o"),
                            ms=4, capsize=2, lw=1, color=colours[label], alpha=0.9,
                            label=f"{label} ({c.recipe.iloc[0]})")
                texts += [ax.text(r[x], r[f"{y}_mean"], r.method, fontsize=5) for _, r in c.iterrows()
                          if not math.isnan(r[x]) and not math.isnan(r[f"{y}_mean"])]
            real = df[df.kind == REAL]
            if len(real) and not math.isnan(real[f"{y}_mean"].iloc[0]):
                m, sd = real[f"{y}_mean"].iloc[0], real[f"{y}_std"].iloc[0]
                ax.axhspan(m - sd, m + sd, color="0.85", zorder=0)
                ax.axhline(m, color="0.5", lw=0.8, label="real images (noise floor)")
            ax.set_xscale("log")
            ax.margins(x=0.12)   # room for the labels of the points at either end
            _log_ticks(ax, "x")
            if y == "fd":
                ax.set_yscale("log")
            if col == 0:
                ax.set_ylabel(ylabel)
            if row == 1:
                ax.set_xlabel(xlabel)
            _label(ax, texts)
    # below the panels, not on one: the students of equal budget sit together and a legend there hides them
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.legend(dict(zip(lab, h)).values(), dict(zip(lab, h)).keys(), fontsize=6, loc="upper center",
               bbox_to_anchor=(0.5, 0.02), ncol=3 if len(xs) > 1 else 2)
    fig.suptitle("quality against distillation compute (one line per recipe through its budgets)\n"
                 f"{_measured(df)}", fontsize=8)
    return _save(fig, out, "training_compute")


SPEED_COLUMNS = ["method", "kind", "batch_size", "threads", "compiled", "nfe", "images_per_s", "images_per_s_q1",
                 "images_per_s_q3", "achieved_gflops", "peak_gflops", "peak_probe", "fraction_of_peak",
                 "theoretical_gflops", "fraction_of_theoretical_peak", "extrapolated", "device"]


def sampling_speed(timing: dict) -> pd.DataFrame:
    """One row per method from the timing job's sampling_speed block (advkd.stages.cost.sampling_speed): images/s at
    the sample jobs' batch and threads, with the probes interleaved in the same rounds."""
    speed = timing.get("sampling_speed")
    if speed is None:
        raise BadInputError("metrics/timing.json has no sampling_speed block: written by an older version of advkd "
                            "(speeds were measured in the sample jobs then); delete it and rerun snakemake")
    theory = (speed.get("theoretical_peak") or {}).get("gflops") or math.nan   # none on a GPU
    rows = [{"method": name, "kind": r["kind"], "batch_size": r["batch_size"], "threads": speed["threads"],
             "compiled": r["compiled"], "nfe": r["nfe"], "images_per_s": r["images_per_s"]["median"],
             "images_per_s_q1": r["images_per_s"]["q1"], "images_per_s_q3": r["images_per_s"]["q3"],
             "achieved_gflops": r["achieved_gflops"], "peak_gflops": r["peak_gflops"], "peak_probe": r["peak_probe"],
             "fraction_of_peak": r["fraction_of_peak"], "theoretical_gflops": theory,
             "fraction_of_theoretical_peak": r["achieved_gflops"] / theory,
             "extrapolated": r["extrapolated"], "device": speed.get("device", timing["device"])}
            for name, r in speed["methods"].items()]
    return pd.DataFrame(rows, columns=SPEED_COLUMNS)


def theoretical_peak_holds(speed: pd.DataFrame) -> bool:
    """The theoretical peak is a yardstick only where it bounds every probe measured on the host."""
    theory = speed.theoretical_gflops
    return bool(theory.notna().all() and (speed.peak_gflops <= theory).all())


def write_speed_tables(speed: pd.DataFrame, out_dirs, rounds: int, target: float = 0.8,
                       peer: dict | None = None) -> None:
    """sampling_speed.{csv,md} (from the timing job: `rounds` interleaved rounds); the .md's note counts the teacher
    samplers at or above `target` of the peak and gives the peer ratio (the suite's sampler against the stock
    diffusers loop)."""
    # A probe faster than the "theoretical" peak proves that peak wrong on this host (a VM states its nominal
    # clock, not its boost clock): the yardstick is then dropped for every row (theoretical_peak_holds), never
    # blanked row by row, and the note says so.
    speed = speed.copy()
    beaten = speed.theoretical_gflops.notna() & (speed.peak_gflops > speed.theoretical_gflops)
    holds = theoretical_peak_holds(speed)
    if not holds:
        speed["fraction_of_theoretical_peak"] = math.nan
    teacher = speed[speed.kind == "sampler"]
    frac, theory = teacher.fraction_of_peak, teacher.fraction_of_theoretical_peak.astype(float)
    summary = (f"Teacher samplers: median fraction of peak {frac.median():.3f} over {len(frac)} samplers "
               f"(range {frac.min():.3f}-{frac.max():.3f}; {(frac >= target).sum()} of {len(frac)} at {target} or "
               "more); " + (f"of the CPU's theoretical fp32 peak {theory.median():.3f} (range {theory.min():.3f}-"
                            f"{theory.max():.3f}). " if theory.notna().any() else
                            "the theoretical fp32 peak is no yardstick on this host (see below). ")
               if len(frac) else "No teacher sampling jobs in this experiment. ")
    if beaten.any():
        summary += (f"For {int(beaten.sum())} of {len(speed)} methods a probe ran faster (up to "
                    f"{speed.peak_gflops[beaten].max():.0f} GFLOP/s) than the theoretical peak from the machine's "
                    f"stated clock: the stated clock is below the one the CPU ran at, so that yardstick is no upper "
                    "bound on this host and its columns are left out for every method. ")
    if peer:
        summary += (f"Peer ratio ({peer['method']}, batch {peer['batch']}, {peer['threads']} thread(s) as the "
                    f"sample jobs run, timed interleaved in one process, median of {peer['rounds']} rounds, IQR in "
                    "brackets; images/s over the stock diffusers loop a user would write): "
                    + "; ".join(f"{r['variant']} {r['ratio']:.2f}x ({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f})"
                                for r in peer["rows"])
                    + ". The loop's share is the eager row's, the compiler's the compiled row over the eager. ")
    notes = (summary + f"One row per method, measured in the timing job as the sample jobs run it (their batch, "
             "thread count and, for the teacher's samplers, torch.compile; compilation before the clock): every "
             f"method's batch and every probe timed once per round, round-robin, {rounds} rounds; img/s = median "
             "(q1, q3: interquartile range). achieved GFLOP/s = the network's FLOPs per image "
             "(torch.utils.flop_counter: convolutions and matmuls, multiply-add = 2) x NFE x img/s. peak = the "
             "fastest round of the method's own probes: a 2048x2048 fp32 sgemm and the network's two largest "
             "convolutions at that batch (peak probe names the winner); this strict yardstick was fixed before "
             "looking at any result. theoretical = cores x clock x fp32 FLOP per cycle (vector width of ATen's CPU "
             "capability, 2 FMA units), from the machine's own description. A fraction above 1 means the yardstick "
             "is wrong. Extrapolated rows time one network call x NFE (NFE above metrics.cost.full_sample_max_nfe). "
             "Students are single calls of small networks: their fraction says little.")
    fmt = {"images_per_s": "{:.1f}", "images_per_s_q1": "{:.1f}", "images_per_s_q3": "{:.1f}",
           "achieved_gflops": "{:.1f}", "peak_gflops": "{:.1f}", "fraction_of_peak": "{:.3f}",
           "theoretical_gflops": "{:.0f}", "fraction_of_theoretical_peak": "{:.3f}"}
    disp = speed.drop(columns=["kind"]).assign(**{c: speed[c].map(lambda v, f=f: "—" if v is None or v != v
                                                                  else f.format(v)) for c, f in fmt.items()})
    disp = disp.rename(columns={"batch_size": "batch", "images_per_s": "img/s", "images_per_s_q1": "q1",
                                "images_per_s_q3": "q3", "achieved_gflops": "GFLOP/s",
                                "peak_gflops": "peak GFLOP/s", "fraction_of_peak": "fraction of peak",
                                "theoretical_gflops": "theoretical GFLOP/s",
                                "fraction_of_theoretical_peak": "of theoretical"})
    if not holds:
        disp = disp.drop(columns=["theoretical GFLOP/s", "of theoretical"])
    md = disp.to_markdown(index=False) + "\n\n" + notes + "\n"
    for d in out_dirs:
        _write_csv_md(Path(d), "sampling_speed", speed, md)


def write_memorisation_table(results, out_dirs, methods: list[str] | None = None) -> bool:
    """memorisation.{csv,md}: per student, how close its samples come to its distillation targets against how
    close real held-out images come to as many training images (advkd.metrics.memorisation). False when no
    student was scored so (a cost-only experiment), and nothing is written."""
    rows = []
    for path in ours((Path(results) / "metrics" / "memorisation").glob("*.json"), methods):
        m = read_json(path)
        rows.append({"method": m["method"], "share_below_threshold": m["share_below_threshold"]["mean"],
                     "share_std": m["share_below_threshold"]["std"], "median_ratio": m["median_ratio"]["mean"],
                     "median_ratio_std": m["median_ratio"]["std"], "seeds": len(m["per_seed"]),
                     "targets": m["targets"], "real_n": m["real_to_train"]["n"], "n": m["per_seed"][0]["n"],
                     "real_reference": m["real_to_train"]["reference_size"],
                     "real_share": m["real_to_train"]["share_below_threshold"], "percentile": m["percentile"]})
    if not rows:
        return False
    df = pd.DataFrame(rows)
    disp = pd.DataFrame({
        "method": df.method,
        "samples nearer than real's 1st pct": [f"{a:.1%} ± {b:.1%}" for a, b in zip(df.share_below_threshold,
                                                                                  df.share_std)],
        "median distance / real's": [f"{a:.2f} ± {b:.2f}" for a, b in zip(df.median_ratio, df.median_ratio_std)],
        "seeds": df.seeds, "targets": df.targets})
    notes = ("Distances in the judge's feature space. For each sample, the distance to the nearest of the "
             f"{df.targets.iloc[0]:,} teacher outputs it was distilled on (n = {df.n.iloc[0]} samples per seed); "
             f"for {df.real_n.iloc[0]} real images of the scored held-out half, the distance to the nearest of "
             f"{df.real_reference.iloc[0]:,} training images (as many as the targets, or the whole split if "
             "smaller). A sampler that copies its targets puts many samples nearer than real images come to "
             "training images 1% of the time (the first column; real images themselves: 1%) and has a median "
             "distance ratio well below 1; ± over seeds. A student shipped from another distillation set has no "
             "row here: the experiment that trained it compares it with its own set.")
    md = disp.to_markdown(index=False) + "\n\n" + notes + "\n"
    for d in out_dirs:
        _write_csv_md(Path(d), "memorisation", df, md)
    return True


def write_phase_quality_table(results, out_dirs, methods: list[str] | None = None) -> dict:
    """phase_quality.{csv,md}: every phase of each run report.phase_quality names (metrics/phase_quality/<run>/,
    advkd.students.advkd.phases); the runs' rows, for the figure ({} when no run was scored so)."""
    runs = load_runs([p.parent for p in ours((Path(results) / "metrics" / "phase_quality").glob(
        "*/phase_quality.json"), methods, lambda p: p.parent.name)])
    if not runs:
        return {}
    df = table(runs)
    shown = df[["run", "phase", "head_resolution", "steps", "flops", "fd_to_target", "student_fd", "student_recall",
                "student_classes", "teacher_state_fd"]].rename(columns={
        "head_resolution": "head", "flops": "training FLOPs (cumulative)", "fd_to_target": "FD to its targets",
        "student_fd": "FD", "student_recall": "recall", "student_classes": "classes",
        "teacher_state_fd": "targets' FD"})
    any_run = read_json(Path(results) / "metrics" / "phase_quality" / df.run.iloc[0] / "phase_quality.json")
    notes = (f"Head k of each run at the end of phase k (its snapshot), from the x_T of sample seed "
             f"{any_run['seed']} (n = {any_run['n']}), judge 1. FD to its targets = FD between head k's images and "
             "the teacher's states at head k's noise level (the first n runs of the distillation set, what the head "
             "was trained to match); FD, recall and classes: head k's images against the validation half's "
             "reference; targets' FD: the teacher's states against it (an intermediate head renders a noisy state, "
             "far from every clean image). Images below the data's resolution are upsampled bilinearly.")
    md = shown.to_markdown(index=False, floatfmt=".3g") + "\n\n" + notes + "\n"
    for d in out_dirs:
        _write_csv_md(Path(d), "phase_quality", df, md)
    return runs


def report(results, out, reference: str | None = None, cores: int | None = None, methods: list[str] | None = None,
           memorised_runs: list[str] | None = None, phase_runs: list[str] | None = None) -> dict:
    """Write tables (results/<exp>/tables and paper_figures/<exp>) and figures (paper_figures/<exp>); speed-ups
    are against the `reference` method (the config's report.reference); rows: `methods` (the experiment's), the
    memorisation table's `memorised_runs`, the phase table's `phase_runs` (each None: every result on disk).
    Everything is drawn into folders beside the two and moved in only once all of it is written: a report that
    fails (results of an older advkd, a missing file) leaves the committed tables and figures as they were, not
    half replaced."""
    results, out = Path(results), Path(out)
    targets = [results / "tables", out]
    staged = [d.parent / f".{d.name}.report-tmp" for d in targets]
    try:
        for d in staged:
            shutil.rmtree(d, ignore_errors=True)   # a report killed earlier left it
            d.mkdir(parents=True)
        summary = _report(results, *staged, reference, cores, methods, memorised_runs, phase_runs)
        summary["figures"] = [str(out / Path(f).name) for f in summary["figures"]]
        write_text(staged[1] / "index.json", json.dumps(summary, indent=2) + "\n")
        for src, dst in zip(staged, targets):
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted(src.iterdir()):
                shutil.move(f, dst / f.name)   # a rename where both lie on one file system (a copy where not)
    finally:
        for d in staged:
            shutil.rmtree(d, ignore_errors=True)
    return summary


def _report(results: Path, tables_dir: Path, out: Path, reference, cores, methods, memorised_runs,
            phase_runs) -> dict:
    """report()'s work, its tables into `tables_dir` and `out`, its figures into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(FIG_STYLE)
    df = collect(results, reference, methods)
    write_tables(df, [tables_dir, out])
    memorised_any = write_memorisation_table(results, [tables_dir, out], memorised_runs)
    phase_runs = write_phase_quality_table(results, [tables_dir, out], phase_runs)
    timing = read_json(results / "metrics" / "timing.json")
    write_speed_tables(sampling_speed(timing), [tables_dir, out], rounds=timing["sampling_speed"]["rounds"],
                       peer=timing.get("peer_timing"))
    students = dict(zip(df.method[df.kind == "student"], df.family[df.kind == "student"]))
    with_figure = lambda name: [m for m, f in students.items() if name in FAMILIES[f].figures]  # noqa: E731
    costed = df[df.kind != REAL].reset_index(drop=True)   # the noise-floor row has no cost
    runs = dict(zip(df.method, df.get("trained_as", df.method)))
    first_seed = {m: str(s).split(",")[0] for m, s in zip(df.method, df.seeds) if s}
    run_dirs = {runs[m]: Path(d) for m, d in zip(df.method, df.get("run_dir", [None] * len(df))) if isinstance(d, str)}
    run_dir = lambda run: run_dirs.get(run, results / "students" / run)   # noqa: E731
    draw = {   # every figure advkd.families.report_figures can name
        "fd_vs_flops": lambda: fig_fd_vs(df, out, "gflops_per_image", "GFLOPs per image (exact)", "fd_vs_flops",
                                         "pareto_flops"),
        "fd_vs_throughput": lambda: fig_fd_vs(df, out, "images_per_s", "images per second (measured, median)",
                                              "fd_vs_throughput", "pareto_throughput"),
        "fd_vs_nfe": lambda: fig_fd_vs(df, out, "nfe", "network evaluations per sample (NFE)", "fd_vs_nfe"),
        "params_flops": lambda: fig_cost(costed, out),
        "latency": lambda: fig_latency(costed, out),
        # each row's grid of its first scored seed (a folder may keep a seed the experiment no longer scores)
        "sample_grids": lambda: fig_grids(df.method.tolist(), out, "sample_grids", lambda m: (
            results / "samples" / m / f"seed{first_seed[m]}.png" if first_seed.get(m) else None)),
        # one panel and one loss curve per training run
        "student_panels": lambda: fig_grids(sorted({runs[m] for m in with_figure("student_panels")}), out,
                                            "student_panels", file_fn=lambda m: run_dir(m) / "panel.png", ncols=2),
        "training_curves": lambda: fig_training({runs[m]: (students[m], run_dir(runs[m]) / "loss.csv")
                                                 for m in with_figure("training_curves")}, out),
        "training_compute": lambda: fig_training_compute(df, out),
        "teacher_fidelity": lambda: fig_fidelity(df, out),
        "phase_quality": lambda: _save(phase_figure(phase_runs), out, "phase_quality"),
        "phase_grids": lambda: _save(phase_grids_figure({r: results / "metrics" / "phase_quality" / r
                                                         for r in phase_runs}), out, "phase_grids"),
        "phase_losses": lambda: _save(phase_losses_figure({r: run_dir(runs.get(r, r)) / "loss.csv"
                                                           for r in phase_runs}), out, "phase_losses"),
    }
    fidelity = "fidelity_relative_mean" in df and df.fidelity_relative_mean.notna().any()
    figs = [p for name in report_figures(set(students.values()), scored=df.fd_mean.notna().any(), fidelity=fidelity,
                                         phases=bool(phase_runs))
            for p in draw[name]()]
    profile = dag_profile(results, out, cores=cores)
    tables = ["summary.csv", "summary.md", "summary.tex", "knobs.csv", "knobs.md", "sampling_speed.csv",
              "sampling_speed.md", "dag_profile.csv", "dag_profile.md"] \
        + (["memorisation.csv", "memorisation.md"] if memorised_any else []) \
        + (["phase_quality.csv", "phase_quality.md"] if phase_runs else [])
    return {"rows": len(df), "figures": [str(p) for p in figs], "tables": tables,
            "dag_profile": profile}   # and dag_profile.png


def report_job(*, results: str, out: str, reference: str | None = None, config: str | None = None,
               methods: list[str] | None = None, memorised: list | None = None, phase_runs: list | None = None,
               cores: int | None = None) -> dict:
    """The report rule: tables and figures of results/<experiment> into paper_figures/<experiment>, one row per
    method of --methods, a memorisation row per student of --memorised and a phase table per run of --phase-runs
    (JSON lists), or all of them as the experiment YAML --config says, or (neither) per result on disk; speed-ups
    against --reference, or against --config's report.reference (one of the two, or neither: no speed-up column);
    --cores: the cores the run had, for its DAG profile (0 or none: the most jobs that ran at once)."""
    given = [k for k, v in {"reference": reference, "methods": methods, "memorised": memorised,
                            "phase_runs": phase_runs}.items() if v is not None]
    if config is not None and given:
        raise BadInputError(f"give --config (which says {', '.join(given)}) or those options, not both")
    if config is not None:
        cfg = load_config(config)
        reference, methods = cfg["report"]["reference"], list(cfg["methods"])
        memorised, phase_runs = memorised_of(cfg), cfg["report"]["phase_quality"]
    return report(results, out, reference, cores, methods, memorised, phase_runs)
