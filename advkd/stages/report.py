"""Tables and figures from finished results: reads JSON/PNG/CSV files only, so it never retrains anything.

`advkd report --results results/<exp> --out paper_figures/<exp>` regenerates every table and figure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..families import FAMILIES, params_of
from ..io import BadInputError, atomic_path, read_json, write_text
from ..metrics.quality import aggregate_seeds

QUALITY = ("fd", "kid", "inception_score", "precision", "recall", "classes_covered", "largest_share")
FIG_STYLE = {"figure.dpi": 120, "savefig.bbox": "tight", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}


def collect(results, reference: str | None = None) -> pd.DataFrame:
    """One row per method: cost JSON + per-seed quality aggregated to mean/std + how it was measured; speed-up
    against the `reference` method's latency (the config's report.reference)."""
    results = Path(results)
    agg = aggregate_seeds(sorted((results / "metrics" / "quality").glob("*/seed*.json")))
    rows = []
    for cost_path in sorted((results / "metrics" / "cost").glob("*.json")):
        c = read_json(cost_path)
        if "method" not in c.get("provenance", {}):
            raise BadInputError(f"{cost_path}: written by an older version of advkd (its provenance has no method "
                                "block); results are reproducible: rerun its cost rule (delete the file, then "
                                "snakemake)")
        q = agg.get(c["method"], {})
        row = {"method": c["method"], "family": c["family"], "kind": c["kind"], "nfe": c["nfe"],
               "params_inference": c["parameters_inference"], "params_all": c["parameters_all"],
               "gflops_per_image": c["flops_per_image"] / 1e9,
               "latency_ms_batch1": 1e3 * c["latency_s_per_image_batch1"],
               "latency_extrapolated": c["latency_extrapolated"], "images_per_s": c["images_per_s"],
               "device": c["device"], "threads": c["threads"],
               "n": min(q["n"]) if q else 0, "seeds": ",".join(map(str, q.get("seeds", []))),
               "n_seeds": q.get("n_seeds", 0), "params": params_of(c["provenance"]["method"]).as_dict()}
        for m in QUALITY:
            row[f"{m}_mean"] = q[m]["mean"] if m in q else math.nan
            row[f"{m}_std"] = q[m]["std"] if m in q else math.nan
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no cost results under {results}/metrics/cost; run the DAG first")
    df = pd.DataFrame(rows)
    ref = df.loc[df.method == reference, "latency_ms_batch1"]
    if reference is not None and not len(ref):
        raise FileNotFoundError(f"report.reference: no cost result for method {reference!r} under "
                                f"{results}/metrics/cost")
    df["speedup"] = ref.iloc[0] / df.latency_ms_batch1 if len(ref) else math.nan
    df.attrs["reference"] = reference
    # FD is biased upward at small n: only rows scored on the largest n are compared by FD; KID is unbiased in n.
    df["fd_comparable"] = df.n == df.n.max()
    df["pareto"] = pareto_front(df)
    order = {"sampler": 0, "student": 1}
    return df.sort_values(by=["kind", "family", "nfe", "method"], key=lambda s: s.map(order).fillna(s)
                          if s.name == "kind" else s).reset_index(drop=True)


def pareto_front(df: pd.DataFrame) -> pd.Series:
    """True where no other FD-comparable row is at least as good in both FD and latency and better in one."""
    ok = df.fd_comparable & df.fd_mean.notna()
    out = pd.Series(False, index=df.index)
    for i in df.index[ok]:
        fd, lat = df.at[i, "fd_mean"], df.at[i, "latency_ms_batch1"]
        dominated = ((df.fd_mean[ok] <= fd) & (df.latency_ms_batch1[ok] <= lat)
                     & ((df.fd_mean[ok] < fd) | (df.latency_ms_batch1[ok] < lat))).any()
        out[i] = not dominated
    return out


def _pm(mean, std, digits=2):
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std and not math.isnan(std) else f"{mean:.{digits}f}"


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "method": df.method + np.where(df.pareto, " *", ""),
        "family": df.family, "NFE": df.nfe,
        "params (M)": (df.params_inference / 1e6).map("{:.2f}".format),
        "GFLOPs/img": df.gflops_per_image.map("{:.2f}".format),
        "latency b=1 (ms)": df.latency_ms_batch1.map("{:.1f}".format) + np.where(df.latency_extrapolated, "†", ""),
        # two significant digits below 1 img/s, so paper-scale samplers on a CPU do not print as 0
        "img/s": df.images_per_s.map(lambda v: f"{v:.1f}" if v >= 1 else f"{v:.2g}"),
        "speed-up": df.speedup.map("{:.0f}x".format),
        "FD": [_pm(m, s) + ("" if c else "‡") for m, s, c in zip(df.fd_mean, df.fd_std, df.fd_comparable)],
        "KID x1e3": [_pm(1e3 * m, 1e3 * s) for m, s in zip(df.kid_mean, df.kid_std)],
        "IS": [_pm(m, s) for m, s in zip(df.inception_score_mean, df.inception_score_std)],
        "precision": df.precision_mean.map("{:.3f}".format),
        "recall": df.recall_mean.map("{:.3f}".format),
        "classes": df.classes_covered_mean.map(lambda v: f"{v:.1f}".removesuffix(".0")),  # 9.5 = 9 and 10
        "top class": df.largest_share_mean.map("{:.0%}".format),
        "n": df.n, "seeds": df.seeds,
    })
    if df.fd_mean.isna().all():  # cost-only experiment: no quality columns to show
        out = out.drop(columns=["FD", "KID x1e3", "IS", "precision", "recall", "classes", "top class", "n", "seeds"])
        out["method"] = df.method
    return out


def footnotes(df: pd.DataFrame) -> str:
    dev = "; ".join(sorted(set(f"{d}" for d in df.device)))
    ref = df.attrs.get("reference") or "(no report.reference set)"
    if df.fd_mean.isna().all():
        return (f"Measured on {dev}, fp32, random weights (cost depends only on architecture and schedule). "
                "Latency = median after warm-up per image at batch 1; † = one network call timed, x NFE. "
                f"Speed-up = latency of {ref} / latency of the row, measured by the cost rule one method after "
                "another on the same machine. FLOPs from torch.utils.flop_counter (multiply-add = 2).")
    return (f"Measured on {dev}. n = samples per seed scored against the judge's held-out reference; ± is the "
            "standard deviation over seeds. * = Pareto-optimal in (FD, latency) among rows with comparable FD. "
            "† = latency per network call x NFE (a full sample at batch 1 was too slow to time directly). "
            "‡ = scored on fewer samples than the other rows: FD is biased upward at small n, compare this row by "
            f"KID (unbiased in n). Speed-up = latency of {ref} / latency of the row, both at batch 1, measured "
            "by the cost rule one method after another on the same machine. classes = judge classes with at least "
            "1% of the samples and top class = the largest share, both means over the seeds (mode collapse shows "
            "as few classes / a large share).")


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


KNOB_RESULTS = ("NFE", "params (M)", "latency b=1 (ms)", "FD", "KID x1e3", "recall", "classes", "top class", "n")


def write_tables(df: pd.DataFrame, out_dirs) -> None:
    disp = display_table(df)
    notes = footnotes(df)
    md = disp.to_markdown(index=False) + "\n\n" + notes + "\n"
    tex = disp.to_latex(index=False, escape=True, caption=notes.replace("±", r"$\pm$"), label="tab:advkd")
    knobs = knob_table(df)
    knobs_md = (knobs.to_markdown(index=False) + "\n\nOne block of rows per method family with several methods: the "
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


def _palette(df):
    import seaborn as sns

    fams = sorted(df.family.unique())
    return dict(zip(fams, sns.color_palette("tab10", len(fams))))


def fig_fd_vs(df, out, x, xlabel, name):
    import matplotlib.pyplot as plt

    pal = _palette(df)
    fig, ax = plt.subplots(figsize=(6, 4))
    for _, r in df.iterrows():
        if math.isnan(r.fd_mean):
            continue
        ax.errorbar(r[x], r.fd_mean, yerr=r.fd_std if r.n_seeds > 1 else None, fmt="o" if r.fd_comparable else "o",
                    mfc=pal[r.family] if r.fd_comparable else "white", mec=pal[r.family], color=pal[r.family],
                    label=r.family, capsize=2)
        ax.annotate(r.method, (r[x], r.fd_mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if x == "latency_ms_batch1":
        front = df[df.pareto].sort_values(x)
        ax.plot(front[x], front.fd_mean, "k--", lw=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Fréchet distance (judge features)")
    h, lab = ax.get_legend_handles_labels()
    uniq = dict(zip(lab, h))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    ax.set_title("hollow = fewer samples (FD not comparable)", fontsize=7)
    return _save(fig, out, name)


def fig_cost(df, out):
    import matplotlib.pyplot as plt

    pal = _palette(df)
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

    pal = _palette(df)
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
    ax.set_xlabel(f"seconds per image at batch 1 (log; hatched = per-call x NFE) on {df.device.iloc[0]}")
    ax.invert_yaxis()
    return _save(fig, out, "latency")


def fig_grids(results, methods, out, name, title_fn=lambda m: m, file_fn=None, ncols=4):
    import matplotlib.pyplot as plt
    from PIL import Image

    file_fn = file_fn or (lambda m: next(iter(sorted((Path(results) / "samples" / m).glob("seed*.png"))), None))
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


def fig_training(results, methods: dict, out):
    """Each student's training loss per epoch: the first of its family's loss columns (methods: name -> family)."""
    import matplotlib.pyplot as plt

    curves = [(m, f, Path(results) / "students" / m / "loss.csv") for m, f in methods.items()]
    curves = [(m, f, p) for m, f, p in curves if p.exists()]
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m, f, p in curves:
        col = FAMILIES[f].loss_columns[0]
        c = pd.read_csv(p)
        ax.plot(np.arange(1, len(c) + 1), c[col], label=f"{m} ({col})", lw=1)
    ax.set_title("training loss per epoch (each family's first loss column)")
    ax.set_xlabel("epoch (all segments in order)")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    return _save(fig, out, "training_curves")


SPEED_COLUMNS = ["method", "kind", "seed", "n", "batch_size", "compiled", "nfe", "seconds", "images_per_s",
                 "achieved_gflops", "matmul_peak_gflops", "fraction_of_peak", "fraction_of_best_peak", "device"]


def sampling_speed(results, kinds: dict) -> pd.DataFrame:
    """One row per sampling job (a method and seed, its shards merged) from results/<exp>/samples/*/seed*.json."""
    rows = []
    for path in sorted((Path(results) / "samples").glob("*/seed*.json")):
        s = read_json(path)
        rows.append({"method": s["method"], "kind": kinds.get(s["method"], ""), "seed": s["seed"], "n": s["n"],
                     # a student is never compiled (sampling.compile is for the teacher's samplers)
                     "batch_size": s["batch_size"], "compiled": bool(s.get("compiled", False)), "nfe": s["nfe"],
                     "seconds": s["seconds"], "images_per_s": s["images_per_s"],
                     "achieved_gflops": s["achieved_gflops"], "matmul_peak_gflops": s["matmul_peak_gflops"],
                     "fraction_of_peak": s["fraction_of_peak"], "fraction_of_best_peak": s["fraction_of_best_peak"],
                     "device": s["provenance"]["device"]})
    return pd.DataFrame(rows, columns=SPEED_COLUMNS)


def write_speed_tables(speed: pd.DataFrame, out_dirs, target: float = 0.8) -> None:
    """sampling_speed.{csv,md}; the .md's note counts the teacher samplers at or above `target` of the peak."""
    teacher = speed[speed.kind == "sampler"]
    frac, best = teacher.fraction_of_peak, teacher.fraction_of_best_peak
    summary = (f"Teacher samplers: median fraction of peak {frac.median():.3f} over {len(frac)} jobs "
               f"(range {frac.min():.3f}-{frac.max():.3f}; {(frac >= target).sum()} of {len(frac)} at {target} or "
               f"more); of the best peak {best.median():.3f} (range {best.min():.3f}-{best.max():.3f}). "
               if len(frac) else "No teacher sampling jobs in this experiment. ")
    notes = (summary + "One row per sampling job (one method and seed; shards merged). achieved GFLOP/s = the "
             "network's FLOPs per image (torch.utils.flop_counter: convolutions and matmuls, multiply-add = 2) x "
             "NFE x n / sampling seconds (compilation before the clock). peak = a 2048x2048 fp32 matmul (the "
             "fastest of 5 calls) timed in the same process before, after and at up to 5 points between the "
             "sampling batches (outside the clock); fraction of peak uses the median of those, the speed the shared "
             "machine offered while the job ran, fraction of best peak the fastest of them (the median over shards "
             "for a sharded run). Students are single calls of small networks: their fraction says little.")
    fmt = {"seconds": "{:.1f}", "images_per_s": "{:.1f}", "achieved_gflops": "{:.1f}",
           "matmul_peak_gflops": "{:.1f}", "fraction_of_peak": "{:.3f}", "fraction_of_best_peak": "{:.3f}"}
    disp = speed.drop(columns=["kind"]).assign(**{c: speed[c].map(f.format) for c, f in fmt.items()}).rename(
        columns={"batch_size": "batch", "images_per_s": "img/s", "achieved_gflops": "GFLOP/s",
                 "matmul_peak_gflops": "peak GFLOP/s", "fraction_of_peak": "fraction of peak",
                 "fraction_of_best_peak": "of best peak"})
    md = disp.to_markdown(index=False) + "\n\n" + notes + "\n"
    for d in out_dirs:
        _write_csv_md(Path(d), "sampling_speed", speed, md)


def report(results, out, reference: str | None = None) -> dict:
    """Write tables (results/<exp>/tables and paper_figures/<exp>) and figures (paper_figures/<exp>); speed-ups
    are against the `reference` method (the config's report.reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(FIG_STYLE)
    results, out = Path(results), Path(out)
    df = collect(results, reference)
    write_tables(df, [results / "tables", out])
    write_speed_tables(sampling_speed(results, dict(zip(df.method, df.kind))), [results / "tables", out])
    students = dict(zip(df.method[df.kind == "student"], df.family[df.kind == "student"]))
    with_figure = lambda name: [m for m, f in students.items() if name in FAMILIES[f].figures]  # noqa: E731
    figs = []
    if df.fd_mean.notna().any():
        figs += fig_fd_vs(df, out, "latency_ms_batch1", "latency per image at batch 1 (ms, log)", "fd_vs_latency")
        figs += fig_fd_vs(df, out, "nfe", "network evaluations per sample (NFE, log)", "fd_vs_nfe")
    figs += fig_cost(df, out)
    figs += fig_latency(df, out)
    figs += fig_grids(results, df.method.tolist(), out, "sample_grids")
    if with_figure("student_panels"):
        figs += fig_grids(results, with_figure("student_panels"), out, "student_panels",
                          file_fn=lambda m: results / "students" / m / "panel.png", ncols=2)
    figs += fig_training(results, {m: students[m] for m in with_figure("training_curves")}, out)
    tables = ["summary.csv", "summary.md", "summary.tex", "knobs.csv", "knobs.md", "sampling_speed.csv",
              "sampling_speed.md"]
    summary = {"rows": len(df), "figures": [str(p) for p in figs], "tables": tables}
    write_text(out / "index.json", json.dumps(summary, indent=2) + "\n")
    return summary
