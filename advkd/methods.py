"""The registry: which method families exist, their parameters, and how to build a runnable method.

A method is a name in the config's `methods:` block, e.g. `ddim-10: {family: ddim, steps: 10}`. Its family is a
key of FAMILIES. Every method, sampler or student, answers the same contract (`advkd.method.Method`), so sampling,
quality and cost code never asks which kind it is. Adding a method family is one entry here plus one config block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from jsonschema import Draft202012Validator

from .io import BadInputError
from .method import SCORING_KEYS, Method
from .samplers import SchedulerSpec, run_sampler
from .students import advkd, denoising
from .teacher import load_teacher


@dataclass
class Family:
    kind: str                                    # "sampler" (over the teacher) or "student" (trained)
    doc: str
    params: dict                                 # JSON-schema properties of the family's parameters
    required: tuple = ()
    build: Callable = None                       # (name, params, ctx) -> Method
    check: Callable = None                       # (name, params, cfg) -> [errors]: what the schema cannot say
    train: Callable = None                       # students: (name, params, ctx) -> training result
    scheduler: object = None                     # samplers: the diffusers scheduler (advkd.samplers.SchedulerSpec)


# ---------------------------------------------------------------------------------------------------------------
# Samplers over the teacher: any diffusers scheduler with the set_timesteps/scale_model_input/step contract.

def _build_sampler(name, params, ctx) -> Method:
    family = params["family"]
    spec = FAMILIES[family].scheduler
    unet, train_config, card = load_teacher(ctx["teacher"], ctx["device"])
    steps = params["steps"]

    def sample(n, seed, batch_size, progress, first_batch=0):
        x0, _, _, stats = run_sampler(unet, spec, steps, train_config, n, seed, batch_size, ctx["device"],
                                      progress=progress, desc=name, first_batch=first_batch,
                                      compile=ctx.get("compile", False))
        return x0, stats

    c, h = unet.config.in_channels, unet.config.sample_size
    params_n = sum(p.numel() for p in unet.parameters())
    return Method(name, family, nfe=steps, sample=sample, network=unet,
                  network_inputs=lambda b: (torch.randn(b, c, h, h, device=ctx["device"]).contiguous(
                      memory_format=torch.channels_last), torch.full((b,), 500, device=ctx["device"])),
                  inference_parameters=params_n, all_parameters=params_n,
                  info={"teacher": card["pipeline"], "steps": steps})


def sampler(doc: str, cls: str, step_kwargs=None, **scheduler_kwargs) -> Family:
    """A sampler family over the teacher: a diffusers scheduler class, its overrides and step() arguments."""
    steps = {"steps": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "denoising steps (= NFE)"}}
    return Family("sampler", doc, steps, ("steps",), _build_sampler,
                  scheduler=SchedulerSpec(cls, scheduler_kwargs, step_kwargs or {}))


FAMILIES: dict[str, Family] = {
    "ddpm": sampler("ancestral DDPM", "DDPMScheduler"),
    "ddim": sampler("DDIM, eta = 0 (deterministic)", "DDIMScheduler", step_kwargs={"eta": 0.0}),
    "dpmsolver": sampler("DPM-Solver++ 2M", "DPMSolverMultistepScheduler", algorithm_type="dpmsolver++",
                         solver_order=2),
    "unipc": sampler("UniPC, order 2 (bh2)", "UniPCMultistepScheduler", solver_order=2, solver_type="bh2"),
}


# ---------------------------------------------------------------------------------------------------------------
# Students trained on the teacher's trajectories (advkd.students; rule distill)

FAMILIES |= {
    "advkd": Family("student", "Adv-KD progressive generator, one block per denoising phase (Mekonnen et al. 2024)",
                    advkd.PARAMS, (), advkd.build, advkd.check, advkd.train),
    "denoising-student": Family("student", "one-step regression student on (x_T, x_0) (Luhman & Luhman 2021)",
                                denoising.PARAMS, (), denoising.build, denoising.check, denoising.train),
}


def parse_sampler(spec: str) -> tuple[str, int]:
    """'ddim-50' -> ('ddim', 50); used where a config names a teacher sampler directly."""
    m = re.fullmatch(r"([a-z]+)-(\d+)", spec)
    if not m or FAMILIES.get(m.group(1), Family("", "", {})).kind != "sampler":
        samplers = sorted(k for k, f in FAMILIES.items() if f.kind == "sampler")
        raise BadInputError(f"{spec!r} is not <sampler>-<steps> with sampler one of {samplers}")
    return m.group(1), int(m.group(2))


def method_errors(cfg: dict) -> list[str]:
    """Check each `methods:` entry against its family's parameter schema."""
    errs = []
    for name, params in cfg["methods"].items():
        fam = FAMILIES.get(params["family"])
        if fam is None:
            errs.append(f"methods.{name}.family: unknown family {params['family']!r}; expected one of "
                        f"{sorted(FAMILIES)}")
            continue
        before = len(errs)
        schema = {"type": "object", "additionalProperties": False, "required": ["family", *fam.required],
                  "properties": {"family": {}, **dict.fromkeys(SCORING_KEYS, {}), **fam.params}}
        for e in Draft202012Validator(schema).iter_errors(params):
            where = ".".join(["methods", name, *map(str, e.absolute_path)])
            hint = f"; {fam.params[e.path[0]]['description']}" if e.path and e.path[0] in fam.params and \
                "description" in fam.params[e.path[0]] else ""
            errs.append(f"{where}: {e.message} (family {params['family']}: allowed keys "
                        f"{sorted(['family', *SCORING_KEYS, *fam.params])}){hint}")
        if fam.check is not None and len(errs) == before:
            errs += fam.check(name, params, cfg)
    return errs


def build_method(name: str, params: dict, ctx: dict) -> Method:
    return FAMILIES[params["family"]].build(name, params, ctx)
