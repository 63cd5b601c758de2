"""What the multi-step peers (progressive, consistency, reflow) share: the teacher's variance-preserving schedule on
the grid of its deterministic sampler, one DDIM step of the teacher, and the student network (the teacher's UNet,
teacher-initialised, fed a state and its time).

The grid is the suite's own DDIM sampler's (diffusers DDIMScheduler set to N steps from the teacher's training
config): times t_0 > t_1 > ... > t_{N-1}, and after the last step the scheduler's final alpha. A run starts from
x_T read as the state at t_0, as the DDIM sampler does, so a student's one step from x_T is comparable with the
teacher's N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..samplers import SchedulerSpec, make_scheduler
from ..teacher import load_teacher

DDIM = SchedulerSpec("DDIMScheduler", {}, {"eta": 0.0})


@dataclass
class Grid:
    """The teacher's DDIM-N grid: timesteps (N,) and alpha-bar at each of the N+1 states (the last: x_0's)."""
    timesteps: torch.Tensor     # (N,) long, decreasing
    alpha_bar: torch.Tensor     # (N+1,) float64: alpha_bar[k] at state k; state N is the sample
    clip: float | None          # the scheduler's clip_sample_range when clip_sample is set (x0 predictions)

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def alpha_sigma(self, k):
        """sqrt(alpha_bar), sqrt(1 - alpha_bar) at state index k (tensor of indices), shaped to broadcast on
        images."""
        a = self.alpha_bar[k].float()
        return a.sqrt().view(-1, 1, 1, 1), (1 - a).sqrt().view(-1, 1, 1, 1)


def teacher_parts(card_path) -> tuple:
    """(the teacher's UNet in fp32, what a student saves to rebuild its network and grid without the teacher:
    {"unet_config", "timestep" (the last training step), "scheduler_config"}, card)."""
    unet, train_config, card = load_teacher(card_path, "cpu")
    unet = unet.to(memory_format=torch.contiguous_format).float()
    return unet, {"unet_config": dict(unet.config), "timestep": int(train_config["num_train_timesteps"]) - 1,
                  "scheduler_config": dict(train_config)}, card


def teacher_grid(train_config, steps: int) -> Grid:
    sched = make_scheduler(DDIM, steps, train_config)
    ts = sched.timesteps.long()
    ab = torch.cat([sched.alphas_cumprod[ts].double(), torch.tensor([float(sched.final_alpha_cumprod)],
                                                                     dtype=torch.float64)])
    clip = float(sched.config.clip_sample_range) if sched.config.clip_sample else None
    return Grid(ts, ab, clip)


def teacher_x0(grid: Grid, unet, x, k, clip=True):
    """(x0, eps): the eps teacher's one-step x0 estimate at grid state k (k: (B,) long), clipped when its scheduler
    clips, and the noise prediction it came from."""
    a, s = (v.to(x.device) for v in grid.alpha_sigma(k))
    eps = unet(x, grid.timesteps[k].to(x.device)).sample
    x0 = (x - s * eps) / a
    if clip and grid.clip is not None:
        x0 = x0.clamp(-grid.clip, grid.clip)
    return x0, eps


def ddim_step(grid: Grid, unet, x, k, clip=True):
    """The teacher's deterministic DDIM step from state k to state k+1 (k: (B,) long), as diffusers' DDIMScheduler
    with eta 0 takes it: x0 from the noise prediction, clipped when the scheduler clips, then recombined with the
    same noise prediction."""
    x0, eps = teacher_x0(grid, unet, x, k, clip)
    a2, s2 = (v.to(x.device) for v in grid.alpha_sigma(k + 1))
    return a2 * x0 + s2 * eps


class TimedUNet(nn.Module):
    """A student network: the teacher's UNet called on (state, time), time a DDPM timestep (a float is allowed; a
    tensor of one per image or one for all). Without a time it runs at `default_time`, where one network
    evaluation is costed."""

    def __init__(self, unet, default_time: float):
        super().__init__()
        self.unet, self.default_time = unet, float(default_time)

    def forward(self, x, time=None):
        time = self.default_time if time is None else time
        t = time.to(x.device).float().expand(x.shape[0]) if torch.is_tensor(time) else \
            torch.full((x.shape[0],), float(time), device=x.device)
        return self.unet(x, t).sample
