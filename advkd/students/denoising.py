"""The Denoising Student (Luhman & Luhman 2021): one network maps the full noise x_T straight to the deterministic
teacher's x_0, trained by regression only.

Architecture choice: by default the teacher's own UNet (diffusers UNet2DModel, same config), initialised from the
teacher's weights and called at the last timestep, as Luhman & Luhman did: the teacher already knows the data's
shapes at every scale, and a UNet sees the whole 32x32 noise (a progressive generator from 4x4 noise cannot: its
regression target is a deterministic function of all of x_T). `architecture: progressive` instead uses the Adv-KD
generator at full-resolution noise with only its last head, for a like-for-like comparison with the Adv-KD family.
"""

from __future__ import annotations

import torch
from torch import nn

from ..method import SCORING_KEYS
from . import advkd as adv
from .common import load_distillation_set, run_distillation, student_config, student_method
from .common import teacher_unet as teacher_unet_of
from .generator import InferencePath, UNetStudent, count, downsample_noise, unet_from_config
from .training import Phase, Recipe, Student

PARAMS = {
    "architecture": {"enum": ["unet", "progressive"], "description": "unet = the teacher's UNet (default); "
                     "progressive = the Adv-KD generator at full-resolution noise, last head only"},
    "init": {"enum": ["teacher", "random"], "description": "unet weights to start from (teacher = Luhman & Luhman)"},
    "output": {"enum": ["residual", "x0"], "description": "what the unet's output means: residual (default) = "
               "x_T minus the image, so that a teacher-initialised student, whose output at the last timestep is "
               "its noise estimate (close to x_T), starts near a blank image; x0 = the image itself, so it starts "
               "near x_T and must first unlearn the noise"},
    "regression": {"enum": ["mse", "l1"], "description": "regression loss kind"},
    "epochs": {"type": "integer", "minimum": 1, "description": "passes over the (x_T, x_0) pairs"},
    "batch_size": {"type": "integer", "minimum": 2},
    "lr": {"type": "number", "exclusiveMinimum": 0, "description": "Adam learning rate"},
    "width": adv.PARAMS["width"],
    "layers_per_block": adv.PARAMS["layers_per_block"],
    "max_runs": adv.PARAMS["max_runs"],
}
DEFAULTS = {"architecture": "unet", "init": "teacher", "output": "residual", "regression": "mse", "epochs": 20,
            "batch_size": 64, "lr": 1e-4, "width": 1.0, "layers_per_block": None, "max_runs": None}


def check(name: str, params: dict, cfg: dict) -> list[str]:
    p = DEFAULTS | params
    errs = []
    if p["architecture"] == "unet" and (p["width"] != 1.0 or p["layers_per_block"] is not None):
        errs.append(f"methods.{name}.width: width/layers_per_block apply to architecture progressive only (the unet "
                    "student copies the teacher's architecture)")
    if p["architecture"] == "progressive" and "output" in params:
        errs.append(f"methods.{name}.output: applies to architecture unet only")
    if p["architecture"] == "progressive" and p["init"] == "teacher" and "init" in params:
        errs.append(f"methods.{name}.init: teacher initialisation needs architecture unet")
    if p["max_runs"] is not None and p["max_runs"] > cfg["trajectories"]["count"]:
        errs.append(f"methods.{name}.max_runs: {p['max_runs']} exceeds trajectories.count")
    return errs


def _progressive_params(p: dict) -> dict:
    # The progressive student, as an Adv-KD configuration: full-resolution noise, last head, regression, joint.
    return {"loss": "regression", "regression": p["regression"], "noise_resolution": "full", "heads": False,
            "training": "joint", "batch_size": p["batch_size"], "lr": p["lr"], "width": p["width"],
            "layers_per_block": p["layers_per_block"], "checkpoints": None}


def resolve(name, params, available, resolution, channels, teacher_card=None) -> dict:
    p = DEFAULTS | {k: v for k, v in params.items() if k not in ("family", *SCORING_KEYS)}
    if p["architecture"] == "progressive":
        cfg = adv.resolve(name, _progressive_params(p), available, resolution, channels, family="denoising-student")
        return cfg | {"architecture": "progressive", "epochs": p["epochs"], "init": "random"}
    return {**p, "family": "denoising-student", "name": name, "checkpoints": [available - 1],
            "resolution": resolution, "image_channels": channels, "teacher": teacher_card}


def _make(cfg: dict, teacher_unet=None) -> Student:
    if cfg["architecture"] == "progressive":
        return adv.make_student(cfg)
    unet = teacher_unet if teacher_unet is not None else unet_from_config(cfg["unet_config"])
    gen = UNetStudent(unet, cfg["timestep"], cfg.get("output") == "residual")  # .get: students saved before it
    return Student(gen, lambda x: x, {0: cfg["resolution"]}, nn.ModuleDict(), lambda phase: gen.parameters())


def train(name: str, params: dict, ctx: dict) -> dict:
    """ctx: trajectories, out, seed, device, teacher (teacher.json, for architecture unet)."""
    p = DEFAULTS | params
    traj = load_distillation_set(ctx["trajectories"], p["max_runs"])
    _, available, ch, res, _ = traj["states"].shape
    teacher_unet = None
    if p["architecture"] == "unet":
        teacher_unet, unet_cfg, card = teacher_unet_of(ctx["teacher"])
        if p["init"] == "random":
            torch.manual_seed(ctx["seed"])
            teacher_unet = unet_from_config(unet_cfg["unet_config"])
        cfg = resolve(name, params, available, res, ch, teacher_card=card.get("pipeline")) | unet_cfg
    else:
        cfg = resolve(name, params, available, res, ch)
    torch.manual_seed(ctx["seed"])  # initial weights are part of the run: a resumed or repeated run must match
    student = _make(cfg, teacher_unet)
    last = 0 if cfg["architecture"] == "unet" else cfg["phases"] - 1
    phases = [Phase(last, (last,), (len(cfg["checkpoints"]) - 1,), cfg["epochs"], cfg["batch_size"])]
    recipe = Recipe(loss="regression", regression=cfg["regression"], lr=cfg["lr"], betas=(0.9, 0.999))
    return run_distillation(student, phases, recipe, _jsonable(cfg), traj, ctx["out"], ctx["seed"],
                            ctx.get("device", "cpu"), ctx.get("stop_after_epochs"), ctx.get("progress", True))


def _jsonable(cfg: dict) -> dict:
    import json

    return json.loads(json.dumps(cfg, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def build(name: str, params: dict, ctx: dict):
    cfg, tensors = student_config(name, params, ctx, "denoising-student", resolve)
    if tensors is None and cfg["architecture"] == "unet":  # cost only: the (random) teacher's architecture
        cfg |= teacher_unet_of(ctx["teacher"])[1]
    student = _make(cfg)
    gen = student.generator
    if tensors is not None:
        gen.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gen.")})
    c, r = cfg["image_channels"], cfg["resolution"]
    if cfg["architecture"] == "progressive":
        net, noise_input = InferencePath(gen), (lambda x: downsample_noise(x, r))
    else:
        net, noise_input = gen, (lambda x: x)
    info = {"architecture": cfg["architecture"], "epochs": cfg["epochs"], "generator_parameters": count(gen)}
    return student_method(name, "denoising-student", gen, noise_input, net, (c, r, r), (c, r, r), count(gen), info,
                          ctx.get("device", "cpu"))
