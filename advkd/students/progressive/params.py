"""The progressive-distillation student's parameters: no torch here, config validation reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ...method import Params, max_runs_errors, param


def halvings(teacher_steps: int, min_steps: int) -> list[int]:
    """Step counts of the students the rounds produce: teacher_steps (the reparametrisation round), then halved
    down to min_steps."""
    out, n = [teacher_steps], teacher_steps
    while n > min_steps:
        n //= 2
        out.append(n)
    return out


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class ProgressiveParams(Params):
    steps: int = param(1, "the row's sampling steps (= NFE): one of the step counts the rounds produce; rows that "
                       "differ only in steps share one training run", type="integer", minimum=1, maximum=1024)
    teacher_steps: int = param(8, "the teacher's DDIM steps the first halving starts from (a power of 2)",
                               type="integer", minimum=2, maximum=1024)
    min_steps: int = param(1, "the last round's student (a power of 2 below teacher_steps)", type="integer",
                           minimum=1)
    epochs_per_round: int = param(2, "passes over the teacher's x_0 images in each round (the training budget)",
                                  type="integer", minimum=1)
    batch_size: int = param(32, "training batch", type="integer", minimum=2)
    lr: float = param(1e-4, "Adam learning rate (each round starts a fresh optimiser)", type="number",
                      exclusiveMinimum=0)
    max_runs: int | None = param(None, "train on the first N trajectory runs' x_0 only (null: all)",
                                 type=["integer", "null"], minimum=2)

    example = {"teacher_steps": 2, "epochs_per_round": 1, "batch_size": 8}
    budget_keys = ("epochs_per_round",)
    sampling_keys = ("steps",)

    @property
    def nfe(self) -> int:
        return self.steps

    def errors(self, where: str, block: dict, cfg: dict) -> list[str]:
        errs = []
        if not is_power_of_two(self.teacher_steps):
            errs.append(f"{where}.teacher_steps: {self.teacher_steps} is not a power of 2, so halving it does not "
                        "end at one step")
        elif not is_power_of_two(self.min_steps) or self.min_steps >= self.teacher_steps:
            errs.append(f"{where}.min_steps: {self.min_steps} must be a power of 2 below teacher_steps "
                        f"{self.teacher_steps}")
        elif self.steps not in halvings(self.teacher_steps, self.min_steps):
            errs.append(f"{where}.steps: {self.steps} is not a step count the rounds produce "
                        f"({halvings(self.teacher_steps, self.min_steps)})")
        return errs + max_runs_errors(where, self.max_runs, cfg)
