"""Every random draw of the project, by purpose: one named stream per (purpose, keys...).

A stream is the output of numpy's SeedSequence over (the purpose's name, the number of keys, the keys), so two
purposes never share a draw whatever their seeds and counts (two key tuples give the same state only by a
128-bit hash collision). torch generators get that entropy as their whole Mersenne-Twister state: torch's CPU
generator seeded by `manual_seed(s)` uses only the low 32 bits of s, so integer seeds of different purposes
would collide by the birthday bound within a few tens of thousands of streams.

Common random numbers: sample batch b of seed s draws the same x_T for every method (`sample_batch`), so methods
are compared on the same inputs and each student's image can be set beside the teacher's from the same x_T.

Two streams keep their historical derivation, each the only user of its kind of seed:
- `trajectory_batch`, the distillation set's draws, so that the shipped student stays trained on exactly the set
  its card's sha256 names. It seeds torch's generator from a 32-bit integer, and every other torch stream here has a
  full 19,937-bit state, so the two kinds cannot coincide (tests/unit/test_rng.py regenerates the x_T of the
  default's and ci's sample sets and distillation sets and checks that no row of one is a row of the other).
- `split_rng`, the held-out split's validation/test halves, so that the validation half the suite's recipes were
  chosen on stays the validation half (docs/choices.md). It is numpy's default_rng(seed), i.e. SeedSequence(seed),
  whose entropy equals another stream's (purpose, count, keys...) only if the seed were a purpose's 64-bit hash.
"""

from __future__ import annotations

import hashlib

import numpy as np

# Every purpose a draw may serve. A new purpose is added here, never by reusing another's stream.
PURPOSES = (
    "samples",            # x_T and ancestral noise of sample batches (report and tuning seeds are disjoint sets)
    "real-rows",          # the real-data row's picks from a held-out half
    "metric-subsets",     # precision/recall reference picks, KID subsets, memorisation and sanity picks
    "student-init",       # a student's initial weights and the global torch state its training draws from
    "training-batches",   # a training epoch's order and its noise (one generator per segment and epoch)
    "student-grid",       # the grid.png a distill job draws from fresh noise
    "timing-inputs",      # the inputs the cost and timing jobs feed the networks
    "teacher-training",   # the teacher's initial weights, data order and noise
    "judge-training",     # the judges' initial weights and data order
    "random-weights",     # cost-only experiments' seeded random networks
)


def _word(key) -> int:
    if isinstance(key, (bool, np.bool_)):
        raise TypeError("a stream key is an int or a str, not a bool")
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"a stream key must be non-negative, got {key}")
        return int(key)
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    raise TypeError(f"a stream key is an int or a str, got {type(key).__name__}")


def seed_sequence(purpose: str, *keys) -> np.random.SeedSequence:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random-stream purpose {purpose!r}; the purposes are listed in advkd.rng.PURPOSES")
    # the key count is part of the entropy: SeedSequence pads with zeros, so (a,) and (a, 0) would be one stream
    return np.random.SeedSequence([_word(purpose), len(keys), *map(_word, keys)])


def numpy_rng(purpose: str, *keys) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(purpose, *keys))


def seed_int(purpose: str, *keys) -> int:
    """A 63-bit integer seed of the stream, for APIs that take one (e.g. a numpy seed argument)."""
    return int(seed_sequence(purpose, *keys).generate_state(1, np.uint64)[0] >> np.uint64(1))


# torch's CPU generator state (CPUGeneratorImplStateLegacy, 5,056 bytes): the initial seed (uint64), `left` and
# `seeded` (int32), `next` (uint64), the Mersenne Twister's 624 words (each in a uint64), then the cached normals.
_MT_WORDS, _MT_OFFSET = 624, 24


def _state_template():
    """A state of the right layout only: torch_generator replaces every Mersenne-Twister word of it."""
    import torch

    state = torch.Generator().manual_seed(0).get_state()
    if state.numel() != 5056:
        raise RuntimeError(f"torch's CPU generator state has {state.numel()} bytes, not the 5,056 advkd.rng knows; "
                           "update advkd/rng.py for this torch version")
    return state


_TEMPLATE = None


def torch_generator(purpose: str, *keys):
    """A CPU torch.Generator whose whole Mersenne-Twister state comes from the stream (see the module docstring).
    """
    import torch

    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = _state_template()
    ss = seed_sequence(purpose, *keys)
    state = _TEMPLATE.clone().numpy()
    words = ss.generate_state(_MT_WORDS, np.uint32).astype(np.uint64)
    state[_MT_OFFSET:_MT_OFFSET + 8 * _MT_WORDS] = words.view(np.uint8)
    state[:8] = ss.generate_state(1, np.uint64).view(np.uint8)  # initial_seed(): informational only
    g = torch.Generator()
    g.set_state(torch.from_numpy(state))
    return g


def seed_torch(purpose: str, *keys) -> None:
    """Set torch's global CPU generator to the stream (for code that draws without a generator argument:
    module initialisers, dropout)."""
    import torch

    torch.set_rng_state(torch_generator(purpose, *keys).get_state())


def sample_batch(seed: int, batch: int):
    """Batch `batch` of sample seed `seed`: every method draws its x_T (then any ancestral noise) from it."""
    return torch_generator("samples", seed, batch)


def split_rng(seed: int) -> np.random.Generator:
    """The held-out split's draws (validation/test halves, a folder's or digits' train/held-out split): the
    historical derivation, see the module docstring."""
    return np.random.default_rng(seed)


def trajectory_batch(seed: int, shard: int, batch: int):
    """Batch `batch` of shard `shard` of the distillation set: the historical 32-bit derivation, kept so that the
    shipped student's distillation set (its card's sha256) is unchanged; see the module docstring."""
    import torch

    return torch.Generator().manual_seed(((seed * 7919 + shard) * 1_000_003 + batch) % (2**63))
