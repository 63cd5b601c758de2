"""Sample quality against a fixed judge: FD, KID, IS, precision/recall and class coverage, each with n and seed.

Distances come from clean-fid's own functions (`frechet_distance`, `kernel_distance`), precision and recall
(Kynkäänniemi et al. 2019, k-NN manifolds) from `prdc`; only the bookkeeping around them lives here.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np

from ..data import set_border
from ..io import BadInputError, load_tensors, read_json, sha256_file
from ..rng import numpy_rng, seed_sequence
from .autoencoder import embed as embed_autoencoder
from .autoencoder import load_autoencoder
from .evaluator import embed, load_evaluator
from .inception import InceptionJudge, embed_inception, resolve_inception_weights

# --- the numbers -------------------------------------------------------------------------------------------------

def gaussian_stats(features: np.ndarray):
    feats = np.asarray(features, dtype=np.float64)
    return feats.mean(0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    from cleanfid.fid import frechet_distance as fd

    return float(fd(mu1, sigma1, mu2, sigma2))


# FD-infinity's subset sizes, as fractions of the set: Chong & Forsyth (2020) fit FD against 1/N over N between a
# tenth of and the whole set; here the smallest N stays above the judges' feature dimension (128 and 64) at n = 500.
FD_INF_FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def fd_infinity(feats, mu_ref, sigma_ref, rng: np.random.Generator, fractions=FD_INF_FRACTIONS) -> dict:
    """FD extrapolated to an infinite sample set (Chong & Forsyth 2020, "Effectively Unbiased FID"): FD of random
    subsets of N = fraction x n samples (drawn without replacement from `rng`), fitted linearly in 1/N, read at
    1/N = 0. Rows scored at different n can be compared by it, free of FD's bias in n."""
    feats = np.asarray(feats, dtype=np.float64)
    n = len(feats)
    sizes = sorted({max(2, int(round(f * n))) for f in fractions})
    fds = [frechet_distance(*gaussian_stats(feats[rng.choice(n, m, replace=False)] if m < n else feats),
                            mu_ref, sigma_ref) for m in sizes]
    slope, intercept = np.polyfit(1.0 / np.asarray(sizes, dtype=np.float64), fds, 1)
    return {"fd_infinity": float(intercept), "fd_infinity_slope": float(slope), "fd_infinity_sizes": sizes}


def teacher_fidelity(images: np.ndarray, teacher: np.ndarray, feats, teacher_feats, rng: np.random.Generator,
                     suffix: str = "") -> dict:
    """Per-sample agreement of a method's images with the teacher's from the same x_T (row i of both sets):
    PSNR in dB on the 8-bit images (mean over samples), the mean judge-feature distance, and that distance over the
    distance between the teacher's images paired at random (`relative`: 0 = the teacher's own image, about 1 = no
    closer than an unrelated teacher sample). With `suffix`, the feature numbers only (a second judge)."""
    f, t = np.asarray(feats, dtype=np.float64), np.asarray(teacher_feats, dtype=np.float64)
    if f.shape != t.shape:
        raise BadInputError(f"teacher fidelity needs the teacher's images from the same x_T: {len(f)} samples "
                            f"against {len(t)} of the teacher")
    dist = np.linalg.norm(f - t, axis=1).mean()
    shuffled = rng.permutation(len(t))
    base = np.linalg.norm(t - t[shuffled], axis=1).mean()
    out = {f"fidelity_distance{suffix}": float(dist), f"fidelity_relative{suffix}": float(dist / base)}
    if not suffix:
        mse = ((images.astype(np.float64) - teacher.astype(np.float64)) ** 2).reshape(len(images), -1).mean(1)
        out["fidelity_psnr"] = float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))
    return out


def kernel_inception_distance(feats1, feats2, seed: int = 0, subsets: int = 100,
                              subset_size: int = 1000) -> tuple[float, float]:
    """clean-fid's KID (cubic polynomial kernel, unbiased MMD^2) over random subsets: (mean, std over subsets).

    clean-fid's `kernel_distance` is called once per subset, so its mean over the calls is clean-fid's KID with
    the same draws, and their sample std (ddof=1) is the spread a reader needs. clean-fid draws from numpy's
    global generator: it is seeded here and restored afterwards, so the number depends on `seed` alone.
    """
    from cleanfid.fid import kernel_distance

    f1, f2 = np.asarray(feats1), np.asarray(feats2)
    state = np.random.get_state()
    np.random.seed(seed_sequence("metric-subsets", "kid", seed).generate_state(8))
    try:
        per_subset = np.array([kernel_distance(f1, f2, num_subsets=1, max_subset_size=subset_size)
                               for _ in range(subsets)])
    finally:
        np.random.set_state(state)
    return float(per_subset.mean()), float(per_subset.std(ddof=1)) if subsets > 1 else 0.0


IS_SPLITS = 10


def inception_score(logits, splits: int = IS_SPLITS) -> tuple[float, float] | None:
    """exp(E_x KL(p(y|x) || p(y))) on each of `splits` consecutive parts of the set, as Salimans et al. (2016)
    report it: (mean, std over the splits); None without logits."""
    if logits is None:
        return None
    z = np.asarray(logits, dtype=np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    scores = []
    for part in np.array_split(logp, min(splits, len(logp))):
        p = np.exp(part)
        log_marginal = np.log(p.mean(0) + 1e-300)
        scores.append(np.exp((p * (part - log_marginal)).sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0


def precision_recall(real, fake, k: int = 3) -> dict:
    """Improved precision/recall (plus density/coverage, Naeem et al. 2020) on k-NN balls, via `prdc`."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes; they are in our JSON already
        out = compute_prdc(np.asarray(real, np.float32), np.asarray(fake, np.float32), nearest_k=k)
    return {key: float(v) for key, v in out.items()}


def class_coverage(logits, threshold: float) -> dict:
    """How the judge's predicted classes spread: a collapsed generator covers few classes with one big share."""
    z = np.asarray(logits)
    classes = z.shape[1]
    share = np.bincount(z.argmax(1), minlength=classes) / len(z)
    nz = share[share > 0]
    entropy = float(-(nz * np.log2(nz)).sum())
    return {"classes": classes, "threshold": threshold, "classes_covered": int((share >= threshold).sum()),
            "largest_share": float(share.max()), "entropy_bits": entropy,
            "entropy_normalized": entropy / math.log2(classes), "histogram": share.round(6).tolist()}


def score_features(feats, logits, ref: dict, metrics: dict, seed: int, judge_kind: str = "classifier") -> dict:
    """Every quality number of one sample set, given its judge features/logits and the reference dict."""
    mu, sigma = gaussian_stats(feats)
    n = len(feats)
    ref_feats = ref["features"]
    # k-NN radii shrink as a set grows, so precision/recall compare equal-size sets (as Kynkäänniemi et al. do).
    rng = numpy_rng("metric-subsets", "precision-recall", seed)
    real = ref_feats[np.sort(rng.choice(len(ref_feats), n, replace=False))] if n < len(ref_feats) else ref_feats
    k = metrics["nearest_k"]
    out = {"n": n, "seed": seed, "reference_n": int(len(ref_feats)),
           "fd": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
           "kid_subset_size": int(min(n, len(ref_feats), metrics["kid_subset_size"])),
           "kid_subsets": metrics["kid_subsets"], "inception_score_splits": IS_SPLITS,
           "nearest_k": k, "pr_reference_n": int(len(real)), **precision_recall(real, feats, k)}
    out["kid"], out["kid_std_subsets"] = kernel_inception_distance(
        feats, ref_feats, seed, metrics["kid_subsets"], metrics["kid_subset_size"])
    out["inception_score"], out["inception_score_std_splits"] = inception_score(logits) or (None, None)
    # ImageNet's 1008 classes say little about a face or a car data set: coverage only for a data set's own classes.
    out["class_coverage"] = class_coverage(logits, metrics["coverage_threshold"]) \
        if judge_kind == "classifier" and logits is not None else None
    return out


# --- the judge and its reference -----------------------------------------------------------------------------------

def load_judge(evaluator_json, device="cpu"):
    """(embed(images) -> (features, logits), card) for the judge the `evaluator` stage set up. The judge scores the
    region the data defines: where the data is zero-padded (card["border"] pixels) it sees the frame set to zero
    in every set, real or generated, so a sampler is not judged on pixels no real image has."""
    card = read_json(evaluator_json)
    if "border" not in card:
        raise BadInputError(f"{evaluator_json}: written by an older version of advkd (no scored region); rerun its "
                            "evaluator rule (delete the file, then snakemake)")
    border = card["border"]
    if card.get("kind") == "inception":
        path = resolve_inception_weights(card["weights"])
        # the reference statistics were made with the weights the card hashed: another file put at that path
        # would score samples with another network than the reference
        if sha256_file(path) != card["sha256"]:
            raise BadInputError(f"{evaluator_json}: the Inception weights at {path} are not the ones this judge was "
                                f"set up with (sha256 {card['sha256'][:12]}); restore them, or delete the results' "
                                "evaluator folder and rerun to score everything with the new ones")
        judge = InceptionJudge(path)
        return (lambda images: embed_inception(judge, set_border(images, border), device=device)), card

    if card.get("kind") == "autoencoder":
        ae, _ = load_autoencoder(Path(evaluator_json).parent, device)
        return (lambda images: embed_autoencoder(ae, set_border(images, border), device=device)), card
    model, _ = load_evaluator(Path(evaluator_json).parent, device)
    return (lambda images: embed(model, set_border(images, border), device=device)), card


def load_reference(stem, judge_sha256: str | None = None) -> dict:
    stem = Path(stem)
    t = load_tensors(stem.with_suffix(".safetensors"))
    card = read_json(stem.with_suffix(".json"))
    if judge_sha256 and card["judge_sha256"] != judge_sha256:
        raise BadInputError(f"{stem}.json: reference statistics were made with judge {card['judge_sha256'][:12]}, "
                            f"not the current one ({judge_sha256[:12]}); rerun the reference_stats rule")
    return {"mu": t["mu"].double().numpy(), "sigma": t["sigma"].double().numpy(),
            "features": t["features"].double().numpy(), "card": card}


# --- several seeds -------------------------------------------------------------------------------------------------

SCALARS = ("fd", "fd_judge2", "fd_infinity", "fd_infinity_judge2", "kid", "kid_std_subsets", "inception_score",
           "inception_score_std_splits", "precision", "recall", "density", "coverage", "fidelity_psnr",
           "fidelity_distance", "fidelity_relative", "fidelity_distance_judge2", "fidelity_relative_judge2")


def aggregate_seeds(paths) -> dict:
    """Per-seed quality JSONs of one or more methods -> {method: {metric: mean, std, min, max}, seeds, n}.

    std is the sample standard deviation over seeds (ddof=1; 0 with one seed, which `n_seeds` makes visible).
    """
    by_method: dict[str, list] = {}
    for p in paths:
        row = read_json(p)
        by_method.setdefault(row["method"], []).append(row)
    out = {}
    for method, rows in sorted(by_method.items()):
        rows.sort(key=lambda r: r["seed"])
        agg = {"seeds": [r["seed"] for r in rows], "n_seeds": len(rows), "n": [r["n"] for r in rows]}
        cov = [r["class_coverage"] for r in rows if r.get("class_coverage")]
        values = {m: [r[m] for r in rows if r.get(m) is not None] for m in SCALARS}
        if cov:
            values |= {"classes_covered": [c["classes_covered"] for c in cov],
                       "largest_share": [c["largest_share"] for c in cov]}
        for m, v in values.items():
            if v:
                a = np.asarray(v, dtype=np.float64)
                agg[m] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                          "min": float(a.min()), "max": float(a.max())}
        out[method] = agg
    return out
