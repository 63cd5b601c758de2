"""Experiment configs: YAML validated by the schema generated from advkd.schema's dataclasses (defaults filled),
then semantic checks.

The same `validate_config` runs in the Snakefile (before any job) and in the CLI, so a bad config fails the
same way everywhere, with a message naming the key and the expected value. Each method block is checked by its
family (advkd.families). No torch here: planning a run validates its config.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .assets import shipped_errors
from .data import FASHION_MNIST_DIR, FASHION_MNIST_FILES
from .families import FAMILIES, method_errors, params_of, parse_sampler, shipped_folder, training_recipe
from .io import REPO_ROOT, BadInputError, read_json, sha256_file
from .method import SHIPPED
from .schema import experiment_schema
from .trajectories import checkpoint_steps, timestep_errors

# The schema written out for readers (generated from advkd.schema, never read back to validate).
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
# Named recipes every experiment may use (`recipe: <name>` in a method block).
RECIPES_PATH = REPO_ROOT / "experiments" / "recipes.yaml"

# UNet2DModel configurations by name. `fmnist32` is the project's small teacher; `celebahq256` is exactly the
# published google/ddpm-celebahq-256 architecture (113,673,219 parameters); `cifar10-32` is google/ddpm-cifar10-32.
UNET_PRESETS = {
    "fmnist32": dict(
        sample_size=32, in_channels=1, out_channels=1, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(32, 64, 64, 128),  # 3.1M parameters, ~0.55 GFLOP per call; attention only at 4x4
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    ),
    "digits8": dict(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ),
    "celebahq256": dict(
        sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_eps=1e-6, freq_shift=1, flip_sin_to_cos=False, downsample_padding=0, act_fn="silu",
        attention_head_dim=None, center_input_sample=False, time_embedding_type="positional",
    ),
    "cifar10-32": dict(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_eps=1e-6, freq_shift=1, flip_sin_to_cos=False, downsample_padding=0, attention_head_dim=None,
    ),
}

# The data the shipped judge (experiments/assets/evaluator-fmnist) was trained on and can judge.
SHIPPED_DATA = {"dataset": "fashion-mnist", "resolution": 32, "channels": 1}


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _fill_defaults(validator_cls):
    """A jsonschema validator that also writes each property's `default` into the instance (recursively)."""
    from jsonschema import validators

    validate_props = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(validator_cls, {"properties": set_defaults})


def _copy(v):
    import copy

    return copy.deepcopy(v)


def block_defaults(name: str) -> dict:
    """A top-level block of the config with every default of the schema filled in (e.g. "metrics"): what a stage
    called by hand, outside a validated experiment, gets for the keys it is not given."""
    from jsonschema import Draft202012Validator

    block, validator = {}, _fill_defaults(Draft202012Validator)(experiment_schema()["properties"][name])
    for _ in range(2):   # as schema_errors: nested blocks made on the first pass get their defaults on the second
        list(validator.iter_errors(block))
    return block


def schema_errors(cfg: dict, schema: dict | None = None) -> list[str]:
    """Fill defaults into `cfg` (in place) and return readable schema violations, one per line."""
    from jsonschema import Draft202012Validator

    schema = schema or experiment_schema()
    v = _fill_defaults(Draft202012Validator)(schema)
    # Two passes: defaults filled on the first make nested objects exist for the second.
    list(v.iter_errors(cfg))
    out = []
    for e in sorted(v.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        where = _key(e.absolute_path)
        if e.validator == "additionalProperties":
            allowed = sorted(e.schema.get("properties", {}))
            out.append(f"{where}: {e.message}; allowed keys: {', '.join(allowed)}")
        elif e.validator == "enum":
            out.append(f"{where}: {e.instance!r} is not allowed; expected one of {e.validator_value}")
        else:
            desc = e.schema.get("description")
            out.append(f"{where}: {e.message}" + (f" (expected: {desc.strip()})" if desc else ""))
    return out


def semantic_errors(cfg: dict) -> list[str]:
    """What a schema cannot say: families that must be registered, counts that must fit, sizes that must match
    (files a user must supply are checked by `missing_inputs`)."""
    errs = []
    if cfg["teacher"]["source"] == "pretrained" and not cfg["teacher"]["pretrained"]:
        errs.append("teacher.pretrained: required when teacher.source is pretrained (a diffusers pipeline folder or "
                    "hub id)")
    tr = cfg.get("trajectories")
    if tr is not None:
        try:
            family, steps = parse_sampler(tr["sampler"])
        except BadInputError as e:
            errs.append(f"trajectories.sampler: {e}")
        else:
            try:
                checkpoint_steps(steps, tr["checkpoints"], tr["spacing"])
            except BadInputError as e:
                errs.append(f"{e} ({tr['sampler']})")
            errs += timestep_errors(tr.get("timesteps"), steps)
            if params_of({"family": family, "steps": steps}).nfe != steps:
                errs.append(f"trajectories.sampler: {tr['sampler']} makes more network calls than steps, so its "
                            "loop has no state per step to keep; use a one-call-per-step sampler (ddim, ddpm, "
                            "dpmsolver, unipc, edm-euler)")
    sm = cfg.get("sampling", {})
    if sm.get("shard_size") and sm["shard_size"] % sm["batch_size"]:
        errs.append(f"sampling.shard_size: {sm['shard_size']} must be a multiple of sampling.batch_size "
                    f"({sm['batch_size']}), so that a shard's draws are those of the unsharded run")
    errs += method_errors(cfg)
    ref = cfg["report"]["reference"]
    if ref is not None and ref not in cfg["methods"]:
        errs.append(f"report.reference: {ref!r} is not one of the experiment's methods {sorted(cfg['methods'])}")
    errs += teacher_errors(cfg) + sample_count_errors(cfg)
    if not errs:   # both read valid method blocks (a family's resolve, a shipped card)
        errs += phase_quality_errors(cfg) + shipped_student_errors(cfg)
    if cfg["teacher"]["source"] != "random":  # a cost-only experiment has no judge
        errs += evaluator_errors(cfg) + scoring_errors(cfg)
    return errs


def phase_quality_errors(cfg: dict) -> list[str]:
    """report.phase_quality names Adv-KD students trained here phase by phase: only those leave a snapshot per
    phase (a shipped one has none; a jointly trained one has one segment)."""
    errs = []
    for name in cfg["report"]["phase_quality"]:
        block = cfg["methods"].get(name)
        if block is None or block["family"] != "advkd":
            errs.append(f"report.phase_quality: {name!r} is not an Adv-KD method of this experiment (its advkd "
                        f"methods: {sorted(m for m, b in cfg['methods'].items() if b['family'] == 'advkd')})")
        elif block.get(SHIPPED):
            errs.append(f"report.phase_quality: {name} is shipped; only a student trained here phase by phase "
                        "(training: phases) has a snapshot per phase")
        else:   # as the run will resolve it (a teacher-initialised generator trains jointly whatever the block says)
            training = params_of(block).resolve(name, cfg["trajectories"]["checkpoints"], cfg["data"]["resolution"],
                                                cfg["data"]["channels"])["training"]
            if training != "phases":
                errs.append(f"report.phase_quality: {name} is trained {training}; only a student trained here "
                            "phase by phase (training: phases) has a snapshot per phase")
    return errs


def teacher_errors(cfg: dict) -> list[str]:
    """What the schema cannot say about the teacher: its images must have the data's size and channels."""
    t, d = cfg["teacher"], cfg["data"]
    if t["source"] == "random":
        return []
    if t["source"] == "train":
        if t["architecture"] not in UNET_PRESETS:
            return [f"teacher.architecture: unknown preset {t['architecture']!r}; expected one of "
                    f"{sorted(UNET_PRESETS)}"]
        arch, where = UNET_PRESETS[t["architecture"]], f"teacher.architecture: {t['architecture']}"
    else:
        unet_cfg = teacher_folder(t) / "unet" / "config.json"
        if not unet_cfg.is_file():
            return []  # a missing folder or a hub id is reported elsewhere (teacher.shipped check, load time)
        arch, where = json.loads(unet_cfg.read_text()), f"teacher.{t['source']}: {unet_cfg}"
    have = (arch["in_channels"], arch["sample_size"])
    want = (d["channels"], d["resolution"])
    if have != want:
        return [f"{where} makes {have[0]}x{have[1]}x{have[1]} images but the data is {want[0]}x{want[1]}x{want[1]} "
                "(data.channels x data.resolution); pick a teacher for this data or change data.resolution/channels"]
    return []


def shipped_student_errors(cfg: dict) -> list[str]:
    """A shipped student (a block's `shipped:` folder) is scored only beside the teacher, data and distillation set
    it learnt from, and only as the recipe its block names: its card.json says what those were."""
    shipped = {name: block for name, block in cfg["methods"].items() if block.get(SHIPPED)}
    teacher = teacher_weights_sha256(cfg["teacher"]) if shipped else None   # hashed once, not per student
    errs = []
    for name, block in shipped.items():
        where, folder = f"methods.{name}.{SHIPPED}", shipped_folder(block[SHIPPED])
        try:
            card = read_json(folder / "card.json")
        except (BadInputError, OSError, ValueError) as e:
            errs.append(f"{where}: {folder}/card.json cannot be read ({e}); a shipped student is a folder written "
                        "by scripts/ship_student.py")
            continue
        found = shipped_errors(folder)
        fam = FAMILIES[block["family"]]
        recipe = training_recipe(block)
        if card.get("family") != fam.name:
            found.append(f"{where}: {folder} holds a {card.get('family')!r} student, the block's family is "
                         f"{fam.name!r}")
        elif card.get("recipe") != recipe:
            keys = sorted(k for k in set(recipe) | set(card.get("recipe") or {})
                          if recipe.get(k) != (card.get("recipe") or {}).get(k))
            found.append(f"{where}: the shipped student was trained with "
                         f"{ {k: (card.get('recipe') or {}).get(k) for k in keys} }, the block asks for "
                         f"{ {k: recipe.get(k) for k in keys} }; make the block the shipped recipe")
        # The data and the seed block must be this experiment's: the test half it is scored on is then one it never
        # saw, and its training noise streams cannot be the sampling streams. The distillation set may be another
        # (a student trained at another budget, e.g. experiments/published-budget.yaml): the caption says which,
        # and its memorisation is measured where it was trained (distilled_here).
        traj = card.get("trajectories")
        if not isinstance(traj, dict) or not {"count", "sampler"} <= set(traj):
            found.append(f"{where}: {folder}/card.json names no trajectories block with count and sampler; what "
                         "a shipped student learnt from must be on its card (scripts/ship_student.py writes it)")
        for key in ("data", "seed"):
            if _set_keys(card.get(key)) != _set_keys(cfg[key]):
                found.append(f"{where}: the shipped student learnt from {key} {card.get(key)!r}, this experiment's "
                             f"{key} is {cfg[key]!r}; it is scored only beside the data and seed streams it learnt "
                             "with")
        if teacher is None:
            found.append(f"{where}: teacher.source {cfg['teacher']['source']!r} has no weights before the run, so "
                         "the teacher a shipped student learnt from cannot be checked; use the shipped or a local "
                         "pretrained teacher")
        elif card.get("teacher_weights_sha256") != teacher:
            found.append(f"{where}: the shipped student learnt from a teacher with weights "
                         f"{card.get('teacher_weights_sha256')}, this experiment's teacher has {teacher}")
        errs += found
    return errs


def distilled_here(cfg: dict, method: str) -> bool:
    """Whether a student learnt from this experiment's distillation set (trained here, or shipped with a card whose
    trajectories block is this one's): only those are compared with it for memorisation."""
    block = cfg["methods"][method]
    if not block.get(SHIPPED):
        return True
    card = read_json(shipped_folder(block[SHIPPED]) / "card.json")
    return _set_keys(card.get("trajectories")) == _set_keys(cfg["trajectories"])


def memorised(cfg: dict) -> list[str]:
    """The students whose samples are compared with this experiment's distillation set (memorisation): those that
    learnt from it (distilled_here) and are sampled here (a `scored_by: none` row has no samples); one shipped from
    another set is compared with its own where it was trained."""
    return [m for m, b in cfg["methods"].items() if FAMILIES[b["family"]].kind == "student"
            and b.get("scored_by") != "none" and distilled_here(cfg, m)]


def _set_keys(block):
    """A config block without its null keys: a key added to the schema later, at its null default, says what its
    absence said (a shipped card written before it still matches)."""
    return {k: v for k, v in block.items() if v is not None} if isinstance(block, dict) else block


def teacher_folder(t: dict) -> Path:
    """The local folder of a shipped or pretrained teacher (relative to the repository unless it exists here)."""
    folder = Path(t["shipped"] if t["source"] == "shipped" else t["pretrained"] or "")
    return folder if folder.is_absolute() or folder.exists() else REPO_ROOT / folder


def teacher_weights_sha256(t: dict) -> dict | None:
    """sha256 of the teacher's UNet weight files, by name (as the teacher stage's card says), where they exist
    before the run; None for a teacher trained in the run, a random or a hub one."""
    if t["source"] not in ("shipped", "pretrained") or not t.get(t["source"]):
        return None
    weights = sorted((teacher_folder(t) / "unet").glob("*.safetensors"))
    return {w.name: sha256_file(w) for w in weights} or None


def evaluator_errors(cfg: dict) -> list[str]:
    """Checks a schema cannot express: the shipped judge only fits the data it was trained on."""
    ev, d = cfg["evaluator"], cfg["data"]
    errs = []
    if ev["source"] == "shipped" and any(d[k] != v for k, v in SHIPPED_DATA.items()):
        errs.append(f"evaluator.source: the shipped evaluator judges {SHIPPED_DATA} only, but data is "
                    f"{ {k: d[k] for k in SHIPPED_DATA} }; use evaluator.source: train (a classifier on your "
                    "training split, needs labels) or inception (RGB data)")
    if ev["source"] == "train" and d["dataset"] == "image-folder":
        errs.append("evaluator.source: train needs class labels, which an image-folder has not; use inception")
    if ev["source"] == "inception" and d["channels"] != 3:
        errs.append("evaluator.source: inception expects RGB data (data.channels: 3)")
    if ev.get("second", {}).get("source") == "shipped" and any(d[k] != v for k, v in SHIPPED_DATA.items()):
        errs.append(f"evaluator.second.source: the shipped autoencoder judges {SHIPPED_DATA} only; use "
                    "evaluator.second.source: train (trained on your training split) or none")
    return errs


# Sample seeds of tuning experiments start here; reported experiments use the ones below, so a number that chose a
# recipe is never one a table reports.
TUNING_SEEDS = 1000
REAL = "real"   # the noise-floor row: held-out images not in the reference, scored like a method


def teacher_method(cfg: dict) -> str | None:
    """The method whose samples are the teacher's images that the distillation set's sampler makes from the same
    x_T (trajectories.sampler at the scheduler's own timesteps): the yardstick of teacher fidelity. None where the
    experiment has no such method, or none that covers every seed and n of the others."""
    tr = cfg.get("trajectories")
    if not tr or tr.get("timesteps"):
        return None
    family, steps = parse_sampler(tr["sampler"])
    seeds, n = cfg["sampling"]["seeds"], cfg["sampling"]["n"]
    for name, block in cfg["methods"].items():
        if {k: v for k, v in block.items() if k not in ("n", "seeds")} == {"family": family, "steps": steps} \
                and block.get("n", n) >= n and set(block.get("seeds", seeds)) >= set(seeds):
            return name
    return None


def reference_split(cfg: dict) -> str:
    """The held-out half an experiment's samples are scored against."""
    return cfg["metrics"]["reference_split"] or ("test" if cfg["purpose"] == "report" else "validation")


def real_source(half: str) -> str:
    """The split the noise-floor row's real images come from when scoring against `half`: one the reference never
    saw. Against the test half, the validation half; against the validation half, the training split (the test
    half stays unseen by every tuning experiment)."""
    return "validation" if half == "test" else "train"


def scoring_errors(cfg: dict) -> list[str]:
    """Tune on validation, report on test, compare at one n: what an experiment may not ask for."""
    purpose, split = cfg["purpose"], cfg["metrics"]["reference_split"]
    implied = "test" if purpose == "report" else "validation"
    errs = []
    if split not in (None, implied):
        errs.append(f"metrics.reference_split: {split!r} with purpose: {purpose}; "
                    + ("tuning on the test half would choose recipes by the numbers the tables report: score a "
                       "tuning experiment on the validation half (drop the key)" if purpose == "tuning" else
                       "a report experiment's tables are scored on the test half (drop the key, or set purpose: "
                       "tuning to choose recipes on the validation half)"))
    seeds = [("sampling.seeds", cfg["sampling"]["seeds"])] + [
        (f"methods.{m}.seeds", b["seeds"]) for m, b in cfg["methods"].items() if "seeds" in b]
    for where, ss in seeds:
        wrong = [s for s in ss if (s >= TUNING_SEEDS) != (purpose == "tuning")]
        if wrong:
            errs.append(f"{where}: {wrong} " + (
                f"are below {TUNING_SEEDS}, the seeds reported tables use; a tuning experiment samples with seeds "
                f"{TUNING_SEEDS} and up" if purpose == "tuning" else
                f"are tuning seeds ({TUNING_SEEDS} and up); a report experiment uses seeds below {TUNING_SEEDS}"))
    if REAL in cfg["methods"]:
        errs.append(f"methods.{REAL}: the name is the tables' noise-floor row (real held-out images); rename the "
                    "method")
    matched = cfg["sampling"]["n"]
    for m, b in cfg["methods"].items():
        n = b.get("n", matched)
        if n != matched and b.get("scored_by", "all") == "all":
            errs.append(f"methods.{m}.n: {n} differs from the matched n (sampling.n = {matched}): FD, IS, "
                        "precision/recall and class coverage depend on n, so its row would not compare with the "
                        "others; set scored_by: kid (compared by KID alone, those columns left empty) or drop n")
    return errs


def min_samples(metrics: dict) -> int:
    """Fewest images a set needs to be scored: prdc's k-NN radii need k+2 (the point itself, k neighbours and
    one more), FD/KID need 2 (a covariance, an unbiased MMD)."""
    return max(2, metrics["nearest_k"] + 2)


def sample_count_errors(cfg: dict) -> list[str]:
    """Sample counts that cannot be scored fail at config time, not after hours of sampling."""
    if cfg["teacher"]["source"] == "random":  # cost-only experiment: nothing is scored
        return []
    need, k = min_samples(cfg["metrics"]), cfg["metrics"]["nearest_k"]
    why = f"need at least {need} (precision/recall with metrics.nearest_k={k} need nearest_k+2)"
    errs = []
    if cfg["sampling"]["n"] < need and any("n" not in p for p in cfg["methods"].values()):
        errs.append(f"sampling.n: {cfg['sampling']['n']} samples per seed are too few to score; {why}")
    errs += [f"methods.{m}.n: {p['n']} samples per seed are too few to score; {why}"
             for m, p in cfg["methods"].items() if "n" in p and p["n"] < need]
    if cfg["data"]["heldout_count"] is not None and cfg["data"]["heldout_count"] < need:
        errs.append(f"data.heldout_count: {cfg['data']['heldout_count']} reference images are too few; {why}")
    return errs


def missing_inputs(cfg: dict) -> list[str]:
    """What the user must supply and has not: data, teacher weights, Inception weights; each with where to put it.

    Kept apart from the other checks so that a dry run can show the plan of an experiment whose inputs are not
    there yet (experiments/paper.yaml on a laptop); a real run stops on these before any job."""
    errs = []
    d, t = cfg["data"], cfg["teacher"]
    if t["source"] == "random":
        return errs  # cost-only experiment: it reads no data, no weights
    if d["dataset"] == "fashion-mnist":
        root = Path(d["root"] or FASHION_MNIST_DIR)
        need = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
        missing = [n for n in need if not (root / n).exists()]
        if missing:
            fix = ("install the Debian package: apt-get update && apt-get install -y dataset-fashion-mnist"
                   if d["root"] is None else "point data.root at a folder holding them")
            errs.append(f"data.root: Fashion-MNIST files {missing} not found in {root}; {fix}")
    elif d["dataset"] == "image-folder":
        if not d["root"]:
            errs.append("data.root: required for dataset image-folder (a folder of RGB image files)")
        elif not Path(d["root"]).is_dir():
            errs.append(f"data.root: image folder {d['root']} does not exist; put the image files there or point "
                        "data.root at them")
    if t["source"] == "shipped" and not (REPO_ROOT / t["shipped"]).is_dir() and not Path(t["shipped"]).is_dir():
        errs.append(f"teacher.shipped: folder {t['shipped']} not found (it is part of the repository; is the checkout "
                    "complete?)")
    if (t["source"] == "pretrained" and t["pretrained"] and not Path(t["pretrained"]).exists()
            and not _in_hf_cache(t["pretrained"])):
        errs.append(f"teacher.pretrained: {t['pretrained']} is neither a local diffusers folder nor in the local "
                    "Hugging Face cache, and nothing is downloaded at run time; on a machine with internet run "
                    f"`huggingface-cli download <hub id> --local-dir {t['pretrained']}` (safetensors weights)")
    ev = cfg.get("evaluator", {})
    # A shipped teacher or judge must be the committed bytes before any job uses it.
    for block in (t, ev, ev.get("second", {})):
        folder = block.get("shipped")
        if block.get("source") == "shipped" and folder:
            errs += shipped_errors(folder if Path(folder).is_absolute() else REPO_ROOT / folder)
    if ev.get("source") == "inception":
        import os

        w = ev.get("inception_weights") or os.environ.get("ADVKD_INCEPTION_WEIGHTS")
        if not w or not Path(w).exists():
            errs.append(f"evaluator.inception_weights: {w or 'unset (and ADVKD_INCEPTION_WEIGHTS unset)'} not found; "
                        "download inception-2015-12-05.pt on a machine with internet (see docs/metrics.md) and put "
                        "it there, or set ADVKD_INCEPTION_WEIGHTS")
    return errs


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, local_files_only=True)
        return True
    except Exception:
        return False


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a config with one is refused instead (two
    `report:` blocks, say, where the reader cannot tell which one runs)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                            "keep one", problem_mark=key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path):
    """The YAML at `path`, refusing duplicate keys (yaml.YAMLError, naming both lines)."""
    with open(path) as f:
        return yaml.load(f, Loader=_StrictLoader)


def file_errors(paths) -> list[str]:
    """What is wrong with the config files themselves (Snakemake has parsed them leniently already)."""
    errs = []
    for path in paths:
        try:
            read_yaml(path)
        except (OSError, yaml.YAMLError) as e:
            errs.append(f"{path}: {e}")
    return errs


def extends_errors(cfg: dict) -> list[str]:
    """`extends: <file in experiments/>` takes what the config leaves out from that experiment, merged key by key
    (a block here overrides only the keys it names), except `methods:`, which is a whole list of rows: a config
    that names `methods:` has exactly its own methods."""
    name = cfg.get("extends")
    if name is None:
        return []
    path = REPO_ROOT / "experiments" / name
    try:
        base = read_yaml(path)
    except (OSError, yaml.YAMLError) as e:
        return [f"extends: cannot read experiments/{name} ({e}); name a YAML file in experiments/"]
    if not isinstance(base, dict) or "extends" in base:
        return [f"extends: experiments/{name} must be an experiment that extends none"]
    merged = _merge(base, cfg)
    cfg.clear()
    cfg.update(merged)
    return []


def experiment_files() -> list[Path]:
    """The experiments in experiments/: every YAML file there but the shared recipes."""
    return sorted(p for p in (REPO_ROOT / "experiments").glob("*.yaml") if p != RECIPES_PATH)


def recipe_errors(cfg: dict, shared_path=RECIPES_PATH) -> list[str]:
    """A method block that says `recipe: <name>` becomes that recipe's keys with the block's own on top (in place);
    the recipes are experiments/recipes.yaml's, with the experiment's own `recipes:` added (or replacing one by name).
    `recipes:` leaves the config once used: the methods hold every key, so a job's identity does not depend on
    where a key was written."""
    own = cfg.pop("recipes", None) or {}
    if not isinstance(own, dict) or not all(isinstance(r, dict) for r in own.values()):
        return ["recipes: a mapping of recipe name -> method keys (e.g. advkd-gan-reg: {family: advkd, ...})"]
    methods = cfg.get("methods")
    using = {m: b for m, b in methods.items() if isinstance(b, dict) and "recipe" in b} \
        if isinstance(methods, dict) else {}
    if not using:
        return []
    try:
        shared = (read_yaml(shared_path) or {}).get("recipes") or {}
    except (OSError, yaml.YAMLError) as e:
        return [f"{shared_path}: cannot read the shared recipes ({e})"]
    recipes, errs = {**shared, **own}, []
    for name, b in using.items():
        if b["recipe"] not in recipes:
            errs.append(f"methods.{name}.recipe: no recipe {b['recipe']!r}; the recipes are {sorted(recipes)} "
                        f"({shared_path.name} and this experiment's `recipes:`)")
            continue
        methods[name] = {**_copy(recipes[b["recipe"]]), **{k: v for k, v in b.items() if k != "recipe"}}
    return errs


def _merge(base: dict, over: dict, top: bool = True) -> dict:
    """`over` on top of `base`, key by key through nested mappings; `methods:` (at the top) is taken whole."""
    out = _copy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not (top and key == "methods"):
            out[key] = _merge(out[key], value, top=False)
        else:
            out[key] = _copy(value)
    return out


def validate_config(cfg: dict, source: str = "config", require_inputs: bool = True, files=()) -> dict:
    """Validate `cfg` in place (defaults filled); raise BadInputError listing every problem, naming `source`.
    `files`: the YAML files `cfg` was read from, checked for what a parsed dict no longer shows (duplicate keys).

    require_inputs=False (dry runs, lint) reports missing user-supplied inputs as a warning on stderr instead."""
    import sys

    if not isinstance(cfg, dict) or not cfg:
        raise BadInputError(f"{source}: empty config; pass an experiment, e.g. --configfile experiments/default.yaml")
    errs = file_errors(files) or extends_errors(cfg) or recipe_errors(cfg) or schema_errors(cfg)
    if not errs:
        errs = semantic_errors(cfg)
        missing = missing_inputs(cfg)
        if require_inputs:
            errs += missing
        elif missing:
            print(f"advkd: warning: {source} cannot run yet, these inputs are missing:\n  - " + "\n  - ".join(missing),
                  file=sys.stderr)
    if errs:
        raise BadInputError(f"{source}: invalid experiment config:\n  - " + "\n  - ".join(errs))
    _sort_keys(cfg)
    return cfg


def _sort_keys(cfg: dict) -> None:
    """Every block's keys in sorted order, in place, except the rows of `methods:` (their order is meaningful: the
    first of a recipe trains it): a rule param made of a block then does not change, nor rerun its jobs, when a key
    is written elsewhere in the YAML or filled in as a default."""
    def sort(d):
        return {k: sort(v) if isinstance(v, dict) else v for k, v in sorted(d.items())}

    for key in list(cfg):
        value = cfg.pop(key)
        cfg[key] = value if key == "methods" or not isinstance(value, dict) else sort(value)


def load_config(path) -> dict:
    path = Path(path)
    try:
        cfg = read_yaml(path)
    except FileNotFoundError:
        raise BadInputError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise BadInputError(f"{path}: not valid YAML ({e})") from None
    return validate_config(cfg, str(path))
