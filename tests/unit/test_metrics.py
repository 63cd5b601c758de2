"""Quality metrics: closed forms, invariances, a hand-computed precision/recall, the judge, the sanity order."""

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from advkd.config import block_defaults, evaluator_errors
from advkd.io import BadInputError, save_images, write_json
from advkd.metrics import quality as q
from advkd.metrics.evaluator import load_evaluator, train_evaluator
from advkd.metrics.inception import ENV, FILENAME, URL, InceptionJudge, embed_inception, resolve_inception_weights
from advkd.rng import seed_sequence as rng_seed_sequence

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "experiments" / "assets" / "evaluator-fmnist"
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def _rotation(d, seed=0):
    qm, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return qm


# --- Fréchet distance ------------------------------------------------------------------------------------------------

def test_fd_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(400, 16)) @ np.diag(np.linspace(0.5, 3, 16))
    mu, sigma = q.gaussian_stats(feats)
    assert abs(q.frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_fd_matches_closed_form_for_commuting_covariances():
    # Same eigenvectors => sqrt(S1 S2) = Q sqrt(D1 D2) Q^T, so FD = |mu1-mu2|^2 + sum(d1 + d2 - 2 sqrt(d1 d2)):
    # no matrix square root needed, nothing shared with clean-fid's scipy.linalg.sqrtm path.
    d = 8
    rng = np.random.default_rng(1)
    qm = _rotation(d)
    d1, d2 = rng.uniform(0.2, 4, d), rng.uniform(0.2, 4, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    closed = float(((mu1 - mu2) ** 2).sum() + (d1 + d2 - 2 * np.sqrt(d1 * d2)).sum())
    got = q.frechet_distance(mu1, qm @ np.diag(d1) @ qm.T, mu2, qm @ np.diag(d2) @ qm.T)
    assert got == pytest.approx(closed, rel=1e-6)


def test_fd_of_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 40000
    v1, v2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 0.5, 0.5, 3.0])
    m1, m2 = np.zeros(d), np.array([1.0, 0, -1.0, 0.5])
    closed = ((m1 - m2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    a = m1 + rng.normal(size=(n, d)) * np.sqrt(v1)
    b = m2 + rng.normal(size=(n, d)) * np.sqrt(v2)
    got = q.frechet_distance(*q.gaussian_stats(a), *q.gaussian_stats(b))
    assert got == pytest.approx(closed, rel=0.05)


def _reference(n=300, d=6, seed=3):
    feats = np.random.default_rng(seed).normal(size=(n, d))
    mu, sigma = q.gaussian_stats(feats)
    return {"mu": mu, "sigma": sigma, "features": feats}


def test_scores_do_not_depend_on_sample_order():
    ref = _reference()
    rng = np.random.default_rng(4)
    fake = rng.normal(0.3, 1.2, size=(200, 6))
    logits = rng.normal(size=(200, 10)) * 3
    metrics = block_defaults("metrics") | {"kid_subsets": 20, "kid_subset_size": 1000, "nearest_k": 3}
    a = q.score_features(fake, logits, ref, metrics, seed=0)
    perm = rng.permutation(200)
    b = q.score_features(fake[perm], logits[perm], ref, metrics, seed=0)
    for k in ("fd", "precision", "recall", "density", "coverage"):   # IS: consecutive splits, by definition
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
    # KID with subsets as large as the sets: every subset is the whole set, so order cannot matter either.
    assert a["kid"] == pytest.approx(b["kid"], rel=1e-9)
    assert a["class_coverage"] == b["class_coverage"]
    assert a["n"] == 200 and a["seed"] == 0


def test_kid_is_reproducible_and_separates_distributions():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    far = rng.normal(1.0, 1.0, size=(300, 8))
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    k1, s1 = q.kernel_inception_distance(a, b, seed=7, subsets=10, subset_size=100)
    assert np.random.random() == before  # the caller's global stream is left as it was
    assert q.kernel_inception_distance(a, b, seed=7, subsets=10, subset_size=100) == (k1, s1)
    kfar, sfar = q.kernel_inception_distance(a, far, seed=7, subsets=10, subset_size=100)
    assert abs(k1) < 0.05 < kfar and 0 < s1 and 0 < sfar < kfar   # the spread over subsets is there


def test_kid_is_clean_fids_and_zero_for_one_set():
    """The per-subset mean is clean-fid's KID with the same draws; two sets from one distribution score ~0 (the
    estimator is unbiased), within the spread of the mean over subsets."""
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 16)), rng.normal(0.3, 1.0, size=(400, 16))
    np.random.seed(rng_seed_sequence("metric-subsets", "kid", 3).generate_state(8))  # the KID stream of seed 3
    assert q.kernel_inception_distance(a, b, seed=3, subsets=20, subset_size=200)[0] == pytest.approx(
        kernel_distance(a, b, num_subsets=20, max_subset_size=200), rel=1e-12)
    same, spread = q.kernel_inception_distance(a, rng.normal(size=(400, 16)), seed=3, subsets=50, subset_size=200)
    assert abs(same) < 3 * spread / np.sqrt(50)


def test_precision_recall_match_a_hand_computed_case():
    # 1-D, k=1. Real 0,1,2,3: every k-NN radius is 1. Fake 0.05, 0.95, 10, 10.2: radii 0.9, 0.9, 0.2, 0.2.
    # precision: fakes inside some real ball: 0.05, 0.95 -> 2/4. recall: reals inside some fake ball: 0, 1 -> 2/4.
    # density: (1/k) mean #real balls holding each fake = (2 + 2 + 0 + 0)/4 = 1. coverage: reals whose nearest
    # fake lies in their own ball: 0 (0.05), 1 (0.05) -> 2/4.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.05], [0.95], [10.0], [10.2]])
    out = q.precision_recall(real, fake, k=1)
    assert out == pytest.approx({"precision": 0.5, "recall": 0.5, "density": 1.0, "coverage": 0.5})


def test_inception_score_limits():
    """A uniform classifier scores 1; a perfectly confident one whose every split holds all 10 classes evenly
    scores the class count, with no spread over the 10 splits."""
    assert q.inception_score(np.zeros((50, 10))) == pytest.approx((1.0, 0.0))
    confident = np.full((200, 10), -50.0)
    confident[np.arange(200), np.arange(200) % 10] = 50.0
    mean, std = q.inception_score(confident)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    half = confident.copy()
    half[100:] = np.where(np.arange(10) == 0, 50.0, -50.0)   # the second half is all one class
    mean, std = q.inception_score(half)
    assert mean == pytest.approx(5.5, rel=1e-6) and std > 4   # splits of 10 and of 1: the spread shows it
    assert q.inception_score(None) is None


def test_memorisation_tells_a_copier_from_a_fresh_sampler():
    """A student whose samples are its distillation targets (plus a hair of noise) is nearer to them than real test
    images ever are to training images; a student drawing fresh points of the same distribution is not."""
    from advkd.metrics.memorisation import copy_statistics, nearest_distances

    rng = np.random.default_rng(0)
    draw = lambda n: rng.normal(size=(n, 8))  # noqa: E731
    targets, train, real = draw(1024), draw(1024), draw(500)
    copier = targets[rng.choice(1024, 500)] + 1e-3 * rng.normal(size=(500, 8))
    out = copy_statistics({0: copier, 1: draw(500)}, targets, real, train)
    copied, fresh = out["per_seed"]
    assert copied["seed"] == 0 and copied["share_below_threshold"] == 1.0 and copied["median_ratio"] < 0.01
    assert fresh["share_below_threshold"] < 0.05 and 0.8 < fresh["median_ratio"] < 1.25
    assert out["real_to_train"]["share_below_threshold"] == pytest.approx(0.01, abs=0.005)
    assert nearest_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [1.0, 0.0]])) == pytest.approx([1.0])


def test_class_coverage_shows_collapse():
    pred = np.array([0] * 95 + [1] * 4 + [2] * 1)
    cov = q.class_coverage(np.eye(10)[pred], threshold=0.01)
    assert cov["classes_covered"] == 3 and cov["largest_share"] == pytest.approx(0.95)
    assert cov["threshold"] == 0.01 and len(cov["histogram"]) == 10
    assert 0 < cov["entropy_bits"] < 1
    even = q.class_coverage(np.eye(10)[np.arange(100) % 10], threshold=0.01)
    assert even["classes_covered"] == 10 and even["entropy_normalized"] == pytest.approx(1.0)


def test_aggregate_seeds(tmp_path):
    paths = []
    for seed, fd in [(0, 10.0), (1, 14.0)]:
        p = tmp_path / f"seed{seed}.json"
        write_json(p, {"method": "ddim-5", "seed": seed, "n": 100, "fd": fd, "kid": 0.1, "inception_score": 5.0,
                       "precision": 0.5, "recall": 0.4, "density": 1.0, "coverage": 0.5,
                       "class_coverage": {"classes_covered": 9 + seed, "largest_share": 0.2}})
        paths.append(p)
    agg = q.aggregate_seeds(paths)["ddim-5"]
    assert agg["seeds"] == [0, 1] and agg["n"] == [100, 100]
    assert agg["fd"]["mean"] == 12.0 and agg["fd"]["std"] == pytest.approx(np.sqrt(8.0))
    assert agg["classes_covered"]["mean"] == 9.5


# --- the judge -------------------------------------------------------------------------------------------------------

def test_evaluator_trains_saves_and_refuses_tampered_weights(tmp_path):
    from advkd.data import load_split

    cfg = {"dataset": "digits", "resolution": 32, "channels": 1}
    tr, he = load_split(cfg, "train"), load_split(cfg, "heldout")
    card = train_evaluator(tr["images"][:256], tr["labels"][:256], he["images"][:100], he["labels"][:100], tmp_path,
                           epochs=1, batch_size=64, lr=2e-3, seed=0, width=4, features=16, data_card=cfg)
    assert card["feature_dim"] == 16 and card["heldout_n"] == 100 and card["train"]["seed"] == 0
    model, card2 = load_evaluator(tmp_path)
    assert card2["sha256"] == card["sha256"]
    w = tmp_path / "evaluator.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BadInputError, match="sha256"):
        load_evaluator(tmp_path)


def test_second_judge_trains_saves_and_refuses_tampered_weights(tmp_path):
    """The autoencoder judge: trained by the suite's code, no labels; its card records what it is; its features
    are its own (64-d, no logits); changed weights are refused."""
    from advkd.metrics.autoencoder import embed as embed_ae
    from advkd.metrics.autoencoder import load_autoencoder, train_autoencoder

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (128, 32, 32, 1), dtype=np.uint8)
    card = train_autoencoder(images[:96], images[96:], tmp_path, epochs=1, batch_size=32, lr=2e-3, seed=0)
    assert card["kind"] == "autoencoder" and card["feature_dim"] == 64 and card["heldout_n"] == 32
    model, card2 = load_autoencoder(tmp_path)
    feats, logits = embed_ae(model, images[:10])
    assert feats.shape == (10, 64) and logits is None and card2["sha256"] == card["sha256"]
    (tmp_path / card["weights"]).write_bytes((tmp_path / card["weights"]).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BadInputError, match="sha256 .* differs from the card"):
        load_autoencoder(tmp_path)


def test_shipped_judge_cards_report_the_validation_half_only():
    """The test half only ever scores samples: the judges' own held-out figures are the validation half's
    (scripts/judge_cards.py measured them)."""
    card = json.loads((SHIPPED / "evaluator.json").read_text())
    assert card["heldout_accuracy"] >= 0.90 and card["heldout_n"] == 5000 and card["heldout_half"] == "validation"
    assert card["feature_condition_number"] < 1e6
    load_evaluator(SHIPPED)  # verifies the sha256
    ae = json.loads((SHIPPED.parent / "judge-ae-fmnist" / "evaluator.json").read_text())
    assert ae["heldout_n"] == 5000 and ae["heldout_half"] == "validation" and ae["heldout_mse"] < 0.05


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_the_judge_scores_only_the_region_the_data_defines(tmp_path):
    """Fashion-MNIST at 32x32 is 28x28 padded with exact zeros: a generated frame there is not scored."""
    from advkd.data import zero_border
    from advkd.metrics.quality import load_judge
    from advkd.stages.metrics import make_evaluator

    data = {"dataset": "fashion-mnist", "resolution": 32, "channels": 1, "heldout_count": 8}
    assert zero_border(data) == 2 and zero_border(data | {"resolution": 28}) == 0
    assert zero_border({"dataset": "image-folder", "resolution": 64}) == 0
    make_evaluator({"source": "shipped", "shipped": str(SHIPPED)}, data, tmp_path, border=2)
    embed, card = load_judge(tmp_path / "evaluator.json")
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
    framed = images.copy()
    framed[:, 2:-2, 2:-2] = 0
    inner = images - framed                   # the central 28x28 of images, zero outside
    assert card["border"] == 2 and np.array_equal(embed(images)[0], embed(inner)[0])
    (tmp_path / "evaluator.json").write_text(json.dumps({k: v for k, v in card.items() if k != "border"}))
    with pytest.raises(BadInputError, match="older version of advkd"):
        load_judge(tmp_path / "evaluator.json")


def test_shipped_judge_only_fits_its_data():
    cfg = {"evaluator": {"source": "shipped"}, "data": {"dataset": "image-folder", "resolution": 64, "channels": 3}}
    assert "shipped evaluator judges" in evaluator_errors(cfg)[0]
    cfg["evaluator"]["source"] = "inception"
    assert evaluator_errors(cfg) == []


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_sanity_table_ranks_degraded_sets_worse():
    from advkd.data import load_split
    from advkd.metrics.evaluator import embed
    from advkd.metrics.sanity import ordering_checks, sanity_table

    model, _ = load_evaluator(SHIPPED)
    cfg = block_defaults("data") | {"dataset": "fashion-mnist", "train_count": 400, "heldout_count": 600}
    tr, he = load_split(cfg, "train"), load_split(cfg, "heldout")
    feats, _ = embed(model, he["images"])
    mu, sigma = q.gaussian_stats(feats)
    ref = {"mu": mu, "sigma": sigma, "features": feats}
    rows = sanity_table(lambda x: embed(model, x), ref, tr["images"], tr["labels"],
                        block_defaults("metrics") | {"kid_subsets": 20, "kid_subset_size": 400}, seed=0)
    by = {r["set"]: r for r in rows}
    assert set(by) == {"real", "blur-1", "blur-2", "noise-0.1", "noise-0.3", "single-class", "uniform-noise"}
    failed = [c for c in ordering_checks(rows) + ordering_checks(rows, "kid") if not c["holds"]]
    assert not failed, failed
    # one true class (here Shirt, the judge's most confused one) -> one predicted class dominates
    assert by["real"]["classes_covered"] == 10 and by["real"]["largest_share"] < 0.2
    assert by["single-class"]["classes_covered"] < 10 and by["single-class"]["largest_share"] > 0.5
    # "near zero": the gap between two real sets is small next to the mildest degradation's
    assert by["real"]["fd"] < 0.5 * min(by[k]["fd"] for k in by if k != "real")


# --- the Inception path ----------------------------------------------------------------------------------------------

class _StandInInception(torch.nn.Module):
    """Same interface as clean-fid's TorchScript file: .layers -> (N,F,1,1) on 299x299, .output -> 1008 classes.

    The real file has F = 2048; the stage test uses fewer features so its 2048x2048 matrix square roots do not
    dominate the test time.
    """

    def __init__(self, features=2048):
        super().__init__()
        self.features = features
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Conv2d(3, features, 4))
        self.output = torch.nn.Linear(features, 1008)

    def forward(self, x):
        return self.output(self.layers(x).reshape(x.shape[0], self.features))


def _save_standin(folder, features):
    torch.manual_seed(0)
    path = folder / FILENAME
    path.parent.mkdir(parents=True)
    torch.jit.script(_StandInInception(features)).save(str(path))
    return path


@pytest.fixture
def standin_weights(tmp_path):
    return _save_standin(tmp_path / "weights", 2048)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("tried to reach the network")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_inception_standin_end_to_end(standin_weights, tmp_path, monkeypatch, no_network):
    from advkd.stages.metrics import make_evaluator, quality, reference_stats

    monkeypatch.delenv(ENV, raising=False)
    assert resolve_inception_weights(str(standin_weights.parent)) == standin_weights  # a folder works too
    monkeypatch.setenv(ENV, str(standin_weights))
    assert resolve_inception_weights(None) == standin_weights
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    feats, logits = embed_inception(InceptionJudge(standin_weights), images, batch_size=5)
    assert feats.shape == (12, 2048) and logits.shape == (12, 1008)
    # through the stages: judge card -> reference stats -> one quality JSON
    monkeypatch.setenv(ENV, str(_save_standin(tmp_path / "small", 16)))
    ev = make_evaluator({"source": "inception", "inception_weights": None}, {"dataset": "image-folder",
                         "channels": 3}, tmp_path / "ev")
    assert ev["kind"] == "inception" and ev["weights"] == str(tmp_path / "small" / FILENAME)
    save_images(tmp_path / "heldout.npz", images)
    save_images(tmp_path / "samples.npz", images[::-1].copy())
    metrics = block_defaults("metrics") | {"kid_subsets": 5, "kid_subset_size": 12, "nearest_k": 3}
    reference_stats(tmp_path / "ev" / "evaluator.json", tmp_path / "heldout.npz", metrics, tmp_path / "ref")
    row = quality("x", tmp_path / "samples.npz", 0, tmp_path / "ev" / "evaluator.json", tmp_path / "ref",
                          metrics, tmp_path / "q.json")
    assert row["n"] == 12 and abs(row["fd"]) < 1e-3 and row["class_coverage"] is None
    assert row["inception_score"] > 0 and "config_hash" in row["provenance"]
    # other weights at the same path afterwards: samples would be embedded by another network than the reference
    Path(ev["weights"]).write_bytes(_save_standin(tmp_path / "other", 32).read_bytes())   # another stand-in
    with pytest.raises(BadInputError, match="not the ones this judge was set up with"):
        quality("x", tmp_path / "samples.npz", 0, tmp_path / "ev" / "evaluator.json", tmp_path / "ref", metrics,
                tmp_path / "q2.json")


def test_missing_inception_weights_is_a_clear_error(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(BadInputError) as e:
        resolve_inception_weights(None)
    msg = str(e.value)
    assert "evaluator.inception_weights" in msg and ENV in msg and URL in msg and FILENAME in msg
    missing = tmp_path / "nowhere" / FILENAME
    with pytest.raises(BadInputError, match=str(missing)):
        resolve_inception_weights(str(missing))
