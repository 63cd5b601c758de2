"""Progressive distillation (Salimans and Ho 2022) from the suite's teacher.

The students are the teacher's UNet read in the v-parametrisation the paper recommends for few steps (v = alpha
eps - sigma x; x0 = alpha z - sigma v), trained with the v-space squared error (the paper's "SNR+1" weighting).
The teacher predicts eps, so round 0 re-parametrises: a v-student initialised from the teacher learns the
teacher's own DDIM-N steps (N = teacher_steps). Each later round starts from the previous round's student and
learns two of its steps in one: from z at time t, the teacher's two DDIM steps give z'', and the target is the x
whose single DDIM step from t lands on z'' (x = (z'' - (s''/s) z) / (a'' - (s''/s) a)). Rounds halve the steps
down to min_steps; each round's student is kept, so one training run yields a row at every step count.

All students live on the teacher's DDIM-N grid (advkd.students.vp): a K-step student steps N/K grid states at a
time, from x_T at the first state, as the suite's DDIM sampler does; x0 predictions are clipped as the teacher's
scheduler clips them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ...data import save_grid, to_uint8
from ..common import last_checkpoint_recipe
from ..family import Sampling, StudentFamily
from ..networks import count, unet_from_config
from ..training import Segment
from ..vp import Grid, TimedUNet, ddim_step, teacher_grid, teacher_parts
from .params import halvings


def v_step(grid: Grid, net: TimedUNet, z, i, j):
    """One DDIM step of a v-parametrised student from grid state i to state j (tensors of indices), as diffusers'
    DDIMScheduler takes it for v-prediction: x0 = a z - s v (clipped), eps = a v + s z, then a' x0 + s' eps."""
    a, s, a2, s2 = (v.to(z.device) for v in (*grid.alpha_sigma(i), *grid.alpha_sigma(j)))
    v = net(z, grid.timesteps[i].to(z.device))
    x0 = a * z - s * v
    if grid.clip is not None:
        x0 = x0.clamp(-grid.clip, grid.clip)
    return a2 * x0 + s2 * (a * v + s * z)


def ddim_sample(grid: Grid, net: TimedUNet, x_T, steps: int):
    d = grid.steps // steps
    z = x_T
    for j in range(steps):
        i = torch.full((len(z),), j * d)
        z = v_step(grid, net, z, i, i + d)
    return z


def make_network(cfg: dict, unet=None) -> tuple[TimedUNet, Grid]:
    grid = teacher_grid(cfg["scheduler_config"], cfg["teacher_steps"])
    net = TimedUNet(unet if unet is not None else unet_from_config(cfg["unet_config"]), float(grid.timesteps[0]))
    return net, grid


def round_target(grid: Grid, z, i, i2, z2):
    """The x whose one DDIM step from (z, state i) lands on z2 at state i2, as the v the student should output."""
    a, s, a2, s2 = (*grid.alpha_sigma(i), *grid.alpha_sigma(i2))
    x = (z2 - (s2 / s) * z) / (a2 - (s2 / s) * a)
    return (a * z - x) / s


def panel(grid: Grid, students: dict, x_T, x_0, path, examples: int = 6) -> None:
    """Per training run: x_T, the teacher's x_0, then each round's student (most steps first)."""
    with torch.no_grad():
        outs = [ddim_sample(grid, m, x_T[:examples], k) for k, m in sorted(students.items(), reverse=True)]
    tiles = torch.stack([x_T[:examples].clamp(-1, 1), x_0[:examples], *outs], 1)
    save_grid(path, to_uint8(tiles.flatten(0, 1)), nrow=tiles.shape[1])


@dataclass
class Rounds:
    net: TimedUNet          # the student in training; after the last round, the fewest-step student
    grid: Grid
    rounds: list            # step counts, most first
    kept: dict              # steps -> each earlier round's student (the rows, and the next round's teacher)
    teacher: torch.nn.Module    # the teacher's UNet (eps), what round 0 learns from


class ProgressiveDistillation(StudentFamily):
    name = "progressive-distillation"

    def teacher(self, params, card):
        return teacher_parts(card)

    def resolve(self, params, name, available, resolution, channels, teacher_card=None):
        return last_checkpoint_recipe(params, self.name, name, available, resolution, channels, teacher_card) \
            | {"rounds": halvings(params.teacher_steps, params.min_steps)}

    def networks(self, cfg, teacher, device):
        net, grid = make_network(cfg, copy.deepcopy(teacher))
        rounds = cfg["rounds"]
        # each round's student, kept for the rows and as the next round's teacher; the last round's is `net` itself
        kept = {k: copy.deepcopy(net).requires_grad_(False) for k in rounds[:-1]}
        return Rounds(net, grid, rounds, kept, teacher.to(device).eval().requires_grad_(False))

    def segments(self, r: Rounds, cfg, traj, device):
        x_0, grid, net, n = traj["states"][:, -1], r.grid, r.net, r.grid.steps

        def segment(j: int, k: int) -> Segment:
            d = n // k

            def begin():
                opt = torch.optim.Adam(list(net.parameters()), lr=cfg["lr"], betas=self.betas)
                prev = r.kept[r.rounds[j - 1]] if j else None

                def step(idx, gen):
                    x = x_0[idx]
                    i = torch.randint(0, k, (len(idx),), generator=gen) * d
                    a, s = grid.alpha_sigma(i)
                    z = a * x + s * torch.randn(x.shape, generator=gen)
                    z = z.to(device)
                    with torch.no_grad():
                        if prev is None:   # round 0: the eps teacher's own DDIM step, learnt in v
                            z2 = ddim_step(grid, r.teacher, z, i)
                        else:              # two steps of the previous student, learnt as one
                            z2 = v_step(grid, prev, v_step(grid, prev, z, i, i + d // 2), i + d // 2, i + d)
                        want = round_target(grid, z.cpu(), i, i + d, z2.cpu()).to(device)
                    loss = torch.nn.functional.mse_loss(net(z, grid.timesteps[i].to(device)), want)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    return {"distillation": loss.item()}
                return {"net": opt}, step

            def end():
                if k in r.kept:
                    r.kept[k].load_state_dict(net.state_dict())

            return Segment({"round": j, "nfe": k}, cfg["epochs_per_round"], cfg["batch_size"], begin,
                           {"steps": k, "epochs": cfg["epochs_per_round"], "batch_size": cfg["batch_size"]}, end)

        return [segment(j, k) for j, k in enumerate(r.rounds)]

    def modules(self, r: Rounds):
        return {"gen": r.net, **{f"steps{k}": m for k, m in r.kept.items()}}

    def saved(self, r: Rounds):
        return r.net, {f"steps{k}": m for k, m in r.kept.items()}

    def sample_fn(self, r: Rounds, cfg):
        return lambda z: ddim_sample(r.grid, r.net, z, r.rounds[-1])

    def panel(self, r: Rounds, cfg, traj, path):
        panel(r.grid, {**r.kept, r.rounds[-1]: r.net}, traj["x_T"], traj["states"][:, -1], path)

    def sampling(self, name, params, cfg, tensors, device):
        if params.steps not in cfg["rounds"]:
            raise ValueError(f"{name}: steps {params.steps} is not one of the trained rounds {cfg['rounds']}")
        net, grid = make_network(cfg)
        if tensors is not None:
            prefix = "gen." if params.steps == cfg["rounds"][-1] else f"steps{params.steps}."
            net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        info = {"teacher_steps": cfg["teacher_steps"], "steps": params.steps, "rounds": cfg["rounds"],
                "generator_parameters": count(net)}
        return Sampling(lambda x: ddim_sample(grid, net, x, params.steps), net, count(net), info)
