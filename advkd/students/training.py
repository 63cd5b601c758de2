"""The student training loop shared by every student family: phases, adversarial and regression losses,
resumable checkpoints, loss CSV, phase panel and sample grid.

A family hands over a `Student` (its generator, how noise becomes its input, the discriminators) and a list of
phases; this module owns everything about running them so that every family trains, logs and resumes alike.

A checkpoint carries the identity of the run it belongs to (the resolved recipe, the phases, the seed, digests of
the distillation set, of the initial weights (the teacher's, for a teacher-initialised student) and of the
training code); it is resumed only when that identity equals the new run's, otherwise training starts afresh
and the log says which parts differ. Resume is exact on CPU: every random draw of an epoch (data order,
gradient-penalty interpolation weights) comes from a generator seeded by (seed, phase, epoch), and a checkpoint
holds the weights, BatchNorm statistics, both optimisers and the loss history at an epoch boundary, so a resumed
run replays the same arithmetic.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import save_grid, to_uint8
from ..io import (
    BadInputError,
    atomic_path,
    identity_mismatch,
    load_tensors,
    provenance,
    save_tensors,
    sources_sha256,
    tensors_sha256,
    write_json,
)
from .generator import resize_to

log = logging.getLogger(__name__)

CSV_FIELDS = ["phase", "epoch", "steps", "images", "g_loss", "g_adv", "reg", "d_loss", "gp", "d_real", "d_fake",
              "seconds"]


@dataclass
class Phase:
    last_block: int                 # blocks 0..last_block run (and are trainable)
    heads: tuple                    # head ids supervised in this phase
    targets: tuple                  # matching index into the targets tensor (dim 1)
    epochs: int
    batch_size: int


@dataclass
class Student:
    generator: nn.Module            # .render(z, upto, heads) -> {head: image}
    noise_input: Callable           # x_T (N,C,H,W) -> generator input
    head_resolution: dict           # head id -> resolution
    discriminators: nn.ModuleDict = field(default_factory=nn.ModuleDict)   # str(head) -> critic (adversarial)
    trainable: Callable = None      # phase -> parameters the generator optimiser updates
    ema: nn.Module | None = None    # running average of the generator's weights (Recipe.ema), what is sampled


@dataclass
class Recipe:
    loss: str = "adversarial"       # adversarial | regression | both
    regression: str = "mse"         # mse | l1
    adv_weight: float = 1.0
    reg_weight: float = 1.0
    reg_resolution: int | None = None  # compare student and teacher area-averaged to this side; None = as rendered
    gradient_penalty: float = 10.0  # weight on (||grad D(interpolate)|| - 1)^2; 0 = off
    clip: float | None = 0.1        # critic weights clamped to +-clip after each step; None = off
    lr: float = 1e-4
    betas: tuple = (0.5, 0.999)
    d_lr: float | None = None       # None = lr
    ema: float | None = None        # decay of an exponential moving average of the generator weights; None = off
    augment: bool = False           # DiffAugment (translation + cutout) on every image the critics see


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    return (seed * 1_000_003 + phase * 10_007 + epoch) % (2**63)


# ----------------------------------------------------------------------------------------------- losses

def regression_loss(kind: str, pred, target, resolution: int | None = None):
    """kind = mse | l1; with `resolution`, both images are first area-averaged to that side (detail finer than
    that is left to the critic)."""
    if resolution and resolution < pred.shape[-1]:
        pred, target = resize_to(pred, resolution), resize_to(target, resolution)
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


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
    stats = dict.fromkeys(["g_adv", "reg", "d_loss", "gp", "d_real", "d_fake"], 0.0)
    fake = student.generator.render(z, phase.last_block, phase.heads)
    aug = (lambda x: diff_augment(x, gen)) if recipe.augment else (lambda x: x)  # noqa: E731
    if adv:
        d_loss = 0.0
        for h in phase.heads:
            critic = student.discriminators[str(h)]
            real, f = aug(targets[h]), aug(fake[h].detach())
            d_real, d_fake = critic(real, z), critic(f, z)
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            if recipe.gradient_penalty:
                gp = gradient_penalty(critic, real, f, z, gen)
                loss = loss + recipe.gradient_penalty * gp
                stats["gp"] += gp.item()
            d_loss = d_loss + loss
            stats["d_real"] += d_real.mean().item()
            stats["d_fake"] += d_fake.mean().item()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if recipe.clip:
            with torch.no_grad():
                for h in phase.heads:
                    for p in student.discriminators[str(h)].parameters():
                        p.clamp_(-recipe.clip, recipe.clip)
        stats["d_loss"] = d_loss.item()
    g_loss = 0.0
    for h in phase.heads:
        if adv:
            critic = student.discriminators[str(h)]
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
    if student.ema is not None:
        update_ema(student.ema, student.generator, recipe.ema)
    stats["g_loss"] = g_loss.item()
    return stats


# ----------------------------------------------------------------------------------------------- checkpoints

def _flat_optimizer(prefix: str, opt) -> tuple[dict, dict]:
    """Optimizer state as flat tensors + JSON-able hyperparameters (safetensors holds tensors only)."""
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt, prefix: str, tensors: dict, meta: dict) -> None:
    state = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path, student: Student, opt_g, opt_d, progress: dict, history: list, identity: dict) -> None:
    tensors = {f"gen.{k}": v for k, v in student.generator.state_dict().items()}
    tensors |= {f"disc.{k}": v for k, v in student.discriminators.state_dict().items()}
    if student.ema is not None:
        tensors |= {f"ema.{k}": v for k, v in student.ema.state_dict().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    tg, mg = _flat_optimizer("opt_g", opt_g)
    tensors |= tg
    meta = {"progress": json.dumps(progress), "history": json.dumps(history), "opt_g": json.dumps(mg),
            "identity": json.dumps(identity, sort_keys=True)}
    if opt_d is not None:
        td, md = _flat_optimizer("opt_d", opt_d)
        tensors |= td
        meta["opt_d"] = json.dumps(md)
    save_tensors(path, tensors, metadata=meta)


def load_checkpoint(path) -> tuple[dict, dict]:
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return tensors, meta


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------- the loop

def _make_optimizers(student: Student, phase: Phase, recipe: Recipe):
    params = list(student.trainable(phase))
    opt_g = torch.optim.Adam(params, lr=recipe.lr, betas=recipe.betas)
    opt_d = None
    if recipe.loss in ("adversarial", "both"):
        dparams = [p for h in phase.heads for p in student.discriminators[str(h)].parameters()]
        opt_d = torch.optim.Adam(dparams, lr=recipe.d_lr or recipe.lr, betas=recipe.betas)
    return opt_g, opt_d


def write_loss_csv(path, history: list) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def run_identity(student: Student, phases: list[Phase], recipe: Recipe, x_T, targets, seed: int,
                 resolved: dict | None = None) -> dict:
    """What a checkpoint must have been made for to be resumed by this run (see the module docstring). Call it
    before training: the initial weights are part of it."""
    init = {f"gen.{k}": v for k, v in student.generator.state_dict().items()}
    init |= {f"disc.{k}": v for k, v in student.discriminators.state_dict().items()}
    # Where the teacher lies is no part of it (its weights are, through the initial weights and the distillation
    # set): a results folder moved or mounted elsewhere still resumes.
    identity = {"student": _without_locations(resolved), "recipe": asdict(recipe),
                "phases": [asdict(p) for p in phases], "seed": seed,
                "distillation_set_sha256": tensors_sha256({"x_T": x_T, "targets": targets}),
                "initial_weights_sha256": tensors_sha256(init),
                "code_sha256": sources_sha256(Path(__file__).resolve().parent), "torch": torch.__version__}
    return json.loads(json.dumps(identity, sort_keys=True, default=str))   # as it reads back from the file


def _without_locations(obj):
    if isinstance(obj, dict):
        return {k: _without_locations(v) for k, v in obj.items() if k not in ("teacher", "_name_or_path")}
    return obj


def train(student: Student, phases: list[Phase], recipe: Recipe, x_T, targets, out_dir, seed: int,
          device="cpu", stop_after_epochs: int | None = None, progress: bool = True, *, identity: dict) -> dict:
    """Run (or resume) the phases. `targets` is (N, J, C, H, W) teacher states at full resolution; phase heads
    are compared with targets[:, phase.targets[i]] resized to the head's resolution. `identity` is this run's
    `run_identity`: a checkpoint with another one is not resumed.

    Writes out_dir/checkpoint.safetensors and loss.csv after every epoch. `stop_after_epochs` ends the call after
    that many epochs of this call (to simulate an interruption); returns {"done": bool, ...}.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.safetensors"
    device = torch.device(device)
    student.generator.to(device)
    student.discriminators.to(device)
    if recipe.ema:
        student.ema = copy.deepcopy(student.generator).requires_grad_(False)
    n = len(x_T)
    start_phase, start_epoch, history, resumed = 0, 0, [], None
    ck = None
    if ckpt_path.exists():
        try:
            ck = load_checkpoint(ckpt_path)
        except BadInputError as e:  # a half-written checkpoint cannot exist (atomic writes); a foreign one can
            log.warning("ignoring unreadable checkpoint: %s", e)
    if ck is not None:
        stale = identity_mismatch(json.loads(ck[1].get("identity", "null")), identity)
        if stale:
            log.warning("not resuming %s: it was made for another run (differs in: %s); training afresh",
                        ckpt_path, ", ".join(stale))
            ck = None
    if ck is not None:
        tensors, meta = ck
        prog = json.loads(meta["progress"])
        student.generator.load_state_dict(_strip(tensors, "gen."))
        student.discriminators.load_state_dict(_strip(tensors, "disc."))
        if student.ema is not None:
            student.ema.load_state_dict(_strip(tensors, "ema."))
        torch.set_rng_state(tensors["rng.torch"])
        history = json.loads(meta["history"])
        start_phase, start_epoch = prog["phase"], prog["epoch"]
        resumed = prog
        log.info("resuming from %s at phase %d epoch %d", ckpt_path, start_phase, start_epoch)
    epochs_this_call = 0
    t_start = time.perf_counter()
    for p, phase in enumerate(phases):
        if p < start_phase:
            continue
        opt_g, opt_d = _make_optimizers(student, phase, recipe)
        if ck is not None and p == start_phase and start_epoch > 0:
            _load_optimizer(opt_g, "opt_g", ck[0], json.loads(ck[1]["opt_g"]))
            if opt_d is not None:
                _load_optimizer(opt_d, "opt_d", ck[0], json.loads(ck[1]["opt_d"]))
        tgt = {h: resize_to(targets[:, j], student.head_resolution[h]) for h, j in zip(phase.heads, phase.targets)}
        z_all = student.noise_input(x_T)
        for epoch in range(start_epoch if p == start_phase else 0, phase.epochs):
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                return {"done": False, "history": history, "resumed_from": resumed}
            gen = torch.Generator().manual_seed(epoch_seed(seed, p, epoch))
            order = torch.randperm(n, generator=gen)
            student.generator.train()
            student.discriminators.train()
            t0 = time.perf_counter()
            acc, steps = {}, 0
            for s in range(0, n, phase.batch_size):
                idx = order[s:s + phase.batch_size]
                if len(idx) < 2:  # BatchNorm needs 2 samples; a lone leftover is skipped, not padded
                    continue
                st = train_step(student, phase, recipe, z_all[idx].to(device),
                                {h: t[idx].to(device) for h, t in tgt.items()}, opt_g, opt_d, gen)
                for k, v in st.items():
                    acc[k] = acc.get(k, 0.0) + v
                steps += 1
            row = {"phase": p, "epoch": epoch, "steps": steps, "images": n,
                   **{k: acc.get(k, 0.0) / max(steps, 1) for k in CSV_FIELDS[4:-1]},
                   "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            epochs_this_call += 1
            last_epoch = epoch + 1 == phase.epochs
            # The epoch boundary after a phase's last epoch is stored as the start of the next phase, whose
            # optimisers are fresh: nothing of the finished phase's optimisers is needed to resume.
            prog = {"phase": p + 1, "epoch": 0} if last_epoch else {"phase": p, "epoch": epoch + 1}
            save_checkpoint(ckpt_path, student, opt_g, opt_d, prog, history, identity)
            write_loss_csv(out_dir / "loss.csv", history)
            if progress:
                log.info("phase %d/%d epoch %d/%d: %s", p + 1, len(phases), epoch + 1, phase.epochs,
                         {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    write_loss_csv(out_dir / "loss.csv", history)
    if student.ema is not None:  # the averaged weights are the student from here on
        student.generator.load_state_dict(student.ema.state_dict())
        recalibrate_batchnorm(student.generator, student.noise_input(x_T).to(device), phases[-1].batch_size)
    return {"done": True, "history": history, "resumed_from": resumed,
            "seconds_this_call": round(time.perf_counter() - t_start, 3)}


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
        out = student.generator.render(z, last, tuple(h for h, _ in cols))
    up = lambda x: F.interpolate(x, size=(res, res), mode="nearest")  # noqa: E731
    tiles = []
    for i in range(min(examples, len(x_T))):
        tiles.append(torch.cat([x_T[i:i + 1].clamp(-1, 1)] + [up(resize_to(targets[i:i + 1, j], out[h].shape[-1]))
                                                              for h, j in cols]))
        tiles.append(torch.cat([torch.zeros_like(x_T[i:i + 1])] + [up(out[h][i:i + 1]) for h, _ in cols]))
    save_grid(path, to_uint8(torch.cat(tiles)), nrow=len(cols) + 1)


def save_json_summary(path, cfg: dict, result: dict, extra: dict) -> None:
    hist = result["history"]
    write_json(path, {"config": cfg, "epochs_run": len(hist), "final": hist[-1] if hist else None,
                      "train_seconds_total": round(sum(r["seconds"] for r in hist), 3),
                      "resumed_from": result.get("resumed_from"), **extra, "provenance": provenance(cfg)})
