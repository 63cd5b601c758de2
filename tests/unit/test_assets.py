"""Shipped assets (experiments/assets): every one is listed in SHA256SUMS and refused, before any job uses it,
when its bytes differ, with a message naming the file, both hashes and how to restore it."""

import json
import shutil
import subprocess

import pytest
import yaml

from advkd import assets
from advkd.config import validate_config
from advkd.io import BadInputError

TEACHER_WEIGHTS = "teacher-fmnist32/unet/diffusion_pytorch_model.safetensors"


def test_the_manifest_lists_every_tracked_asset_and_each_matches(repo_root):
    listed = assets.manifest()
    r = subprocess.run(["git", "ls-files", "experiments/assets"], cwd=repo_root, capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.skip("not a git checkout")
    tracked = {p.removeprefix("experiments/assets/") for p in r.stdout.split()} - {"SHA256SUMS"}
    assert set(listed) == tracked, "rewrite experiments/assets/SHA256SUMS (see advkd/assets.py)"
    assert assets.shipped_errors(assets.ASSETS) == []


@pytest.fixture
def corrupted(tmp_path, monkeypatch):
    """A copy of the repository's assets with two bytes flipped in the middle of the teacher's weights."""
    root = tmp_path / "repo"
    shutil.copytree(assets.ASSETS, root / "experiments" / "assets")
    monkeypatch.setattr(assets, "REPO", root)
    monkeypatch.setattr(assets, "ASSETS", root / "experiments" / "assets")
    monkeypatch.setattr(assets, "MANIFEST", root / "experiments" / "assets" / "SHA256SUMS")
    w = assets.ASSETS / TEACHER_WEIGHTS
    data = bytearray(w.read_bytes())
    mid = len(data) // 2
    data[mid] ^= 0xFF
    data[mid + 1] ^= 0xFF
    w.write_bytes(bytes(data))
    return root


def _says_which_and_how(msg: str):
    where = f"experiments/assets/{TEACHER_WEIGHTS}"
    want = assets.manifest()[TEACHER_WEIGHTS]
    assert where in msg and want in msg and f"checkout -- {where}`" in msg and "git -C " in msg, msg
    have = [w for w in msg.split() if len(w) == 64 and w != want]
    assert have, f"the file's own hash is not named: {msg}"


def test_teacher_stage_refuses_corrupted_shipped_weights(corrupted, tmp_path):
    from advkd.stages.teacher import teacher_card

    out = tmp_path / "teacher.json"
    with pytest.raises(BadInputError) as e:
        teacher_card({"source": "shipped", "shipped": str(assets.ASSETS / "teacher-fmnist32")}, out)
    _says_which_and_how(str(e.value))
    assert not out.exists()


def test_config_check_refuses_corrupted_shipped_teacher_before_any_job(corrupted, repo_root):
    cfg = yaml.safe_load((repo_root / "experiments" / "default.yaml").read_text())
    cfg["teacher"]["shipped"] = str(assets.ASSETS / "teacher-fmnist32")
    with pytest.raises(BadInputError) as e:
        validate_config(cfg, "default.yaml")
    _says_which_and_how(str(e.value))


def test_another_checkouts_assets_are_checked_against_its_own_list(tmp_path):
    """A workflow run from another clone (its experiments/assets, its SHA256SUMS) is checked too."""
    other = tmp_path / "clone" / "experiments" / "assets"
    shutil.copytree(assets.ASSETS, other)
    assert assets.shipped_errors(other / "teacher-fmnist32") == []
    (other / "teacher-fmnist32" / "unet" / "config.json").write_text("{}")
    errs = assets.shipped_errors(other / "teacher-fmnist32")
    assert len(errs) == 1 and f"git -C {tmp_path / 'clone'} checkout -- " in errs[0], errs
    assert assets.shipped_errors(tmp_path) == []    # not inside any experiments/assets: not shipped


def test_judge_with_card_and_weights_changed_together_is_refused(corrupted):
    """The judge's own card check cannot catch weights replaced together with their card; the manifest does."""
    from advkd.io import sha256_file
    from advkd.metrics.evaluator import load_evaluator

    folder = assets.ASSETS / "evaluator-fmnist"
    card = json.loads((folder / "evaluator.json").read_text())
    w = folder / card["weights"]
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    (folder / "evaluator.json").write_text(json.dumps(card | {"sha256": sha256_file(w)}))
    with pytest.raises(BadInputError, match="evaluator-fmnist/evaluator.safetensors: sha256 .*checkout -- "
                                          "experiments/assets/evaluator-fmnist/evaluator.safetensors`"):
        load_evaluator(folder)
