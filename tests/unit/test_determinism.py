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
def setup(tmp_path, judge):
    card = tmp_path / "teacher.json"
    card.write_text(json.dumps({"source": "shipped", "pipeline": str(ROOT / "experiments/assets/teacher-fmnist32")}))
    return tmp_path, card, judge


def _sample(card, out, seed, n=8, shard_size=None, seeds=None):
    """The DAG's sample jobs (one per shard, each sampling every seed of `seeds`, default [seed]) and the merge of
    seed `seed`'s shards; returns the merged .npz."""
    # ddpm: the stochastic sampler, so every step's noise must come from the seed too
    shard_size = shard_size or n
    folders = [out.parent / f"{out.name}-shard{j}" for j in range(-(-n // shard_size))]
    for j, folder in enumerate(folders):
        assert main(["sample", "--method", "ddpm-3", "--block", '{"family": "ddpm", "steps": 3}', "--teacher",
                     str(card), "--n", str(n), "--seeds", *map(str, seeds or [seed]), "--batch-size", "4",
                     "--shard", str(j), "--shard-size", str(shard_size), "--device", "cpu", "--threads", "1",
                     "--out", str(folder)]) == 0
    assert main(["merge-samples", "--shards", *(str(f / f"seed{seed}") for f in folders), "--n", str(n),
                 "--grid", "4", "--out", str(out)]) == 0
    return out.with_suffix(".npz")


def _quality(samples, seed, judge, ref, out):
    """The DAG's quality job for one seed (its folder `out`); returns the seed's numbers."""
    assert main(["quality", "--method", "ddpm-3", "--samples", f"{seed}={samples}", "--evaluator", str(judge),
                 "--reference", str(ref), "--metrics", METRICS, "--scored-by", "all", "--device", "cpu",
                 "--threads", "1", "--out", str(out)]) == 0
    row = json.loads((out / f"seed{seed}.json").read_text())
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
    qa = _quality(a, 0, judge, ref, tmp / "run1" / "q")
    qb = _quality(b, 0, judge, ref, tmp / "run2" / "q")
    qc = _quality(c, 1, judge, ref, tmp / "run1" / "q1")
    assert qa == qb                                                 # every number, exactly
    assert qa["fd"] != qc["fd"] and qa["kid"] != qc["kid"]
    # one job for both seeds (as the DAG runs a method's seeds): each seed's numbers are the ones it gets alone
    assert main(["quality", "--method", "ddpm-3", "--samples", f"0={a}", f"1={c}", "--evaluator", str(judge),
                 "--reference", str(ref), "--metrics", METRICS, "--scored-by", "all", "--device", "cpu",
                 "--threads", "1", "--out", str(tmp / "both")]) == 0
    for seed, alone in ((0, qa), (1, qc)):
        row = json.loads((tmp / "both" / f"seed{seed}.json").read_text())
        assert {k: v for k, v in row.items() if k not in ("provenance", "samples")} == alone


def test_one_job_for_several_seeds_gives_each_seed_its_own_bits(setup):
    """A sample job samples every seed of its method (built once): each seed's run is the one a job of that seed
    alone makes, byte for byte."""
    tmp, card, _ = setup
    alone = _sample(card, tmp / "alone" / "seed1", seed=1)
    together = _sample(card, tmp / "together" / "seed1", seed=1, seeds=[0, 1])
    assert alone.read_bytes() == together.read_bytes()
    assert json.loads((tmp / "together" / "seed1-shard0" / "seed0.json").read_text())["seed"] == 0


def test_sharded_sampling_gives_the_same_bits(setup):
    """sampling.shard_size splits a run into jobs; merged, they are the run made in one piece."""
    tmp, card, _ = setup
    whole = _sample(card, tmp / "whole" / "seed0", seed=0, n=12)
    shards = _sample(card, tmp / "shards" / "seed0", seed=0, n=12, shard_size=4)
    assert whole.read_bytes() == shards.read_bytes()
    stats = json.loads((tmp / "shards" / "seed0.json").read_text())
    assert stats["n"] == 12 and stats["shards"] == 3 and (tmp / "shards" / "seed0.png").exists()
    assert stats["seconds"] > 0 and "images_per_s" not in stats   # a sample job generates; the timing job times
    # shards that do not tile the run (one missing) are refused, naming them; nothing is written
    assert main(["merge-samples", "--shards", str(tmp / "shards" / "seed0-shard0" / "seed0"),
                 str(tmp / "shards" / "seed0-shard2" / "seed0"), "--n", "12", "--grid", "4",
                 "--out", str(tmp / "bad" / "seed0")]) == 2
    assert not (tmp / "bad").exists()
    # a shard size that is not a multiple of the batch size would change the draws: refused before sampling
    assert main(["sample", "--method", "ddpm-3", "--block", '{"family": "ddpm", "steps": 3}', "--teacher", str(card),
                 "--n", "12", "--seeds", "0", "--batch-size", "4", "--shard", "1", "--shard-size", "6", "--device",
                 "cpu", "--out", str(tmp / "bad" / "p1")]) == 2
    assert not (tmp / "bad").exists()


def test_a_sample_job_is_the_run_made_in_one_call_and_its_clock_counts_only_sampling(setup, capsys):
    """A sample job generates and nothing else (no speed probes between its batches): its images are the
    method's run made in one call, and the job's clock record (advkd.jobclock, in its log) counts the sampler's
    seconds as work and the rest (imports, building the method) as start-up."""
    from advkd import jobclock
    from advkd.families import build_method

    tmp, card, _ = setup
    n, batch = 40, 4
    capsys.readouterr()
    out = _sample(card, tmp / "probed" / "seed0", seed=3, n=n)
    records = [jobclock.parse(line) for line in capsys.readouterr().err.splitlines() if jobclock.MARK in line]
    sample_rec, merge_rec = records
    stats = json.loads((tmp / "probed" / "seed0-shard0" / "seed3.json").read_text())
    assert sample_rec["stage"] == "sample" and sample_rec["work"]["sampling"]["wall_s"] == stats["seconds"]
    assert sample_rec["process_start"] <= sample_rec["entered"] <= sample_rec["called"] <= sample_rec["ended"]
    assert stats["seconds"] < sample_rec["ended"] - sample_rec["called"]   # building the method is not sampling
    assert merge_rec["stage"] == "merge-samples" and list(merge_rec["work"]) == ["call"]   # marks nothing: all work
    method = build_method("ddpm-3", {"family": "ddpm", "steps": 3}, {"teacher": str(card), "device": "cpu"})
    whole, _ = method.generate(n, 3, batch, progress=False)
    assert np.array_equal(load_images(out), whole)
