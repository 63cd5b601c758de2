"""docs/choices.md: every knob of the default chosen by a number, with the experiment and half that chose it. A
choice stands (status ok), or is recorded as re-made with no candidate passing the collapse rule, only when it was
made on the validation half by a `purpose: tuning` experiment that exists; nothing of these names the test half."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STATUSES = ("ok", "no candidate passed", "redo", "not a choice")


def rows() -> list[dict]:
    lines = [ln for ln in (ROOT / "docs/choices.md").read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:1] == ["knob"] and {"experiment", "half", "pick", "status"} <= set(header), header
    out = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == len(header), ln
        out.append(dict(zip(header, cells)))
    return out


def test_every_row_has_a_status():
    table = rows()
    assert len(table) >= 10
    for r in table:
        assert any(r["status"].startswith(s) for s in STATUSES), r


@pytest.mark.parametrize("row", [r for r in rows() if r["status"].startswith(("ok", "no candidate passed"))],
                         ids=lambda r: r["knob"])
def test_a_standing_choice_was_made_on_validation_by_a_tuning_experiment_that_exists(row):
    half = row["half"].lower()
    assert "test" not in half and "10,000" not in half, row
    assert half.startswith("validation") or half.startswith("none: speed"), row
    for name in re.findall(r"experiments/([\w.-]+\.yaml)", row["experiment"]):
        path = ROOT / "experiments" / name
        assert path.exists(), f"{row['knob']}: {path} does not exist"
        if half.startswith("validation"):
            assert yaml.safe_load(path.read_text()).get("purpose") == "tuning", f"{path}: not purpose: tuning"


def test_the_default_names_no_knob_that_choices_md_calls_unknown():
    """Every method of the default that the table names exists in the default (a renamed method must be renamed
    here too)."""
    default = yaml.safe_load((ROOT / "experiments/default.yaml").read_text())
    for r in rows():
        for method in re.findall(r"`methods\.([\w.-]+?)(?:\.[a-z_]+)?`", r["knob"]):
            assert method in default["methods"] or method.rstrip("*-") in " ".join(default["methods"]), r["knob"]
