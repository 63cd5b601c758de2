"""2-rectified flow (Liu, Gong and Liu 2023) on the teacher's couplings: the distillation set pairs each x_T with
the deterministic teacher's x_0, and the straight path between them, x_s = s x_T + (1 - s) x_0 (s = 1 at the
noise), has the constant velocity x_T - x_0. A network w(x_s, s) learns it by regression at random s; sampling
runs Euler steps from s = 1 to 0: x <- x - (1/K) w(x, s).

The network is the teacher's UNet, teacher-initialised, called at the DDPM timestep 999 s. At s = 1 the teacher's
output is its noise estimate, close to x_T, so one Euler step x_T - w starts where the Denoising Student's
residual reading starts (a blank image) and the two differ only in that reflow also learns the rest of the path.
"""

from __future__ import annotations

import torch

from ... import rng
from ...data import save_grid, to_uint8
from ...families import FAMILIES
from ..common import (
    generator_weights,
    last_checkpoint_recipe,
    load_distillation_set,
    student_config,
    student_method,
    teacher_unet,
    write_student,
)
from ..networks import count, unet_from_config
from ..training import fit_one_network
from ..vp import TimedUNet
from .params import ReflowParams

BETAS = (0.9, 0.999)


def resolve(params: ReflowParams, name: str, available: int, resolution: int, channels: int, teacher_card=None):
    return last_checkpoint_recipe(params, "reflow", name, available, resolution, channels, teacher_card)


def make_network(cfg: dict, unet=None) -> TimedUNet:
    return TimedUNet(unet if unet is not None else unet_from_config(cfg["unet_config"]), cfg["timestep"])


def euler(net: TimedUNet, x_T, steps: int):
    """x_T to the image in `steps` equal Euler steps of the learnt velocity."""
    x, top = x_T, net.default_time
    for i in range(steps):
        x = x - net(x, top * (1 - i / steps)) / steps
    return x


def train(name: str, params: ReflowParams, ctx: dict) -> dict:
    """ctx: trajectories, out, seed, device, teacher (teacher.json); optional stop_after_epochs, progress."""
    traj = load_distillation_set(ctx["trajectories"], params.max_runs)
    _, available, ch, res, _ = traj["states"].shape
    unet, unet_cfg, card = teacher_unet(ctx["teacher"])
    cfg = resolve(params, name, available, res, ch, teacher_card=card.get("pipeline")) | unet_cfg
    seed, device = ctx["seed"], torch.device(ctx.get("device", "cpu"))
    rng.seed_torch("student-init", seed)
    net = make_network(cfg, unet)
    x_T, x_0 = traj["x_T"], traj["states"][:, -1]

    def loss(idx, gen):
        s = torch.rand(len(idx), generator=gen).view(-1, 1, 1, 1)
        a, b = x_T[idx], x_0[idx]
        x_s = (s * a + (1 - s) * b).to(device)
        value = torch.nn.functional.mse_loss(net(x_s, (net.default_time * s.flatten()).to(device)),
                                             (a - b).to(device))
        return value, {"velocity": value.item()}

    result, identity = fit_one_network(net, cfg, loss, x_T, x_0, seed, BETAS, FAMILIES["reflow"].loss_columns, ctx)
    if result["done"]:
        write_student(ctx["out"], cfg, net, None, {}, result, traj, seed, lambda path: panel(net, x_T, x_0, path),
                      extra={"run_identity": identity}, sample=lambda z: euler(net, z, 1))
    return result


def panel(net, x_T, x_0, path, examples: int = 6) -> None:
    """Per training run: x_T, the teacher's x_0, the student's with 1 and 2 Euler steps."""
    with torch.no_grad():
        one, two = euler(net, x_T[:examples], 1), euler(net, x_T[:examples], 2)
    tiles = torch.stack([x_T[:examples].clamp(-1, 1), x_0[:examples], one.clamp(-1, 1), two.clamp(-1, 1)], 1)
    save_grid(path, to_uint8(tiles.flatten(0, 1)), nrow=4)


def build(name: str, params: ReflowParams, ctx: dict):
    cfg, tensors = student_config(name, ctx, "reflow", lambda *a: resolve(params, *a),
                                  list(params.training_dict()))
    if tensors is None:  # cost only: the (random) teacher's architecture
        cfg |= teacher_unet(ctx["teacher"])[1]
    net = make_network(cfg)
    if tensors is not None:
        net.load_state_dict(generator_weights(tensors))
    c, r = cfg["image_channels"], cfg["resolution"]
    info = {"epochs": cfg["epochs"], "steps": params.steps, "generator_parameters": count(net)}
    return student_method(name, "reflow", params.nfe, lambda x: euler(net, x, params.steps).clamp(-1, 1), net,
                          (c, r, r), (c, r, r), count(net), info, ctx.get("device", "cpu"))
