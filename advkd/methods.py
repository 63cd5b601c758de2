"""The registry: which method families exist, their parameters, and how to build a runnable method.

A method is a name in the config's `methods:` block, e.g. `ddim-10: {family: ddim, steps: 10}`. Its family is a
key of FAMILIES. Every method, sampler or student, answers the same contract (`Method`), so sampling, quality
and cost code never asks which kind it is. Adding a method family is one entry here plus one config block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .config import SCORING_KEYS
from .io import BadInputError


@dataclass
class Method:
    """What the rest of the suite needs from any method."""
    name: str
    family: str
    nfe: int                                     # network evaluations per sample
    sample: Callable                             # (n, seed, batch_size, progress, first_batch=0)
                                                 #   -> (float (n,C,H,W) in [-1,1], stats)
    network: torch.nn.Module                     # one network evaluation (for FLOPs, latency, params)
    network_inputs: Callable                     # batch -> args for one network evaluation
    inference_parameters: int                    # parameters used to sample
    all_parameters: int                          # parameters trained/stored (e.g. with discriminators, heads)
    info: dict = field(default_factory=dict)

    def generate(self, n: int, seed: int, batch_size: int = 250, progress: bool = True, first_batch: int = 0):
        """uint8 images (n,H,W,C) and sampling stats; batches first_batch.. of the seed's run (see samplers)."""
        from .data import to_uint8

        x, stats = self.sample(n, seed, batch_size, progress, first_batch)
        return to_uint8(x), stats


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
    from .samplers import run_sampler
    from .teacher import load_teacher

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
    from .samplers import SchedulerSpec

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

def _student_families() -> dict:
    from .students import advkd, denoising

    return {
        "advkd": Family("student", "Adv-KD progressive generator, one block per denoising phase (Mekonnen et al. 2024)",
                        advkd.PARAMS, (), advkd.build, advkd.check, advkd.train),
        "denoising-student": Family("student", "one-step regression student on (x_T, x_0) (Luhman & Luhman 2021)",
                                    denoising.PARAMS, (), denoising.build, denoising.check, denoising.train),
    }


FAMILIES |= _student_families()


def parse_sampler(spec: str) -> tuple[str, int]:
    """'ddim-50' -> ('ddim', 50); used where a config names a teacher sampler directly."""
    m = re.fullmatch(r"([a-z]+)-(\d+)", spec)
    if not m or FAMILIES.get(m.group(1), Family("", "", {})).kind != "sampler":
        samplers = sorted(k for k, f in FAMILIES.items() if f.kind == "sampler")
        raise BadInputError(f"{spec!r} is not <sampler>-<steps> with sampler one of {samplers}")
    return m.group(1), int(m.group(2))


def method_errors(cfg: dict) -> list[str]:
    """Check each `methods:` entry against its family's parameter schema."""
    from jsonschema import Draft202012Validator

    errs = []
    for name, params in cfg["methods"].items():
        fam = FAMILIES.get(params["family"])
        if fam is None:
            errs.append(f"methods.{name}.family: unknown family {params['family']!r}; expected one of {sorted(FAMILIES)}")
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


PEAK_CHUNKS = 6  # a sampling job measures the matmul peak PEAK_CHUNKS + 1 times (see sample_method)


def sample_method(method: Method, n: int, seed: int, batch_size: int, out_npz, out_json, device,
                  part: int = 0, part_size: int | None = None, progress=True) -> dict:
    """The sample stage: images [part*part_size, ...) of the seed's n-image run (all n by default) to .npz, with a
    JSON of speed figures. Batch b of the run always draws from batch_seed(seed, b), so the parts of a run, merged
    by `merge_samples`, equal the run made in one piece; part_size must therefore be a multiple of batch_size."""
    from .io import provenance, save_images, write_json
    from .metrics.cost import count_flops, matmul_peak_gflops

    part_size = part_size or n
    start = part * part_size
    if part_size % batch_size and part_size < n:
        raise BadInputError(f"sampling.shard_size: {part_size} must be a multiple of sampling.batch_size "
                            f"({batch_size}) so that every shard starts at a batch boundary")
    if not 0 <= start < n:
        raise BadInputError(f"part {part} of size {part_size} starts at image {start}, beyond n = {n}")
    count = min(part_size, n - start)
    # The host is shared and its speed drifts by +-10% within a job, so one or two peak measurements say more about
    # the moment they land in than about the job. The batches run in up to PEAK_CHUNKS chunks with the peak
    # measured before, between and after them (outside the sampling clock); the fraction of peak uses their
    # median, the speed the machine offered while the job ran. The best of them is kept too (fraction_of_best_peak,
    # the conservative reading). Chunks are batch ranges of the same run, so the images do not change.
    n_batches = -(-count // batch_size)
    bounds = [int(b) for b in np.linspace(0, n_batches, min(PEAK_CHUNKS, n_batches) + 1).round()]
    peaks, chunks, seconds = [matmul_peak_gflops(device)], [], 0.0
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        m = min(count, b1 * batch_size) - b0 * batch_size
        images, stats = method.generate(m, seed, batch_size, progress, first_batch=start // batch_size + b0)
        chunks.append(images)
        seconds += stats["seconds"]
        peaks.append(matmul_peak_gflops(device))
    images = np.concatenate(chunks)
    with torch.inference_mode():
        flops_per_call = count_flops(lambda: method.network(*method.network_inputs(1)))
    peak = float(np.median(peaks))
    achieved = flops_per_call * method.nfe * count / seconds / 1e9
    stats |= {"method": method.name, "family": method.family, "nfe": method.nfe, "start": start, "n": count,
              "seconds": round(seconds, 3), "images_per_s": count / seconds,
              "flops_per_image": flops_per_call * method.nfe, "achieved_gflops": achieved,
              "matmul_peak_gflops": peak, "matmul_peak_gflops_probes": peaks, "fraction_of_peak": achieved / peak,
              "matmul_peak_gflops_best": max(peaks), "fraction_of_best_peak": achieved / max(peaks)}
    save_images(out_npz, images, seed=np.int64(seed), start=np.int64(start))
    write_json(out_json, stats | {"provenance": provenance(device=device), **method.info})
    return stats


def merge_samples(parts, n: int, out_npz, out_png, out_json, grid: int) -> dict:
    """Join the parts of one method's run for one seed (stems: STEM.npz + STEM.json, from `sample_method`) into
    the run's .npz, PNG grid and JSON; speed figures are over the summed sampling time of all parts."""
    import json
    from pathlib import Path

    from .data import save_grid
    from .io import load_images, save_images, write_json

    stats = [json.loads(Path(f"{p}.json").read_text()) for p in parts]
    order = sorted(range(len(parts)), key=lambda i: stats[i]["start"])
    images = [load_images(f"{parts[i]}.npz") for i in order]
    stats = [stats[i] for i in order]
    seeds = {s["seed"] for s in stats}
    starts = [s["start"] for s in stats]
    expected = np.cumsum([0] + [len(x) for x in images[:-1]]).tolist()
    if len(seeds) != 1 or starts != expected or sum(map(len, images)) != n:
        raise BadInputError(f"the sample parts {list(parts)} do not tile images 0..{n - 1} of one seed "
                            f"(seeds {sorted(seeds)}, starts {starts}, sizes {[len(x) for x in images]}); "
                            "delete them and rerun")
    images = np.concatenate(images)
    seconds = sum(s["seconds"] for s in stats)
    first = stats[0]
    achieved = first["flops_per_image"] * n / seconds / 1e9
    peak = float(np.median([s["matmul_peak_gflops"] for s in stats]))
    best = max(s.get("matmul_peak_gflops_best", s["matmul_peak_gflops"]) for s in stats)
    merged = {k: v for k, v in first.items() if k != "start"} | {
        "n": n, "seconds": round(seconds, 3), "images_per_s": n / seconds, "achieved_gflops": achieved,
        "matmul_peak_gflops": peak, "matmul_peak_gflops_parts": [s["matmul_peak_gflops"] for s in stats],
        "matmul_peak_gflops_probes": [s.get("matmul_peak_gflops_probes") for s in stats],  # one list per part
        "fraction_of_peak": achieved / peak, "matmul_peak_gflops_best": best,
        "fraction_of_best_peak": achieved / best, "parts": len(parts)}
    save_images(out_npz, images, seed=np.int64(first["seed"]))
    save_grid(out_png, images[:grid])
    write_json(out_json, merged)
    return merged
