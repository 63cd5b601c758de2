"""A shipped student (a `shipped:` folder in a student's block): scored beside the teacher, data and distillation
set it learnt from, as the recipe its block names, or refused by name before any job; the report marks it."""

import copy

import pytest

from advkd.config import load_config, shipped_student_errors, teacher_weights_sha256
from advkd.families import FAMILIES, trained_folder
from advkd.io import REPO_ROOT, write_json
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
            "recipe": FAMILIES["denoising-student"].params.from_block(DS).training_dict(),
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
    assert shipped_student_errors(_with_shipped(default_cfg, tmp_path / "ds", card)) == []


@pytest.mark.parametrize("change,words", [
    (lambda c: c.update(teacher_weights_sha256={"diffusion_pytorch_model.safetensors": "0" * 64}), ["teacher"]),
    (lambda c: c["trajectories"].update(count=512), ["trajectories", "512"]),
    (lambda c: c.update(seed=1), ["seed"]),
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
    df = collect(tmp_path, None).set_index("method")
    assert df.loc["ds-long", "shipped"] and not df.loc["ds", "shipped"]
    assert df.loc["ds-long", "train_flops"] == 4e14 and df.loc["ds", "train_flops"] == 2e13
    shown = dict(zip(df.index, display_table(df.reset_index()).method))
    assert shown["ds-long"].startswith("ds-long") and shown["ds-long"].endswith(" (shipped)")
    assert "shipped" not in shown["ds"]
