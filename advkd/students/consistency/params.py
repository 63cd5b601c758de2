"""The consistency-distillation student's parameters: no torch here, config validation reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ...method import Params, max_runs_errors, param


@dataclass(frozen=True)
class ConsistencyParams(Params):
    steps: int = param(1, "consistency steps when sampling (= NFE): x_T to an image, then re-noised to ever smaller "
                       "times of the grid and mapped again; rows that differ only in steps share one training run",
                       type="integer", minimum=1, maximum=64)
    grid_steps: int = param(20, "the time grid: the states of the teacher's DDIM-N run (N = this); training pairs "
                            "adjacent ones", type="integer", minimum=2, maximum=1000)
    output: str = param("v", "what the network predicts: v (x_0 = alpha z - sigma v; an error in v reaches x_0 "
                        "scaled by sigma <= 1) or eps, the teacher's own output (x_0 = (z - sigma eps) / alpha; an "
                        "error in eps reaches x_0 scaled by sigma / alpha, 97x at the DDIM-20 grid's noisiest state)",
                        enum=["v", "eps"])
    denoiser_epochs: int = param(1, "passes, before consistency training, in which the network learns the "
                                 "teacher's one-step x_0 estimate in its own output (the re-parametrisation from the "
                                 "teacher's eps; 0: none, consistency training starts from the teacher's weights)",
                                 type="integer", minimum=0)
    epochs: int = param(12, "passes of consistency training over the teacher's x_0 images (with denoiser_epochs, the "
                        "training budget)", type="integer", minimum=1)
    batch_size: int = param(64, "training batch", type="integer", minimum=2)
    lr: float = param(1e-4, "Adam learning rate", type="number", exclusiveMinimum=0)
    target_ema: float = param(0.95, "decay per step of the target network's average of the online weights (Song et "
                              "al.'s mu for distillation)", type="number", minimum=0, exclusiveMaximum=1)
    distance: str = param("pseudo-huber", "pseudo-huber = sqrt(|a-b|^2 + c^2) - c with c = 0.00054 sqrt(dims) "
                          "(Song and Dhariwal 2023); l2 = squared distance; neither needs a downloaded network",
                          enum=["pseudo-huber", "l2"])
    max_runs: int | None = param(None, "train on the first N trajectory runs' x_0 only (null: all)",
                                 type=["integer", "null"], minimum=2)

    example = {"epochs": 1, "denoiser_epochs": 1, "batch_size": 8, "grid_steps": 4}
    budget_keys = ("epochs", "denoiser_epochs")
    sampling_keys = ("steps",)

    @property
    def nfe(self) -> int:
        return self.steps

    def errors(self, where: str, block: dict, cfg: dict) -> list[str]:
        errs = []
        if self.steps > self.grid_steps:
            errs.append(f"{where}.steps: {self.steps} sampling steps need as many times on the grid, which has "
                        f"{self.grid_steps} (grid_steps)")
        return errs + max_runs_errors(where, self.max_runs, cfg)
