"""What every method is, sampler or student: the contract the sampling, quality, cost and report stages rely on, so
that they never ask which kind a method is.

- A `Family` makes methods. It is one line of the registry (advkd.families): a name, a kind (sampler over the
  teacher, or student trained on its trajectories), one `Params` dataclass that holds the family's parameters and
  their only defaults (the config schema of its `methods:` blocks is generated from it), and what implements it:
  for a sampler family a module with `build(name, params, ctx) -> Method`; for a student family a class (an
  advkd.students.family.StudentFamily) whose hooks the generic trainer and builder call, with
  `train(name, params, ctx) -> {"done": bool, ...}`, which writes the distill rule's files (listed in
  advkd.students.common), and `build`.
- A `Method` is a built, runnable method: how to sample, its NFE and its parameter counts.

This module imports no torch, so that planning a run (`snakemake -n`) reads the registry without loading it.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .data import to_uint8

# Keys of a method's config block that only say how it is scored (how many samples, which seeds): never passed to
# its training or cost jobs, so changing them only resamples and rescores.
SCORING_KEYS = ("n", "seeds", "scored_by")
# The key of a student's block that names a shipped, already trained student (advkd.families.block_schema).
SHIPPED = "shipped"


def param(default, doc: str, **schema):
    """A field of a family's `Params`: its default, what it means, and its JSON-schema constraints."""
    return field(default=default, metadata={"doc": doc, "schema": schema})


@dataclass(frozen=True)
class Params:
    """Base of every family's parameters. A subclass lists its fields with `param` and says what the schema cannot
    (`errors`) and how many network evaluations a sample costs (`nfe`)."""

    # A tiny valid block of this family, what the common family tests build (tests/unit/test_families.py).
    example: ClassVar[dict] = {}
    # Keys that only scale a student's training length: methods differing in these alone are one recipe at several
    # budgets, drawn as one curve in the report's training-compute figure.
    budget_keys: ClassVar[tuple] = ()
    # Keys that choose how a trained student samples (its step count), not what it learns: methods that differ only
    # in these share one training run (advkd.families.trainers), e.g. a progressive student's 4-, 2- and 1-step
    # rows.
    sampling_keys: ClassVar[tuple] = ()

    @classmethod
    def schema(cls) -> dict:
        """JSON schema of the family's keys (the `family` and scoring keys are added by the registry)."""
        props = {}
        for f in dataclasses.fields(cls):
            props[f.name] = {**f.metadata["schema"], "description": f.metadata["doc"], "default": f.default}
        return props

    @classmethod
    def from_block(cls, block: dict) -> "Params":
        """The parameters a method block gives (defaults for what it leaves out); the block must be valid."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in block.items() if k in names})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_dict(self) -> dict:
        """What a training run is made for: the parameters without the sampling keys."""
        return {k: v for k, v in self.as_dict().items() if k not in self.sampling_keys}

    def errors(self, where: str, block: dict, cfg: dict) -> list[str]:
        """What the schema cannot say (combinations, fit to the experiment's data); `block` is the method's config
        block as written (to tell a key set by the user from a default)."""
        return []

    @property
    def nfe(self) -> int:
        return 1

    def recipe_class(self) -> str:
        """What a table row of this student is, for a reader: `peer` (another distillation method) unless the
        family says otherwise (Adv-KD: published, control or deviation)."""
        return "peer"

    def changed_keys(self) -> set:
        """The parameters set away from the family's defaults, budget keys aside."""
        default = type(self)()
        return {k for k, v in self.as_dict().items() if v != getattr(default, k)} - set(self.budget_keys)


def max_runs_errors(where: str, max_runs: int | None, cfg: dict) -> list[str]:
    """A student's `max_runs` must not ask for more runs than the distillation set holds."""
    count = cfg["trajectories"]["count"]
    return [f"{where}.max_runs: {max_runs} exceeds trajectories.count {count}"] \
        if max_runs is not None and max_runs > count else []


@dataclass(frozen=True)
class PairParams(Params):
    """A student trained by regression on the distillation set's (x_T, x_0) pairs (the Denoising Student, reflow):
    the keys such a training run shares. A subclass restates `epochs` where its default or meaning differs."""

    epochs: int = param(20, "passes over the (x_T, x_0) pairs", type="integer", minimum=1)
    batch_size: int = param(64, "training batch", type="integer", minimum=2)
    lr: float = param(1e-4, "Adam learning rate", type="number", exclusiveMinimum=0)
    max_runs: int | None = param(None, "train on the first N trajectory runs only (null: all)",
                                 type=["integer", "null"], minimum=2)

    example = {"epochs": 2, "batch_size": 8}
    budget_keys = ("epochs",)

    def errors(self, where: str, block: dict, cfg: dict) -> list[str]:
        return max_runs_errors(where, self.max_runs, cfg)


@dataclass(frozen=True)
class Family:
    """One registry line: which methods exist is decided by these, never by if-chains on family names."""
    name: str
    kind: str                              # "sampler" (over the teacher) or "student" (trained on its trajectories)
    doc: str
    params: type                           # its Params subclass
    implementation: str                    # samplers: a module with build; students: "module:Class", a
                                           #   StudentFamily subclass (advkd.students.family)
    loss_columns: tuple = ()               # students: the columns of loss.csv after its index columns
    figures: tuple = ()                    # report figures the family adds (advkd.families.report_figures)
    extra: dict = field(default_factory=dict)   # what the implementation needs besides the params (a scheduler)

    def load(self) -> Any:
        """What builds (and, for students, trains) the family's methods: `build(name, params, ctx)` and
        `train(name, params, ctx)`."""
        # Imported when a method is built or trained, not when the registry is read: planning loads no torch.
        module, _, cls = self.implementation.partition(":")
        found = importlib.import_module(module)
        return getattr(found, cls)() if cls else found


@dataclass
class Method:
    """What the rest of the suite needs from any built method."""
    name: str
    family: str
    nfe: int                                     # network evaluations per sample
    sample: Callable                             # (n, seed, batch_size, progress, first_batch=0)
                                                 #   -> (float (n,C,H,W) in [-1,1], stats)
    network: Any                                 # torch module: one network evaluation (for FLOPs, latency, params)
    network_inputs: Callable                     # batch -> args for one network evaluation
    inference_parameters: int                    # parameters used to sample
    all_parameters: int                          # the model's parameters, stored and loaded (e.g. unused heads)
    info: dict = field(default_factory=dict)
    training_only_parameters: int = 0            # trained beside the model, never stored with it (critics)

    def generate(self, n: int, seed: int, batch_size: int = 250, progress: bool = True, first_batch: int = 0):
        """uint8 images (n,H,W,C) and sampling stats; batches first_batch.. of the seed's run (see samplers)."""
        x, stats = self.sample(n, seed, batch_size, progress, first_batch)
        return to_uint8(x), stats
