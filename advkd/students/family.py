"""A student family as one class, and the skeleton every family shares: the generic trainer (`train`) and the
generic method builder (`build`).

A family subclasses `StudentFamily` and fills in its hooks: which part of the teacher it needs, how its networks
are built from it, its training segments, what it saves, its panel, and how it samples from x_T. Everything else
is here once: loading the distillation set, resolving the recipe, seeding, the run identity, the resumable loop
(advkd.students.training.fit), writing the distill rule's files and rebuilding a trained (or cost-only) student
as a `Method`. The registry (advkd.families) names each family's class; nothing else asks for family names.

The order of a training run is fixed, so that every family's initial weights are a function of the seed alone:
teacher loaded, recipe resolved, torch seeded ("student-init"), networks built, torch seeded again, segments
built, identity taken, networks moved to the device, trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from .. import jobclock, rng
from ..families import FAMILIES
from ..method import Method, Params
from .common import (
    last_checkpoint_recipe,
    load_distillation_set,
    student_config,
    student_method,
    teacher_unet,
    write_student,
)
from .training import Segment, fit, run_identity


@dataclass
class Sampling:
    """How a rebuilt student samples (what `StudentFamily.sampling` returns; `build` makes the Method of it)."""
    generate: Callable              # x_T on the device -> images in [-1, 1]; (x_T, generator) with draws_noise
    network: torch.nn.Module        # what one network evaluation calls (FLOPs, latency, parameters on the path)
    all_parameters: int             # the stored model's parameters (e.g. unused heads)
    info: dict
    net_input_shape: tuple | None = None     # one evaluation's input per image; None = the image's shape
    training_only_parameters: int = 0        # trained beside it, never stored with it (critics)
    draws_noise: bool = False                # sampling draws noise after x_T (from the batch's generator)


class StudentFamily:
    """One student family. A subclass sets `name` (its registry name), `betas` if its optimisers differ, and
    implements the hooks marked "must"; the others have defaults that suit a one-network student distilled onto
    the teacher's final x_0. `nets` is whatever the family's `networks` returns: the trainer only passes it back."""

    name: ClassVar[str]
    betas: ClassVar[tuple] = (0.9, 0.999)    # Adam's defaults

    # ------------------------------------------------------------------ the recipe and the teacher

    def teacher(self, params: Params, card) -> tuple:
        """(the teacher's network the student starts from or learns from, or None; what the resolved recipe takes
        from the teacher to rebuild the student without it; the teacher's card). Default: the teacher's UNet."""
        return teacher_unet(card)

    def resolve(self, params: Params, name: str, available: int, resolution: int, channels: int,
                teacher_card=None) -> dict:
        """The resolved recipe (student.json) at this data shape; `available` checkpoints in the distillation
        set. Default: distilled onto the final x_0."""
        return last_checkpoint_recipe(params, self.name, name, available, resolution, channels, teacher_card)

    def targets(self, cfg: dict, traj: dict):
        """What the student learns from the distillation set (part of the run identity)."""
        return traj["states"][:, -1]

    # ------------------------------------------------------------------ training (must)

    def networks(self, cfg: dict, teacher, device) -> Any:
        """The networks to train, initialised (torch is seeded for it); `teacher` as `teacher` gave it."""
        raise NotImplementedError

    def segments(self, nets, cfg: dict, traj: dict, device) -> list[Segment]:
        """The training loop's segments (advkd.students.training.Segment)."""
        raise NotImplementedError

    def modules(self, nets) -> dict:
        """name -> module: what a checkpoint holds. "gen" is the student's own weights."""
        raise NotImplementedError

    def trained(self, nets) -> list:
        """The modules put in training mode each epoch."""
        return [self.modules(nets)["gen"]]

    def saved(self, nets) -> tuple:
        """(the student's network, stored under "gen."; other modules stored beside it, name -> module)."""
        return self.modules(nets)["gen"], {}

    def finish(self, nets, cfg: dict, traj: dict, device) -> None:
        """After the last segment, before the files are written (e.g. swap in averaged weights)."""

    def sample_fn(self, nets, cfg: dict) -> Callable:
        """x_T -> images, for the training run's grid of fresh samples (on the CPU)."""
        raise NotImplementedError

    def panel(self, nets, cfg: dict, traj: dict, path) -> None:
        """The family's picture of what it learnt (panel.png)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sampling (must)

    def sampling(self, name: str, params: Params, cfg: dict, tensors: dict | None, device) -> Sampling:
        """Rebuild the student from its resolved recipe and stored tensors (None: random weights, cost only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ what the registry calls

    def train(self, name: str, params: Params, ctx: dict) -> dict:
        return train(self, name, params, ctx)

    def build(self, name: str, params: Params, ctx: dict) -> Method:
        return build(self, name, params, ctx)

    # ------------------------------------------------------------------ helpers for families

    def one_network_segment(self, net: torch.nn.Module, cfg: dict, loss: Callable) -> Segment:
        """The segment of a one-network student: Adam (cfg lr, the family's betas) over cfg epochs at cfg
        batch_size; `loss(idx, gen)` gives (the batch's loss tensor, its loss-CSV row)."""
        def begin():
            opt = torch.optim.Adam(list(net.parameters()), lr=cfg["lr"], betas=self.betas)

            def step(idx, gen):
                value, row = loss(idx, gen)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                return row
            return {"net": opt}, step

        return Segment({}, cfg["epochs"], cfg["batch_size"], begin,
                       {"epochs": cfg["epochs"], "batch_size": cfg["batch_size"]})


def train(family: StudentFamily, name: str, params: Params, ctx: dict) -> dict:
    """The distill stage's work for any family: train `name` into ctx["out"], resuming a checkpoint there only
    when it was made for exactly this run. ctx: trajectories (shard paths), out, seed, device, teacher
    (teacher.json); optional stop_after_epochs, progress. Returns fit's result ({"done": bool, "history", ...})."""
    traj = load_distillation_set(ctx["trajectories"], params.max_runs)
    _, available, ch, res, _ = traj["states"].shape
    teacher, parts, card = family.teacher(params, ctx.get("teacher"))
    cfg = family.resolve(params, name, available, res, ch, teacher_card=card.get("pipeline")) | parts
    seed, device = ctx["seed"], torch.device(ctx.get("device", "cpu"))
    rng.seed_torch("student-init", seed)   # initial weights are part of the run: a resumed or repeated run matches
    nets = family.networks(cfg, teacher, device)
    rng.seed_torch("student-init", seed)
    segs = family.segments(nets, cfg, traj, device)
    modules = family.modules(nets)
    identity = run_identity(modules, segs, traj["x_T"], family.targets(cfg, traj), seed, cfg, device)
    for m in modules.values():
        m.to(device)
    jobclock.begin("training")
    result = fit(modules, family.trained(nets), segs, len(traj["x_T"]), FAMILIES[family.name].loss_columns,
                 ctx["out"], seed, identity, ctx.get("stop_after_epochs"), ctx.get("progress", True))
    if result["done"]:
        family.finish(nets, cfg, traj, device)
        net, beside = family.saved(nets)
        write_student(ctx["out"], cfg, net, beside, result, traj, seed,
                      lambda path: family.panel(nets, cfg, traj, path), family.sample_fn(nets, cfg),
                      extra={"run_identity": identity})
    return result


def build(family: StudentFamily, name: str, params: Params, ctx: dict) -> Method:
    """A trained student (ctx["student_dir"]) or, for a cost-only experiment (ctx["random_weights"]), one with
    random weights at the architecture its recipe resolves to, as a `Method`."""
    cfg, tensors = student_config(name, ctx, family.name, lambda *a: family.resolve(params, *a),
                                  list(params.training_dict()))
    if tensors is None:   # cost only: the (random) teacher's architecture
        cfg |= family.teacher(params, ctx.get("teacher"))[1]
    device = ctx.get("device", "cpu")
    s = family.sampling(name, params, cfg, tensors, device)
    c, r = cfg["image_channels"], cfg["resolution"]
    return student_method(name, family.name, params.nfe, s.generate, s.network, (c, r, r),
                          s.net_input_shape or (c, r, r), s.all_parameters, s.info, device,
                          training_only_parameters=s.training_only_parameters, draws_noise=s.draws_noise)
