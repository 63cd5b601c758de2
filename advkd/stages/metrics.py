"""The scoring stages of workflow/rules/metrics.smk: the fixed judge (rule evaluator) and the second one, their
statistics on the held-out split (reference_stats), the quality of one sample set (quality), how close a student's
samples come to its training targets (memorisation) and the judge's sanity table (sanity). What they compute lives
in advkd.metrics.{evaluator,quality,memorisation,sanity}; the cost and timing stages are advkd.stages.cost."""

from __future__ import annotations

import csv
import io
import shutil
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .. import jobclock
from ..data import load_split, to_uint8
from ..io import (
    REPO_ROOT,
    BadInputError,
    atomic_path,
    load_images,
    provenance,
    save_tensors,
    sha256_file,
    write_json,
    write_text,
)
from ..metrics.autoencoder import load_autoencoder, train_autoencoder
from ..metrics.evaluator import CARD, WEIGHTS, condition_number, heldout_report, load_evaluator, train_evaluator
from ..metrics.inception import resolve_inception_weights
from ..metrics.memorisation import copy_statistics
from ..metrics.quality import (
    class_coverage,
    fd_infinity,
    frechet_distance,
    gaussian_stats,
    inception_score,
    load_judge,
    load_reference,
    score_features,
    teacher_fidelity,
)
from ..metrics.sanity import ordering_checks, sanity_table
from ..rng import numpy_rng
from ..students.common import load_trajectories


def make_evaluator(ev_cfg: dict, data_cfg: dict, out_dir, train_npz=None, heldout_npz=None, seed=0, device="cpu",
                   command="", border: int = 0) -> dict:
    """The `evaluator` rule: install the shipped judge, train one, or point at local Inception weights. `border`:
    the data's zero-padding in pixels (data.zero_border); the judge scores inside it."""
    out_dir = Path(out_dir)
    src = ev_cfg["source"]
    heldout = _load_labelled(heldout_npz, data_cfg, "heldout") if src != "inception" else None
    if src == "shipped":
        shipped = Path(ev_cfg["shipped"])
        shipped = shipped if shipped.is_dir() else REPO_ROOT / shipped
        model, card = load_evaluator(shipped)
        with atomic_path(out_dir / WEIGHTS) as tmp:
            shutil.copyfile(shipped / card["weights"], tmp)
        card = card | {"source": "shipped", "shipped_from": str(shipped),
                       "this_run": heldout_report(model, *heldout, device="cpu") | {"data": data_cfg}}
    elif src == "train":
        images, labels = _load_labelled(train_npz, data_cfg, "train")
        card = train_evaluator(images, labels, *heldout, out_dir, epochs=ev_cfg["epochs"],
                               batch_size=ev_cfg["batch_size"], lr=ev_cfg["lr"], seed=seed, device=device,
                               command=command, data_card=data_cfg)
        card["source"] = "train"
    else:
        path = resolve_inception_weights(ev_cfg.get("inception_weights"))
        card = {"source": "inception", "weights": str(path), "sha256": sha256_file(path),
                "feature_dim": 2048, "feature_layer": "pool3 (clean-fid's TorchScript Inception, mode clean)"}
    card["kind"] = "inception" if src == "inception" else "classifier"
    card["border"] = border   # load_judge scores inside it (the region the data defines)
    write_json(out_dir / CARD, card)
    return card


def second_judge(cfg: dict, data_cfg: dict, out_dir, train_npz=None, heldout_npz=None, seed=0, device="cpu",
                 command="", border: int = 0) -> dict:
    """The `second_judge` rule: install the shipped autoencoder judge or train one on the training split
    (advkd.metrics.autoencoder); its card, like the first judge's, records the data's zero `border`."""
    out_dir = Path(out_dir)
    heldout = load_images(heldout_npz) if heldout_npz else load_split(data_cfg, "heldout")["images"]
    if cfg["source"] == "shipped":
        shipped = Path(cfg["shipped"])
        shipped = shipped if shipped.is_dir() else REPO_ROOT / shipped
        _, card = load_autoencoder(shipped)
        with atomic_path(out_dir / card["weights"]) as tmp:
            shutil.copyfile(shipped / card["weights"], tmp)
        card = card | {"source": "shipped", "shipped_from": str(shipped)}
    else:
        train = load_images(train_npz) if train_npz else load_split(data_cfg, "train")["images"]
        card = train_autoencoder(train, heldout, out_dir, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                                 lr=cfg["lr"], seed=seed, device=device, command=command, data_card=data_cfg)
        card["source"] = "train"
    card["border"] = border
    write_json(out_dir / CARD, card)
    return card


def _load_labelled(npz, data_cfg, split):
    if npz is None:
        d = load_split(data_cfg, split)
        images, labels = d["images"], d["labels"]
    else:
        with np.load(npz, allow_pickle=False) as z:
            images, labels = z["images"], (z["labels"] if "labels" in z else None)
    if labels is None:
        raise BadInputError(f"{npz or data_cfg['dataset']}: the {split} split has no class labels, which a "
                            "classifier judge needs; use evaluator.source: inception")
    return images, labels


def reference_stats(evaluator_json, heldout_npz, metrics: dict, out_stem, device="cpu") -> dict:
    """The `reference_stats` rule: judge features of the held-out split -> STEM.safetensors + STEM.json."""
    embed, judge = load_judge(evaluator_json, device)
    images = load_images(heldout_npz)
    jobclock.begin("scoring")
    feats, logits = embed(images)
    mu, sigma = gaussian_stats(feats)
    out_stem = Path(out_stem)
    tensors = {"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma),
               "features": torch.from_numpy(feats.astype(np.float32))}
    if logits is not None:
        tensors["logits"] = torch.from_numpy(logits.astype(np.float32))
    save_tensors(out_stem.with_suffix(".safetensors"), tensors, metadata={"judge_sha256": judge["sha256"]})
    card = {"n": int(len(feats)), "feature_dim": int(feats.shape[1]),
            "feature_condition_number": condition_number(feats),
            "judge_sha256": judge["sha256"], "judge_kind": judge.get("kind", "classifier"),
            "source": str(heldout_npz),
            "heldout_inception_score": inception_score(logits),
            "heldout_class_coverage": class_coverage(logits, metrics["coverage_threshold"])
            if logits is not None and judge.get("kind") != "inception" else None,
            "provenance": provenance(cfg=metrics, device=device)}
    write_json(out_stem.with_suffix(".json"), card)
    return card


# What depends on the set's size n: left empty (null) for a method scored by KID alone (scored_by: kid).
N_DEPENDENT = ("fd", "fd_judge2", "fd_infinity", "fd_infinity_judge2", "inception_score",
               "inception_score_std_splits", "precision", "recall", "density", "coverage", "class_coverage")


def quality(method: str, samples_npz, seed: int, evaluator_json, reference_stem, metrics: dict, out,
            device="cpu", cfg=None, scored_by: str = "all", judge2_json=None, judge2_reference=None,
            teacher_npz=None) -> dict:
    """Score one method's sample set for one seed, to one JSON (the quality rule runs it for each seed). A method that
    cannot afford the matched n (scored_by: kid) keeps KID only: its n-dependent numbers are written as null so
    that no table or reader compares them with the matched-n rows. teacher_npz: the teacher sampler's samples of
    the same seed (the distillation set's sampler, from the same x_T), for the teacher-fidelity numbers."""
    embed, judge = load_judge(evaluator_json, device)
    ref = load_reference(reference_stem, judge["sha256"])
    images = load_images(samples_npz)
    teacher = load_images(teacher_npz)[:len(images)] if teacher_npz is not None else None   # a prefix: same x_T
    jobclock.begin("scoring")
    feats, logits = embed(images)
    scores = score_features(feats, logits, ref, metrics, seed, judge.get("kind", "classifier"))
    scores |= fd_infinity(feats, ref["mu"], ref["sigma"], numpy_rng("metric-subsets", "fd-infinity", seed))
    if teacher is not None:
        scores |= teacher_fidelity(images, teacher, feats, embed(teacher)[0],
                                   numpy_rng("metric-subsets", "fidelity", seed))
        scores["teacher_samples"] = str(teacher_npz)
    if judge2_json is not None:   # the second, independent judge: FD in its feature space
        embed2, judge2 = load_judge(judge2_json, device)
        ref2 = load_reference(judge2_reference, judge2["sha256"])
        feats2 = embed2(images)[0]
        # the same subsets as judge 1's (one purpose), drawn again for the second judge's features
        inf2 = fd_infinity(feats2, ref2["mu"], ref2["sigma"], numpy_rng("metric-subsets", "fd-infinity", seed))
        scores |= {"fd_judge2": frechet_distance(*gaussian_stats(feats2), ref2["mu"], ref2["sigma"]),
                   "fd_infinity_judge2": inf2["fd_infinity"], "judge2_sha256": judge2["sha256"]}
        if teacher is not None:
            scores |= teacher_fidelity(images, teacher, feats2, embed2(teacher)[0],
                                       numpy_rng("metric-subsets", "fidelity", seed), suffix="_judge2")
    if scored_by == "kid":
        scores |= dict.fromkeys(N_DEPENDENT)
    row = {"method": method, "samples": str(samples_npz), "judge_sha256": judge["sha256"],
           "judge_kind": judge.get("kind", "classifier"), "scored_by": scored_by,
           "reference": Path(ref["card"]["source"]).stem, **scores,   # the held-out half: test or validation
           "provenance": provenance(cfg=cfg if cfg is not None else metrics, device=device)}
    write_json(out, row)
    return row


def memorisation(method: str, samples: dict, trajectories, train_npz, real_npz, evaluator_json, seed: int, out,
                 device="cpu") -> dict:
    """The `memorisation` rule: how close a student's samples (seed -> .npz) come to the teacher outputs it was
    distilled on (the x_0 of every trajectory) against how close real held-out images (`real_npz`) come to as many
    training images (advkd.metrics.memorisation)."""
    embed, judge = load_judge(evaluator_json, device)
    targets = to_uint8(load_trajectories(trajectories)["states"][:, -1])
    train, real = load_images(train_npz), load_images(real_npz)
    rng = numpy_rng("metric-subsets", "memorisation", seed)
    train = train[np.sort(rng.choice(len(train), min(len(targets), len(train)), replace=False))]
    images = {s: load_images(p) for s, p in samples.items()}
    n = min(len(real), max(map(len, images.values())))
    real = real[np.sort(rng.choice(len(real), n, replace=False))]
    jobclock.begin("scoring")
    feats = {s: embed(x)[0] for s, x in images.items()}
    row = {"method": method, "judge_sha256": judge["sha256"],
           **copy_statistics(feats, embed(targets)[0], embed(real)[0], embed(train)[0]),
           "provenance": provenance(device=device)}
    write_json(out, row)
    return row


def sanity(evaluator_json, reference_stem, images_npz, metrics: dict, seed: int, out_stem,
           device="cpu") -> list[dict]:
    """The `sanity` rule: STEM.json (rows, checks, provenance) and STEM.csv (the rows)."""

    embed, judge = load_judge(evaluator_json, device)
    ref = load_reference(reference_stem, judge["sha256"])
    images = load_images(images_npz)
    with np.load(images_npz, allow_pickle=False) as z:
        labels = z["labels"] if "labels" in z else None
    n = min(len(images), metrics["sanity_n"])
    idx = np.sort(numpy_rng("metric-subsets", "sanity", seed).choice(len(images), n, replace=False))
    jobclock.begin("scoring")
    rows = sanity_table(embed, ref, images[idx], None if labels is None else labels[idx], metrics, seed,
                        judge.get("kind", "classifier"))
    checks = ordering_checks(rows) + ordering_checks(rows, "kid")
    out_stem = Path(out_stem)
    write_json(out_stem.with_suffix(".json"), {
        "rows": rows, "checks": checks, "all_hold": all(c["holds"] for c in checks), "real_source": str(images_npz),
        "reference_n": ref["card"]["n"], "judge_sha256": judge["sha256"],
        "provenance": provenance(cfg=metrics, device=device)})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(out_stem.with_suffix(".csv"), buf.getvalue())
    return rows


# The rules' jobs (advkd.cli): each calls one stage function above with the arguments its rule passes.

def _command() -> str:
    """The command line of this job, kept in a judge's card."""
    return " ".join(["advkd", *sys.argv[1:]])


def evaluator_job(*, evaluator: dict, data: dict, seed: int, border: int, device: torch.device, out: str,
                  train: str | None = None, heldout: str | None = None) -> dict:
    """The evaluator rule: the judge of the evaluator: block (JSON) into the folder --out (evaluator.json, and
    its weights); --train and --heldout: prepared splits with labels (else read from the data: block)."""
    card = make_evaluator(evaluator, data, out, train, heldout, seed, device, command=_command(), border=border)
    return {k: card.get(k) for k in ("source", "sha256", "heldout_accuracy", "feature_condition_number")}


def second_judge_job(*, judge: dict, data: dict, seed: int, border: int, device: torch.device, out: str,
                     train: str | None = None, heldout: str | None = None) -> dict:
    """The second_judge rule: the autoencoder judge of the evaluator.second: block (JSON) into the folder --out."""
    card = second_judge(judge, data, out, train, heldout, seed, device, command=_command(), border=border)
    return {k: card.get(k) for k in ("source", "sha256", "heldout_mse", "feature_condition_number")}


def reference_stats_job(*, evaluator: str, heldout: str, metrics: dict, device: torch.device, out: str) -> dict:
    """The reference_stats rule: the judge's (evaluator.json) features of one held-out half to OUT.safetensors and
    OUT.json."""
    card = reference_stats(evaluator, heldout, metrics, out, device)
    return {k: card[k] for k in ("n", "feature_dim", "feature_condition_number")}


def _by_seed(pairs: list[str]) -> dict[str, str]:
    """SEED=PATH arguments (a rule's per-seed files) as {seed: path}."""
    return dict(p.split("=", 1) for p in pairs)


def quality_job(*, method: str, samples: list[str], evaluator: str, reference: str, metrics: dict,
                scored_by: Literal["all", "kid"], device: torch.device, out: str, cfg: dict | None = None,
                judge2: str | None = None, judge2_reference: str | None = None,
                teacher_samples: list[str] | None = None) -> list[dict]:
    """The quality rule: each of a method's sample sets (SEED=samples.npz, one per seed) scored against the
    reference stats stem, to OUT/seed<k>.json; --judge2 and --judge2-reference add FD under the second judge,
    --teacher-samples (SEED=samples.npz) the teacher fidelity; --cfg: the config slice hashed into the provenance.
    One job for all of a method's seeds (a job's start-up is most of one seed's scoring); each seed's numbers
    are those it gets alone (its subsets draw from the seed)."""
    runs, teachers = _by_seed(samples), _by_seed(teacher_samples or [])
    rows = []
    for seed, npz in runs.items():
        row = quality(method, npz, int(seed), evaluator, reference, metrics, Path(out) / f"seed{seed}.json", device,
                      cfg=cfg, scored_by=scored_by, judge2_json=judge2, judge2_reference=judge2_reference,
                      teacher_npz=teachers.get(seed))
        rows.append({k: row[k] for k in ("method", "seed", "n", "fd", "kid", "inception_score")})
    return rows


def memorisation_job(*, method: str, samples: list[str], trajectories: list[str], train: str, real: str,
                     evaluator: str, seed: int, device: torch.device, out: str) -> dict:
    """The memorisation rule: a student's samples (SEED=samples.npz, one per seed) against its distillation
    targets (the shards' x_0), real held-out images (--real) against the training split."""
    row = memorisation(method, _by_seed(samples), trajectories, train, real, evaluator, seed,
                       out, device)
    return {"method": method, "share_below_threshold": row["share_below_threshold"]}


def sanity_job(*, evaluator: str, reference: str, images: str, metrics: dict, seed: int, device: torch.device,
               out: str) -> list[dict]:
    """The sanity rule: real images not in the reference (--images) and degraded copies of them, scored; OUT.json
    and OUT.csv."""
    return [{"set": r["set"], "fd": r["fd"], "recall": r["recall"]}
            for r in sanity(evaluator, reference, images, metrics, seed, out, device)]
