"""The stage of workflow/rules/students.smk: train one student method (rule distill). Sampling a student is the
same stage as sampling a teacher's sampler (advkd.stages.sample.sample)."""

from __future__ import annotations

import torch

from ..families import FAMILIES
from ..io import BadInputError


def distill(name: str, block: dict, ctx: dict) -> dict:
    """The distill stage: train the method's student family into ctx['out'] (resuming a checkpoint there only when
    it was made for exactly this run). ctx: trajectories (shard paths), teacher (teacher.json), out, seed, device."""
    fam = FAMILIES.get(block.get("family"))
    if fam is None or fam.kind != "student":
        students = sorted(k for k, f in FAMILIES.items() if f.kind == "student")
        raise BadInputError(f"method {name}: family {block.get('family')!r} is not a student family; expected one "
                            f"of {students}")
    return fam.load().train(name, fam.params.from_block(block), ctx)


def distill_job(*, method: str, block: dict, trajectories: list[str], teacher: str, seed: int, device: torch.device,
                out: str) -> dict:
    """The distill rule: student --method (--block: its resolved block as JSON) trained on the trajectory shards
    into the folder --out (student.safetensors, student.json, loss.csv, ...), resuming a checkpoint made for
    exactly this run."""
    result = distill(method, block, {"trajectories": trajectories, "teacher": teacher, "out": out, "seed": seed,
                                     "device": device})
    return {k: result[k] for k in ("done", "seconds_this_call") if k in result}
