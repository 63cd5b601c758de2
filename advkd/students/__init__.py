"""Students distilled from the teacher's trajectories. One module per family (advkd, denoising); the networks
(generator), the shared training loop (training) and the stage plumbing (common) are shared. Which families exist
is decided by the registry, advkd.methods.FAMILIES."""

from __future__ import annotations


def distill(name: str, params: dict, ctx: dict) -> dict:
    """The distill stage: train the method's student family into ctx['out'] (resuming a checkpoint there)."""
    from ..io import BadInputError
    from ..methods import FAMILIES

    fam = FAMILIES.get(params.get("family"))
    if fam is None or fam.train is None:
        students = sorted(k for k, f in FAMILIES.items() if f.train is not None)
        raise BadInputError(f"method {name}: family {params.get('family')!r} is not a student family; expected one "
                            f"of {students}")
    return fam.train(name, params, ctx)
