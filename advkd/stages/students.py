"""The stage of workflow/rules/students.smk: train one student method (rule distill). Sampling a student is the
same stage as sampling a teacher's sampler (advkd.stages.sample.sample)."""

from __future__ import annotations

from ..io import BadInputError
from ..methods import FAMILIES


def distill(name: str, params: dict, ctx: dict) -> dict:
    """The distill stage: train the method's student family into ctx['out'] (resuming a checkpoint there only when
    it was made for exactly this run)."""
    fam = FAMILIES.get(params.get("family"))
    if fam is None or fam.train is None:
        students = sorted(k for k, f in FAMILIES.items() if f.train is not None)
        raise BadInputError(f"method {name}: family {params.get('family')!r} is not a student family; expected one "
                            f"of {students}")
    return fam.train(name, params, ctx)
