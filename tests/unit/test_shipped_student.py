"""A shipped student (a `shipped:` folder in a student's block): scored beside the teacher, data and seed streams
it learnt with, as the recipe its block names, or refused by name before any job; the report marks it."""

import copy
import importlib.util
import json
import os

import pytest
import yaml

from advkd.config import (
    distilled_here,
    load_config,
    memorised,
    shipped_student_errors,
    teacher_weights_sha256,
)
from advkd.families import FAMILIES, trained_folder, training_recipe
from advkd.io import REPO_ROOT, BadInputError, write_json
from advkd.stages.report import collect, display_table

DS = {"family": "denoising-student", "epochs": 12, "batch_size": 64}


@pytest.fixture(scope="module")
def default_cfg():
    if not (REPO_ROOT / "experiments/assets/teacher-fmnist32/unet").is_dir():
        pytest.skip("the shipped teacher is not in this checkout")
    return load_config(REPO_ROOT / "experiments" / "default.yaml")


def _card(cfg):
    """What scripts/ship_student.py writes for a Denoising Student trained by `cfg` (the parts validation reads)."""
    return {"method": "ds-long", "family": "denoising-student",
            "recipe": training_recipe(DS),
            "teacher_weights_sha256": teacher_weights_sha256(cfg["teacher"]),
            "data": copy.deepcopy(cfg["data"]), "trajectories": copy.deepcopy(cfg["trajectories"]),
            "seed": cfg["seed"]}


def _with_shipped(cfg, folder, card):
    cfg = copy.deepcopy(cfg)
    folder.mkdir(exist_ok=True)
    write_json(folder / "card.json", card)
    cfg["methods"]["ds-long"] = DS | {"shipped": str(folder)}
    return cfg


def test_a_shipped_student_made_for_this_experiment_is_accepted(default_cfg, tmp_path):
    card = _card(default_cfg)
    cfg = _with_shipped(default_cfg, tmp_path / "ds", card)
    assert shipped_student_errors(cfg) == [] and distilled_here(cfg, "ds-long")


def test_a_shipped_student_from_another_distillation_set_is_scored_but_not_compared_with_this_one(default_cfg,
                                                                                                  tmp_path):
    """A student trained on another experiment's teacher runs (published-budget's 20,000) is scored here; only
    memorisation, which compares samples with the distillation set, is left to the experiment that trained it."""
    card = _card(default_cfg)
    card["trajectories"].update(count=20000, sampler="dpmsolver-21")
    cfg = _with_shipped(default_cfg, tmp_path / "ds", card)
    assert shipped_student_errors(cfg) == [] and not distilled_here(cfg, "ds-long")
    assert all(distilled_here(cfg, m) for m, b in cfg["methods"].items()
               if b["family"] == "denoising-student" and not b.get("shipped"))
    assert "ds-long" not in memorised(cfg) and "denoising-student" in memorised(cfg)
    cfg["methods"]["denoising-student"]["scored_by"] = "none"   # costed and timed only: no samples to compare
    assert "denoising-student" not in memorised(cfg)


@pytest.mark.parametrize("change,words", [
    (lambda c: c.update(teacher_weights_sha256={"diffusion_pytorch_model.safetensors": "0" * 64}), ["teacher"]),
    (lambda c: c.update(seed=1), ["seed"]),
    (lambda c: c.pop("trajectories"), ["trajectories", "count and sampler"]),
    (lambda c: c["data"].update(train_count=512), ["data", "512"]),
    (lambda c: c["recipe"].update(epochs=200), ["epochs", "200"]),
    (lambda c: c.update(family="reflow"), ["'reflow'"]),
])
def test_a_shipped_student_made_for_another_experiment_is_refused_by_name(default_cfg, tmp_path, change, words):
    card = _card(default_cfg)
    change(card)
    errs = shipped_student_errors(_with_shipped(default_cfg, tmp_path / "ds", card))
    assert len(errs) == 1 and errs[0].startswith("methods.ds-long.shipped:"), errs
    assert all(w in errs[0] for w in words), errs


def test_a_shipped_folder_without_its_card_is_refused(default_cfg, tmp_path):
    cfg = copy.deepcopy(default_cfg)
    cfg["methods"]["ds-long"] = DS | {"shipped": str(tmp_path)}
    errs = shipped_student_errors(cfg)
    assert len(errs) == 1 and "methods.ds-long.shipped" in errs[0] and "card.json" in errs[0]


def test_stages_find_a_shipped_student_in_its_own_folder(tmp_path):
    methods = {"ds": DS, "ds-long": DS | {"shipped": str(tmp_path / "ds-long")}}
    (tmp_path / "students" / "ds").mkdir(parents=True)
    assert trained_folder(tmp_path / "students", "ds", methods) == tmp_path / "students" / "ds"
    assert trained_folder(tmp_path / "students", "ds-long", methods) == tmp_path / "ds-long"


def test_the_report_marks_a_shipped_row_and_reads_its_training_cost_from_its_folder(tmp_path):
    from test_report import _result

    shipped = tmp_path / "assets" / "ds-long"
    for name, block in [("ds", DS), ("ds-long", DS | {"shipped": str(shipped)})]:
        _result(tmp_path, name, block, 0.5, 6.0, 160.0, [20.0, 21.0, 22.0], kind="student")
    write_json(tmp_path / "students" / "ds" / "train.json", {"train_flops_total": 2e13, "train_seconds_total": 300})
    write_json(shipped / "train.json", {"train_flops_total": 4e14, "train_seconds_total": 7000})
    write_json(shipped / "card.json", {"selection": "the recipe of row ds, longer"})
    df = collect(tmp_path, None).set_index("method")
    assert df.loc["ds-long", "shipped"] and not df.loc["ds", "shipped"]
    assert df.loc["ds-long", "train_flops"] == 4e14 and df.loc["ds", "train_flops"] == 2e13
    shown = dict(zip(df.index, display_table(df.reset_index()).method))
    assert shown["ds-long"].startswith("ds-long") and shown["ds-long"].endswith(" (shipped)")
    assert "shipped" not in shown["ds"]


def test_ship_student_writes_a_folder_that_validation_accepts_and_lists_its_files(default_cfg, tmp_path,
                                                                                   monkeypatch):
    """scripts/ship_student.py on a finished run (its files stand in for a trained student's): the folder it writes
    passes the checks a `shipped:` block gets, its files join SHA256SUMS, and a changed file is then refused."""
    spec = importlib.util.spec_from_file_location("ship_student", REPO_ROOT / "scripts" / "ship_student.py")
    ship_student = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_student)
    assets = tmp_path / "experiments" / "assets"
    assets.mkdir(parents=True)
    (assets / "SHA256SUMS").write_text(f"{'1' * 64}  teacher/unet.safetensors\n")
    monkeypatch.setattr(ship_student, "ASSETS", assets)
    monkeypatch.setattr(ship_student, "MANIFEST", assets / "SHA256SUMS")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "long.yaml"
    methods = {"ddim-10": {"family": "ddim", "steps": 10}, "ds-long": DS}
    config.write_text(yaml.safe_dump({"extends": "default.yaml", "experiment": "long", "methods": methods,
                                      "report": {"reference": "ddim-10"}}))
    run = tmp_path / "results" / "long" / "students" / "ds-long"
    run.mkdir(parents=True)
    for f in ship_student.FILES:
        (run / f).write_bytes(f.encode())
    (run / "loss.csv").write_text("epoch,steps,loss\n0,16,0.5\n1,16,0.4\n")
    # the resolved recipe the run recorded (advkd.students.training.run_identity), as the family resolves the block
    ds = FAMILIES["denoising-student"]
    trained = json.loads(json.dumps(ds.load().resolve(ds.params.from_block(DS), "ds-long", 11, 32, 1)))
    trained.pop("teacher")
    identity = {"distillation_set_sha256": "ab" * 32, "student": trained}
    write_json(run / "train.json", {"run_identity": identity, "provenance": {},
                                    "train_flops_total": 1e12, "train_seconds_total": 5.0})
    write_json(tmp_path / "results" / "long" / "teacher" / "teacher.json",
               {"weights_sha256": teacher_weights_sha256(default_cfg["teacher"])})

    with pytest.raises(BadInputError, match="under"):
        ship_student.ship(config, "ds-long", tmp_path / "elsewhere", "test")
    # a card never claims a recipe the run did not train with (here: a block whose lr differs from the run's)
    config.write_text(yaml.safe_dump({"extends": "default.yaml", "experiment": "long", "methods": methods | {
        "ds-long": DS | {"lr": 0.001}}, "report": {"reference": "ddim-10"}}))
    with pytest.raises(BadInputError, match=r"train\.json: the run trained with \{'lr': 0\.0001\}"):
        ship_student.ship(config, "ds-long", assets / "student-ds-long", "test")
    assert not (assets / "student-ds-long").exists()
    # ... nor one whose derivation changed since (here: the code now resolves a key the run's record lacks)
    write_json(run / "train.json", {"run_identity": identity | {"student": {k: v for k, v in trained.items()
                                                                            if k != "output"}}})
    config.write_text(yaml.safe_dump({"extends": "default.yaml", "experiment": "long", "methods": methods,
                                      "report": {"reference": "ddim-10"}}))
    with pytest.raises(BadInputError, match=r"the run trained with \{'output': None\}"):
        ship_student.ship(config, "ds-long", assets / "student-ds-long", "test")
    write_json(run / "train.json", {"run_identity": identity, "provenance": {},
                                    "train_flops_total": 1e12, "train_seconds_total": 5.0})
    config.write_text(yaml.safe_dump({"extends": "default.yaml", "experiment": "long", "methods": methods,
                                      "report": {"reference": "ddim-10"}}))
    # a run resumed across stops: each pid's last CPU reading counts once, other methods' lines not at all
    cpu_log = tmp_path / "cpu_seconds.log"
    # (pid 11 twice: a pid the kernel gave again after a reboot, told apart by its start time)
    cpu_log.write_text("t0 ds-long 11 5.0 700\nt0 other 12 50.0 701\nt1 ds-long 11 9.5 700\nt2 ds-long 13 2.0 900\n"
                       "t3 ds-long 11 1.0 50\n")
    card = ship_student.ship(config, "ds-long", assets / "student-ds-long", "the default's recipe, longer",
                             conditions="at nice 19 beside other work", cpu_log=cpu_log)
    assert card["cpu_seconds_logged"] == 12.5 and card["training_conditions"] == "at nice 19 beside other work"
    assert card["steps"] == 32 and card["epochs"] == 2 and card["train_flops"] == 1e12
    assert card["selection"] == "the default's recipe, longer"   # what the report's caption quotes
    # its seconds come with the host they were measured on
    assert card["host"]["logical_cpus"] == os.cpu_count() and card["host"]["sgemm_gflops_at_shipping"] > 0
    listed = (assets / "SHA256SUMS").read_text()
    assert "teacher/unet.safetensors" in listed
    assert all(f"student-ds-long/{f}" in listed for f in (*ship_student.FILES, "card.json"))

    cfg = copy.deepcopy(default_cfg)
    cfg["methods"]["ds-long"] = DS | {"shipped": str(assets / "student-ds-long")}
    assert shipped_student_errors(cfg) == []
    (assets / "student-ds-long" / "student.safetensors").write_bytes(b"changed")
    errs = shipped_student_errors(cfg)
    assert len(errs) == 1 and "student.safetensors" in errs[0] and "not the shipped" in errs[0]
