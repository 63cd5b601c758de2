"""Quality by phase of a phase-by-phase Adv-KD run (issue 34): each phase's snapshot (the weights the training loop
left at the end of the phase, advkd.students.training.save_snapshot) renders its head from the sample x_T of the
first sample seed, and the judge scores it beside the teacher's own state at that phase's checkpoint (the target
the head was trained to match) against the validation half, and against those states directly, so that a reader
sees where adversarial training follows the teacher and where it collapses; the losses through the phases show what
the critic did meanwhile. Reads files only; trains nothing.

In the DAG: `report.phase_quality: [<method>, ...]` (the phase_quality rule; the report draws the figure and the
table). Outside it, on runs of any folder:

    python -m advkd.students.advkd.phases --config experiments/published-budget.yaml \
        --run results/published-budget/students/advkd-published results/published-budget/students/advkd-control \
        --trajectories results/published-budget/trajectories/shard-*.safetensors \
        --evaluator results/published-budget/evaluator/evaluator.json \
        --reference results/published-budget/metrics/reference/evaluator/validation --out DIR

The experiment (--config) gives the metrics block, the n and the seed (its first sample seed) every phase is scored
at.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ... import rng
from ...config import load_config
from ...data import save_grid, to_uint8
from ...io import BadInputError, load_tensors, provenance, read_json, read_metadata, write_json, write_text
from ...metrics.quality import frechet_distance, gaussian_stats, load_judge, load_reference, score_features
from ..common import load_trajectories
from ..networks import resize_to
from .model import make_generator, render
from .networks import downsample_noise

log = logging.getLogger(__name__)


def snapshots(run_dir) -> list[Path]:
    """The run's end-of-phase snapshots. Once it has finished (train.json), only those its run wrote: a snapshot
    left by an earlier run with more phases in the same folder is no phase of this one."""
    found = sorted((Path(run_dir) / "segments").glob("segment-*.safetensors"))
    summary = Path(run_dir) / "train.json"
    if summary.exists():
        identity = json.loads(summary.read_text()).get("run_identity")
        stale = [p for p in found if json.loads(read_metadata(p)["identity"]) != identity]
        if stale:
            log.warning("skipping snapshots of another run: %s", ", ".join(p.name for p in stale))
        found = [p for p in found if p not in stale]
    if not found:
        raise BadInputError(f"{run_dir}/segments: no phase snapshots of this run; it has not finished a phase yet (or "
                            "was trained before snapshots were written: retrain it)")
    return found


def to_image_size(x, resolution: int):
    """A head's image at the data's resolution: bilinear upsampling (a low-resolution head has no finer detail to
    lose); the teacher's state goes through the same head resolution first, as its training target did."""
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


@torch.no_grad()
def phase_quality(run_dir, trajectories, evaluator_json, reference_stem, metrics: dict, out_dir, n: int, seed: int,
                  batch_size: int, device="cpu") -> list[dict]:
    """One row per finished phase: the student's head k and the teacher's checkpoint-k state, each scored by the
    judge (FD, recall, classes) against the reference half; plus the phase's cumulative generator steps, FLOPs and
    seconds. The student's x_T are sample seed `seed`'s (advkd.rng.sample_batch), the teacher's states the first n
    runs of the distillation set (the targets at that phase's noise level)."""
    embed, judge = load_judge(evaluator_json, device)
    ref = load_reference(reference_stem, judge["sha256"])
    traj = load_trajectories(trajectories)
    x_T = torch.cat([torch.randn((min(batch_size, n - b), *traj["x_T"].shape[1:]),
                                 generator=rng.sample_batch(seed, b // batch_size)) for b in range(0, n, batch_size)])
    rows, out_dir = [], Path(out_dir)
    for path in snapshots(run_dir):
        meta = read_metadata(path)
        spent, identity = json.loads(meta["spent"]), json.loads(meta["identity"])
        cfg = identity["student"]
        k = spent["segment"]
        gen = make_generator(cfg)
        gen.load_state_dict({key[4:]: v for key, v in load_tensors(path).items() if key.startswith("gen.")})
        gen.eval()
        z = downsample_noise(x_T, cfg["noise_resolution"])
        head = render(gen, z, k, (k,))[k]
        student = to_uint8(to_image_size(head, cfg["resolution"]))
        state = traj["states"][:n, cfg["checkpoints"][k]]
        teacher = to_uint8(to_image_size(resize_to(state, head.shape[-1]).clamp(-1, 1), cfg["resolution"]))
        row = {"phase": k, "head_resolution": int(head.shape[-1]), "checkpoint": cfg["checkpoints"][k], **spent}
        feats = {}
        for who, images in (("student", student), ("teacher_state", teacher)):
            f, logits = embed(images)
            feats[who] = f
            s = score_features(f, logits, ref, metrics, seed, judge.get("kind", "classifier"))
            cov = s.get("class_coverage") or {}
            row |= {f"{who}_fd": s["fd"], f"{who}_recall": s["recall"],
                    f"{who}_classes": cov.get("classes_covered"), f"{who}_top_class": cov.get("largest_share")}
        # An intermediate head renders a noisy state, far from every clean image: its distance to the reference says
        # little; its distance to the teacher's states at the same noise level (its target) says whether it follows
        # them.
        row["fd_to_target"] = frechet_distance(*gaussian_stats(feats["student"]),
                                               *gaussian_stats(feats["teacher_state"]))
        save_grid(out_dir / f"phase-{k:02d}.png", student[:64])
        save_grid(out_dir / f"target-{k:02d}.png", teacher[:64])
        rows.append(row)
    write_json(out_dir / "phase_quality.json", {
        "run": Path(run_dir).name, "n": n, "seed": seed, "reference": str(reference_stem),
        "judge_sha256": judge["sha256"], "rows": rows, "provenance": provenance(device=device)})
    return rows


def phase_quality_job(*, run: str, trajectories: list[str], evaluator: str, reference: str, metrics: dict, n: int,
                      seed: int, batch_size: int, device: torch.device, out: str) -> dict:
    """The phase_quality rule: every phase snapshot of the run folder --run scored (phase_quality.json and the
    phase's grids of head k and of its targets, in the folder --out)."""
    rows = phase_quality(run, trajectories, evaluator, reference, metrics, out, n, seed, batch_size, device)
    return {"phases": len(rows), "fd_to_target": [round(r["fd_to_target"], 2) for r in rows]}


def load_runs(folders) -> dict:
    """run name -> its rows, from phase_quality.json files' folders (the rule's outputs)."""
    return {Path(f).name: read_json(Path(f) / "phase_quality.json")["rows"] for f in folders}


def table(runs: dict) -> pd.DataFrame:
    return pd.DataFrame([{"run": name, **row} for name, rows in runs.items() for row in rows])


# (key, axis label, log scale): the figure's rows
PANELS = (("fd_to_target", "FD to the teacher's states\nat head k's noise level (log)", True),
          ("student_fd", "FD to the reference\n(validation half, log)", True),
          ("student_recall", "recall", False))


def figure(runs: dict):
    """Distance to the target, FD to the reference and recall by phase, against the phase index and the cumulative
    training FLOPs, one line per run and, for the reference FD and recall, a dashed one for the teacher's states
    (the targets). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 2, figsize=(8, 8), sharey="row")
    for name, rows in runs.items():
        phase = np.array([r["phase"] for r in rows])
        flops = np.array([r["flops"] for r in rows])
        for i, (key, _, _) in enumerate(PANELS):
            for col, x in enumerate((phase, flops)):
                axes[i, col].plot(x, [r[key] for r in rows], "o-", ms=3, label=name)
    teacher = next(iter(runs.values()))
    for i, (key, label, log) in enumerate(PANELS):
        if key.startswith("student_"):
            axes[i, 0].plot([r["phase"] for r in teacher], [r[key.replace("student_", "teacher_state_")]
                                                            for r in teacher], "k--", lw=0.8,
                            label="teacher's state (the target)")
        axes[i, 0].set_ylabel(label, fontsize=8)
        if log:
            axes[i, 0].set_yscale("log")
        axes[i, 1].set_xscale("log")
    axes[-1, 0].set_xlabel("phase (head k, trained on checkpoint k)")
    axes[-1, 1].set_xlabel("cumulative training FLOPs (log)")
    axes[1, 0].legend(fontsize=7, loc="best")
    fig.suptitle("quality by phase on the validation half (head k's image, upsampled to the data's resolution; "
                 "judge 1)", fontsize=8)
    return fig


def grids_figure(folders: dict):
    """Head k's images of each run by phase (the grids the phase_quality rule wrote: run name -> its folder) under
    the teacher's states at each phase's noise level (the targets, from the first run's folder; every run of an
    experiment learns from the same set): where a run follows its targets and where it falls away. Returns the
    matplotlib figure."""
    import matplotlib.pyplot as plt
    from PIL import Image

    folders = {name: Path(f) for name, f in folders.items()}
    phases = sorted({int(p.stem.split("-")[1]) for f in folders.values() for p in f.glob("phase-*.png")})
    first = next(iter(folders.values()))
    rows = [("teacher's states\n(the targets)", lambda k: first / f"target-{k:02d}.png")]
    rows += [(name, lambda k, f=f: f / f"phase-{k:02d}.png") for name, f in folders.items()]
    # constrained: the two-line title takes its own room above the phases' titles instead of covering them
    fig, axes = plt.subplots(len(rows), len(phases), figsize=(1.3 * len(phases), 1.3 * len(rows)), squeeze=False,
                             layout="constrained")
    for i, (label, path) in enumerate(rows):
        for j, k in enumerate(phases):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if path(k).exists():
                ax.imshow(Image.open(path(k)), cmap="gray")
            if i == 0:
                ax.set_title(f"phase {k}", fontsize=7)
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("head k at the end of phase k (the first sample seed's x_T, 64 images, upsampled to the data's "
                 "resolution)\nunder the teacher's states at its noise level", fontsize=8)
    return fig


# (loss.csv columns, axis label, log scale): the losses figure's rows; the generator's and the critic's as the
# training loop logs them per epoch (means over the epoch's steps)
LOSS_PANELS = ((("g_adv", "reg"), "generator: adversarial and\nregression loss (log)", True),
               (("critic_real", "critic_fake"), "critic's mean logit on the\ntargets and on the generator's", False),
               (("gp",), "critic's gradient\npenalty term (log)", True))


def losses_figure(loss_csvs: dict):
    """Each run's losses per epoch through its phases (run name -> its loss.csv), the phases' boundaries marked: what
    the critic did where a head stopped following its targets. ln 2 is the adversarial loss of a generator whose
    critic cannot tell its images from the targets (the binary cross-entropy at a logit of 0). A loss that is
    0 in every epoch (a run without a critic) is not drawn. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(LOSS_PANELS), 1, figsize=(8, 7), sharex=True)
    bounds = None
    for name, path in loss_csvs.items():
        c = pd.read_csv(path)
        epoch = np.arange(len(c))
        bounds = bounds if bounds is not None else epoch[np.r_[False, np.diff(c.phase.to_numpy()) != 0]]
        for ax, (cols, _, _) in zip(axes, LOSS_PANELS):
            for col in cols:
                if (c[col] != 0).any():
                    ax.plot(epoch, c[col], lw=0.8, label=f"{name}: {col}")
    for ax, (_, label, log) in zip(axes, LOSS_PANELS):
        ax.set_ylabel(label, fontsize=8)
        if ax.lines:   # the losses drawn, before the phase lines
            ax.set_yscale("log" if log else "linear")
            ax.legend(fontsize=6, loc="best")
        for b in bounds if bounds is not None else []:
            ax.axvline(b - 0.5, color="0.85", lw=0.6, zorder=0)
    axes[0].axhline(np.log(2), color="k", ls="--", lw=0.6)
    axes[-1].set_xlabel("epoch (all phases in order; grey lines: a phase begins)")
    fig.suptitle("losses per epoch through the phases (dashed: ln 2, a critic that cannot tell)", fontsize=8)
    return fig


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the experiment YAML the runs were trained in")
    p.add_argument("--run", required=True, nargs="+", help="student folders with segments/ snapshots")
    p.add_argument("--trajectories", required=True, nargs="+")
    p.add_argument("--evaluator", required=True)
    p.add_argument("--reference", required=True, help="the judge's reference statistics stem (validation half)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    cfg = load_config(a.config)
    sm = cfg["sampling"]
    runs = {Path(r).name: phase_quality(r, a.trajectories, a.evaluator, a.reference, cfg["metrics"],
                                        Path(a.out) / Path(r).name, sm["n"], sm["seeds"][0], sm["batch_size"])
            for r in a.run}
    write_text(Path(a.out) / "phase_quality.csv", table(runs).to_csv(index=False))
    import matplotlib

    matplotlib.use("Agg")
    figure(runs).savefig(Path(a.out) / "phase_quality.png", bbox_inches="tight", dpi=120)
    # a run still training has its loss.csv only once an epoch of this invocation has ended
    losses = {Path(r).name: Path(r) / "loss.csv" for r in a.run if (Path(r) / "loss.csv").exists()}
    if losses:
        losses_figure(losses).savefig(Path(a.out) / "phase_losses.png", bbox_inches="tight", dpi=120)
    print(Path(a.out) / "phase_quality.png")


if __name__ == "__main__":
    main()
