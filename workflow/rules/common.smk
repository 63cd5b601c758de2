# Validation and target lists shared by every rule file.
import json
import os
import re
import sys

from advkd.config import REAL, memorised, real_source, reference_split, teacher_method, validate_config
from advkd.data import zero_border
from advkd.method import SHIPPED
from advkd.io import BadInputError
from advkd.families import FAMILIES, report_figures, resolved_block, shipped_folder, trainers
from advkd.trajectories import shard_ranges

# A dry run, lint or a bookkeeping command (--unlock, --cleanup-metadata, --list-*, --summary, --dag) shows or
# mends the plan even where user-supplied inputs (data, weights) are not there yet; a real run stops on them
# before any job. Snakemake does not tell a Snakefile which of these it runs, so its own parser reads the command
# line (abbreviations and joined short options as Snakemake reads them). ADVKD_PLAN_ONLY=1 does the same for
# tools that load the workflow through Snakemake's API.
NO_JOB_ARGS = ("dryrun", "lint", "unlock", "cleanup_metadata", "cleanup_shadow", "summary", "detailed_summary",
               "dag", "rulegraph", "filegraph", "d3dag")


def plan_only(argv) -> bool:
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(argv)
    except SystemExit:   # not Snakemake's command line (an API caller): a real run
        return False
    return any(getattr(args, k, None) for k in NO_JOB_ARGS) or any(
        v for k, v in vars(args).items() if k.startswith("list_"))


DRY_RUN = os.environ.get("ADVKD_PLAN_ONLY") == "1" or plan_only(sys.argv[1:])
try:
    validate_config(config, source="experiment config (" + ", ".join(map(str, workflow.configfiles)) + ")",
                    require_inputs=not DRY_RUN, files=workflow.configfiles)
except BadInputError as e:
    sys.exit(f"advkd: {e}")

# Every rule runs in the project's pinned environment (`--sdm conda` builds it from this file).
ENV = "../../environment.yml"

R = f"results/{config['experiment']}"
LOGS = f"{R}/logs"
DEVICE = config["device"]
SEEDS = config["sampling"]["seeds"]
COMPILE = "--compile" if config["sampling"]["compile"] else ""
METHODS = config["methods"]
SAMPLER_METHODS = [m for m, p in METHODS.items() if FAMILIES[p["family"]].kind == "sampler"]
STUDENT_METHODS = [m for m, p in METHODS.items() if FAMILIES[p["family"]].kind == "student"]
# A student method samples from the training run of the first method (by name) of its family with the same recipe
# (rows that differ only in the family's sampling keys, e.g. a progressive student's 4-, 2- and 1-step rows, train
# once, in the folder of the first of them by name: advkd.families.trainers).
TRAINER = trainers(METHODS)
# A shipped student (`shipped:` names its folder under experiments/assets) is sampled from there, never trained.
TRAINED = [m for m in STUDENT_METHODS if TRAINER[m] == m and not METHODS[m].get(SHIPPED)]
# The students whose samples are compared with this experiment's distillation set (memorisation): a student shipped
# from another set is compared with its own in the experiment that trained it.
MEMORISED = memorised(config)
# Adv-KD runs scored phase by phase on the validation half (report.phase_quality).
PHASE_RUNS = config["report"]["phase_quality"]
# A random-weight teacher gives cost numbers only: such an experiment runs teacher, cost and report.
COST_ONLY = config["teacher"]["source"] == "random"
N_SHARDS = len(shard_ranges(config["trajectories"]["count"], config["trajectories"]["shard_size"]))
# Samples are scored against one half of the held-out split; the noise-floor row draws real images from where the
# reference is not: the validation half beside a test reference, the training split beside a validation one.
REFERENCE = f"{R}/metrics/reference/evaluator/{reference_split(config)}.safetensors"
REFERENCE2 = f"{R}/metrics/reference/judge2/{reference_split(config)}.safetensors"
JUDGE2 = config["evaluator"]["second"]["source"]
REAL_SOURCE = real_source(reference_split(config))
# The teacher's own images from each sample set's x_T (the distillation set's sampler, if it is a method here): every
# other method's samples of a seed are compared with them image by image (teacher fidelity).
TEACHER_METHOD = teacher_method(config)


def all_cores(wildcards):
    """`threads:` of the rules that run a network: every core Snakemake was given. A function, so that it is read
    only when a job is made: `--unlock`, `--cleanup-metadata`, `--list-*` and `--summary` need no `--cores`."""
    return workflow.cores


def run_cores(wildcards):
    """The cores the run was given, for the report's DAG profile; 0 (unknown) for a command that was given none
    (`--list-changes params`, `--summary` read params too)."""
    try:
        return workflow.cores
    except Exception:   # noqa: BLE001 - Snakemake's WorkflowError: no --cores on this command line
        return 0


def sample_threads(wildcards):
    """`threads:` of a sample job: sampling.threads, at most every core Snakemake was given."""
    t = config["sampling"]["threads"]
    return workflow.cores if t == "all" else min(t, workflow.cores)


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def method_n(method):
    return METHODS[method].get("n", config["sampling"]["n"])


def method_seeds(method):
    """The seeds a method is sampled and scored at: none for a cost-only row (scored_by: none)."""
    if method == REAL:
        return SEEDS
    return [] if METHODS[method].get("scored_by") == "none" else METHODS[method].get("seeds", SEEDS)


def seed_pairs(method, paths):
    """SEED=PATH arguments of a method's per-seed files (paths in method_seeds order), as the stages read them."""
    return " ".join(f"{s}={p}" for s, p in zip(method_seeds(method), paths))


def sampled_seeds(method):
    """The seeds a method's sample jobs draw: its own, and for the teacher's sampler (TEACHER_METHOD) every seed
    another method is scored at too (the teacher-fidelity numbers compare each seed's samples with its)."""
    seeds = method_seeds(method)
    if method == TEACHER_METHOD:
        seeds = sorted({*seeds, *(s for m in METHODS for s in method_seeds(m))})
    return seeds


def method_block(method):
    """What a method's jobs are given (and rerun on): its resolved block (advkd.families.resolved_block: defaults
    filled, no n or seeds, so scoring a method on more samples or seeds never retrains or re-costs it)."""
    return resolved_block(METHODS[method])


def training_block(method):
    """What the distill job is given (and rerun on): the resolved block without the family's sampling keys."""
    return resolved_block(METHODS[method], sampling=False)


def is_student(method):
    return FAMILIES[METHODS[method]["family"]].kind == "student"


def student_dir(method):
    """The folder of the training run a student method samples from (a shipped one's own folder)."""
    if METHODS[method].get(SHIPPED):
        return str(shipped_folder(METHODS[method][SHIPPED]))
    return f"{R}/students/{TRAINER[method]}"


def sample_inputs(wildcards):
    """The teacher's card; a student's weights and resolved recipe too."""
    inputs = {"teacher": f"{R}/teacher/teacher.json"}
    if is_student(wildcards.method):
        inputs |= {"weights": f"{student_dir(wildcards.method)}/student.safetensors",
                   "recipe": f"{student_dir(wildcards.method)}/student.json"}
    return inputs


def sample_shards(method):
    """The sample jobs' folders of one method, each with its shard (sampling.shard_size images; one folder unless
    it is set) of every seed's run."""
    n = method_n(method)
    shards = shard_ranges(n, config["sampling"]["shard_size"] or n)
    return [f"{R}/samples/{method}/shard-{i:05d}" for i in range(len(shards))]


def per_seed(pattern, methods):
    return [pattern.format(method=m, seed=s) for m in methods for s in method_seeds(m)]


def sample_files(methods):
    return per_seed(f"{R}/samples/{{method}}/seed{{seed}}.npz", methods)


def quality_dirs(methods):
    """The quality jobs' folders (metrics/quality/<method>/seed<k>.json): a method with seeds to score has one."""
    return [f"{R}/metrics/quality/{m}" for m in methods if method_seeds(m)]


def all_targets():
    if COST_ONLY:
        return [f"{R}/teacher/teacher.json", *[f"{R}/metrics/cost/{m}.json" for m in METHODS],
                f"{R}/metrics/timing.json", f"{R}/tables/summary.md"]
    return [
        f"{R}/data/data_card.json",
        f"{R}/teacher/teacher.json",
        *sample_files(SAMPLER_METHODS),
        *sample_files(STUDENT_METHODS),
        # the distillation set only where some student learns from it
        *(expand(f"{R}/trajectories/shard-{{shard:05d}}.safetensors", shard=range(N_SHARDS)) if MEMORISED else []),
        *quality_dirs([*METHODS, REAL]),
        *[f"{R}/metrics/cost/{m}.json" for m in METHODS],
        f"{R}/metrics/timing.json",
        *expand(f"{R}/metrics/memorisation/{{method}}.json", method=MEMORISED),
        *expand(f"{R}/metrics/phase_quality/{{method}}", method=PHASE_RUNS),
        f"{R}/metrics/sanity.json",
        f"{R}/tables/summary.md",
    ]

# Tables and figures (workflow/rules/report.smk).
PAPER = f"paper_figures/{config['experiment']}"
FIGURES = report_figures({METHODS[m]["family"] for m in STUDENT_METHODS}, scored=not COST_ONLY,
                         fidelity=bool(TEACHER_METHOD) and len(METHODS) > 1, phases=bool(PHASE_RUNS))


def report_inputs(wildcards):
    if COST_ONLY:
        return {"cost": [f"{R}/metrics/cost/{m}.json" for m in METHODS],
                "timing": f"{R}/metrics/timing.json"}
    return {
        "quality": quality_dirs([*METHODS, REAL]),
        "cost": [f"{R}/metrics/cost/{m}.json" for m in METHODS],
        "timing": f"{R}/metrics/timing.json",
        "judges": [f"{R}/evaluator/evaluator.json", *([f"{R}/judge2/evaluator.json"] if JUDGE2 != "none" else [])],
        "memorisation": expand(f"{R}/metrics/memorisation/{{method}}.json", method=MEMORISED),
        "phase_quality": expand(f"{R}/metrics/phase_quality/{{method}}", method=PHASE_RUNS),
        "samples": per_seed(f"{R}/samples/{{method}}/seed{{seed}}.png", METHODS),
        "sample_stats": per_seed(f"{R}/samples/{{method}}/seed{{seed}}.json", METHODS),
        "students": expand(f"{R}/students/{{method}}/loss.csv", method=TRAINED),
    }


# Rules that run networks ask a cluster for one GPU only when the experiment runs on CUDA.
GPU = 1 if DEVICE.startswith("cuda") else 0
