"""A check that the metrics mean something: real images must score near the reference, degraded ones worse.

The real set is a split the reference statistics did not see (the training split; the reference is the held-out
split). Each degraded set is built from those same real images, so any gap comes from the degradation alone.
"""

from __future__ import annotations

import numpy as np

from ..rng import numpy_rng
from .quality import score_features

# (name, must be worse than) pairs the table is expected to satisfy; `all` = every other set.
EXPECTED = [
    ("blur-1", "real"), ("blur-2", "blur-1"),
    ("noise-0.1", "real"), ("noise-0.3", "noise-0.1"),
    ("single-class", "real"),
    ("uniform-noise", "all"),
]


def degraded_sets(images: np.ndarray, labels, seed: int = 0) -> dict[str, np.ndarray]:
    """Real images and versions that a good metric must rank as worse: blur, noise, one class, pure noise."""
    from scipy.ndimage import gaussian_filter

    rng = numpy_rng("metric-subsets", "sanity-degraded", seed)
    x = images.astype(np.float32)
    sets = {"real": images}
    for s in (1, 2):  # Gaussian blur, sigma in pixels (on a 32-pixel image: softened / smeared)
        sets[f"blur-{s}"] = _u8(gaussian_filter(x, sigma=(0, s, s, 0)))
    for s in (0.1, 0.3):  # Gaussian noise, sigma on the [-1, 1] scale the models see
        sets[f"noise-{s}"] = _u8(x + rng.normal(0, s * 127.5, x.shape))
    if labels is not None:  # mode collapse: the most frequent class, repeated to the same n
        c = np.bincount(labels).argmax()
        one = images[labels == c]
        sets["single-class"] = one[rng.integers(0, len(one), len(images))]
    sets["uniform-noise"] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    return sets


def _u8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def sanity_table(embed, ref: dict, images: np.ndarray, labels, metrics: dict, seed: int = 0,
                 judge_kind="classifier") -> list[dict]:
    rows = []
    for name, imgs in degraded_sets(images, labels, seed).items():
        feats, logits = embed(imgs)
        s = score_features(feats, logits, ref, metrics, seed, judge_kind)
        cov = s.pop("class_coverage") or {}
        rows.append({"set": name, **{k: s[k] for k in ("n", "seed", "fd", "kid", "inception_score", "precision",
                                                       "recall", "density", "coverage")},
                     "classes_covered": cov.get("classes_covered"), "largest_share": cov.get("largest_share")})
    return rows


def ordering_checks(rows: list[dict], metric: str = "fd") -> list[dict]:
    """Which of the EXPECTED 'worse than' relations hold for `metric` (higher = worse)."""
    v = {r["set"]: r[metric] for r in rows}
    out = []
    for worse, better in EXPECTED:
        if worse not in v:
            continue
        others = [k for k in v if k != worse] if better == "all" else [better]
        out.append({"metric": metric, "worse": worse, "than": better,
                    "holds": bool(all(v[worse] > v[o] for o in others))})
    if "single-class" in v:  # collapse must show in recall and in the judge's class coverage
        r = {x["set"]: x for x in rows}
        out.append({"metric": "recall", "worse": "single-class", "than": "real",
                    "holds": bool(r["single-class"]["recall"] < r["real"]["recall"])})
        if r["real"]["classes_covered"] is not None:
            out.append({"metric": "classes_covered", "worse": "single-class", "than": "real",
                        "holds": bool(r["single-class"]["classes_covered"] < r["real"]["classes_covered"])})
    return out
