"""Does a student copy its distillation targets? Its samples' distances to the nearest of the teacher outputs it
learnt from, against the same distance for real images: held-out images to the nearest of as many training images.

Both distances are measured in the judge's feature space and against reference sets of one size (the
distillation set's), so that a student that reproduces its targets no more closely than real test images resemble
training images scores like real data. The statistic: the share of samples nearer to a target than the 1st
percentile of the real-to-train distances (a real image gets that close to a training image 1% of the time), in
the spirit of Meehan et al. (2020), "A non-parametric test to detect data-copying in generative models".
"""

from __future__ import annotations

import numpy as np

PERCENTILE = 1.0


def nearest_distances(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each row of `a` to its nearest row of `b`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bb = (b * b).sum(1)
    out = np.empty(len(a))
    for i in range(0, len(a), chunk):
        x = a[i:i + chunk]
        d2 = (x * x).sum(1)[:, None] + bb[None, :] - 2 * x @ b.T
        out[i:i + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def copy_statistics(samples: dict, targets: np.ndarray, real: np.ndarray, train: np.ndarray,
                    percentile: float = PERCENTILE) -> dict:
    """samples: seed -> judge features of that seed's samples; targets: features of the distillation targets;
    real / train: features of held-out images and of as many training images as there are targets."""
    d_real = nearest_distances(real, train)
    threshold = float(np.percentile(d_real, percentile))
    per_seed = []
    for seed, feats in sorted(samples.items(), key=lambda kv: int(kv[0])):
        d = nearest_distances(feats, targets)
        per_seed.append({"seed": int(seed), "n": int(len(d)), "median_distance": float(np.median(d)),
                         "share_below_threshold": float((d < threshold).mean()),
                         "median_ratio": float(np.median(d) / np.median(d_real))})
    shares = [s["share_below_threshold"] for s in per_seed]
    ratios = [s["median_ratio"] for s in per_seed]
    return {"percentile": percentile, "threshold": threshold,
            "real_to_train": {"n": int(len(real)), "reference_size": int(len(train)),
                              "median_distance": float(np.median(d_real)),
                              "share_below_threshold": float((d_real < threshold).mean())},
            "targets": int(len(targets)), "per_seed": per_seed,
            "share_below_threshold": {"mean": float(np.mean(shares)),
                                      "std": float(np.std(shares, ddof=1)) if len(shares) > 1 else 0.0},
            "median_ratio": {"mean": float(np.mean(ratios)),
                             "std": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else 0.0}}
