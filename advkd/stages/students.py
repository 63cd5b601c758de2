"""The stage of workflow/rules/students.smk: train one student method (rule distill). Sampling a student is the
same stage as sampling a teacher's sampler (advkd.stages.sample.sample)."""

from __future__ import annotations

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
