"""The stages of workflow/rules/metrics.smk: the fixed judge (rule evaluator), its statistics on the held-out split
(reference_stats), the quality of one sample set (quality), the cost of a method (cost) and the judge's sanity
table (sanity). What they compute lives in advkd.metrics.{evaluator,quality,cost,sanity}."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ..data import load_split
from ..families import FAMILIES, build_method
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
from ..metrics.cost import measure_cost
from ..metrics.evaluator import CARD, WEIGHTS, condition_number, heldout_report, load_evaluator, train_evaluator
from ..metrics.inception import resolve_inception_weights
from ..metrics.quality import (
    COVERAGE_THRESHOLD,
    class_coverage,
    gaussian_stats,
    inception_score,
    load_judge,
    load_reference,
    score_features,
)
from ..metrics.sanity import ordering_checks, sanity_table


def cost_context(teacher_json, device, student_dir=None, checkpoints: int = 11) -> dict:
    """The build context of a method to be costed. With a random-weight teacher (a cost-only experiment) students
    are built with random weights at the teacher's image shape, distilling `checkpoints` checkpoints."""
    ctx = {"teacher": str(teacher_json), "device": device, "student_dir": student_dir}
    card = json.loads(Path(teacher_json).read_text())
    if card["source"] == "random":
        ctx["random_weights"] = {"resolution": card["sample_size"], "channels": card["channels"],
                                 "checkpoints": checkpoints, "seed": card["seed"]}
    return ctx


def cost(name: str, block: dict, ctx: dict, settings: dict, out, cfg=None) -> dict:
    """The `cost` rule: build the method from the registry (sampler or student alike) and write one JSON;
    `settings` is the config's metrics.cost block."""
    method = build_method(name, block, ctx)
    row = measure_cost(method, ctx["device"], settings, settings.get("seed", 0))
    row |= {"kind": FAMILIES[block["family"]].kind, "info": method.info,
            # the method's config block, as written, is part of what produced the row (and the report's knob table)
            "provenance": provenance(cfg=cfg if cfg is not None else {"method": block, "cost": settings},
                                     device=ctx["device"], method=block)}
    write_json(out, row)
    return row


def evaluator(ev_cfg: dict, data_cfg: dict, out_dir, train_npz=None, heldout_npz=None, seed=0, device="cpu",
              command="") -> dict:
    """The `evaluator` rule: install the shipped judge, train one, or point at local Inception weights."""
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
            "heldout_class_coverage": class_coverage(logits, metrics.get("coverage_threshold", COVERAGE_THRESHOLD))
            if logits is not None and judge.get("kind") != "inception" else None,
            "provenance": provenance(cfg=metrics, device=device)}
    write_json(out_stem.with_suffix(".json"), card)
    return card


def quality(method: str, samples_npz, seed: int, evaluator_json, reference_stem, metrics: dict, out,
            device="cpu", cfg=None) -> dict:
    """The `quality` rule: score one method's sample set for one seed; one JSON per (method, seed)."""
    embed, judge = load_judge(evaluator_json, device)
    ref = load_reference(reference_stem, judge["sha256"])
    images = load_images(samples_npz)
    feats, logits = embed(images)
    row = {"method": method, "samples": str(samples_npz), "judge_sha256": judge["sha256"],
           "judge_kind": judge.get("kind", "classifier"),
           **score_features(feats, logits, ref, metrics, seed, judge.get("kind", "classifier")),
           "provenance": provenance(cfg=cfg if cfg is not None else metrics, device=device)}
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
    n = min(len(images), metrics.get("sanity_n", 1000))
    idx = np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))
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
