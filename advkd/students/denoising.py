"""The Denoising Student (Luhman & Luhman 2021): one network maps the full noise x_T straight to the deterministic
teacher's x_0, trained by regression only.

The network is the teacher's own UNet (diffusers UNet2DModel, same config), by default initialised from the
teacher's weights and called at the last timestep, as Luhman & Luhman did: the teacher already knows the data's
shapes at every scale, and a UNet sees the whole noise, of which x_0 is a deterministic function under DDIM.
"""

from __future__ import annotations

import torch

from .. import rng
from ..data import save_grid, to_uint8
from ..families import FAMILIES
from .common import (
    generator_weights,
    last_checkpoint_recipe,
    load_distillation_set,
    student_config,
    student_method,
    teacher_unet,
    write_student,
)
from .denoising_params import DenoisingParams
from .networks import UNetStudent, count, unet_from_config
from .training import fit_one_network, regression_loss

BETAS = (0.9, 0.999)   # Adam's defaults (the Adv-KD critics' 0.5 is a GAN habit)


def resolve(params: DenoisingParams, name: str, available: int, resolution: int, channels: int,
            teacher_card=None) -> dict:
    return last_checkpoint_recipe(params, "denoising-student", name, available, resolution, channels, teacher_card)


def make_network(cfg: dict, unet=None) -> UNetStudent:
    return UNetStudent(unet if unet is not None else unet_from_config(cfg["unet_config"]), cfg["timestep"],
                       cfg["output"] == "residual")


def train(name: str, params: DenoisingParams, ctx: dict) -> dict:
    """ctx: trajectories, out, seed, device, teacher (teacher.json); optional stop_after_epochs, progress."""
    traj = load_distillation_set(ctx["trajectories"], params.max_runs)
    _, available, ch, res, _ = traj["states"].shape
    unet, unet_cfg, card = teacher_unet(ctx["teacher"])
    seed, device = ctx["seed"], torch.device(ctx.get("device", "cpu"))
    if params.init == "random":
        rng.seed_torch("student-init", seed)
        unet = unet_from_config(unet_cfg["unet_config"])
    cfg = resolve(params, name, available, res, ch, teacher_card=card.get("pipeline")) | unet_cfg
    rng.seed_torch("student-init", seed)  # a resumed or repeated run must match
    net = make_network(cfg, unet)
    rng.seed_torch("student-init", seed)
    x_T, x_0 = traj["x_T"], traj["states"][:, -1]

    def loss(idx, gen):
        value = regression_loss(cfg["regression"], net(x_T[idx].to(device)), x_0[idx].to(device))
        return value, {"regression": value.item()}

    result, identity = fit_one_network(net, cfg, loss, x_T, x_0, seed, BETAS,
                                       FAMILIES["denoising-student"].loss_columns, ctx)
    if result["done"]:
        write_student(ctx["out"], cfg, net, lambda x: x, {}, result, traj, seed,
                      lambda path: panel(net, x_T, x_0, path), extra={"run_identity": identity})
    return result


def panel(net, x_T, x_0, path, examples: int = 6) -> None:
    """Per training run: x_T, the teacher's x_0 and the student's, side by side."""
    with torch.no_grad():
        out = net(x_T[:examples])
    tiles = torch.stack([x_T[:examples].clamp(-1, 1), x_0[:examples], out], 1).flatten(0, 1)
    save_grid(path, to_uint8(tiles), nrow=3)


def build(name: str, params: DenoisingParams, ctx: dict):
    cfg, tensors = student_config(name, ctx, "denoising-student", lambda *a: resolve(params, *a), params.as_dict())
    if tensors is None:  # cost only: the (random) teacher's architecture
        cfg |= teacher_unet(ctx["teacher"])[1]
    net = make_network(cfg)
    if tensors is not None:
        net.load_state_dict(generator_weights(tensors))
    c, r = cfg["image_channels"], cfg["resolution"]
    info = {"epochs": cfg["epochs"], "generator_parameters": count(net)}
    return student_method(name, "denoising-student", params.nfe, net, net, (c, r, r), (c, r, r), count(net), info,
                          ctx.get("device", "cpu"))
