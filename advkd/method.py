"""What every method is, sampler or student: the contract the sampling, quality and cost stages rely on, so that
they never ask which kind a method is. The registry of families that make methods is advkd.methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .data import to_uint8

# Keys of a method's config block that only say how it is scored (how many samples, which seeds): never passed to
# its training or cost jobs, so changing them only resamples and rescores.
SCORING_KEYS = ("n", "seeds")


@dataclass
class Method:
    """What the rest of the suite needs from any method."""
    name: str
    family: str
    nfe: int                                     # network evaluations per sample
    sample: Callable                             # (n, seed, batch_size, progress, first_batch=0)
                                                 #   -> (float (n,C,H,W) in [-1,1], stats)
    network: torch.nn.Module                     # one network evaluation (for FLOPs, latency, params)
    network_inputs: Callable                     # batch -> args for one network evaluation
    inference_parameters: int                    # parameters used to sample
    all_parameters: int                          # parameters trained/stored (e.g. with discriminators, heads)
    info: dict = field(default_factory=dict)

    def generate(self, n: int, seed: int, batch_size: int = 250, progress: bool = True, first_batch: int = 0):
        """uint8 images (n,H,W,C) and sampling stats; batches first_batch.. of the seed's run (see samplers)."""
        x, stats = self.sample(n, seed, batch_size, progress, first_batch)
        return to_uint8(x), stats
