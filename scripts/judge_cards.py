"""Rewrite the shipped judges' cards with their held-out figures measured on the validation half only (the test
half only ever scores samples): judge 1's accuracy and judge 2's reconstruction MSE, each with its n, the feature
condition number on the same images, and `heldout_half: validation`. The weights are not touched; SHA256SUMS is
rewritten for the two cards.

    python scripts/judge_cards.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from advkd.data import HALVES, load_split, set_border, split_heldout, to_float, zero_border
from advkd.io import write_json
from advkd.metrics.autoencoder import embed as embed_autoencoder
from advkd.metrics.autoencoder import load_autoencoder
from advkd.metrics.evaluator import condition_number, heldout_report, load_evaluator

ASSETS = Path(__file__).resolve().parents[1] / "experiments" / "assets"
DATA = {"dataset": "fashion-mnist", "resolution": 32, "channels": 1, "validation_fraction": 0.5, "split_seed": 0}


def validation_half():
    held = load_split(DATA, "heldout")
    idx = split_heldout(len(held["images"]), held["labels"], DATA["validation_fraction"], DATA["split_seed"])
    assert set(idx) == set(HALVES)
    v = idx["validation"]
    return held["images"][v], held["labels"][v]


def main() -> None:
    images, labels = validation_half()
    border = zero_border(DATA)
    folder = ASSETS / "evaluator-fmnist"
    model, card = load_evaluator(folder)
    report = heldout_report(model, set_border(images, border), labels)
    card = {k: v for k, v in card.items()} | report | {"heldout_half": "validation", "heldout_border": border}
    write_json(folder / "evaluator.json", card)
    folder = ASSETS / "judge-ae-fmnist"
    ae, card = load_autoencoder(folder)
    x = set_border(images, border)
    with torch.inference_mode():
        t = to_float(x)
        mse = float(torch.nn.functional.mse_loss(ae(t), t))
    feats, _ = embed_autoencoder(ae, x)
    card = card | {"heldout_mse": mse, "heldout_n": int(len(x)), "feature_condition_number": condition_number(feats),
                   "heldout_half": "validation", "heldout_border": border}
    write_json(folder / "evaluator.json", card)
    lines = []
    for line in (ASSETS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if name.endswith("evaluator.json"):
            digest = hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}")
    (ASSETS / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    print({"accuracy": report["heldout_accuracy"], "n": report["heldout_n"], "ae_mse": mse})


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
