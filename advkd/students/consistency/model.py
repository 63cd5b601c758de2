"""Consistency distillation (Song, Dhariwal, Chen and Sutskever 2023) from the suite's teacher.

The consistency function, in the teacher's variance-exploding coordinates (state z_k = alpha_k x + sigma_k eps is
the point x + (sigma_k / alpha_k) eps), is f(z_k, k) = c_skip(s) z_k / alpha_k + (1 - c_skip(s)) D(z_k, t_k) with
s = sigma_k / alpha_k, Song et al.'s c_skip(s) = sd^2 / ((s - s_min)^2 + sd^2), sd = 0.5, s_min the grid's
smallest, and D the network's denoised image: at the smallest time f is the identity by construction. The mix with
weights c_skip and 1 - c_skip is diffusers' LCMScheduler's (denoised = c_out * x0 + c_skip * sample). Song et al.'s
c_out(s) = (s - s_min) sd / sqrt(sd^2 + s^2) on the raw network output suits an EDM network whose output is scaled
for it; on this UNet it made f start as half the noise (FD ~295 at one step, first default run).

The network is the teacher's UNet (it sees the state the teacher sees, at its DDPM timestep). It predicts v by
default, D = alpha z - sigma v, the parametrisation progressive distillation uses for few steps: with the teacher's
own eps output, D = (z - sigma eps) / alpha multiplies every error of the network by sigma / alpha (97x at the
DDIM-20 grid's noisiest state), and the one-step samples stayed speckled noise (FD 241, second default run;
`output: eps` keeps that form). As the teacher predicts eps, training begins with `denoiser_epochs` of learning
the teacher's one-step x_0 estimate (clipped as its scheduler clips it) in the network's output, so consistency
training starts, as Song et al.'s teacher-initialised networks do, from the teacher's denoiser. Consistency
training draws a teacher image x, a grid index k and noise, takes one deterministic DDIM step of the teacher from
z_k to z_{k+1} (the adjacent, less noisy time) and pulls f(z_k, k) towards the EMA target network's
f(z_{k+1}, k+1). Sampling: f(x_T, 0), then re-noised to a smaller time of the grid and mapped again, `steps`
times in all.

diffusers' CMStochasticIterativeScheduler is not used: it computes its own scalings from Karras sigmas and feeds
the network EDM's c_noise = 250 log(sigma) and c_in-scaled inputs, while this network is the DDPM teacher's UNet,
conditioned on DDPM timesteps and fed variance-preserving states; its grid is the teacher's DDIM grid.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ... import rng
from ...data import save_grid, to_uint8
from ..common import generator_weights
from ..family import Sampling, StudentFamily
from ..networks import count, unet_from_config
from ..training import Segment
from ..vp import Grid, TimedUNet, ddim_step, teacher_grid, teacher_parts, teacher_x0

SIGMA_DATA = 0.5


class ConsistencyFunction(nn.Module):
    """f(z, k) on the teacher's DDIM grid (see the module docstring); `net` is called once per evaluation."""

    def __init__(self, net: TimedUNet, grid: Grid, output: str):
        super().__init__()
        self.net, self.grid, self.output = net, grid, output
        a = grid.alpha_bar[:-1]
        self.sigma = ((1 - a) / a).sqrt()              # per grid state 0..N-1, variance-exploding
        self.sigma_min = self.sigma[-1]

    def c_skip(self, k):
        s = self.sigma[k]
        return (SIGMA_DATA ** 2 / ((s - self.sigma_min) ** 2 + SIGMA_DATA ** 2)).float().view(-1, 1, 1, 1)

    def denoise(self, z, k):
        """D(z_k, k): the network's x_0 estimate, read from its output."""
        a, sig = (v.to(z.device) for v in self.grid.alpha_sigma(k))
        out = self.net(z, self.grid.timesteps[k].to(z.device))
        return a * z - sig * out if self.output == "v" else (z - sig * out) / a

    def target_output(self, z, k, x0):
        """The network output whose D is x0 (the inverse of `denoise`)."""
        a, sig = (v.to(z.device) for v in self.grid.alpha_sigma(k))
        return (a * z - x0) / sig if self.output == "v" else (z - a * x0) / sig

    def forward(self, z, k):
        a = self.grid.alpha_sigma(k)[0].to(z.device)
        c_skip = self.c_skip(k).to(z.device)
        return c_skip * z / a + (1 - c_skip) * self.denoise(z, k)


def sample_states(grid_steps: int, steps: int) -> list[int]:
    """Grid states a `steps`-step sample visits: 0 (x_T) first, then evenly smaller times."""
    return [(j * (grid_steps - 1)) // steps for j in range(steps)]


def consistency_sample(f: ConsistencyFunction, x_T, steps: int, gen: torch.Generator | None = None):
    ks = sample_states(f.grid.steps, steps)
    x = x_T
    for j, k in enumerate(ks):
        x0 = f(x, torch.full((len(x),), k)).clamp(-1, 1)
        if j + 1 < len(ks):
            a, s = f.grid.alpha_sigma(torch.tensor([ks[j + 1]]))
            x = a.to(x.device) * x0 + s.to(x.device) * torch.randn(x.shape, generator=gen).to(x.device)
    return x0


def distance(kind: str, a, b):
    if kind == "l2":
        return ((a - b) ** 2).flatten(1).sum(1).mean()
    c = 0.00054 * a[0].numel() ** 0.5
    return (((a - b) ** 2).flatten(1).sum(1) + c ** 2).sqrt().sub(c).mean()


def make_function(cfg: dict, unet=None) -> ConsistencyFunction:
    net = TimedUNet(unet if unet is not None else unet_from_config(cfg["unet_config"]), 0)
    grid = teacher_grid(cfg["scheduler_config"], cfg["grid_steps"])
    net.default_time = float(grid.timesteps[0])   # one evaluation is costed where sampling starts
    return ConsistencyFunction(net, grid, cfg["output"])


def panel(f: ConsistencyFunction, x_T, x_0, path, examples: int = 6) -> None:
    """Per training run: x_T, the teacher's x_0, the student's with 1 and 2 steps."""
    g = rng.torch_generator("student-grid", "panel")
    with torch.no_grad():
        one, two = consistency_sample(f, x_T[:examples], 1), consistency_sample(f, x_T[:examples], 2, g)
    tiles = torch.stack([x_T[:examples].clamp(-1, 1), x_0[:examples], one, two], 1)
    save_grid(path, to_uint8(tiles.flatten(0, 1)), nrow=4)


@dataclass
class Pair:
    online: ConsistencyFunction     # trained by gradient
    target: ConsistencyFunction     # its running average: the student
    teacher: nn.Module              # the teacher's UNet (eps), which takes the ODE step


class ConsistencyDistillation(StudentFamily):
    name = "consistency-distillation"

    def teacher(self, params, card):
        return teacher_parts(card)

    def networks(self, cfg, teacher, device):
        online = make_function(cfg, copy.deepcopy(teacher))
        return Pair(online, copy.deepcopy(online).requires_grad_(False),
                    teacher.to(device).eval().requires_grad_(False))

    def segments(self, p: Pair, cfg, traj, device):
        online, target, grid, x_0 = p.online, p.target, p.online.grid, traj["states"][:, -1]

        def noisy(idx, gen, last: int):
            x = x_0[idx]
            k = torch.randint(0, last, (len(idx),), generator=gen)
            a, s = grid.alpha_sigma(k)
            return (a * x + s * torch.randn(x.shape, generator=gen)).to(device), k

        def optimise(opt, loss):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss.item()}

        def begin_denoiser():
            opt = torch.optim.Adam(list(online.parameters()), lr=cfg["lr"], betas=self.betas)

            def step(idx, gen):
                z, k = noisy(idx, gen, grid.steps)
                with torch.no_grad():  # the teacher's one-step x_0 estimate, clipped as its DDIM steps clip it
                    want = online.target_output(z, k, teacher_x0(grid, p.teacher, z, k)[0])
                # the squared error of the output (for v, progressive distillation's "SNR+1" weighting in x_0)
                return optimise(opt, torch.nn.functional.mse_loss(online.net(z, grid.timesteps[k].to(device)),
                                                                  want))
            return {"online": opt}, step

        def start_from_denoiser():   # consistency training starts from the learnt denoiser, its target network too
            target.load_state_dict(online.state_dict())

        def begin_consistency():
            opt = torch.optim.Adam(list(online.parameters()), lr=cfg["lr"], betas=self.betas)

            def step(idx, gen):
                z, k = noisy(idx, gen, grid.steps - 1)
                with torch.no_grad():
                    z_next = ddim_step(grid, p.teacher, z, k)
                    want = target(z_next, k + 1)
                row = optimise(opt, distance(cfg["distance"], online(z, k), want))
                with torch.no_grad():
                    for pt, po in zip(target.parameters(), online.parameters()):
                        pt.lerp_(po, 1 - cfg["target_ema"])
                return row
            return {"online": opt}, step

        segs = []
        if cfg["denoiser_epochs"]:
            segs.append(Segment({"stage": "denoiser"}, cfg["denoiser_epochs"], cfg["batch_size"], begin_denoiser,
                                {"denoiser_epochs": cfg["denoiser_epochs"], "batch_size": cfg["batch_size"]},
                                start_from_denoiser))
        segs.append(Segment({"stage": "consistency"}, cfg["epochs"], cfg["batch_size"], begin_consistency,
                            {"epochs": cfg["epochs"], "batch_size": cfg["batch_size"]}))
        return segs

    def modules(self, p: Pair):
        return {"gen": p.target.net, "online": p.online.net}

    def trained(self, p: Pair):
        return [p.online]

    def saved(self, p: Pair):
        return p.target.net, {"online": p.online.net}

    def sample_fn(self, p: Pair, cfg):
        return lambda z: consistency_sample(p.target, z, 1)

    def panel(self, p: Pair, cfg, traj, path):
        panel(p.target, traj["x_T"], traj["states"][:, -1], path)

    def sampling(self, name, params, cfg, tensors, device):
        f = make_function(cfg)
        if tensors is not None:
            f.net.load_state_dict(generator_weights(tensors))
        if params.steps > f.grid.steps:
            raise ValueError(f"{name}: steps {params.steps} exceed the grid's {f.grid.steps} times")
        info = {"epochs": cfg["epochs"], "steps": params.steps, "grid_steps": cfg["grid_steps"],
                "generator_parameters": count(f.net)}
        return Sampling(lambda x, g: consistency_sample(f, x, params.steps, g), f.net, count(f.net), info,
                        draws_noise=True)
