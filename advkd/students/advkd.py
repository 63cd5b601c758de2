"""The Adv-KD student family (Mekonnen et al. 2024): a progressive generator whose blocks are the denoising phases,
trained phase by phase against per-phase conditional critics. Every ablation of the method is a parameter here;
the defaults are the published recipe (see /work/shared/reference/advkd-method.md)."""

from __future__ import annotations

import torch
from torch import nn

from ..method import SCORING_KEYS
from .common import (
    checkpoint_errors,
    load_distillation_set,
    run_distillation,
    select_checkpoints,
    student_config,
    student_method,
    teacher_unet,
)
from .generator import (
    PRESETS,
    Discriminator,
    InferencePath,
    ProgressiveGenerator,
    UNetStudent,
    block_layout,
    count,
    downsample_noise,
    log2_ratio,
    unet_from_config,
)
from .training import Phase, Recipe, Student

PARAMS = {
    "generator": {"enum": ["progressive", "teacher-unet"], "description": "progressive = the published "
                  "generator (blocks = phases, each with a head); teacher-unet = the teacher's UNet initialised from "
                  "its weights, fed the whole x_T, its output read as x_T minus the image (the Denoising Student's "
                  "network): one phase on x_0, trained with this recipe's losses and critics (not published)"},
    "preset": {"enum": sorted(PRESETS), "description": "paper = published 256x256 RGB student; embedded = the same "
               "design at quarter width for 1x32x32 (default)"},
    "phases": {"type": "integer", "minimum": 1, "description": "student phases = blocks = teacher checkpoints "
               "distilled (default: all of trajectories.checkpoints; fewer are thinned evenly, ending at x_0)"},
    "checkpoints": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1,
                    "description": "explicit trajectory checkpoint indices, one per phase, increasing, ending at "
                    "the last (x_0): the checkpoint-spacing ablation"},
    "width": {"type": "number", "exclusiveMinimum": 0, "description": "multiplier on the preset's block widths"},
    "widths": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
               "description": "base channel widths from the first block to the last (replace the preset's; "
               "spread over the blocks by relative depth, then scaled by `width`): e.g. wide early blocks, as in "
               "DCGAN, instead of the published growth"},
    "layers_per_block": {"type": "integer", "minimum": 1, "maximum": 8,
                         "description": "plain layers per block (default: the published 1-2 pattern)"},
    "noise_resolution": {"oneOf": [{"type": "integer", "minimum": 1}, {"const": "full"}],
                         "description": "resolution x_T is downsampled to before the generator: 4 (published) .. "
                         "the image resolution, or 'full'"},
    "upsample": {"enum": ["transposed", "nearest"], "description": "up layers: transposed = the published "
                 "stride-2 3x3 transposed conv; nearest = nearest upsampling + 3x3 conv (no checkerboard, same "
                 "parameters, 4x the FLOPs of that layer)"},
    "heads": {"type": "boolean", "description": "intermediate heads (true = published); false keeps only the "
              "last head and needs training: joint"},
    "loss": {"enum": ["adversarial", "regression", "both"],
             "description": "adversarial = published; regression = Denoising-Student-style; both = sum"},
    "regression": {"enum": ["mse", "l1"], "description": "regression loss kind"},
    "reg_weight": {"type": "number", "minimum": 0, "description": "weight of the regression loss"},
    "reg_resolution": {"type": ["integer", "null"], "minimum": 1, "description": "compare student and teacher "
                       "images area-averaged to this side (a power-of-2 divisor of the image) in the regression "
                       "loss, so that it anchors the layout the input noise determines and leaves the detail to "
                       "the critic; null = at the rendered resolution (published)"},
    "adv_weight": {"type": "number", "minimum": 0, "description": "weight of the generator's adversarial loss"},
    "gradient_penalty": {"type": "number", "minimum": 0, "description": "gradient-penalty weight (10 published, "
                         "0 = off)"},
    "clip": {"type": ["number", "null"], "minimum": 0, "description": "critic weight clipping +-clip (0.1 "
             "published; null or 0 = off)"},
    "training": {"enum": ["phases", "joint"], "description": "phases = published phase-by-phase; joint = all "
                 "blocks and heads at once"},
    "epochs_scale": {"type": "number", "exclusiveMinimum": 0, "description": "phase k trains "
                     "max(1, round(10(k+1) * epochs_scale)) epochs (1 = published)"},
    "batch_size": {"type": ["integer", "null"], "minimum": 2, "description": "null = published 64 (k<8), "
                   "32 (k=8), 16 (k>=9)"},
    "lr": {"type": "number", "exclusiveMinimum": 0, "description": "Adam learning rate (1e-4 published)"},
    "d_lr": {"type": ["number", "null"], "exclusiveMinimum": 0, "description": "critic learning rate (null = lr)"},
    "critic": {"enum": ["conditional", "unconditional"], "description": "conditional = published: the critic "
               "judges (image, input noise) pairs; unconditional = the image alone (realism, not the match to x_T)"},
    "disc_width": {"type": "integer", "minimum": 1, "description": "first critic conv width (default: preset's)"},
    "ema": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1,
            "description": "sample from an exponential moving average of the generator weights with this decay "
            "per generator step, e.g. 0.95 for a few hundred steps (null = off, published)"},
    "augment": {"type": "boolean", "description": "DiffAugment (random shift + cutout) on every image a critic "
                "sees, against critic overfitting on few trajectories (false = published)"},
    "max_runs": {"type": ["integer", "null"], "minimum": 2, "description": "train on the first N trajectory "
                 "runs only"},
}

DEFAULTS = {"generator": "progressive", "preset": "embedded", "phases": None, "checkpoints": None, "width": 1.0,
            "widths": None, "layers_per_block": None, "upsample": "transposed", "noise_resolution": None,
            "heads": True, "loss": "adversarial", "regression": "mse", "reg_weight": 1.0, "reg_resolution": None,
            "adv_weight": 1.0, "gradient_penalty": 10.0, "clip": 0.1, "training": "phases", "epochs_scale": 1.0,
            "batch_size": None, "lr": 1e-4, "d_lr": None, "disc_width": None, "critic": "conditional", "ema": None,
            "augment": False, "max_runs": None}


def published_batch(k: int) -> int:
    return 64 if k < 8 else 32 if k == 8 else 16


def resolve(name: str, params: dict, available: int, resolution: int, channels: int, family: str = "advkd") -> dict:
    """The full recipe: defaults filled, checkpoints chosen, layout computed. Saved as student.json."""
    p = DEFAULTS | {k: v for k, v in params.items() if k not in ("family", *SCORING_KEYS)}
    preset = PRESETS[p["preset"]]
    phases = p["phases"] or (len(p["checkpoints"]) if p["checkpoints"] else available)
    if teacher_unet_generator(p):  # one network on the whole x_T: no blocks, heads or noise resizing
        return {**p, "family": family, "name": name, "phases": 1, "noise_resolution": resolution, "heads": False,
                "training": "joint", "checkpoints": [available - 1], "resolution": resolution,
                "image_channels": channels, "layout": None, "disc_width": p["disc_width"] or preset["disc_width"]}
    nr = p["noise_resolution"] or preset["noise_resolution"]
    nr = resolution if nr == "full" else nr
    layout = block_layout(phases, nr, resolution, p["widths"] or preset["widths"], p["width"], p["layers_per_block"])
    return {**p, "family": family, "name": name, "phases": phases, "noise_resolution": nr,
            "checkpoints": select_checkpoints(available, phases, p["checkpoints"]),
            "resolution": resolution, "image_channels": channels, "layout": layout,
            "disc_width": p["disc_width"] or preset["disc_width"]}


def check(name: str, params: dict, cfg: dict) -> list[str]:
    """What the schema cannot say: the recipe must fit the experiment's data and trajectories."""
    where = f"methods.{name}"
    p = DEFAULTS | params
    available = cfg["trajectories"]["checkpoints"]
    res, ch = cfg["data"]["resolution"], cfg["data"]["channels"]
    errs = checkpoint_errors(where, available, p["phases"], p["checkpoints"])
    if teacher_unet_generator(p):
        fixed = {"phases": 1, "noise_resolution": "full", "heads": False, "training": "joint"}
        for key in ("phases", "checkpoints", "width", "widths", "layers_per_block", "upsample", "noise_resolution",
                    "heads", "training", "preset"):
            if key in params and params[key] != fixed.get(key, object()):
                errs.append(f"{where}.{key}: does not apply to generator: teacher-unet (the teacher's UNet on the "
                            "whole x_T, one phase on x_0); remove it")
    preset = PRESETS[p["preset"]]
    for key in ("resolution", "image_channels"):
        want, have = preset[key], res if key == "resolution" else ch
        if want is not None and want != have:
            errs.append(f"{where}.preset: {p['preset']} is built for {key} {want}, the data has {have}; use preset "
                        "embedded")
    nr = p["noise_resolution"] or preset["noise_resolution"]
    if nr != "full" and log2_ratio(res, nr) is None:
        errs.append(f"{where}.noise_resolution: {nr} must divide the image resolution {res} by a power of 2")
    rr = p["reg_resolution"]
    if rr is not None and log2_ratio(res, rr) is None:
        errs.append(f"{where}.reg_resolution: {rr} must divide the image resolution {res} by a power of 2")
    if not p["heads"] and p["training"] != "joint":
        errs.append(f"{where}.heads: false leaves the intermediate phases without an image to supervise; set "
                    "training: joint")
    if p["loss"] == "adversarial" and (p["adv_weight"] == 0):
        errs.append(f"{where}.adv_weight: 0 with loss adversarial trains nothing")
    if p["max_runs"] is not None and p["max_runs"] > cfg["trajectories"]["count"]:
        errs.append(f"{where}.max_runs: {p['max_runs']} exceeds trajectories.count {cfg['trajectories']['count']}")
    return errs


def teacher_unet_generator(cfg: dict) -> bool:
    return cfg.get("generator") == "teacher-unet"  # .get: students saved before the knob are progressive


def head_resolution(cfg: dict, head: int) -> int:
    return cfg["resolution"] if cfg["layout"] is None else cfg["layout"][head]["resolution"]


def make_generator(cfg: dict) -> nn.Module:
    if teacher_unet_generator(cfg):
        return UNetStudent(unet_from_config(cfg["unet_config"]), cfg["timestep"], residual=True)
    # .get: students saved before the knob existed used the published layer
    return ProgressiveGenerator(cfg["layout"], cfg["image_channels"], cfg["image_channels"], cfg["heads"],
                                cfg.get("upsample", "transposed"))


def make_discriminators(cfg: dict, gen: ProgressiveGenerator) -> nn.ModuleDict:
    if cfg["loss"] == "regression":
        return nn.ModuleDict()
    noise_channels = 0 if cfg.get("critic") == "unconditional" else cfg["image_channels"]
    return nn.ModuleDict({str(h): Discriminator(cfg["image_channels"], head_resolution(cfg, h),
                                                noise_channels, cfg["noise_resolution"], cfg["disc_width"])
                          for h in gen.head_ids()})


def make_student(cfg: dict) -> Student:
    gen = make_generator(cfg)
    nr = cfg["noise_resolution"]

    def trainable(phase: Phase):
        if teacher_unet_generator(cfg):
            yield from gen.parameters()
            return
        for b in range(phase.last_block + 1):
            yield from gen.blocks[b].parameters()
        for h in phase.heads:
            yield from gen.heads[str(h)].parameters()

    return Student(gen, lambda x: downsample_noise(x, nr), {h: head_resolution(cfg, h) for h in gen.head_ids()},
                   make_discriminators(cfg, gen), trainable)


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
                  reg_weight=cfg["reg_weight"], reg_resolution=cfg.get("reg_resolution"),
                  gradient_penalty=cfg["gradient_penalty"], clip=cfg["clip"] or None,
                  lr=cfg["lr"], d_lr=cfg["d_lr"], ema=cfg["ema"], augment=cfg["augment"])


def train(name: str, params: dict, ctx: dict) -> dict:
    """ctx: trajectories (shard paths), out (folder), seed, device; optional stop_after_epochs, progress."""
    traj = load_distillation_set(ctx["trajectories"], params.get("max_runs"))
    _, available, ch, res, _ = traj["states"].shape
    cfg = resolve(name, params, available, res, ch)
    unet = None
    if teacher_unet_generator(cfg):
        unet, unet_cfg, _ = teacher_unet(ctx["teacher"])
        cfg |= unet_cfg
    torch.manual_seed(ctx["seed"])  # initial weights are part of the run: a resumed or repeated run must match
    student = make_student(cfg)
    if unet is not None:
        student.generator.unet.load_state_dict(unet.state_dict())
    return run_distillation(student, make_phases(cfg), make_recipe(cfg), cfg, traj, ctx["out"],
                            ctx["seed"], ctx.get("device", "cpu"), ctx.get("stop_after_epochs"),
                            ctx.get("progress", True))


def build(name: str, params: dict, ctx: dict):
    cfg, tensors = student_config(name, params, ctx, "advkd", resolve)
    if tensors is None and teacher_unet_generator(cfg):  # cost only: the teacher's architecture
        cfg |= teacher_unet(ctx["teacher"])[1]
    gen = make_generator(cfg)
    if tensors is not None:
        gen.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gen.")})
    discs = make_discriminators(cfg, gen)
    nr, c, r = cfg["noise_resolution"], cfg["image_channels"], cfg["resolution"]
    info = {"phases": cfg["phases"], "checkpoints": cfg["checkpoints"], "noise_resolution": nr,
            "loss": cfg["loss"], "training": cfg["training"], "generator_parameters": count(gen),
            "discriminator_parameters": count(discs)}
    net = gen if teacher_unet_generator(cfg) else InferencePath(gen)
    return student_method(name, "advkd", gen, lambda x: downsample_noise(x, nr), net, (c, r, r),
                          (c, nr, nr), count(gen) + count(discs), info, ctx.get("device", "cpu"))
