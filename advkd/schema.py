"""The experiment config as one tree of dataclasses: the only place a setting's type, constraints, meaning and
default are written. The JSON schema that validates an experiment's YAML and fills its defaults is generated from
them (`experiment_schema`), as each family's `methods:` block schema is from its Params (advkd.families);
`workflow/schemas/config.schema.yaml` is that schema written out for readers (`python -m advkd.schema`), and a test
holds it to the code.

A field's Python type gives its JSON type (int -> integer, X | None -> [X, null], Literal[...] -> enum, a block's
dataclass -> a nested object whose defaults are filled too); `setting(...)` adds the constraints a type cannot say.
No torch here: planning a run validates its config.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

_NO_DEFAULT = object()


def setting(default=_NO_DEFAULT, doc: str | None = None, *, required: bool = False, **schema):
    """A config key: its default (none: the key has no default), what it means, whether an experiment must give it,
    and the JSON-schema constraints its type does not say (minimum, pattern, ...)."""
    meta = {"default": default, "doc": doc, "required": required, "schema": schema}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=None if default is _NO_DEFAULT else default, metadata=meta)


def block(cls, doc: str | None = None, *, required: bool = False):
    """A nested block of keys (a dataclass of settings); absent, it is filled with all its defaults."""
    return field(default_factory=cls, metadata={"default": {}, "doc": doc, "required": required, "schema": {}})


@dataclass(frozen=True, kw_only=True)
class Data:
    dataset: Literal["fashion-mnist", "digits", "image-folder"] = setting(required=True)
    root: str | None = setting(None, "folder of the IDX .gz files (fashion-mnist; default "
                                     "/usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist) "
                                     "or of image files (image-folder, required)")
    resolution: int = setting(32, minimum=4, maximum=1024)
    channels: Literal[1, 3] = setting(1)
    train_count: int | None = setting(None, "use only the first N training images", minimum=1)
    heldout_count: int | None = setting(None, "use only the first N held-out images", minimum=1)
    heldout_fraction: float = setting(0.1, "image-folder/digits split", exclusiveMinimum=0, exclusiveMaximum=1)
    split_seed: int = setting(0, "seeds the train/held-out split of image folders and the validation/test halves",
                              minimum=0)
    validation_fraction: float = setting(0.5, "share of the held-out split (per class) in its validation half, on "
                                              "which recipes are chosen (purpose: tuning); the rest is the test half "
                                              "the tables report", exclusiveMinimum=0, exclusiveMaximum=1)


@dataclass(frozen=True, kw_only=True)
class Teacher:
    source: Literal["shipped", "train", "pretrained", "random"] = setting(
        doc="shipped = the project's Fashion-MNIST teacher committed under experiments/assets; train = train it in the "
            "DAG (rule train_teacher); pretrained = a diffusers pipeline folder or cached hub id; random = the "
            "`architecture` preset with seeded random weights (cost-only experiments)", required=True)
    shipped: str = setting("experiments/assets/teacher-fmnist32")
    pretrained: str | None = setting(None, "pipeline folder or hub id (source: pretrained)")
    architecture: str = setting("fmnist32", "UNet preset for source train or random (advkd.teacher.UNET_PRESETS)")
    seed: int = setting(0, "weight seed for source: random", minimum=0)
    epochs: int = setting(10, minimum=1)
    batch_size: int = setting(128, minimum=1)
    lr: float = setting(0.0005, exclusiveMinimum=0)
    warmup_steps: int = setting(500, minimum=1)
    ema_decay: float = setting(0.9995, minimum=0, maximum=1)


@dataclass(frozen=True, kw_only=True)
class Sampling:
    n: int = setting(1000, "samples per method (a method may set its own n)", minimum=1)
    batch_size: int = setting(250, minimum=1)
    seeds: list[int] = setting([0], "one sample set per seed; quality is reported as mean and spread over seeds",
                               items={"type": "integer", "minimum": 0}, minItems=1)
    grid: int = setting(64, "images in each PNG grid", minimum=1)
    compile: bool = setting(False, "run the teacher network under torch.compile (inductor) in the sample jobs: "
                                   "1.1-1.6x the eager images/s depending on the host (sampling_speed.md); a job's "
                                   "first compile takes 20-60 s (left out of its timing; on CPU inductor needs a C++ "
                                   "compiler, without one the job logs a warning and samples eagerly), later jobs "
                                   "reuse the cache. Compiled and eager samples differ in the last float bits. "
                                   "Trajectories stay eager, so the students' training data does not depend on the "
                                   "compiler.")
    threads: Any = setting("all", "CPU threads of each sample job (capped at --cores): `all` gives every job every "
                                  "core, so jobs run one at a time; 1 lets Snakemake run as many sample jobs side by "
                                  "side as it has cores, which on a CPU makes more images per second in all (a job's "
                                  "imports, compile and probes are single-threaded, and small batches scale poorly "
                                  "across threads). In the check of docs/history.md (compiled ddim-10, two seeds) "
                                  "the samples were the same bytes either way; elsewhere a CPU kernel may round "
                                  "differently with another thread count.",
                           oneOf=[{"type": "integer", "minimum": 1}, {"const": "all"}])
    shard_size: int | None = setting(None, "images per sample job (a multiple of batch_size): a method's run is "
                                           "split into ceil(n / shard_size) jobs a cluster can run in parallel, "
                                           "each sampling its images for every seed of the method, then merged per "
                                           "seed; the merged samples are the same bits for any shard size. null = "
                                           "one sample job per method.", minimum=1)


@dataclass(frozen=True, kw_only=True)
class Trajectories:
    sampler: str = setting("ddim-50", "teacher sampler, e.g. ddpm-1000 or ddim-50", pattern="^[a-z]+-[0-9]+$")
    count: int = setting(1024, "number of teacher runs", minimum=1)
    checkpoints: int = setting(11, "states kept per run besides x_T, the last one is x_0 (11 = the published "
                                   "setting)", minimum=1)
    spacing: Any = setting("uniform", "uniform = after step indices floor(j*N/(K-1)), j<K-1, plus the last step (for "
                                      "DDPM-1000, K=11: after t=999,899,...,99 and x_0, as published); or an explicit "
                                      "list of 0-based step indices ending at N-1",
                           oneOf=[{"const": "uniform"}, {"type": "array", "items": {"type": "integer", "minimum": 0},
                                                         "minItems": 1, "uniqueItems": True}])
    timesteps: list[int] | None = setting(
        None, "the teacher timesteps the sampler evaluates the network at, in order (one per step, strictly "
              "decreasing; the state after step i is at timestep i+1, the last step ends at x_0); null = the "
              "scheduler's own spacing. Only schedulers whose set_timesteps takes custom timesteps (ddpm, dpmsolver). "
              "Used to put the kept states at chosen noise levels, e.g. the authors' x_998, x_898, ..., x_98 "
              "(published-budget.yaml)", items={"type": "integer", "minimum": 0}, minItems=1)
    shard_size: int = setting(256, "runs per safetensors shard (= one job)", minimum=1)
    batch_size: int | None = setting(None, "teacher runs per batch (null = sampling.batch_size). Each batch draws its "
                                           "own noise, so this choice is part of the distillation set: changing it "
                                           "changes the runs the students learn from", minimum=1)
    dtype: Literal["float32", "float16"] = setting("float32")


@dataclass(frozen=True, kw_only=True)
class SecondJudge:
    source: Literal["shipped", "train", "none"] = setting(
        "none", "shipped = the project's Fashion-MNIST autoencoder (experiments/assets/judge-ae-fmnist, 1x32x32 "
                "only); train = train it on this experiment's training split (rule second_judge); none = one judge "
                "only")
    shipped: str = setting("experiments/assets/judge-ae-fmnist")
    epochs: int = setting(6, "training epochs (source: train)", minimum=1)
    batch_size: int = setting(256, minimum=1)
    lr: float = setting(0.002, exclusiveMinimum=0)


@dataclass(frozen=True, kw_only=True)
class Evaluator:
    source: Literal["shipped", "train", "inception"] = setting(
        "shipped", "shipped = the project's Fashion-MNIST classifier (experiments/assets/evaluator-fmnist, 1x32x32 "
                   "only); train = train that classifier on this experiment's training split (rule evaluator; needs "
                   "labels); inception = clean-fid's Inception (RGB data) from a local weight file")
    shipped: str = setting("experiments/assets/evaluator-fmnist", "folder of the shipped judge (evaluator.json + "
                                                                   "weights)")
    inception_weights: str | None = setting(None, "local path of inception-2015-12-05.pt (or its folder) for source: "
                                                  "inception; null = the environment variable "
                                                  "ADVKD_INCEPTION_WEIGHTS. Never downloaded.")
    epochs: int = setting(4, "training epochs (source: train)", minimum=1)
    batch_size: int = setting(128, "training batch (source: train)", minimum=1)
    lr: float = setting(0.002, "peak learning rate, one-cycle (source: train)", exclusiveMinimum=0)
    second: SecondJudge = block(SecondJudge, "a second, independent judge (different architecture and objective: an "
                                             "autoencoder's encoder, trained without labels); every table gives FD "
                                             "under both and how far their rankings agree (docs/metrics.md)")


@dataclass(frozen=True, kw_only=True)
class Cost:
    throughput_batch: int = setting(64, "batch for the images/s figure", minimum=1)
    repeats: int = setting(10, "rounds of the interleaved timing: every method timed once per round (median and "
                               "interquartile range)", minimum=10)
    warmup: int = setting(1, "untimed calls before timing", minimum=0)
    full_sample_max_nfe: int = setting(50, "time a full sample when NFE <= this; above it time one network call and "
                                           "multiply by NFE (the row is marked latency_extrapolated: true)", minimum=1)
    seed: int = setting(0, "seed of the samples drawn while timing", minimum=0)


@dataclass(frozen=True, kw_only=True)
class Metrics:
    kid_subsets: int = setting(100, "random subsets averaged by KID", minimum=1)
    kid_subset_size: int = setting(1000, "largest KID subset (capped by both set sizes)", minimum=2)
    nearest_k: int = setting(3, "k of the k-NN balls for precision/recall (Kynkäänniemi et al. use 3)", minimum=1)
    coverage_threshold: float = setting(0.01, "a class counts as covered when at least this share of samples is "
                                              "predicted as it", exclusiveMinimum=0, maximum=1)
    sanity_n: int = setting(1000, "real images per set in the sanity table", minimum=10)
    reference_split: Literal["test", "validation"] | None = setting(
        None, "the held-out half the samples are scored against; null = the one `purpose` implies (report: test, "
              "tuning: validation). Naming the other one is refused: tuning on the test half, or a table on the "
              "validation half, would make the tables untrustworthy")
    cost: Cost = block(Cost, "latency / throughput / memory measurement")


@dataclass(frozen=True, kw_only=True)
class Report:
    reference: str | None = setting(None, "the method (a key of methods) every speed-up is measured against: latency "
                                          "of the reference / latency of the row; null = no speed-up column")
    phase_quality: list[str] = setting([], "Adv-KD methods trained here phase by phase whose every phase is scored "
                                           "on the validation half from its end-of-phase snapshot: head k's images "
                                           "against the teacher's states at head k's noise level (its targets) and "
                                           "against the reference (the phase_quality figure and table)",
                                       uniqueItems=True)


# A `methods:` row before its family checks it (advkd.families.block_schema): the keys every family shares.
METHOD_ROW = {
    "type": "object",
    "required": ["family"],
    "properties": {
        "family": {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "description": "samples per seed for this method (default sampling.n)"},
        "seeds": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1,
                  "description": "sample seeds for this method (default sampling.seeds), e.g. fewer for a slow "
                                 "sampler"},
        "scored_by": {"enum": ["all", "kid", "none"],
                      "description": "all (default) = every quality column, which needs n = sampling.n (the matched "
                                     "n); kid = a method that cannot afford the matched n: compared by KID alone, its "
                                     "n-dependent columns (FD, IS, precision/recall, classes) left empty; none = "
                                     "costed and timed only, never sampled or scored (a speed yardstick such as "
                                     "DDPM-1000 on a CPU, whose quality at an affordable n would rank nothing)"},
        "shipped": {"type": "string",
                    "description": "students only: a folder (relative to the repository) holding a student trained "
                                   "by the suite and shipped with it (scripts/ship_student.py writes it with its "
                                   "card.json); sampled and scored from there, never trained; refused unless its "
                                   "card names this experiment's teacher, data, trajectories, seed and the block's "
                                   "recipe (docs/students.md)"},
    },
}


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """One experiment = one YAML file in experiments/. Every key is listed here; unknown keys are errors. Defaults
    are filled in before the DAG is built."""

    extends: str = setting(doc="an experiment file in experiments/ (e.g. default.yaml) that this one is written on "
                               "top of, key by key: a block here overrides only the keys it names; `methods:`, a list "
                               "of rows, is taken whole, so `methods:` here replaces the base's methods")
    experiment: str = setting(doc="name of the run; outputs go to results/<experiment>/ and "
                                  "paper_figures/<experiment>/", required=True, pattern="^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    purpose: Literal["report", "tuning"] = setting(
        "report", "report = the tables a reader sees: scored against the test half of the held-out split, sample "
                  "seeds below 1000; tuning = choosing a recipe, sampler or knob: scored against the validation half, "
                  "sample seeds 1000 and up, so no reported number ever chose anything (docs/metrics.md)")
    seed: int = setting(0, "base seed; every stage derives its own seeds from it", minimum=0)
    device: str = setting("auto", "torch device for every stage; auto = cuda when available, else cpu",
                          pattern="^(auto|cpu|cuda(:[0-9]+)?)$")
    data: Data = block(Data, required=True)
    teacher: Teacher = block(Teacher, required=True)
    sampling: Sampling = block(Sampling)
    trajectories: Trajectories = block(Trajectories)
    evaluator: Evaluator = block(Evaluator, "the fixed judge every quality number is measured with (see "
                                            "docs/metrics.md)")
    metrics: Metrics = block(Metrics, "how quality and cost are measured")
    report: Report = block(Report, "how the tables present the results")
    recipes: dict = setting(doc="named method blocks (or parts of one) that a method takes with `recipe: <name>`, its "
                                "own keys on top; experiments/recipes.yaml holds the shared ones, an experiment's "
                                "own `recipes:` adds to them or replaces one by name",
                            additionalProperties={"type": "object"})
    methods: dict = setting(doc="method name -> parameters; `family` picks the registry entry "
                                "(advkd.families.FAMILIES), the other keys are that family's parameters: their "
                                "schema and defaults are generated from the family's parameters dataclass; "
                                "`recipe: <name>` starts the block from a named recipe (`recipes:`)",
                            required=True, minProperties=1, propertyNames={"pattern": "^[a-z][a-z0-9.-]*$"},
                            additionalProperties=METHOD_ROW)


_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array",
            type(None): "null"}


def _type_schema(tp) -> dict:
    """The JSON schema a field's Python type says (Any: nothing, the field's constraints say all)."""
    if tp is Any:
        return {}
    if dataclasses.is_dataclass(tp):
        return object_schema(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        parts = [_type_schema(a) for a in args]
        if all("enum" in p or p == {"type": "null"} for p in parts):
            return {"enum": [v for p in parts for v in p.get("enum", [None])]}
        return {"type": [p["type"] for p in parts]} | {k: v for p in parts for k, v in p.items() if k != "type"}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0])}
    return {"type": _SCALARS[tp]}


def object_schema(cls) -> dict:
    """The JSON schema of a dataclass of settings: its keys, required ones and defaults, and no other keys."""
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        prop = _type_schema(hints[f.name]) | meta["schema"]
        if meta["doc"]:
            prop["description"] = meta["doc"]
        if meta["default"] is not _NO_DEFAULT:
            prop["default"] = copy.deepcopy(meta["default"])
        if meta["required"]:
            required.append(f.name)
        props[f.name] = prop
    out = {"type": "object", "additionalProperties": False}
    if required:
        out["required"] = required
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):   # dataclass's generated doc is no description
        out["description"] = " ".join(cls.__doc__.split())
    return out | {"properties": props}


def experiment_schema() -> dict:
    """The JSON schema of an experiment config (draft 2020-12), generated from `Experiment`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "advkd experiment config",
            **object_schema(Experiment)}


def schema_yaml() -> str:
    """The schema as the YAML file readers find in workflow/schemas/."""
    import yaml

    head = ("# Generated from advkd/schema.py by `python -m advkd.schema > workflow/schemas/config.schema.yaml`; "
            "edit the dataclasses,\n# not this file (tests/unit/test_config.py checks that the two agree).\n")
    return head + yaml.safe_dump(experiment_schema(), sort_keys=False, allow_unicode=True, width=118)


if __name__ == "__main__":
    print(schema_yaml(), end="")
