"""The Denoising Student's parameters (Luhman & Luhman 2021): no torch here, config validation reads them."""

from __future__ import annotations

from dataclasses import dataclass

from ...method import PairParams, param


@dataclass(frozen=True)
class DenoisingParams(PairParams):
    init: str = param("teacher", "weights to start from: teacher = the teacher's (Luhman & Luhman), random = fresh",
                      enum=["teacher", "random"])
    output: str = param("residual", "what the UNet's output means: residual = x_T minus the image, so that a "
                        "teacher-initialised student, whose output at the last timestep is its noise estimate (close "
                        "to x_T), starts near a blank image; x0 = the image itself, so it starts near x_T and must "
                        "first unlearn the noise", enum=["residual", "x0"])
    regression: str = param("mse", "regression loss kind", enum=["mse", "l1"])
