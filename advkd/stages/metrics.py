"""The stage of workflow/rules/metrics.smk that needs the method registry: the cost of a method (rule cost). The
measurements themselves are advkd.metrics.cost; the judge, reference statistics, quality and sanity stages are in
advkd.metrics.evaluator, advkd.metrics.quality and advkd.metrics.sanity."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import provenance, write_json
from ..methods import FAMILIES, build_method
from ..metrics.cost import measure_cost


def cost_context(teacher_json, device, student_dir=None, checkpoints: int = 11) -> dict:
    """The build context of a method to be costed. With a random-weight teacher (a cost-only experiment) students
    are built with random weights at the teacher's image shape, distilling `checkpoints` checkpoints."""
    ctx = {"teacher": str(teacher_json), "device": device, "student_dir": student_dir}
    card = json.loads(Path(teacher_json).read_text())
    if card["source"] == "random":
        ctx["random_weights"] = {"resolution": card["sample_size"], "channels": card["channels"],
                                 "checkpoints": checkpoints, "seed": card["seed"]}
    return ctx


def cost_stage(name: str, spec: dict, ctx: dict, cost: dict, out, cfg=None) -> dict:
    """The `cost` rule: build the method from the registry (sampler or student alike) and write one JSON."""
    method = build_method(name, spec, ctx)
    row = measure_cost(method, ctx["device"], cost, cost.get("seed", 0))
    row |= {"kind": FAMILIES[spec["family"]].kind, "info": method.info,
            "provenance": provenance(cfg=cfg if cfg is not None else {"spec": spec, "cost": cost},
                                     device=ctx["device"])}
    write_json(out, row)
    return row
