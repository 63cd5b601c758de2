"""Snakemake itself stops on a bad experiment config before any job, naming the key, and leaves earlier results
as they were (the checks behind it: tests/unit/test_config.py and test_bad_inputs.py)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ci():
    return yaml.safe_load((ROOT / "experiments" / "ci.yaml").read_text())


def earlier_result(path, content="earlier result\n"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def unknown_family(ci):
    ci["methods"]["x-3"] = {"family": "pndm", "steps": 3}
    return yaml.safe_dump(ci)


def duplicate_block(ci):   # Snakemake's own YAML reader keeps the last block silently
    return yaml.safe_dump(ci) + "report:\n  reference: ddim-5\n"


@pytest.mark.parametrize("write, message", [
    (unknown_family, "methods.x-3.family: unknown family 'pndm'"),
    (duplicate_block, "key 'report' appears twice"),
])
def test_snakemake_refuses_a_bad_config_before_touching_results(ci, tmp_path, write, message):
    (tmp_path / "bad.yaml").write_text(write(ci))
    card = earlier_result(tmp_path / "results" / "ci" / "data" / "data_card.json")
    r = subprocess.run([Path(sys.executable).parent / "snakemake", "-s", ROOT / "Snakefile", "-d", tmp_path,
                        "--cores", "1", "--configfile", tmp_path / "bad.yaml"], capture_output=True, text=True)
    assert r.returncode != 0
    assert message in r.stdout + r.stderr
    assert card.read_text() == "earlier result\n" and not (tmp_path / ".snakemake" / "incomplete").exists()


def test_snakemake_stops_before_any_job(tmp_path, repo_root, venv_bin, ci):
    ci["sampling"]["n"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(ci))
    r = subprocess.run([venv_bin / "snakemake", "-s", repo_root / "Snakefile", "-d", tmp_path, "--cores", "1",
                        "--configfile", bad], capture_output=True, text=True)
    assert r.returncode != 0
    assert "sampling.n: -1 is less than the minimum of 1" in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()
