"""The fixed judge for the embedded (grey, 32x32) data: a small classifier trained on the training split.

Its penultimate layer gives the features for Fréchet distance, KID and precision/recall ("FID with a LeNet"),
its logits the Inception-Score analogue and the class-coverage histogram. The features are taken *before* the
ReLU, right after a BatchNorm, so no unit is dead and their covariance stays well conditioned; the card records
the condition number measured on held-out features.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..assets import verify_shipped
from ..data import to_float
from ..io import (
    BadInputError,
    load_tensors,
    provenance,
    read_json,
    save_tensors,
    sha256_file,
    write_json,
)
from ..rng import numpy_rng, seed_torch

log = logging.getLogger(__name__)

WEIGHTS = "evaluator.safetensors"
CARD = "evaluator.json"


class EvaluatorCNN(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4 pixels), a `features`-wide embedding, a linear classifier."""

    def __init__(self, channels: int = 1, classes: int = 10, width: int = 16, features: int = 128,
                 resolution: int = 32):
        super().__init__()
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(channels, w), *block(w, 2 * w), *block(2 * w, 4 * w), nn.Flatten(),
                                  nn.Linear(4 * w * (resolution // 8) ** 2, features, bias=False),
                                  nn.BatchNorm1d(features))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(features, classes))

    def forward(self, x):
        f = self.body(x)
        return f, self.head(f)


def architecture_of(model: EvaluatorCNN) -> dict:
    conv = model.body[0]
    return {"class": "EvaluatorCNN", "channels": conv.in_channels, "width": conv.out_channels,
            "features": model.body[-1].num_features, "classes": model.head[-1].out_features,
            "resolution": int(round((model.body[-2].in_features / (4 * conv.out_channels)) ** 0.5 * 8))}


@torch.inference_mode()
def embed(model: nn.Module, images: np.ndarray, batch_size: int = 500, device="cpu"):
    """uint8 (N,H,W,C) -> float64 features (N,D) and logits (N,K), in the order of `images`."""
    model.eval()
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f, z = model(to_float(images[i:i + batch_size]).to(device))
        feats.append(f.double().cpu().numpy())
        logits.append(z.double().cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def condition_number(features: np.ndarray) -> float:
    return float(np.linalg.cond(np.cov(features, rowvar=False)))


def fit_epochs(model, opt, sched, n: int, batch_size: int, epochs: int, rng, batch_loss, what="loss") -> list:
    """Epochs of shuffled mini-batches over n examples (a judge's training loop): `batch_loss(idx)` is the loss of
    the examples at indices idx; returns the mean loss of each epoch."""
    t0, curve = time.perf_counter(), []
    for epoch in range(epochs):
        model.train()
        order, total = rng.permutation(n), 0.0
        for i in range(0, n, batch_size):
            idx = torch.from_numpy(order[i:i + batch_size])
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        curve.append(total / n)
        log.info("epoch %d/%d %s %.5f (%.0f s)", epoch + 1, epochs, what, curve[-1], time.perf_counter() - t0)
    return curve


def train_evaluator(train_images, train_labels, heldout_images, heldout_labels, out_dir, *, epochs: int,
                    batch_size: int, lr: float, seed: int, width=16, features=128, device="cpu", command="",
                    data_card=None) -> dict:
    """Train the judge, score it on the held-out split and write evaluator.safetensors + evaluator.json."""

    seed_torch("judge-training", "evaluator", seed)
    rng = numpy_rng("judge-training", "evaluator", seed)
    n, h, _, c = train_images.shape
    classes = int(max(train_labels.max(), heldout_labels.max())) + 1
    model = EvaluatorCNN(c, classes, width, features, h).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    x_all, y_all = to_float(train_images), torch.from_numpy(train_labels)
    # A mirrored garment is the same garment; a mirrored digit is not, so only clothes get flipped.
    flip_ok = bool(data_card and data_card.get("dataset") == "fashion-mnist")
    def batch_loss(idx):
        x, y = x_all[idx], y_all[idx]
        if flip_ok:
            x = torch.where((torch.rand(len(x)) < 0.5)[:, None, None, None], x.flip(-1), x)
        return nn.functional.cross_entropy(model(x.to(device))[1], y.to(device))

    t0 = time.perf_counter()
    curve = fit_epochs(model, opt, sched, n, batch_size, epochs, rng, batch_loss)
    seconds = time.perf_counter() - t0
    model.eval()
    out_dir = Path(out_dir)
    weights = out_dir / WEIGHTS
    save_tensors(weights, model.state_dict(), metadata={"architecture": str(architecture_of(model))})
    card = {"architecture": architecture_of(model), "weights": WEIGHTS, "sha256": sha256_file(weights),
            "train": {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "AdamW+OneCycle",
                      "augmentation": "horizontal flip" if flip_ok else "none", "n": int(n),
                      "seconds": round(seconds, 1), "loss_per_epoch": curve,
                      "command": command},
            "data": data_card}
    card |= heldout_report(model, heldout_images, heldout_labels, device)
    card["provenance"] = provenance(device=device)
    write_json(out_dir / CARD, card)
    return card


def heldout_report(model, images, labels, device="cpu") -> dict:
    feats, logits = embed(model, images, device=device)
    return {"heldout_accuracy": float((logits.argmax(1) == labels).mean()), "heldout_n": int(len(labels)),
            "feature_dim": int(feats.shape[1]), "feature_condition_number": condition_number(feats),
            "feature_layer": "body[-1]: BatchNorm1d after the penultimate Linear, before ReLU"}


def judge_files(folder, verify: bool) -> tuple[dict, Path]:
    """A judge folder's card and weight file (either judge's); with `verify`, a shipped folder must hold the
    committed bytes and the weights the card's sha256 (a judge must be fixed)."""
    folder = Path(folder)
    if verify:
        verify_shipped(folder)
    card = read_json(folder / CARD)
    weights = folder / card["weights"]
    if not weights.exists():
        raise BadInputError(f"{weights}: judge weights not found (named by {folder / CARD})")
    if verify:
        digest = sha256_file(weights)
        if digest != card["sha256"]:
            raise BadInputError(f"{weights}: sha256 {digest} differs from the card's {card['sha256']}; the judge must "
                                "be the recorded one: restore the file or retrain it (rule evaluator or "
                                "second_judge)")
    return card, weights


def load_evaluator(folder, device="cpu", verify=True) -> tuple[EvaluatorCNN, dict]:
    """The judge and its card; refuses weights whose sha256 differs from the card's (a judge must be fixed)."""
    card, weights = judge_files(folder, verify)
    a = card["architecture"]
    model = EvaluatorCNN(a["channels"], a["classes"], a["width"], a["features"], a["resolution"])
    model.load_state_dict(load_tensors(weights))
    return model.to(device).eval(), card
