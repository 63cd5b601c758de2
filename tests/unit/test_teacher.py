import json
from pathlib import Path

import numpy as np
import pytest
import torch

from advkd import teacher as T
from advkd.families import FAMILIES, params_of
from advkd.io import BadInputError, load_tensors, sha256_file
from advkd.rng import trajectory_batch
from advkd.samplers import run_sampler, scheduler_spec
from advkd.stages.teacher import write_shard
from advkd.students.common import load_trajectories
from advkd.trajectories import checkpoint_steps

SHIPPED = Path(__file__).resolve().parents[2] / "experiments" / "assets" / "teacher-fmnist32"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return T.build_unet("digits8").eval(), T.build_scheduler().config


def test_published_checkpoint_spacing():
    ddpm = checkpoint_steps(1000, 11)
    assert ddpm == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999]
    from diffusers import DDPMScheduler
    s = DDPMScheduler(**T.DDPM_SCHEDULE)
    s.set_timesteps(1000)
    # states right after the steps at t = 999, 899, ..., 99, then x_0
    assert [int(s.timesteps[i]) for i in ddpm] == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99, 0]
    assert checkpoint_steps(50, 11) == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49]
    assert checkpoint_steps(50, 1) == [49]
    # More states than steps would repeat a step (and write a shard with duplicate checkpoints): refused up front,
    # also when the trajectories stage is called without a validated config.
    with pytest.raises(BadInputError, match="trajectories.checkpoints: 11 checkpoints need"):
        checkpoint_steps(10, 11)


def test_paper_teacher_architecture_is_exact():
    unet = T.build_unet("celebahq256")
    assert sum(p.numel() for p in unet.parameters()) == 113_673_219


@pytest.mark.parametrize("family", sorted(f for f, fam in FAMILIES.items() if fam.kind == "sampler"))
def test_samplers_are_deterministic_per_seed(tiny, family):
    unet, cfg = tiny
    name, family = family, scheduler_spec(family)
    a = run_sampler(unet, family, 4, cfg, n=6, seed=3, batch_size=4, device="cpu", progress=False)
    b = run_sampler(unet, family, 4, cfg, n=6, seed=3, batch_size=4, device="cpu", progress=False)
    c = run_sampler(unet, family, 4, cfg, n=6, seed=4, batch_size=4, device="cpu", progress=False)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (6, 1, 8, 8) and a[3]["nfe_per_sample"] == params_of({"family": name, "steps": 4}).nfe


def test_trajectory_shard_roundtrip_and_corruption(tiny, tmp_path):
    unet, cfg = tiny
    traj = {"sampler": "ddim-6", "count": 5, "checkpoints": 3, "spacing": "uniform", "shard_size": 3,
            "dtype": "float32"}
    p0, p1 = tmp_path / "s0.safetensors", tmp_path / "s1.safetensors"
    ddim = (scheduler_spec("ddim"), int(traj["sampler"].split("-")[1]))
    write_shard(unet, cfg, traj, ddim, 0, 0, 8, "cpu", p0, progress=False)
    write_shard(unet, cfg, traj, ddim, 1, 0, 8, "cpu", p1, progress=False)
    t = load_trajectories([p0, p1], checkpoints=3)
    assert t["x_T"].shape == (5, 1, 8, 8) and t["states"].shape == (5, 3, 1, 8, 8)
    assert t["timesteps"].tolist() == [0, 3, 5]
    # the last state is the sampler's output x_0 for the stored x_T
    x0, xT, _, _ = run_sampler(unet, scheduler_spec("ddim"), 6, cfg, 3, seed=0, batch_size=8, device="cpu",
                               progress=False, draws=lambda b: trajectory_batch(0, 0, b))
    assert torch.allclose(t["states"][:3, -1], x0) and torch.equal(t["x_T"][:3], xT)
    p1.write_bytes(p1.read_bytes()[:200])
    with pytest.raises(BadInputError, match="s1.safetensors.*truncated or corrupt"):
        load_trajectories([p0, p1])


def test_training_resumes_to_the_same_weights(tmp_path):
    from advkd.data import load_split
    images = load_split({"dataset": "digits", "resolution": 8, "channels": 1, "train_count": 256}, "train")["images"]
    kw = dict(architecture="digits8", batch_size=64, lr=5e-4, warmup_steps=2, ema_decay=0.9995, seed=1, device="cpu")
    T.train(images, tmp_path / "a", epochs=2, **kw)
    T.train(images, tmp_path / "b", epochs=1, **kw)   # "killed" after one epoch ...
    info = T.train(images, tmp_path / "b", epochs=2, **kw)   # ... and resumed
    a = load_tensors(tmp_path / "a" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_tensors(tmp_path / "b" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert info["epochs"] == 2 and len((tmp_path / "b" / "loss.csv").read_text().splitlines()) == 3


def test_pretrained_offline_without_copy_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BadInputError, match="never downloads.*huggingface-cli download google/ddpm-celebahq-256"):
        T.load_pipeline_dir("google/ddpm-celebahq-256")


def test_pickle_checkpoint_is_refused_not_executed(tmp_path):
    unet_dir = tmp_path / "pipe" / "unet"
    unet_dir.mkdir(parents=True)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, unet_dir / "diffusion_pytorch_model.bin")
    (unet_dir / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(BadInputError, match="refuses to load"):
        T.load_pipeline_dir(str(tmp_path / "pipe"))
    assert not marker.exists()


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shipped teacher not present")
def test_shipped_teacher_matches_its_card():
    card = json.loads((SHIPPED / "teacher.json").read_text())
    w = SHIPPED / "unet" / "diffusion_pytorch_model.safetensors"
    assert sha256_file(w) == card["weights_sha256"]
    unet, sched = T.load_pipeline_dir(str(SHIPPED))
    assert sum(p.numel() for p in unet.parameters()) == card["parameters"]
    assert sched.config.num_train_timesteps == 1000 and sched.config.beta_schedule == "linear"
    assert np.isclose(sched.config.beta_start, 1e-4) and np.isclose(sched.config.beta_end, 0.02)


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shipped teacher not present")
def test_weights_swapped_under_a_card_are_refused(tmp_path):
    """Every result downstream of a card was made with the weights it hashes: new weights in the same folder (a
    fresh download, a pulled asset) must not be mixed into the experiment."""
    import shutil

    from advkd.io import save_tensors
    from advkd.stages.teacher import teacher_card

    pipe = tmp_path / "pipe"
    shutil.copytree(SHIPPED, pipe)
    card = tmp_path / "teacher.json"
    teacher_card({"source": "pretrained", "pretrained": str(pipe)}, card)
    T.load_teacher(card)
    weights = pipe / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_tensors(weights)
    first = next(iter(tensors))
    save_tensors(weights, tensors | {first: tensors[first] + 1})
    with pytest.raises(BadInputError, match="not the ones this card"):
        T.load_teacher(card)


def test_resume_survives_deleted_curve_and_ignores_foreign_checkpoints(tmp_path, caplog):
    from advkd.data import load_split
    images = load_split({"dataset": "digits", "resolution": 8, "channels": 1, "train_count": 128}, "train")["images"]
    kw = dict(architecture="digits8", batch_size=64, lr=5e-4, warmup_steps=2, ema_decay=0.9995, seed=1, device="cpu")
    T.train(images, tmp_path, epochs=1, **kw)
    (tmp_path / "loss.csv").unlink()          # Snakemake removes a failed job's declared outputs
    info = T.train(images, tmp_path, epochs=2, **kw)
    assert [int(r.split(",")[0]) for r in (tmp_path / "loss.csv").read_text().splitlines()[1:]] == [1, 2]
    assert info["epochs"] == 2
    with caplog.at_level("WARNING"):   # a shorter run than the checkpoint's: afresh, not refused
        info = T.train(images, tmp_path, epochs=1, **kw)
    assert info["epochs"] == 1 and "trained more than the 1 asked for" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        info = T.train(images, tmp_path, epochs=1, **(kw | {"lr": 1e-3}))   # other recipe: start afresh
    assert info["epochs"] == 1 and len((tmp_path / "loss.csv").read_text().splitlines()) == 2
    assert "made for another run (differs in: lr)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):   # other images of the same count: afresh too
        info = T.train(255 - images, tmp_path, epochs=2, **(kw | {"lr": 1e-3}))
    assert info["epochs"] == 2 and "differs in: images_sha256" in caplog.text


def test_published_budget_states_sit_at_the_authors_noise_levels(repo_root):
    """The authors kept the DDPM-1000 state right after steps t = 999, 899, ..., 99 (x_998, ..., x_98) and x_0;
    experiments/published-budget.yaml's sampler must leave its kept states at exactly those levels."""
    from advkd.config import read_yaml, validate_config
    from advkd.samplers import make_scheduler
    from advkd.trajectories import kept_levels

    cfg = validate_config(read_yaml(repo_root / "experiments/published-budget.yaml"), "pb", require_inputs=False)
    tr = cfg["trajectories"]
    family, steps = tr["sampler"].split("-")
    keep = checkpoint_steps(int(steps), tr["checkpoints"], tr["spacing"])
    assert kept_levels(tr["timesteps"], keep) == [*range(998, 97, -100), -1]
    train_config = json.loads((repo_root / "experiments/assets/teacher-fmnist32/scheduler/scheduler_config.json")
                              .read_text())
    sched = make_scheduler(scheduler_spec(family), int(steps), train_config, tr["timesteps"])
    # the solver's state after step i is at sigmas[i + 1]: the teacher's sigma at each kept level, 0 at x_0
    ac = sched.alphas_cumprod
    want = [((1 - ac[t]) / ac[t]).sqrt().item() if t >= 0 else 0.0 for t in kept_levels(tr["timesteps"], keep)]
    assert [sched.sigmas[i + 1].item() for i in keep] == pytest.approx(want, rel=1e-5)
