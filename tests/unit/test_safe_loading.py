"""Safe loading: nothing on the load path unpickles. A pickle planted where the suite expects a student, a judge,
a trajectory shard or Inception weights is refused with a message and never executed (the teacher's case is in
test_teacher.py), and the package never calls a pickle loader at all."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from advkd.io import BadInputError, sha256_file

ROOT = Path(__file__).resolve().parents[2]


class Evil:
    """Unpickling this creates the file `marker`: proof that the payload ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2), "payload": Evil(marker)}, path)
    return path


def test_pickle_in_place_of_student_weights_is_refused(tmp_path):
    from advkd.families import build_method
    from advkd.students.advkd.params import AdvKDParams

    d = tmp_path / "student"
    plant_pickle(d / "student.safetensors", tmp_path / "pwned")
    (d / "student.json").write_text(json.dumps(AdvKDParams().resolve("adv", 11, 32, 1)))   # a complete recipe
    with pytest.raises(BadInputError, match=r"student\.safetensors: not a valid safetensors file.*pickle checkpoint, "
                                            "which this suite refuses to load"):
        build_method("adv", {"family": "advkd"}, {"student_dir": str(d), "device": "cpu"})
    assert not (tmp_path / "pwned").exists()


def test_pickle_in_place_of_the_judge_is_refused(tmp_path):
    from advkd.metrics.evaluator import load_evaluator

    shutil.copytree(ROOT / "experiments" / "assets" / "evaluator-fmnist", tmp_path / "ev")
    w = plant_pickle(tmp_path / "ev" / "evaluator.safetensors", tmp_path / "pwned")
    # first line of defence: the card's sha256
    with pytest.raises(BadInputError, match=r"evaluator\.safetensors: sha256 .* differs from the card's"):
        load_evaluator(tmp_path / "ev")
    # an attacker who also edits the card still meets safetensors
    card = json.loads((tmp_path / "ev" / "evaluator.json").read_text())
    (tmp_path / "ev" / "evaluator.json").write_text(json.dumps(card | {"sha256": sha256_file(w)}))
    with pytest.raises(BadInputError, match=r"evaluator\.safetensors: not a valid safetensors file.*refuses"):
        load_evaluator(tmp_path / "ev")
    assert not (tmp_path / "pwned").exists()


def test_pickle_in_place_of_inception_weights_is_refused(tmp_path):
    from advkd.metrics.inception import InceptionJudge

    w = plant_pickle(tmp_path / "inception-2015-12-05.pt", tmp_path / "pwned")
    with pytest.raises(BadInputError, match=r"inception-2015-12-05\.pt: not a TorchScript Inception file"):
        InceptionJudge(w)
    assert not (tmp_path / "pwned").exists()


def test_pickle_in_place_of_a_trajectory_shard_is_refused(tmp_path):
    from advkd.students.common import load_trajectories

    shard = plant_pickle(tmp_path / "shard-00000.safetensors", tmp_path / "pwned")
    with pytest.raises(BadInputError, match=r"shard-00000\.safetensors: not a valid safetensors file"):
        load_trajectories([shard])
    assert not (tmp_path / "pwned").exists()


def test_pickle_in_place_of_the_teacher_training_checkpoint_is_refused(tmp_path):
    import numpy as np

    from advkd.teacher import train

    plant_pickle(tmp_path / "checkpoint.safetensors", tmp_path / "pwned")
    with pytest.raises(BadInputError, match=r"checkpoint\.safetensors: not a valid safetensors file"):
        train(np.zeros((8, 8, 8, 1), np.uint8), tmp_path, architecture="digits8", epochs=1, batch_size=4, lr=5e-4,
              warmup_steps=2, ema_decay=0.99, seed=0, device="cpu")
    assert not (tmp_path / "pwned").exists()


FORBIDDEN = ("torch.load(", "pickle.load", "pickle.loads", "allow_pickle=True", "weights_only=False", "dill.",
             "joblib.load", "cloudpickle")


def _sources():
    files = [*(ROOT / "advkd").rglob("*.py"), *(ROOT / "scripts").rglob("*.py"), *(ROOT / "workflow").rglob("*.smk"),
             ROOT / "Snakefile"]
    assert len(files) > 20
    return files


def test_the_package_never_calls_a_pickle_loader():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources()
             for i, line in enumerate(p.read_text().splitlines(), 1) if any(s in line for s in FORBIDDEN)]
    assert not found, "pickle on the load path:\n" + "\n".join(found)


def test_every_numpy_and_diffusers_load_is_pickle_free():
    bad = []
    for p in _sources():
        text = p.read_text()
        for m in re.finditer(r"np\.load\(([^)]*)\)", text):
            if "allow_pickle=False" not in m.group(1):
                bad.append(f"{p.relative_to(ROOT)}: np.load({m.group(1)})")
        for m in re.finditer(r"(\w+)\.from_pretrained\(([^)]*)\)", text):
            if not m.group(1).endswith("Scheduler") and "use_safetensors=True" not in m.group(2):
                bad.append(f"{p.relative_to(ROOT)}: {m.group(0)}")
    assert not bad, "\n".join(bad)
