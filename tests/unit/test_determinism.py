"""Determinism on CPU: the `sample` and `quality` stages (run through `advkd.cli.main`, as the DAG runs them)
give bit-identical samples and identical numbers for the same seed, and different ones for another seed.
GPU runs are not bitwise reproducible (docs/reliability.md says why and what the suite sets)."""

import json
from pathlib import Path

import numpy as np
import pytest

from advkd.cli import main
from advkd.config import block_defaults
from advkd.io import load_images

ROOT = Path(__file__).resolve().parents[2]
METRICS = json.dumps(block_defaults("metrics") | {"kid_subsets": 5, "nearest_k": 3})


@pytest.fixture
def setup(tmp_path, monkeypatch, judge):
    import advkd.metrics.cost as cost

    # The peak is a timing, not a result; skip its 2048^3 sgemm to keep the test cheap.
    monkeypatch.setattr(cost, "matmul_peak_gflops", lambda device: 1.0)
    card = tmp_path / "teacher.json"
    card.write_text(json.dumps({"source": "shipped", "pipeline": str(ROOT / "experiments/assets/teacher-fmnist32")}))
    return tmp_path, card, judge


def _sample(card, out, seed, n=8, shard_size=None):
    """The DAG's sample jobs (one per shard) and their merge; returns the merged .npz."""
    # ddpm: the stochastic sampler, so every step's noise must come from the seed too
    shard_size = shard_size or n
    stems = [out.parent / f"{out.name}-shard{j}" for j in range(-(-n // shard_size))]
    for j, stem in enumerate(stems):
        assert main(["sample", "--method", "ddpm-3", "--block", '{"family": "ddpm", "steps": 3}', "--teacher",
                     str(card), "--n", str(n), "--seed", str(seed), "--batch-size", "4", "--shard", str(j),
                     "--shard-size", str(shard_size), "--device", "cpu", "--threads", "1", "--out", str(stem)]) == 0
    assert main(["merge-samples", "--shards", *map(str, stems), "--n", str(n), "--grid", "4", "--out", str(out)]) == 0
    return out.with_suffix(".npz")


def _quality(samples, seed, judge, ref, out):
    assert main(["quality", "--method", "ddpm-3", "--samples", str(samples), "--seed", str(seed), "--evaluator",
                 str(judge), "--reference", str(ref), "--metrics", METRICS, "--scored-by", "all", "--device", "cpu",
                 "--threads", "1",
                 "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    row.pop("provenance")
    row.pop("samples")
    return row


def test_same_seed_same_bits_other_seed_other_samples(setup):
    tmp, card, judge = setup
    ref_npz = _sample(card, tmp / "ref" / "samples", seed=99, n=16)
    assert main(["reference-stats", "--evaluator", str(judge), "--heldout", str(ref_npz), "--metrics", METRICS,
                 "--device", "cpu", "--threads", "1", "--out", str(tmp / "ref" / "stats")]) == 0
    ref = tmp / "ref" / "stats"
    a = _sample(card, tmp / "run1" / "seed0", seed=0)
    b = _sample(card, tmp / "run2" / "seed0", seed=0)
    c = _sample(card, tmp / "run1" / "seed1", seed=1)
    assert a.read_bytes() == b.read_bytes()                         # the whole .npz, byte for byte
    assert np.array_equal(load_images(a), load_images(b))
    assert not np.array_equal(load_images(a), load_images(c))
    qa = _quality(a, 0, judge, ref, tmp / "run1" / "q0.json")
    qb = _quality(b, 0, judge, ref, tmp / "run2" / "q0.json")
    qc = _quality(c, 1, judge, ref, tmp / "run1" / "q1.json")
    assert qa == qb                                                 # every number, exactly
    assert qa["fd"] != qc["fd"] and qa["kid"] != qc["kid"]


def test_sharded_sampling_gives_the_same_bits(setup):
    """sampling.shard_size splits a run into jobs; merged, they are the run made in one piece."""
    tmp, card, _ = setup
    whole = _sample(card, tmp / "whole" / "seed0", seed=0, n=12)
    shards = _sample(card, tmp / "shards" / "seed0", seed=0, n=12, shard_size=4)
    assert whole.read_bytes() == shards.read_bytes()
    stats = json.loads((tmp / "shards" / "seed0.json").read_text())
    assert stats["n"] == 12 and stats["shards"] == 3 and (tmp / "shards" / "seed0.png").exists()
    assert len(stats["peak_probes"]) == 3  # each shard's probes kept in the merged record
    # shards that do not tile the run (one missing) are refused, naming them; nothing is written
    assert main(["merge-samples", "--shards", str(tmp / "shards" / "seed0-shard0"),
                 str(tmp / "shards" / "seed0-shard2"), "--n", "12", "--grid", "4",
                 "--out", str(tmp / "bad" / "seed0")]) == 2
    assert not (tmp / "bad").exists()
    # a shard size that is not a multiple of the batch size would change the draws: refused before sampling
    assert main(["sample", "--method", "ddpm-3", "--block", '{"family": "ddpm", "steps": 3}', "--teacher", str(card),
                 "--n", "12", "--seed", "0", "--batch-size", "4", "--shard", "1", "--shard-size", "6", "--device",
                 "cpu", "--out", str(tmp / "bad" / "p1")]) == 2
    assert not (tmp / "bad").exists()


def test_peak_probed_through_the_job_without_changing_the_images(setup, monkeypatch):
    """A sampling job probes the peak between chunks of its batches (the sgemm and the network's own largest
    convolutions): the fraction of peak is against the fastest probe of all, and the chunked run is the run made
    in one call."""
    import advkd.metrics.cost as cost
    from advkd.families import build_method
    from advkd.stages.sample import PEAK_CHUNKS

    tmp, card, _ = setup
    sgemm = iter(range(100, 200, 10))
    monkeypatch.setattr(cost, "matmul_peak_gflops", lambda device: float(next(sgemm)))
    n, batch = 40, 4  # 10 batches -> PEAK_CHUNKS chunks -> PEAK_CHUNKS + 1 probes
    out = _sample(card, tmp / "probed" / "seed0", seed=3, n=n)
    stats = json.loads((tmp / "probed" / "seed0-shard0.json").read_text())
    assert [p["sgemm 2048"] for p in stats["peak_probes"]] == [100.0 + 10 * i for i in range(PEAK_CHUNKS + 1)]
    convs = [k for k in stats["peak_probes"][0] if k.startswith("conv")]
    assert len(convs) == 2 and all(k.endswith(f"b{batch}") for k in convs)   # the network's own, at its batch
    best = max(v for p in stats["peak_probes"] for v in p.values())
    assert stats["peak_gflops"] == best and stats["peak_probe"] in stats["peak_probes"][0]
    assert np.isclose(stats["fraction_of_peak"], stats["achieved_gflops"] / best)
    assert 0 < stats["fraction_of_peak"] <= 1     # above 1 the yardstick would be wrong
    method = build_method("ddpm-3", {"family": "ddpm", "steps": 3}, {"teacher": str(card), "device": "cpu"})
    whole, _ = method.generate(n, 3, batch, progress=False)
    assert np.array_equal(load_images(out), whole)
