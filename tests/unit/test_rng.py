"""Random streams by purpose (advkd.rng): no reported sample starts from an x_T a student was trained on, streams of
different purposes never share a draw, and every method of a seed starts from the same x_T."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from advkd import rng
from advkd.config import read_yaml, validate_config
from advkd.trajectories import shard_ranges

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def experiment(name: str) -> dict:
    return validate_config(read_yaml(EXPERIMENTS / f"{name}.yaml"), name, require_inputs=False)


def _rows(generators, counts, shape) -> torch.Tensor:
    """x_T as the samplers and students draw it: each batch's first draw from its own generator."""
    return torch.cat([torch.randn((m, *shape), generator=g) for g, m in zip(generators, counts)]).flatten(1)


def sample_x_T(cfg: dict) -> dict[int, torch.Tensor]:
    """seed -> the x_T rows of the largest sample set of that seed in the experiment (a smaller set of the same
    seed is its prefix)."""
    s = cfg["sampling"]
    shape = (cfg["data"]["channels"], cfg["data"]["resolution"], cfg["data"]["resolution"])
    largest = {}
    for block in cfg["methods"].values():
        for seed in block.get("seeds", s["seeds"]):
            largest[seed] = max(largest.get(seed, 0), block.get("n", s["n"]))
    out = {}
    for seed, n in largest.items():
        counts = [min(s["batch_size"], n - b) for b in range(0, n, s["batch_size"])]
        out[seed] = _rows((rng.sample_batch(seed, b) for b in range(len(counts))), counts, shape)
    return out


def distillation_x_T(cfg: dict) -> torch.Tensor:
    t = cfg["trajectories"]
    batch = t["batch_size"] or cfg["sampling"]["batch_size"]   # as workflow/rules/teacher.smk passes it
    shape = (cfg["data"]["channels"], cfg["data"]["resolution"], cfg["data"]["resolution"])
    rows = []
    for shard, (start, stop) in enumerate(shard_ranges(t["count"], t["shard_size"])):
        counts = [min(batch, stop - start - b) for b in range(0, stop - start, batch)]
        rows.append(_rows((rng.trajectory_batch(cfg["seed"], shard, b) for b in range(len(counts))), counts, shape))
    return torch.cat(rows)


@pytest.mark.parametrize("name", ["default", "ci"])
def test_no_sample_starts_from_a_distillation_input(name):
    cfg = experiment(name)
    train = distillation_x_T(cfg)
    assert len(train) == cfg["trajectories"]["count"]
    for seed, rows in sample_x_T(cfg).items():
        nearest = torch.cdist(rows, train).min().item()
        # independent standard normals in d dimensions lie about sqrt(2d) apart; equal rows would be 0
        assert nearest > 0.5 * np.sqrt(rows.shape[1]), (name, seed, nearest)
    seeds = sorted(sample_x_T(cfg))
    for a, b in itertools.combinations(seeds, 2):
        assert torch.cdist(sample_x_T(cfg)[a], sample_x_T(cfg)[b]).min() > 0.5 * np.sqrt(train.shape[1])


def test_the_old_derivation_collided_and_the_test_would_see_it():
    """The bug this module removed: trajectory shard k drew from sample seed k's generators. The check above finds
    such a collision (a control: the test can fail)."""
    old_sample = torch.randn((25, 1024), generator=torch.Generator().manual_seed(1 * 1_000_003 + 0))
    train = torch.randn((250, 1024), generator=rng.trajectory_batch(0, 1, 0))
    assert torch.cdist(old_sample, train).min() == 0


def test_streams_of_different_purposes_differ_for_every_seed_in_a_range():
    first = {}
    for purpose in rng.PURPOSES:
        for seed in range(40):
            draw = torch.randn(8, generator=rng.torch_generator(purpose, seed)).numpy()
            first[(purpose, seed)] = draw
    values = np.stack(list(first.values()))
    assert len(np.unique(values.round(6), axis=0)) == len(values)
    # the numpy side of each stream too, and a stream is the same every time it is asked for
    draws = {(p, s): rng.numpy_rng(p, s).integers(0, 2**62) for p in rng.PURPOSES for s in range(40)}
    assert len(set(draws.values())) == len(draws)
    assert rng.numpy_rng("real-rows", 3).integers(0, 2**62) == draws[("real-rows", 3)]
    assert torch.equal(torch.randn(8, generator=rng.torch_generator("samples", 7)),
                       torch.from_numpy(first[("samples", 7)]))


def test_keys_are_told_apart_by_count_and_type():
    a = rng.seed_int("samples", 1)
    assert a != rng.seed_int("samples", 1, 0)   # SeedSequence alone pads with zeros: (1,) == (1, 0)
    assert a != rng.seed_int("samples", 0, 1)
    with pytest.raises(ValueError, match="unknown random-stream purpose"):
        rng.torch_generator("sampels", 0)
    with pytest.raises(ValueError, match="non-negative"):
        rng.seed_int("samples", -1)


def test_torch_generators_use_their_whole_state():
    """torch's manual_seed keeps only the low 32 bits of a seed: streams must not go through it."""
    assert torch.equal(torch.randn(4, generator=torch.Generator().manual_seed(5)),
                       torch.randn(4, generator=torch.Generator().manual_seed(5 + 2**32)))
    g = rng.torch_generator("samples", 0, 0)
    assert torch.randn(1000, generator=g).std().item() == pytest.approx(1.0, abs=0.1)
    rng.seed_torch("student-init", 3)
    a = torch.rand(4)
    rng.seed_torch("student-init", 3)
    assert torch.equal(a, torch.rand(4))


def test_a_sampler_and_a_student_start_seed_s_from_the_same_x_T(tmp_path):
    """Common random numbers: batch b of seed s is the same x_T for the teacher's samplers and for every student,
    and a shard of a run (first_batch) gets exactly that run's draws."""
    from advkd.samplers import SchedulerSpec, run_sampler
    from advkd.stages.teacher import teacher_card
    from advkd.students.common import student_method
    from advkd.teacher import load_teacher

    card = tmp_path / "teacher.json"
    teacher_card({"source": "random", "architecture": "digits8", "seed": 0}, card)
    unet, train_config, _ = load_teacher(card)
    _, x_T, _, _ = run_sampler(unet, SchedulerSpec("DDIMScheduler"), 2, train_config, 5, seed=4, batch_size=2,
                               device="cpu", progress=False)
    assert torch.equal(x_T.flatten(1), _rows((rng.sample_batch(4, b) for b in range(3)), [2, 2, 1], (1, 8, 8)))
    student = student_method("identity", "toy", 1, lambda z: z, torch.nn.Identity(), (1, 8, 8), (1, 8, 8), 0, {})
    images, _ = student.sample(5, 4, 2, False)
    assert torch.equal(images, x_T)
    later, _ = student.sample(3, 4, 2, False, first_batch=1)
    assert torch.equal(later, x_T[2:])
