"""Experiment configs: YAML validated by workflow/schemas/config.schema.yaml, defaults filled, then semantic checks.

The same `validate_config` runs in the Snakefile (before any job) and in the CLI, so a bad config fails the
same way everywhere, with a message naming the key and the expected value.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .assets import shipped_errors
from .data import FASHION_MNIST_DIR, FASHION_MNIST_FILES
from .io import REPO_ROOT, BadInputError
from .methods import method_errors, parse_sampler
from .metrics.evaluator import config_errors as evaluator_errors
from .metrics.quality import config_errors as sample_count_errors
from .teacher import config_errors as teacher_errors
from .trajectories import checkpoint_steps

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


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


def load_schema(path=SCHEMA_PATH) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def schema_errors(cfg: dict, schema: dict | None = None) -> list[str]:
    """Fill defaults into `cfg` (in place) and return readable schema violations, one per line."""
    from jsonschema import Draft202012Validator

    schema = schema or load_schema()
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
            _, steps = parse_sampler(tr["sampler"])
        except BadInputError as e:
            errs.append(f"trajectories.sampler: {e}")
        else:
            try:
                checkpoint_steps(steps, tr["checkpoints"], tr["spacing"])
            except BadInputError as e:
                errs.append(f"{e} ({tr['sampler']})")
    sm = cfg.get("sampling", {})
    if sm.get("shard_size") and sm["shard_size"] % sm["batch_size"]:
        errs.append(f"sampling.shard_size: {sm['shard_size']} must be a multiple of sampling.batch_size "
                    f"({sm['batch_size']}), so that a shard's draws are those of the unsharded run")
    errs += method_errors(cfg)

    errs += teacher_errors(cfg) + sample_count_errors(cfg)
    if cfg["teacher"]["source"] != "random":  # a cost-only experiment has no judge

        errs += evaluator_errors(cfg)
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
    for block in (t, ev):
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


def validate_config(cfg: dict, source: str = "config", require_inputs: bool = True) -> dict:
    """Validate `cfg` in place (defaults filled); raise BadInputError listing every problem, naming `source`.

    require_inputs=False (dry runs, lint) reports missing user-supplied inputs as a warning on stderr instead."""
    import sys

    if not isinstance(cfg, dict) or not cfg:
        raise BadInputError(f"{source}: empty config; pass an experiment, e.g. --configfile experiments/default.yaml")
    errs = schema_errors(cfg)
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
    return cfg


def load_config(path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        raise BadInputError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise BadInputError(f"{path}: not valid YAML ({e})") from None
    return validate_config(cfg, str(path))
