"""The reflow student's parameters: no torch here, config validation reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ...method import Params, max_runs_errors, param


@dataclass(frozen=True)
class ReflowParams(Params):
    steps: int = param(1, "Euler steps from x_T to the image when sampling (= NFE); rows that differ only in steps "
                       "share one training run", type="integer", minimum=1, maximum=64)
    epochs: int = param(12, "passes over the (x_T, x_0) pairs, each at a random point of its straight path (the "
                        "training budget)", type="integer", minimum=1)
    batch_size: int = param(64, "training batch", type="integer", minimum=2)
    lr: float = param(1e-4, "Adam learning rate", type="number", exclusiveMinimum=0)
    max_runs: int | None = param(None, "train on the first N trajectory runs only (null: all)",
                                 type=["integer", "null"], minimum=2)

    example = {"epochs": 2, "batch_size": 8}
    budget_keys = ("epochs",)
    sampling_keys = ("steps",)

    @property
    def nfe(self) -> int:
        return self.steps

    def errors(self, where: str, block: dict, cfg: dict) -> list[str]:
        return max_runs_errors(where, self.max_runs, cfg)
