"""The second, independent judge for the embedded (grey, 32x32) data: the encoder of a convolutional autoencoder
trained on the training split to reconstruct images, no labels.

It differs from the classifier judge (advkd.metrics.evaluator) in architecture (strided convolutions and SiLU, no
pooling, no BatchNorm) and in objective (pixel reconstruction, not classes), so a gap between two samplers that both
judges show is a property of the samples, not of one feature space. Its features are the 64-d bottleneck; it has
no logits (no IS, no class coverage).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import to_float
from ..io import load_tensors, provenance, save_tensors, sha256_file, write_json
from ..rng import numpy_rng, seed_torch
from .evaluator import CARD, condition_number, fit_epochs, judge_files

WEIGHTS = "autoencoder.safetensors"


class AutoencoderJudge(nn.Module):
    """32 -> 16 -> 8 -> 4 pixels by stride-2 convolutions, a `features`-wide linear bottleneck, and the mirror."""

    def __init__(self, channels: int = 1, width: int = 32, features: int = 64, resolution: int = 32):
        super().__init__()
        w, r = width, resolution // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 3, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.SiLU(), nn.Flatten(), nn.Linear(4 * w * r * r, features))
        self.decoder = nn.Sequential(
            nn.Linear(features, 4 * w * r * r), nn.SiLU(), nn.Unflatten(1, (4 * w, r, r)),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(w, channels, 4, 2, 1), nn.Tanh())

    def forward(self, x):
        return self.decoder(self.encoder(x))


def architecture_of(model: AutoencoderJudge) -> dict:
    first, last = model.encoder[0], model.encoder[-1]
    return {"class": "AutoencoderJudge", "channels": first.in_channels, "width": first.out_channels,
            "features": last.out_features,
            "resolution": int(round((last.in_features / (4 * first.out_channels)) ** 0.5 * 8))}


@torch.inference_mode()
def embed(model: AutoencoderJudge, images: np.ndarray, batch_size: int = 500, device="cpu"):
    """uint8 (N,H,W,C) -> float64 bottleneck features (N,D) and no logits, in the order of `images`."""
    model.eval()
    feats = [model.encoder(to_float(images[i:i + batch_size]).to(device)).double().cpu().numpy()
             for i in range(0, len(images), batch_size)]
    return np.concatenate(feats), None


def train_autoencoder(train_images, heldout_images, out_dir, *, epochs: int, batch_size: int, lr: float, seed: int,
                      width=32, features=64, device="cpu", command="", data_card=None) -> dict:
    """Train the autoencoder to reconstruct the training split; write its weights and card (with the held-out
    reconstruction error and the condition number of held-out features)."""
    seed_torch("judge-training", "autoencoder", seed)
    rng = numpy_rng("judge-training", "autoencoder", seed)
    n, h, _, c = train_images.shape
    model = AutoencoderJudge(c, width, features, h).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    x_all = to_float(train_images)
    def batch_loss(idx):
        x = x_all[idx].to(device)
        return nn.functional.mse_loss(model(x), x)

    t0 = time.perf_counter()
    curve = fit_epochs(model, opt, sched, n, batch_size, epochs, rng, batch_loss, "mse")
    model.eval()
    out_dir = Path(out_dir)
    weights = out_dir / WEIGHTS
    save_tensors(weights, model.state_dict(), metadata={"architecture": str(architecture_of(model))})
    with torch.inference_mode():
        x = to_float(heldout_images)
        heldout_mse = float(nn.functional.mse_loss(model(x.to(device)), x.to(device)))
    feats, _ = embed(model, heldout_images, device=device)
    card = {"kind": "autoencoder", "architecture": architecture_of(model), "weights": WEIGHTS,
            "sha256": sha256_file(weights), "objective": "pixel MSE reconstruction (no labels)",
            "feature_layer": "encoder[-1]: the linear bottleneck", "feature_dim": int(feats.shape[1]),
            "heldout_mse": heldout_mse, "heldout_n": int(len(heldout_images)),
            "feature_condition_number": condition_number(feats),
            "train": {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                      "optimizer": "AdamW+OneCycle", "n": int(n), "seconds": round(time.perf_counter() - t0, 1),
                      "loss_per_epoch": curve, "command": command},
            "data": data_card, "provenance": provenance(device=device)}
    write_json(out_dir / CARD, card)
    return card


def load_autoencoder(folder, device="cpu", verify=True) -> tuple[AutoencoderJudge, dict]:
    """The judge and its card; refuses weights whose sha256 differs from the card's (a judge must be fixed)."""
    card, weights = judge_files(folder, verify)
    a = card["architecture"]
    model = AutoencoderJudge(a["channels"], a["width"], a["features"], a["resolution"])
    model.load_state_dict(load_tensors(weights))
    return model.to(device).eval(), card
