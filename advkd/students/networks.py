"""Networks every student family may use: the teacher's UNet as a one-step student, and small helpers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


def resize_to(x, resolution: int):
    """Teacher states to a given resolution: area averaging (anti-aliased) when shrinking."""
    h = x.shape[-1]
    if h == resolution:
        return x
    if h > resolution:
        return F.avg_pool2d(x, h // resolution)
    return F.interpolate(x, size=(resolution, resolution), mode="nearest")


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class UNetStudent(nn.Module):
    """The teacher's UNet as a one-step x_T -> x_0 map: the timestep input is pinned to the last training step."""

    def __init__(self, unet, timestep: int, residual: bool = False):
        super().__init__()
        self.unet, self.timestep, self.residual = unet, int(timestep), residual

    def forward(self, z):
        out = self.unet(z, self.timestep).sample
        return z - out if self.residual else out


def unet_from_config(unet_config: dict):
    from diffusers import UNet2DModel

    return UNet2DModel.from_config(unet_config)
