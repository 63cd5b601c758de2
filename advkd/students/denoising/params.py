"""The Denoising Student's parameters (Luhman & Luhman 2021): no torch here, config validation reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ...method import Params, max_runs_errors, param


@dataclass(frozen=True)
class DenoisingParams(Params):
    init: str = param("teacher", "weights to start from: teacher = the teacher's (Luhman & Luhman), random = fresh",
                      enum=["teacher", "random"])
    output: str = param("residual", "what the UNet's output means: residual = x_T minus the image, so that a "
                        "teacher-initialised student, whose output at the last timestep is its noise estimate (close "
                        "to x_T), starts near a blank image; x0 = the image itself, so it starts near x_T and must "
                        "first unlearn the noise", enum=["residual", "x0"])
    regression: str = param("mse", "regression loss kind", enum=["mse", "l1"])
    epochs: int = param(20, "passes over the (x_T, x_0) pairs", type="integer", minimum=1)
    batch_size: int = param(64, "training batch", type="integer", minimum=2)
    lr: float = param(1e-4, "Adam learning rate", type="number", exclusiveMinimum=0)
    max_runs: int | None = param(None, "train on the first N trajectory runs only (null: all)",
                                 type=["integer", "null"], minimum=2)

    example = {"epochs": 2, "batch_size": 8}
    budget_keys = ("epochs",)

    def errors(self, where: str, block: dict, cfg: dict) -> list[str]:
        return max_runs_errors(where, self.max_runs, cfg)
