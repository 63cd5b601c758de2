"""Bad inputs (docs/reliability.md has the table): each case runs the real `advkd` command (in process, through
`advkd.cli.main`), which must stop non-zero with a message naming the key or file, and must leave a result file
that was already there byte for byte unchanged."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from advkd.cli import main
from advkd.io import save_images, save_tensors
from advkd.students.advkd.params import AdvKDParams

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_EVALUATOR = ROOT / "experiments" / "assets" / "evaluator-fmnist"


def refused(argv, capsys, match, keep=()):
    """Run `advkd argv`; it must exit non-zero, say `match` on stderr and leave every file in `keep` as it was."""
    before = {Path(p): Path(p).read_bytes() for p in keep}
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0, f"advkd {argv[0]} exited 0"
    assert re.search(match, err, re.S), err
    for p, data in before.items():
        assert p.read_bytes() == data, f"{p} was changed by a failed run"
    return err


def earlier_result(path, content="earlier result\n"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.fixture
def ci():
    return yaml.safe_load((ROOT / "experiments" / "ci.yaml").read_text())


# ------------------------------------------------------------------------------------------ experiment configs

def _student(**kw):
    return {"adv": {"family": "advkd", **kw}}


CONFIG_CASES = {
    "unknown method family": (lambda c: c["methods"].update({"x-3": {"family": "pndm", "steps": 3}}),
                              r"methods\.x-3\.family: unknown family 'pndm'; expected one of"),
    "negative steps": (lambda c: c["methods"].update({"ddim-neg": {"family": "ddim", "steps": -3}}),
                       r"methods\.ddim-neg\.steps: -3 is less than the minimum of 1"),
    "more phases than checkpoints": (lambda c: c["methods"].update(_student(phases=5)),
                                     r"methods\.adv\.phases: 5 phases need as many teacher checkpoints, but "
                                     r"trajectories\.checkpoints is 4"),
    "resolution not reachable by the student": (lambda c: c["methods"].update(_student(noise_resolution=3)),
                                                r"methods\.adv\.noise_resolution: 3 must divide the image "
                                                r"resolution 32 by a power of 2"),
    "too few samples for precision/recall": (lambda c: c["sampling"].update(n=4),
                                             r"sampling\.n: 4 samples per seed are too few to score; need at least "
                                             r"5 \(precision/recall with metrics\.nearest_k=3"),
    "too few samples for one method": (lambda c: c["methods"]["ddpm-10"].update(n=2),
                                       r"methods\.ddpm-10\.n: 2 samples per seed are too few"),
    "teacher size differs from the data": (lambda c: c["data"].update(resolution=16),
                                           r"teacher\.architecture: fmnist32 makes 1x32x32 images but the data is "
                                           r"1x16x16"),
    "missing data": (lambda c: c["data"].update(root="/no/such/fmnist"),
                     r"data\.root: Fashion-MNIST files .* not found in /no/such/fmnist"),
    "missing shipped teacher": (lambda c: c["teacher"].update(source="shipped", shipped="/no/such/teacher"),
                                r"teacher\.shipped: folder /no/such/teacher not found"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_is_refused_naming_the_key(case, ci, tmp_path, capsys):
    edit, match = CONFIG_CASES[case]
    cfg = copy.deepcopy(ci)
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    card = earlier_result(tmp_path / "out" / "data_card.json")
    refused(["prepare-data", "--config", path, "--out", tmp_path / "out"], capsys, f"{path}: invalid.*{match}",
            [card])


def test_missing_and_unparsable_config_files(tmp_path, capsys):
    refused(["prepare-data", "--config", tmp_path / "nope.yaml", "--out", tmp_path], capsys,
            r"nope\.yaml: config file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: [unclosed\n")
    refused(["prepare-data", "--config", bad, "--out", tmp_path], capsys, r"bad\.yaml: not valid YAML")


# ------------------------------------------------------------------------------------------ files

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A digits8 teacher pipeline folder (random weights) and the card the teacher stage would write for it."""
    from advkd.teacher import build_scheduler, build_unet, save_pipeline_dir

    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    save_pipeline_dir(build_unet("digits8"), build_scheduler(), root / "pipeline")
    return root / "pipeline"


def _card(path, pipeline_dir):
    path.write_text(json.dumps({"source": "pretrained", "pipeline": str(pipeline_dir)}))
    return path


def _sample_argv(card, out, **kw):
    argv = ["sample", "--method", kw.get("method", "ddim-2"), "--block",
            json.dumps(kw.get("block", {"family": "ddim", "steps": 2})), "--teacher", card, "--n", "4", "--seeds", "0",
            "--batch-size", "4", "--shard", "0", "--shard-size", "4", "--device", "cpu", "--out", out]
    return argv + (["--student-dir", kw["student_dir"]] if "student_dir" in kw else [])


def test_missing_teacher_card(tmp_path, capsys):
    old = earlier_result(tmp_path / "samples" / "seed0.npz")
    refused(_sample_argv(tmp_path / "teacher.json", tmp_path / "samples"), capsys,
            r"teacher\.json: file not found", [old])


def test_corrupt_teacher_card(tmp_path, capsys):
    card = tmp_path / "teacher.json"
    card.write_text('{"source": "pretrained", "pipe')
    old = earlier_result(tmp_path / "samples" / "seed0.npz")
    refused(_sample_argv(card, tmp_path / "samples"), capsys, r"teacher\.json: not valid JSON", [old])


def test_teacher_pipeline_folder_gone(tmp_path, capsys):
    card = _card(tmp_path / "teacher.json", tmp_path / "deleted-pipeline")
    old = earlier_result(tmp_path / "samples" / "seed0.npz")
    refused(_sample_argv(card, tmp_path / "samples"), capsys,
            r"teacher\.json: names the teacher pipeline folder .*deleted-pipeline, which does not exist", [old])


def test_truncated_teacher_weights(pipeline, tmp_path, capsys):
    broken = tmp_path / "pipeline"
    shutil.copytree(pipeline, broken)
    w = broken / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    old = earlier_result(tmp_path / "samples" / "seed0.npz")
    refused(_sample_argv(_card(tmp_path / "teacher.json", broken), tmp_path / "samples"), capsys,
            rf"{broken / 'unet'}: cannot load UNet2DModel", [old])


def test_truncated_teacher_training_checkpoint(tmp_path, capsys):
    from advkd.data import load_split

    images = load_split({"dataset": "digits", "resolution": 8, "channels": 1, "train_count": 64}, "train")["images"]
    save_images(tmp_path / "train.npz", images)
    out = tmp_path / "teacher"
    (out).mkdir()
    (out / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": trunc")
    curve = earlier_result(out / "loss.csv", "epoch,step,loss,seconds,images_per_s\n1,1,0.5,1,1\n")
    refused(["train-teacher", "--images", tmp_path / "train.npz", "--out", out, "--architecture", "digits8",
             "--epochs", "2", "--batch-size", "32", "--lr", "5e-4", "--warmup-steps", "10", "--ema-decay", "0.99",
             "--seed", "0", "--device", "cpu"], capsys,
            r"checkpoint\.safetensors: not a valid safetensors file", [curve, out / "checkpoint.safetensors"])


def test_truncated_trajectory_shard(tmp_path, capsys):
    shard = tmp_path / "shard-00000.safetensors"
    save_tensors(shard, {"x_T": torch.zeros(4, 1, 8, 8), "states": torch.zeros(4, 2, 1, 8, 8),
                         "timesteps": torch.tensor([0, 3])})
    shard.write_bytes(shard.read_bytes()[:300])
    old = earlier_result(tmp_path / "student" / "student.safetensors")
    refused(["distill", "--method", "adv", "--block", '{"family": "advkd"}', "--trajectories", shard,
             "--teacher", tmp_path / "teacher.json", "--seed", "0", "--out", tmp_path / "student", "--device", "cpu"],
            capsys,
            r"shard-00000\.safetensors: not a valid safetensors file.*truncated or corrupt", [old])


def test_foreign_file_given_as_trajectory_shard(tmp_path, capsys):
    shard = tmp_path / "shard-00000.safetensors"
    save_tensors(shard, {"weight": torch.zeros(3)})
    refused(["distill", "--method", "adv", "--block", '{"family": "advkd"}', "--trajectories", shard,
             "--teacher", tmp_path / "teacher.json", "--seed", "0", "--out", tmp_path / "student", "--device", "cpu"],
            capsys,
            r"shard-00000\.safetensors: not a trajectory shard")


def test_corrupt_student_weights(pipeline, tmp_path, capsys):
    d = tmp_path / "student"
    d.mkdir()
    (d / "student.json").write_text(json.dumps(AdvKDParams().resolve("adv", 11, 32, 1)))   # a complete recipe
    (d / "student.safetensors").write_bytes(os.urandom(256))
    old = earlier_result(tmp_path / "samples" / "seed0.npz")
    refused(_sample_argv(_card(tmp_path / "teacher.json", pipeline), tmp_path / "samples",
                         method="adv", block={"family": "advkd"}, student_dir=d), capsys,
            r"student\.safetensors: not a valid safetensors file", [old])


def test_missing_inception_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ADVKD_INCEPTION_WEIGHTS", raising=False)
    data = json.dumps({"dataset": "image-folder", "root": str(tmp_path), "resolution": 16, "channels": 3})
    card = earlier_result(tmp_path / "evaluator" / "evaluator.json")
    for weights, match in ((str(tmp_path / "nope.pt"), rf"Inception weights not found at {tmp_path / 'nope.pt'}"),
                           (None, r"no Inception weights configured: set evaluator\.inception_weights")):
        refused(["evaluator", "--evaluator", json.dumps({"source": "inception", "inception_weights": weights}),
                 "--data", data, "--seed", "0", "--border", "0", "--out", tmp_path / "evaluator", "--device", "cpu"],
                capsys, match, [card])


def test_corrupt_samples_file(judge, tmp_path, capsys):
    bad = tmp_path / "heldout.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    old = earlier_result(tmp_path / "ref" / "heldout.json")
    refused(["reference-stats", "--evaluator", judge, "--heldout", bad, "--metrics", "{}", "--out",
             tmp_path / "ref" / "heldout", "--device", "cpu"], capsys, r"heldout\.npz: not a readable image \.npz",
            [old])


def test_tampered_judge_weights(judge, tmp_path, capsys):
    w = judge.parent / "evaluator.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 1
    w.write_bytes(bytes(raw))
    save_images(tmp_path / "heldout.npz", np.zeros((8, 32, 32, 1), np.uint8))
    old = earlier_result(tmp_path / "ref" / "heldout.json")
    refused(["reference-stats", "--evaluator", judge, "--heldout", tmp_path / "heldout.npz", "--metrics", "{}",
             "--out", tmp_path / "ref" / "heldout", "--device", "cpu"], capsys,
            r"evaluator\.safetensors: sha256 .* differs from the card's", [old])


def test_image_folder_without_usable_images(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    old = earlier_result(tmp_path / "data" / "train.npz")
    data = {"dataset": "image-folder", "root": str(folder), "resolution": 16, "channels": 3}
    refused(["prepare-data", "--data", json.dumps(data), "--out", tmp_path / "data"], capsys,
            rf"image folder {folder} holds no readable image files", [old])


def test_read_only_results_directory(tmp_path):
    """The stage cannot write: a clear message naming the folder, exit 2, the folder's files untouched. Root
    ignores permission bits, so as root the command runs without the capabilities that let it (still as root, so it
    can read a checkout and a temporary folder that only root may enter, e.g. a clone under /root)."""
    out = tmp_path / "data"
    card = earlier_result(out / "data_card.json")
    os.chmod(out, 0o555)
    try:
        cmd = [sys.executable, "-m", "advkd.cli", "prepare-data", "--data",
               json.dumps({"dataset": "digits", "resolution": 8, "channels": 1, "train_count": 16}), "--out", str(out)]
        if os.geteuid() == 0:  # setpriv (util-linux): drop the capabilities that override permission bits
            caps = "-dac_override,-dac_read_search"
            cmd = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2, r.stderr
        assert f"{out}: cannot write train.npz there (Permission denied)" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert card.read_text() == "earlier result\n" and sorted(p.name for p in out.iterdir()) == ["data_card.json"]
    finally:
        os.chmod(out, 0o755)
