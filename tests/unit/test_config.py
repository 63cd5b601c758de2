import copy
import dataclasses

import pytest
import yaml

from advkd.config import (
    RECIPES_PATH,
    SCHEMA_PATH,
    experiment_files,
    extends_errors,
    load_config,
    read_yaml,
    recipe_errors,
    schema_errors,
    validate_config,
)
from advkd.families import FAMILIES
from advkd.io import BadInputError


@pytest.fixture
def ci(repo_root):
    return yaml.safe_load((repo_root / "experiments" / "ci.yaml").read_text())


def test_every_experiment_validates(repo_root):
    for p in experiment_files():
        cfg = validate_config(yaml.safe_load(p.read_text()), str(p), require_inputs=False)
        assert cfg["experiment"] == p.stem
    for name in ("default", "ci", "paper-cost"):  # these need nothing a user must supply
        load_config(repo_root / "experiments" / f"{name}.yaml")


def test_missing_user_inputs_stop_a_real_run_and_say_where(repo_root, capsys):
    cfg = yaml.safe_load((repo_root / "experiments" / "paper.yaml").read_text())
    with pytest.raises(BadInputError) as e:
        validate_config(copy.deepcopy(cfg), "paper.yaml")
    msg = str(e.value)
    assert "data.root: image folder data/celeba_hq_256 does not exist" in msg
    assert "teacher.pretrained: experiments/assets/ddpm-celebahq-256" in msg and "huggingface-cli download" in msg
    assert "evaluator.inception_weights" in msg and "ADVKD_INCEPTION_WEIGHTS" in msg
    validate_config(cfg, "paper.yaml", require_inputs=False)   # a dry run only warns
    assert "cannot run yet" in capsys.readouterr().err


def test_defaults_are_filled(ci):
    del ci["sampling"]
    cfg = validate_config(ci)
    assert cfg["sampling"]["seeds"] == [0] and cfg["data"]["heldout_fraction"] == 0.1


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["data"].update(colour="red"), r"data: Additional properties.*'colour'.*allowed keys: channels"),
    (lambda c: c.update(extra=1), r"<top level>: Additional properties.*'extra'"),
    (lambda c: c["sampling"].update(n=-5), r"sampling.n: -5 is less than the minimum of 1"),
    (lambda c: c["data"].update(dataset="cifar100"), r"data.dataset: 'cifar100' is not allowed; expected one of"),
    (lambda c: c["data"].update(root="/no/such/dir"), r"data.root: Fashion-MNIST files .* not found in /no/such/dir"),
    (lambda c: c["methods"].update({"x-1": {"family": "pndm", "steps": 3}}),
     r"methods.x-1.family: unknown family 'pndm'"),
    (lambda c: c["methods"].update({"ddim-0": {"family": "ddim", "steps": 0}}), r"methods.ddim-0.steps: 0 is less"),
    (lambda c: c["methods"].update({"ddim-x": {"family": "ddim", "stepz": 3}}),
     r"methods.ddim-x: 'steps' is a required"),
    (lambda c: c["trajectories"].update(checkpoints=20), r"trajectories.checkpoints: 20 checkpoints need at least"),
    (lambda c: c["trajectories"].update(spacing=[0, 5, 4, 9]), r"trajectories.spacing: step indices must strictly"),
    (lambda c: c["trajectories"].update(sampler="euler-5"),
     r"trajectories.sampler: 'euler-5' is not <sampler>-<steps>"),
    (lambda c: c["teacher"].update(source="pretrained"), r"teacher.pretrained: required"),
    (lambda c: c["sampling"].update(shard_size=24), r"sampling.shard_size: 24 must be a multiple of sampling.batch"),
    # an Adv-KD ablation knob on a family that has no such knob: the key and the family are named
    (lambda c: c["methods"].update({"ds": {"family": "denoising-student", "augment": True}}),
     r"methods.ds.augment: family denoising-student has no such parameter"),
    (lambda c: c.update(report={"reference": "ddpm-1000"}), r"report.reference: 'ddpm-1000' is not one of"),
    # quality by phase needs a snapshot per phase: an Adv-KD student trained here phase by phase
    (lambda c: c["report"].update(phase_quality=["ddim-5"]),
     r"report.phase_quality: 'ddim-5' is not an Adv-KD method of this experiment .its advkd methods: \['advkd-k1"),
    (lambda c: c["report"].update(phase_quality=["advkd-k2-full-both"]),
     r"report.phase_quality: advkd-k2-full-both is trained joint; only a student trained here phase by phase"),
    (lambda c: c["report"].update(phase_quality=["advkd-k1-unet"]),   # the teacher's UNet trains jointly
     r"report.phase_quality: advkd-k1-unet is trained joint"),
    (lambda c: c.update(extends="nothing.yaml"), r"extends: cannot read experiments/nothing.yaml"),
    # tune on validation, report on test, compare at one n
    (lambda c: c.update(purpose="tuning", metrics={"reference_split": "test"}, sampling={"seeds": [1000]}),
     r"metrics.reference_split: 'test' with purpose: tuning; tuning on the test half"),
    (lambda c: c.update(metrics={"reference_split": "validation"}),
     r"metrics.reference_split: 'validation' with purpose: report"),
    (lambda c: c.update(purpose="tuning"), r"sampling.seeds: \[0, 1\] are below 1000"),
    (lambda c: c["methods"]["ddim-5"].update(seeds=[1001]), r"methods.ddim-5.seeds: \[1001\] are tuning seeds"),
    (lambda c: c["methods"]["ddim-5"].update(n=16), r"methods.ddim-5.n: 16 differs from the matched n \(sampling.n "
                                                   r"= 32\).*set scored_by: kid"),
    (lambda c: c["methods"].update(real={"family": "ddim", "steps": 3}), r"methods.real: the name is the tables'"),
    (lambda c: (c["data"].update(resolution=64), c["evaluator"].update(source="train", second={"source": "shipped"})),
     r"evaluator.second.source: the shipped autoencoder judges"),
])
def test_bad_configs_name_the_key(ci, edit, message):
    cfg = copy.deepcopy(ci)
    edit(cfg)
    with pytest.raises(BadInputError, match=message):
        validate_config(cfg, "ci.yaml")


def test_a_key_given_twice_is_refused_with_both_lines(repo_root, tmp_path):
    text = (repo_root / "experiments" / "ci.yaml").read_text()
    (tmp_path / "ci.yaml").write_text(text + "report:\n  reference: ddim-5\n")
    with pytest.raises(BadInputError, match=r"ci.yaml: .*key 'report' appears twice \(lines \d+ and \d+\)"):
        load_config(tmp_path / "ci.yaml")


def test_extends_merges_key_by_key_and_takes_methods_whole(repo_root, tmp_path, monkeypatch):
    """experiments/ablations.yaml: the default's data, teacher, distillation set and judge; its own methods only. A
    block that names one key overrides that key alone."""
    default = load_config(repo_root / "experiments" / "default.yaml")
    abl = load_config(repo_root / "experiments" / "ablations.yaml")
    for block in ("data", "teacher", "sampling", "trajectories", "evaluator", "metrics", "seed"):
        assert abl[block] == default[block], block
    assert abl["experiment"] == "ablations" and "ddpm-1000" not in abl["methods"]
    shared = set(abl["methods"]) & set(default["methods"])
    assert shared and all(abl["methods"][m] == default["methods"][m] for m in shared)
    tuning = load_config(repo_root / "experiments" / "choices-trajectories.yaml")
    assert tuning["trajectories"]["sampler"] == "ddim-50"
    assert {k: v for k, v in tuning["trajectories"].items() if k != "sampler"} == \
        {k: v for k, v in default["trajectories"].items() if k != "sampler"}


EXPERIMENTS = experiment_files()


def _effective(cfg: dict) -> dict | None:
    """The config merged with its base and its defaults filled; None where it is not valid (a required key)."""
    cfg = copy.deepcopy(cfg)
    return None if extends_errors(cfg) or recipe_errors(cfg) or schema_errors(cfg) else cfg


def _leaves(d: dict, path=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, path + (k,))
        else:
            yield path + (k,)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_no_experiment_restates_a_value_it_would_get_anyway(path):
    """A key that sets what the schema's default, the base experiment (`extends`) or the family's Params would give
    anyway is a second place a default is written: change the default and the YAML silently disagrees."""
    cfg = read_yaml(path)
    full = _effective(cfg)
    assert full is not None
    redundant = []
    for keys in _leaves({k: v for k, v in cfg.items() if k not in ("methods", "extends", "experiment")}):
        trimmed = copy.deepcopy(cfg)
        parent = trimmed
        for k in keys[:-1]:
            parent = parent[k]
        del parent[keys[-1]]
        if _effective(trimmed) == full:
            redundant.append(".".join(keys))
    recipes = read_yaml(RECIPES_PATH)["recipes"] | cfg.get("recipes", {})
    for name, block in cfg.get("methods", {}).items():
        recipe = recipes.get(block.get("recipe"), {})
        given = _family_defaults(block.get("family") or recipe["family"]) | recipe
        redundant += [f"methods.{name}.{k}" for k, v in block.items() if k not in ("family", "recipe")
                      and k in given and given[k] == v]
    assert not redundant, f"{path.name} restates: {', '.join(redundant)}"


def _family_defaults(family: str) -> dict:
    return {f.name: f.default for f in dataclasses.fields(FAMILIES[family].params)}


def test_no_shared_recipe_restates_a_default():
    recipes = read_yaml(RECIPES_PATH)["recipes"]
    redundant = [f"{name}.{k}" for name, r in recipes.items() for k, v in r.items()
                 if k != "family" and _family_defaults(r["family"]).get(k, object()) == v]
    assert not redundant, f"experiments/recipes.yaml restates family defaults: {', '.join(redundant)}"


def test_a_recipe_is_written_once_and_a_method_adds_keys_on_top(ci, tmp_path):
    """`recipe: <name>` starts a method block from a shared or the experiment's own recipe; the block's own keys
    win; the expanded block is what validation, the rules and a shipped card see (no `recipe` key left)."""
    cfg = copy.deepcopy(ci) | {"recipes": {"mine": {"family": "ddim", "steps": 3}}}
    cfg["methods"].update({"a": {"recipe": "mine"}, "b": {"recipe": "mine", "steps": 7},
                           "gan": {"recipe": "advkd-gan-reg", "epochs_scale": 16.0}})
    out = validate_config(cfg, "ci.yaml", require_inputs=False)
    assert out["methods"]["a"] == {"family": "ddim", "steps": 3} and out["methods"]["b"]["steps"] == 7
    shared = read_yaml(RECIPES_PATH)["recipes"]["advkd-gan-reg"]
    assert out["methods"]["gan"] == shared | {"epochs_scale": 16.0} and "recipes" not in out
    # the experiment's own recipe replaces a shared one of the same name
    cfg = copy.deepcopy(ci) | {"recipes": {"advkd-gan-reg": {"family": "ddim", "steps": 4}}}
    cfg["methods"]["x"] = {"recipe": "advkd-gan-reg"}
    assert validate_config(cfg, "ci.yaml", require_inputs=False)["methods"]["x"] == {"family": "ddim", "steps": 4}
    cfg = copy.deepcopy(ci)
    cfg["methods"]["x"] = {"recipe": "no-such"}
    with pytest.raises(BadInputError, match=r"methods.x.recipe: no recipe 'no-such'; the recipes are \[.*advkd-gan"):
        validate_config(cfg, "ci.yaml", require_inputs=False)


def test_the_schema_file_is_the_one_the_dataclasses_generate():
    """workflow/schemas/config.schema.yaml is written out from advkd/schema.py for readers; validation uses the
    generated schema, so the file must not drift from it."""
    from advkd.schema import schema_yaml

    assert SCHEMA_PATH.read_text() == schema_yaml(), "run: python -m advkd.schema > workflow/schemas/config.schema.yaml"


def test_every_default_lives_in_the_dataclasses():
    """A key's default in the generated schema is its dataclass field's default (one place), block by block."""
    import dataclasses as dc

    from advkd.schema import Experiment, experiment_schema

    def walk(cls, props, where):
        for f in dc.fields(cls):
            if dc.is_dataclass(f.default_factory if f.default_factory is not dc.MISSING else None):
                walk(f.default_factory, props[f.name]["properties"], f"{where}{f.name}.")
                assert props[f.name]["default"] == {}
            elif "default" in props[f.name]:
                value = f.default if f.default is not dc.MISSING else f.default_factory()
                assert props[f.name]["default"] == value, where + f.name
    walk(Experiment, experiment_schema()["properties"], "")
