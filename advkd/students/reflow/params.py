"""The reflow student's parameters: no torch here, config validation reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ...method import PairParams, param


@dataclass(frozen=True)
class ReflowParams(PairParams):
    steps: int = param(1, "Euler steps from x_T to the image when sampling (= NFE); rows that differ only in steps "
                       "share one training run", type="integer", minimum=1, maximum=64)
    epochs: int = param(12, "passes over the (x_T, x_0) pairs, each at a random point of its straight path (the "
                        "training budget)", type="integer", minimum=1)

    sampling_keys = ("steps",)

    @property
    def nfe(self) -> int:
        return self.steps
