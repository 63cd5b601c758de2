"""Adv-KD training and sampling: phases, per-phase critics, the adversarial and regression losses, and the
family's class (advkd.students.family). The shared loop (advkd.students.training) runs the phases as its
segments; everything about phases and heads is here."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...data import save_grid, to_uint8
from ..common import generator_weights, teacher_unet
from ..family import Sampling, StudentFamily
from ..networks import UNetStudent, count, resize_to, unet_from_config
from ..training import Segment, regression_loss
from .networks import CRITICS, InferencePath, ProgressiveGenerator, downsample_noise
from .params import published_batch


@dataclass
class Phase:
    last_block: int                 # blocks 0..last_block run (and are trainable)
    heads: tuple                    # head ids supervised in this phase
    targets: tuple                  # matching index into the targets tensor (dim 1)
    epochs: int
    batch_size: int


@dataclass
class Student:
    generator: nn.Module            # a ProgressiveGenerator, or the teacher's UNet (generator: teacher-unet)
    noise_input: Callable           # x_T (N,C,H,W) -> generator input
    head_resolution: dict           # head id -> resolution
    critics: nn.ModuleDict = field(default_factory=nn.ModuleDict)   # str(head) -> critic (adversarial losses)
    trainable: Callable = None      # phase -> parameters the generator optimiser updates
    ema: nn.Module | None = None    # running average of the generator's weights (Recipe.ema), what is sampled


@dataclass
class Recipe:
    loss: str                       # adversarial | regression | both
    regression: str                 # mse | l1
    adv_weight: float
    reg_weight: float
    reg_resolution: int | None      # compare student and teacher area-averaged to this side; None = as rendered
    gradient_penalty: float         # weight on (||grad D(interpolate)|| - 1)^2; 0 = off
    clip: float | None              # critic weights clamped to +-clip after each step; None = off
    lr: float
    critic_lr: float | None              # None = lr
    ema: float | None               # decay of an exponential moving average of the generator weights; None = off
    augment: bool                   # DiffAugment (translation + cutout) on every image the critics see
    fresh_noise: bool = False       # the generator's input drawn anew every step (unpaired), not the run's x_T
    betas: tuple = (0.5, 0.999)     # Adam's, as published


def render(gen: nn.Module, z, upto: int, heads) -> dict:
    """The images of `heads` after blocks 0..upto; the teacher's UNet has one head, 0, its output."""
    if isinstance(gen, UNetStudent):
        return {0: gen(z)}
    return gen.render(z, upto, heads)


def head_ids(gen: nn.Module) -> list[int]:
    return [0] if isinstance(gen, UNetStudent) else gen.head_ids()


# ----------------------------------------------------------------------------------------------- losses

def gradient_penalty(critic, real, fake, noise, gen: torch.Generator):
    """WGAN-GP term on random interpolates between teacher (real) and student (fake) images."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=gen).to(real.device)
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(x, noise)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def diff_augment(x, gen: torch.Generator):
    """DiffAugment (Zhao et al. 2020) for small data: a random shift by up to 1/8 of the side (zero fill) and a
    random half-side cutout, drawn per image from `gen`. Differentiable in x, so the generator learns through it;
    the critic sees real and fake images under the same distribution of transforms and cannot memorise the few
    real ones."""
    n, _, h, w = x.shape
    s = max(1, h // 8)
    shift = torch.randint(-s, s + 1, (n, 2), generator=gen).to(x.device)
    ys = (torch.arange(h, device=x.device)[None] - shift[:, :1]).clamp(-1, h)   # source rows, -1/h = outside
    xs = (torch.arange(w, device=x.device)[None] - shift[:, 1:]).clamp(-1, w)
    pad = F.pad(x, (1, 1, 1, 1))
    x = pad[torch.arange(n, device=x.device)[:, None, None], :, ys[:, :, None] + 1, xs[:, None, :] + 1]
    x = x.permute(0, 3, 1, 2)
    ch, cw = h // 2, w // 2
    cy = torch.randint(0, h - ch + 1, (n,), generator=gen).to(x.device)
    cx = torch.randint(0, w - cw + 1, (n,), generator=gen).to(x.device)
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    keep = ~(((r[None] >= cy[:, None]) & (r[None] < cy[:, None] + ch))[:, :, None]
             & ((c[None] >= cx[:, None]) & (c[None] < cx[:, None] + cw))[:, None, :])
    return x * keep[:, None].to(x.dtype)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, z_all, batch_size: int) -> None:
    """BatchNorm statistics of the averaged weights, measured on the training noise (the live generator's running
    statistics belong to other weights)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    net.train()
    for s in range(0, len(z_all), batch_size):
        if len(z_all[s:s + batch_size]) >= 2:
            net(z_all[s:s + batch_size])
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    net.eval()


def train_step(student: Student, phase: Phase, recipe: Recipe, z, targets: dict, opt_g, opt_d, gen) -> dict:
    """One batch: a critic step per supervised head (adversarial losses), then one generator step."""
    adv = recipe.loss in ("adversarial", "both")
    reg = recipe.loss in ("regression", "both")
    stats = dict.fromkeys(["g_adv", "reg", "critic_loss", "gp", "critic_real", "critic_fake"], 0.0)
    fake = render(student.generator, z, phase.last_block, phase.heads)
    aug = (lambda x: diff_augment(x, gen)) if recipe.augment else (lambda x: x)  # noqa: E731
    if adv:
        d_loss = 0.0
        for h in phase.heads:
            critic = student.critics[str(h)]
            real, f = aug(targets[h]), aug(fake[h].detach())
            d_real, d_fake = critic(real, z), critic(f, z)
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            if recipe.gradient_penalty:
                gp = gradient_penalty(critic, real, f, z, gen)
                loss = loss + recipe.gradient_penalty * gp
                stats["gp"] += gp.item()
            d_loss = d_loss + loss
            stats["critic_real"] += d_real.mean().item()
            stats["critic_fake"] += d_fake.mean().item()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if recipe.clip:
            with torch.no_grad():
                for h in phase.heads:
                    for p in student.critics[str(h)].parameters():
                        p.clamp_(-recipe.clip, recipe.clip)
        stats["critic_loss"] = d_loss.item()
    g_loss = 0.0
    # The critics are frozen in the generator step (as the authors do): the generator's gradient passes through
    # them, their weights' gradients are not computed.
    critics = [student.critics[str(h)] for h in phase.heads] if adv else []
    for c in critics:
        c.requires_grad_(False)
    for h in phase.heads:
        if adv:
            critic = student.critics[str(h)]
            ga = F.softplus(-critic(aug(fake[h]), z)).mean()
            g_loss = g_loss + recipe.adv_weight * ga
            stats["g_adv"] += ga.item()
        if reg:
            r = regression_loss(recipe.regression, fake[h], targets[h], recipe.reg_resolution)
            g_loss = g_loss + recipe.reg_weight * r
            stats["reg"] += r.item()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    for c in critics:
        c.requires_grad_(True)
    if student.ema is not None:
        update_ema(student.ema, student.generator, recipe.ema)
    stats["g_loss"] = g_loss.item()
    return stats


# ----------------------------------------------------------------------------------------------- the family

def head_resolution(cfg: dict, head: int) -> int:
    return cfg["resolution"] if cfg["layout"] is None else cfg["layout"][head]["resolution"]


def make_generator(cfg: dict) -> nn.Module:
    if cfg["generator"] == "teacher-unet":
        return UNetStudent(unet_from_config(cfg["unet_config"]), cfg["timestep"], residual=True)
    return ProgressiveGenerator(cfg["layout"], cfg["image_channels"], cfg["image_channels"], cfg["heads"],
                                cfg["upsample"])


def make_critics(cfg: dict, gen: nn.Module) -> nn.ModuleDict:
    if cfg["loss"] == "regression":
        return nn.ModuleDict()
    noise_channels = 0 if cfg["critic"] == "unconditional" else cfg["image_channels"]
    net = CRITICS[cfg["critic_net"]]
    return nn.ModuleDict({str(h): net(cfg["image_channels"], head_resolution(cfg, h), noise_channels,
                                      cfg["noise_resolution"], cfg["critic_width"])
                          for h in head_ids(gen)})


def make_student(cfg: dict) -> Student:
    gen = make_generator(cfg)
    nr = cfg["noise_resolution"]

    def trainable(phase: Phase):
        if cfg["generator"] == "teacher-unet":
            yield from gen.parameters()
            return
        for b in range(phase.last_block + 1):
            yield from gen.blocks[b].parameters()
        for h in phase.heads:
            yield from gen.heads[str(h)].parameters()

    return Student(gen, lambda x: downsample_noise(x, nr), {h: head_resolution(cfg, h) for h in head_ids(gen)},
                   make_critics(cfg, gen), trainable)


def make_phases(cfg: dict) -> list[Phase]:
    k_all, scale = cfg["phases"], cfg["epochs_scale"]
    epochs = lambda k: max(1, round(10 * (k + 1) * scale))  # noqa: E731
    batch = lambda k: cfg["batch_size"] or published_batch(k)  # noqa: E731
    if cfg["training"] == "joint":
        heads = tuple(range(k_all)) if cfg["heads"] else (k_all - 1,)
        # Joint training gets the published last phase's budget: the same parameters trained for as long.
        return [Phase(k_all - 1, heads, heads, epochs(k_all - 1), batch(k_all - 1))]
    return [Phase(k, (k,), (k,), epochs(k), batch(k)) for k in range(k_all)]


def make_recipe(cfg: dict) -> Recipe:
    return Recipe(loss=cfg["loss"], regression=cfg["regression"], adv_weight=cfg["adv_weight"],
                  reg_weight=cfg["reg_weight"], reg_resolution=cfg["reg_resolution"],
                  gradient_penalty=cfg["gradient_penalty"], clip=cfg["clip"] or None,
                  lr=cfg["lr"], critic_lr=cfg["critic_lr"], ema=cfg["ema"], augment=cfg["augment"],
                  fresh_noise=cfg["noise"] == "fresh")


def _optimizers(student: Student, phase: Phase, recipe: Recipe) -> dict:
    opts = {"gen": torch.optim.Adam(list(student.trainable(phase)), lr=recipe.lr, betas=recipe.betas)}
    if recipe.loss in ("adversarial", "both"):
        params = [p for h in phase.heads for p in student.critics[str(h)].parameters()]
        opts["critic"] = torch.optim.Adam(params, lr=recipe.critic_lr or recipe.lr, betas=recipe.betas)
    return opts


def head_target(state, resolution: int):
    """What a head learns from, as the authors trained it: the teacher state clamped to [-1, 1] (their 8-bit
    PNGs; a tanh head cannot go beyond it) and area-averaged to the head's resolution (they resized the PNGs)."""
    return resize_to(state.clamp(-1, 1), resolution)


def segments(student: Student, phases: list[Phase], recipe: Recipe, x_T, targets, device) -> list[Segment]:
    """The phases as the training loop's segments: fresh optimisers per phase; its heads' targets resized to
    their resolutions once, when the phase starts."""

    def segment(p: int, phase: Phase) -> Segment:
        def begin():
            opts = _optimizers(student, phase, recipe)
            tgt = {h: head_target(targets[:, j], student.head_resolution[h])
                   for h, j in zip(phase.heads, phase.targets)}
            z_all = student.noise_input(x_T)

            def step(idx, gen):
                z = z_all[idx] if not recipe.fresh_noise else \
                    student.noise_input(torch.randn((len(idx), *x_T.shape[1:]), generator=gen))
                return train_step(student, phase, recipe, z.to(device),
                                  {h: t[idx].to(device) for h, t in tgt.items()}, opts["gen"], opts.get("critic"),
                                  gen)
            return opts, step
        return Segment({"phase": p}, phase.epochs, phase.batch_size, begin, asdict(phase))

    return [segment(p, phase) for p, phase in enumerate(phases)]


class AdvKD(StudentFamily):
    name = "advkd"

    def teacher(self, params, card):
        # only the teacher-initialised generator needs the teacher (its UNet); the progressive one starts afresh
        return teacher_unet(card) if params.teacher_unet else (None, {}, {})

    def resolve(self, params, name, available, resolution, channels, teacher_card=None):
        return params.resolve(name, available, resolution, channels)

    def targets(self, cfg, traj):
        return traj["states"][:, cfg["checkpoints"]]

    def networks(self, cfg, teacher, device):
        student = make_student(cfg)
        if teacher is not None:
            student.generator.unet.load_state_dict(teacher.state_dict())
        if cfg["ema"]:
            student.ema = copy.deepcopy(student.generator).requires_grad_(False)
        return student

    def segments(self, student, cfg, traj, device):
        return segments(student, make_phases(cfg), make_recipe(cfg), traj["x_T"], self.targets(cfg, traj), device)

    def modules(self, student):
        return {"gen": student.generator, "critic": student.critics,
                **({"ema": student.ema} if student.ema is not None else {})}

    def trained(self, student):
        return [student.generator, student.critics]

    def saved(self, student):
        return student.generator, {"critic": student.critics}

    def finish(self, student, cfg, traj, device):
        if student.ema is not None:  # the averaged weights are the student from here on
            student.generator.load_state_dict(student.ema.state_dict())
            recalibrate_batchnorm(student.generator, student.noise_input(traj["x_T"]).to(device),
                                  make_phases(cfg)[-1].batch_size)

    def sample_fn(self, student, cfg):
        return lambda z: student.generator(student.noise_input(z))

    def panel(self, student, cfg, traj, path):
        phase_panel(student, make_phases(cfg), traj["x_T"], self.targets(cfg, traj), path)

    def sampling(self, name, params, cfg, tensors, device):
        gen = make_generator(cfg)
        if tensors is not None:
            gen.load_state_dict(generator_weights(tensors))
        critics = make_critics(cfg, gen)
        nr, c = cfg["noise_resolution"], cfg["image_channels"]
        info = {"phases": cfg["phases"], "checkpoints": cfg["checkpoints"], "noise_resolution": nr,
                "loss": cfg["loss"], "training": cfg["training"], "generator_parameters": count(gen),
                "critic_parameters": count(critics)}
        net = gen if params.teacher_unet else InferencePath(gen)
        gen.to(device).eval()
        return Sampling(lambda x: net(downsample_noise(x, nr)), net, count(gen), info, (c, nr, nr),
                        training_only_parameters=count(critics))


# ----------------------------------------------------------------------------------------------- pictures

def phase_panel(student: Student, phases: list[Phase], x_T, targets, path, examples: int = 6) -> None:
    """For a few training runs: per supervised head, the teacher state next to the student's head image, both
    shown at the full resolution (nearest upscaling, so the head's true resolution stays visible)."""

    heads = [(h, j) for ph in phases for h, j in zip(ph.heads, ph.targets)]
    seen, cols = set(), []
    for h, j in heads:
        if h not in seen:
            seen.add(h)
            cols.append((h, j))
    res = targets.shape[-1]
    student.generator.eval()
    with torch.no_grad():
        z = student.noise_input(x_T[:examples])
        last = max(h for h, _ in cols)
        out = render(student.generator, z, last, tuple(h for h, _ in cols))
    up = lambda x: F.interpolate(x, size=(res, res), mode="nearest")  # noqa: E731
    tiles = []
    for i in range(min(examples, len(x_T))):
        tiles.append(torch.cat([x_T[i:i + 1].clamp(-1, 1)] + [up(head_target(targets[i:i + 1, j], out[h].shape[-1]))
                                                              for h, j in cols]))
        tiles.append(torch.cat([torch.zeros_like(x_T[i:i + 1])] + [up(out[h][i:i + 1]) for h, _ in cols]))
    save_grid(path, to_uint8(torch.cat(tiles)), nrow=len(cols) + 1)
