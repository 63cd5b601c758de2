"""The registry: which method families exist. One line per family (advkd.method.Family): its name, kind, doc,
parameters dataclass and implementation (a sampler's scheduler, a student's class). Adding a family is its folder,
one line here (with its Params' import) and a config block; nothing else asks for family names. Reading this
module loads no torch (planning a run reads it).

A method is a name in the config's `methods:` block, e.g. `ddim-10: {family: ddim, steps: 10}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from jsonschema import Draft202012Validator

from .io import REPO_ROOT, BadInputError
from .method import SCORING_KEYS, SHIPPED, Family, Method, Params, param
from .students.advkd.params import AdvKDParams
from .students.consistency.params import ConsistencyParams
from .students.denoising.params import DenoisingParams
from .students.progressive.params import ProgressiveParams
from .students.reflow.params import ReflowParams


@dataclass(frozen=True)
class SamplerParams(Params):
    """A sampler over the teacher: a diffusers scheduler (the family's `extra`) run for `steps` steps."""
    steps: int = param(None, "denoising steps (= NFE)", type="integer", minimum=1, maximum=1000)
    example = {"steps": 2}

    @property
    def nfe(self) -> int:
        return self.steps


@dataclass(frozen=True)
class SecondOrderParams(SamplerParams):
    """A second-order sampler (Heun): two network calls per step but the last, 2N - 1 in all."""
    steps: int = param(None, "denoising steps (NFE = 2 steps - 1)", type="integer", minimum=1, maximum=500)

    @property
    def nfe(self) -> int:
        return 2 * self.steps - 1


def sampler(name: str, doc: str, cls: str, step_kwargs=None, params=SamplerParams, peer_yardstick: bool = False,
            **scheduler_kwargs) -> Family:
    """A sampler family over the teacher: a diffusers scheduler class by name, its overrides and step() arguments
    (advkd.samplers.TeacherDenoiser adapts the teacher to what the scheduler asks for). `peer_yardstick`: the
    family whose loop the timing rule also times as the stock diffusers loop a user would write (one family)."""
    return Family(name, "sampler", doc, params, "advkd.samplers",
                  extra={"scheduler": cls, "scheduler_kwargs": scheduler_kwargs, "step_kwargs": step_kwargs or {},
                         "peer_yardstick": peer_yardstick})


STUDENT_FIGURES = ("training_curves", "student_panels", "training_compute")
# The report's figures (workflow/report/<name>.rst captions each): the cost ones in every experiment; with scored
# samples the quality ones, the figures each student family adds (Family.figures), and teacher fidelity where the
# teacher's own sample set is there to compare with (advkd.config.teacher_method).
COST_FIGURES = ("params_flops", "latency")
QUALITY_FIGURES = ("fd_vs_flops", "fd_vs_throughput", "fd_vs_nfe", "sample_grids")
# drawn for the runs report.phase_quality names (advkd.students.advkd.phases)
PHASE_FIGURES = ("phase_quality", "phase_grids", "phase_losses")


def report_figures(student_families, scored: bool, fidelity: bool, phases: bool = False) -> list[str]:
    """The figures a report draws and its rule declares: one list, from the registry, for both (`phases`: some run
    is scored phase by phase, report.phase_quality)."""
    if not scored:
        return list(COST_FIGURES)
    return [*QUALITY_FIGURES, *COST_FIGURES, *sorted({f for fam in student_families for f in FAMILIES[fam].figures}),
            *(["teacher_fidelity"] if fidelity else []), *(PHASE_FIGURES if phases else [])]


def student(name: str, doc: str, params: type, cls: str, loss_columns: tuple) -> Family:
    """A student family: its Params, its class ("module:Class", an advkd.students.family.StudentFamily) and the
    columns its training adds to loss.csv."""
    return Family(name, "student", doc, params, cls, loss_columns=loss_columns, figures=STUDENT_FIGURES)


FAMILIES: dict[str, Family] = {f.name: f for f in [
    sampler("ddpm", "ancestral DDPM", "DDPMScheduler"),
    sampler("ddim", "DDIM, eta = 0 (deterministic)", "DDIMScheduler", step_kwargs={"eta": 0.0}, peer_yardstick=True),
    sampler("dpmsolver", "DPM-Solver++ 2M", "DPMSolverMultistepScheduler", algorithm_type="dpmsolver++",
            solver_order=2),
    sampler("unipc", "UniPC, order 2 (bh2)", "UniPCMultistepScheduler", solver_order=2, solver_type="bh2"),
    sampler("heun", "Heun's second-order method over the teacher's sigmas (Karras et al. 2022), 2N-1 calls",
            "HeunDiscreteScheduler", params=SecondOrderParams),
    sampler("edm-euler", "Euler over Karras sigmas (rho 7) spanning the teacher's sigma range, EDM-preconditioned "
            "(Karras et al. 2022)", "EDMEulerScheduler"),
    student("advkd", "Adv-KD progressive generator, one block per denoising phase (Mekonnen et al. 2024)",
            AdvKDParams, "advkd.students.advkd.model:AdvKD",
            ("g_loss", "g_adv", "reg", "critic_loss", "gp", "critic_real", "critic_fake")),
    student("denoising-student", "one-step regression student on (x_T, x_0) (Luhman & Luhman 2021)",
            DenoisingParams, "advkd.students.denoising.model:DenoisingStudent", ("regression",)),
    student("progressive-distillation", "rounds that halve the teacher's DDIM steps (Salimans & Ho 2022)",
            ProgressiveParams, "advkd.students.progressive.model:ProgressiveDistillation", ("distillation",)),
    student("consistency-distillation", "consistency function from one teacher ODE step (Song et al. 2023)",
            ConsistencyParams, "advkd.students.consistency.model:ConsistencyDistillation", ("loss",)),
    student("reflow", "2-rectified flow on the teacher's (x_T, x_0) pairs, Euler steps (Liu et al. 2023)",
            ReflowParams, "advkd.students.reflow.model:Reflow", ("velocity",)),
]}


def peer_yardstick() -> str:
    """The sampler family the timing rule times against the stock diffusers loop (its `peer_yardstick` line)."""
    (name,) = [k for k, f in FAMILIES.items() if f.extra.get("peer_yardstick")]
    return name


def resolved_block(block: dict, sampling: bool = True) -> dict:
    """A (valid) method block as its jobs get it and are rerun on: the family, every parameter with its default
    filled in (so that a default changed in code reruns exactly the jobs it changes), a shipped student's folder;
    never the scoring keys (scoring more samples or seeds retrains and re-costs nothing). Without `sampling`, the
    family's sampling keys are left out too: what a training run is made for."""
    params = params_of(block)
    return {"family": block["family"], **(params.as_dict() if sampling else params.training_dict()),
            **({SHIPPED: block[SHIPPED]} if block.get(SHIPPED) else {})}


def trainers(methods: dict) -> dict:
    """method -> the student method whose training run it samples from: of the methods of its family with the same
    resolved training block (defaults filled, scoring and sampling keys left out), the first by name. By name, not
    config order: the stages get the methods as JSON with sorted keys, or from result files, and must name the
    same run the DAG trained. Samplers are left out."""
    groups: dict = {}
    for name, block in methods.items():
        if FAMILIES[block["family"]].kind == "student":
            groups.setdefault(repr(sorted(resolved_block(block, sampling=False).items())), []).append(name)
    return {name: min(group) for group in groups.values() for name in group}


def trained_folder(root, name: str, methods: dict):
    """The folder under `root` of the training run student `name` samples from (`trainers`), or its shipped folder;
    None when it does not exist (a cost-only experiment trains nothing). A folder of another method of the same
    recipe (left by an earlier config) is never taken for it."""
    if methods[name].get(SHIPPED):
        return shipped_folder(methods[name][SHIPPED])
    run = Path(root) / trainers(methods)[name]
    return run if run.is_dir() else None


def shipped_folder(path: str) -> Path:
    """A shipped student's folder (`shipped:` of its block), relative to the repository unless absolute."""
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def parse_sampler(name: str) -> tuple[str, int]:
    """'ddim-50' -> ('ddim', 50); used where a config names a teacher sampler directly."""
    m = re.fullmatch(r"([a-z][a-z-]*)-(\d+)", name)
    if not m or m.group(1) not in FAMILIES or FAMILIES[m.group(1)].kind != "sampler":
        samplers = sorted(k for k, f in FAMILIES.items() if f.kind == "sampler")
        raise BadInputError(f"{name!r} is not <sampler>-<steps> with sampler one of {samplers}")
    return m.group(1), int(m.group(2))


def block_schema(fam: Family) -> dict:
    """The JSON schema of a `methods:` block of this family, generated from its Params."""
    props = fam.params.schema()
    required = [k for k, p in props.items() if p["default"] is None and not _accepts_null(p)]
    shipped = {SHIPPED: {"type": "string", "description": SHIPPED_DOC}} if fam.kind == "student" else {}
    return {"type": "object", "additionalProperties": False, "required": ["family", *required],
            "properties": {"family": {}, **dict.fromkeys(SCORING_KEYS, {}), **shipped, **props}}


SHIPPED_DOC = ("a folder holding a student trained by this suite's distill rule and shipped with the repository "
               "(its files and card.json, scripts/ship_student.py): sampled and scored like a trained one, never "
               "retrained; refused unless its card names this experiment's teacher, data and distillation set")


def _accepts_null(prop: dict) -> bool:
    return Draft202012Validator(prop).is_valid(None)


def method_errors(cfg: dict) -> list[str]:
    """Check each `methods:` entry against its family's parameters, then the family's own checks."""
    errs = []
    for name, block in cfg["methods"].items():
        fam = FAMILIES.get(block["family"])
        if fam is None:
            errs.append(f"methods.{name}.family: unknown family {block['family']!r}; expected one of "
                        f"{sorted(FAMILIES)}")
            continue
        schema = block_schema(fam)
        props = schema["properties"]
        found = []
        for e in Draft202012Validator(schema).iter_errors(block):
            where = ".".join(["methods", name, *map(str, e.absolute_path)])
            if e.validator == "additionalProperties":
                extra = sorted(set(block) - set(props))
                where = ", ".join(f"methods.{name}.{k}" for k in extra)
                found.append(f"{where}: family {fam.name} has no such parameter; its parameters are "
                             f"{sorted(props)}")
                continue
            key = e.path[0] if e.path else None
            hint = f" ({props[key]['description']})" if key in props and props[key].get("description") else ""
            found.append(f"{where}: {e.message} (family {fam.name}){hint}")
        if not found:
            found = fam.params.from_block(block).errors(f"methods.{name}", block, cfg)
        errs += found
    return errs


def training_recipe(block: dict) -> dict:
    """What a student block trains (its parameters, defaults filled, sampling keys left out) as JSON reads it back:
    what a shipped student's card records and config validation compares."""
    return json.loads(json.dumps(params_of(block).training_dict()))


def params_of(block: dict) -> Params:
    """The parameters of a (valid) method block, defaults filled."""
    return FAMILIES[block["family"]].params.from_block(block)


def recipe_class(block: dict) -> str:
    """A method's row label: sampler for the teacher's samplers, else its family's word (published, control,
    deviation for Adv-KD; peer for the other students). The report adds real for the noise-floor row."""
    if FAMILIES[block["family"]].kind == "sampler":
        return "sampler"
    return params_of(block).recipe_class()


def build_method(name: str, block: dict, ctx: dict) -> Method:
    """A runnable method: ctx holds teacher (teacher.json), device, and for students student_dir (or
    random_weights, for a cost-only experiment), compile (samplers)."""
    fam = FAMILIES[block["family"]]
    return fam.load().build(name, fam.params.from_block(block), ctx | {"family": fam.name})
