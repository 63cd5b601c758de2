"""The Adv-KD family: the published student's exact size, the embedded layout, its critics, config checks, and tiny
training runs that checkpoint, resume to the same weights, and learn. (What every family must do is in
test_families.py.)"""

import copy
import csv
import json
import statistics

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from advkd.families import build_method
from advkd.io import BadInputError, load_tensors, save_tensors
from advkd.students.advkd import model as adv
from advkd.students.advkd.networks import CRITICS, InferencePath, ProgressiveGenerator, PublishedCritic, _layer
from advkd.students.advkd.params import CRITIC_NETS, PRESETS, AdvKDParams, block_layout
from advkd.students.networks import UNetStudent, count


def _resolve(params: dict, available=11, resolution=32, channels=1) -> dict:
    return AdvKDParams(**params).resolve("e", available, resolution, channels)


def paper_generator(device=None):
    with torch.device(device or "cpu"):
        return ProgressiveGenerator(block_layout(11, 4, 256, PRESETS["paper"]["widths"]), 3, 3)


def test_paper_preset_parameter_counts_are_the_published_ones():
    g = paper_generator()
    assert count(g) == 2_429_937
    assert count(InferencePath(g)) == 1_721_235
    assert [b["resolution"] for b in g.layout] == [8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256]
    assert [b["width"] for b in g.layout] == list(PRESETS["paper"]["widths"])


def test_paper_preset_flops_match_published_44_6_gflop():
    from torch.utils.flop_counter import FlopCounterMode

    g = paper_generator("meta").eval()  # meta tensors: the counter sees every op without computing 44 GFLOP
    with FlopCounterMode(display=False) as fc:
        out = InferencePath(g)(torch.zeros(1, 3, 4, 4, device="meta"))
    assert out.shape == (1, 3, 256, 256)
    assert fc.get_total_flops() == pytest.approx(44.6e9, rel=0.02)


def test_nearest_upsampling_has_the_published_parameters_and_no_checkerboard():
    g = ProgressiveGenerator(block_layout(11, 4, 256, PRESETS["paper"]["widths"]), 3, 3, upsample="nearest")
    assert count(g) == count(paper_generator())
    interiors = {}
    for mode in ("transposed", "nearest"):
        conv = nn.Sequential(*_layer("up", 1, 1, mode)[:-2])  # without BatchNorm/activation
        for m in conv:
            if hasattr(m, "weight"):
                nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
        with torch.no_grad():
            interiors[mode] = conv(torch.ones(1, 1, 4, 4))[0, 0, 1:-1, 1:-1]
    # A flat input stays flat under resize-conv; the stride-2 transposed conv gives 1-, 2- and 4-tap pixels.
    assert interiors["nearest"].unique().tolist() == [9.0]
    assert interiors["transposed"].unique().tolist() == [1.0, 2.0, 4.0]


def test_embedded_heads_keep_the_published_ratio_of_head_to_image_and_eight_channels():
    """Each head renders its noise level at the published fraction of the image side (never below the 4x4 noise),
    so the noisiest states reach 4x4 heads heavily low-passed, as the authors' 8-32x shrunk PNGs did."""
    paper = [b["resolution"] for b in paper_generator("meta").layout]
    cfg = _resolve({})
    assert [b["resolution"] for b in cfg["layout"]] == [max(4, r * 32 // 256) for r in paper]
    assert [b["resolution"] for b in cfg["layout"]] == [4, 4, 4, 4, 4, 4, 8, 8, 16, 16, 32]
    assert min(b["width"] for b in cfg["layout"]) == 8


def test_heads_learn_clamped_low_passed_targets():
    state = torch.linspace(-3, 3, 32 * 32).reshape(1, 1, 32, 32)
    t = adv.head_target(state, 4)
    assert t.shape == (1, 1, 4, 4) and t.abs().max() <= 1
    assert torch.allclose(t, F.avg_pool2d(state.clamp(-1, 1), 8))


def test_embedded_every_head_and_critic_has_its_phase_shape():
    cfg = _resolve({})
    g = adv.make_generator(cfg)
    z = torch.randn(3, 1, 4, 4)
    out = g.render(z, 10, tuple(range(11)))
    for k, img in out.items():
        r = cfg["layout"][k]["resolution"]
        assert img.shape == (3, 1, r, r)
        assert img.abs().max() <= 1
        for net in CRITICS.values():
            d = net(1, r, 1, 4, cfg["critic_width"])
            assert d(img, z).shape == (3,)
    assert g(z).shape == (3, 1, 32, 32)


def test_published_critic_has_the_authors_size_per_phase():
    """The authors' critic (kd_gan.py) at each of the paper preset's head resolutions, RGB, 3x4x4 noise."""
    per_resolution = {8: 119_841, 16: 218_273, 32: 480_673, 64: 743_073, 128: 1_005_473, 256: 1_267_873}
    for r, n in per_resolution.items():
        assert count(PublishedCritic(3, r, 3, 4)) == n, r
    cfg = AdvKDParams(preset="paper").resolve("p", 11, 256, 3)
    assert cfg["critic_net"] == "published" and count(adv.make_critics(cfg, adv.make_generator(cfg))) == 6_402_539
    assert set(CRITICS) == set(CRITIC_NETS)   # the schema's enum (params.py has no torch) names every critic


def test_generator_uses_the_authors_slope_and_the_teacher_unet_keeps_the_suite_critic():
    slopes = {m.negative_slope for m in paper_generator().modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.01}
    assert _resolve({"generator": "teacher-unet"})["critic_net"] == "suite"
    assert _resolve({})["critic_net"] == "published" and _resolve({})["critic_width"] == 32


def test_critic_is_frozen_in_the_generator_step():
    """After a training step a critic's gradients are those of its own loss: the generator step passes its gradient
    through the critic without accumulating any in the critic's weights."""
    cfg = _resolve({"phases": 1, "batch_size": 4})
    torch.manual_seed(0)
    student = adv.make_student(cfg)
    phase, recipe = adv.make_phases(cfg)[0], adv.make_recipe(cfg)
    opts = adv._optimizers(student, phase, recipe)
    critic = student.critics[str(phase.heads[0])]
    seen = {}
    real_step = opts["critic"].step

    def record():
        seen.update({n: p.grad.clone() for n, p in critic.named_parameters()})
        real_step()
    opts["critic"].step = record
    z, target = torch.randn(4, 1, 4, 4), torch.rand(4, 1, 32, 32) * 2 - 1
    adv.train_step(student, phase, recipe, z, {phase.heads[0]: target}, opts["gen"], opts["critic"],
                   torch.Generator().manual_seed(0))
    assert seen and all(torch.equal(p.grad, seen[n]) for n, p in critic.named_parameters())
    assert all(p.requires_grad for p in critic.parameters())   # trainable again for the next critic step
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.generator.parameters())


def test_spectral_critic_has_no_batchnorm_and_every_layer_normalised():
    d = CRITICS["spectral"](1, 16, 1, 4)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())
    d.train()
    for _ in range(30):  # power iterations run in training forwards
        d(torch.randn(4, 1, 16, 16), torch.randn(4, 1, 4, 4))
    for m in layers:
        assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2).item() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("noise,paired", [("stored", True), ("fresh", False)])
def test_fresh_noise_is_unpaired_and_stored_noise_is_paired(noise, paired):
    """Shuffling which x_T belongs to which teacher state changes what a stored-noise run learns and nothing of a
    fresh-noise one, which draws its own noise every step."""
    cfg = _resolve({"phases": 1, "batch_size": 4, "critic": "unconditional", "noise": noise})
    x_T, targets = torch.randn(8, 1, 32, 32), torch.rand(8, 1, 1, 32, 32) * 2 - 1
    weights = []
    for xs in (x_T, x_T.flip(0)):
        torch.manual_seed(0)
        student = adv.make_student(cfg)
        seg = adv.segments(student, adv.make_phases(cfg), adv.make_recipe(cfg), xs, targets, "cpu")[0]
        _, step = seg.begin()
        step(torch.arange(4), torch.Generator().manual_seed(0))
        weights.append(torch.cat([p.detach().flatten() for p in student.generator.parameters()]))
    assert torch.equal(*weights) != paired


def test_unconditional_critic_ignores_the_noise_and_the_published_one_does_not():
    img, z1, z2 = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for critic, depends in (("conditional", True), ("unconditional", False)):
        cfg = _resolve({"noise_resolution": 8, "critic": critic})
        d = adv.make_critics(cfg, adv.make_generator(cfg))["10"]
        assert (not torch.equal(d(img, z1), d(img, z2))) == depends


@pytest.mark.parametrize("phases,expect", [(1, [32]), (4, [4, 4, 16, 32]), (11, None)])
def test_fewer_phases_still_end_at_the_image_resolution(phases, expect):
    cfg = _resolve({"phases": phases})
    assert cfg["checkpoints"][-1] == 10 and len(cfg["checkpoints"]) == phases
    res = [b["resolution"] for b in cfg["layout"]]
    assert res[-1] == 32 and (expect is None or res == expect)


def test_full_resolution_noise_has_no_upsampling():
    cfg = _resolve({"noise_resolution": "full"})
    assert all(kind == "plain" for b in cfg["layout"] for kind in b["layers"])


def _ci_config(repo_root, **methods):
    cfg = yaml.safe_load((repo_root / "experiments" / "ci.yaml").read_text())
    cfg["methods"] = methods
    return cfg


@pytest.mark.parametrize("params,key", [
    ({"family": "advkd", "phases": 5}, "methods.bad.phases"),           # ci keeps 4 checkpoints
    ({"family": "advkd", "loss": "hinge"}, "methods.bad.loss"),
    ({"family": "advkd", "upsample": "bilinear"}, "methods.bad.upsample"),
    ({"family": "advkd", "checkpoints": [0, 2]}, "methods.bad.checkpoints"),   # must end at x_0 (index 3)
    ({"family": "advkd", "heads": False}, "methods.bad.heads"),           # needs training: joint
    ({"family": "advkd", "noise_resolution": 3}, "methods.bad.noise_resolution"),
    ({"family": "advkd", "noise_resolution": 2}, "methods.bad.noise_resolution"),  # the critic's noise branch
    ({"family": "advkd", "critic_net": "patchgan"}, "methods.bad.critic_net"),
    ({"family": "advkd", "generator": "teacher-unet", "critic_net": "published"}, "methods.bad.critic_net"),
    ({"family": "advkd", "noise": "fresh"}, "methods.bad.noise"),          # conditional critic: nothing to pair
    ({"family": "advkd", "noise": "fresh", "critic": "unconditional", "loss": "both"}, "methods.bad.noise"),
    ({"family": "advkd", "reg_resolution": 12}, "methods.bad.reg_resolution"),
    ({"family": "advkd", "generator": "teacher-unet", "widths": [8, 8]}, "methods.bad.widths"),  # the UNet is fixed
    ({"family": "advkd", "preset": "paper"}, "methods.bad.preset"),       # 256x256 RGB, data is 32x32 grey
    ({"family": "advkd", "epochs": 3}, "methods.bad"),                  # unknown key
    ({"family": "denoising-student", "architecture": "progressive"}, "methods.bad.architecture"),  # not a knob
])
def test_config_rejects_bad_student_params_naming_the_key(repo_root, params, key):
    from advkd.config import validate_config

    with pytest.raises(BadInputError) as e:
        validate_config(_ci_config(repo_root, bad=params))
    assert key in str(e.value)


def test_config_accepts_every_shipped_student_method(repo_root):
    """The default scores its shipped students as they were trained: every one passes the card checks (teacher
    weights, data, distillation set, recipe, file hashes), and every Adv-KD block of ci and the default is valid."""
    from advkd.config import load_config, shipped_student_errors

    for exp in ("ci", "default"):
        cfg = load_config(repo_root / "experiments" / f"{exp}.yaml")
        assert shipped_student_errors(cfg) == []
        assert any(b["family"] == "advkd" for b in cfg["methods"].values())
    shipped = [m for m, b in cfg["methods"].items() if b.get("shipped")]
    assert shipped == ["advkd-gan-reg-long"]


# ------------------------------------------------------------------------------------------ tiny training runs

@pytest.fixture(scope="module")
def tiny_shard(tmp_path_factory):
    """24 fake runs at 1x16x16 with 3 checkpoints: states move from x_T towards a smooth function of x_T."""
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(24, 1, 16, 16, generator=g)
    x0 = torch.tanh(2 * torch.nn.functional.avg_pool2d(x_T, 3, 1, 1))
    states = torch.stack([(1 - a) * 0.3 * x_T + a * x0 for a in (0.3, 0.7, 1.0)], 1)
    path = tmp_path_factory.mktemp("traj") / "shard-00000.safetensors"
    save_tensors(path, {"x_T": x_T, "states": states, "timesteps": torch.tensor([0, 5, 9])})
    return [str(path)]


TINY = {"family": "advkd", "epochs_scale": 0.1, "batch_size": 8, "loss": "both", "lr": 1e-3}


def _distill(params, shard, out, **ctx):
    from advkd.stages.students import distill

    torch.set_num_threads(1)
    return distill("tiny", params, {"trajectories": shard, "out": str(out), "seed": 3, "progress": False, **ctx})


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_training_writes_its_files_and_resume_equals_an_uninterrupted_run(tiny_shard, tmp_path):
    """Every family resumes bit for bit (test_families.py); here with the Adv-KD state beyond the networks' weights
    that a resume must restore too: the critics, the generator's average and DiffAugment's random draws."""
    params = TINY | {"ema": 0.9, "augment": True}
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _distill(params, tiny_shard, full)["done"]
    for f in ("student.safetensors", "student.json", "loss.csv", "panel.png", "grid.png", "train.json"):
        assert (full / f).stat().st_size > 0, f
    assert not (full / "checkpoint.safetensors").exists(), "a finished run must leave no state to resume"
    r = _distill(params, tiny_shard, cut, stop_after_epochs=2)   # interrupted inside phase 1 (epochs 1, 2)
    assert not r["done"] and (cut / "checkpoint.safetensors").exists() and not (cut / "student.safetensors").exists()
    assert len(_rows(cut / "loss.csv")) == 2
    r = _distill(params, tiny_shard, cut)
    assert r["done"] and r["resumed_from"] == {"segment": 1, "epoch": 1}   # phase 1, its second epoch
    a, b = load_tensors(full / "student.safetensors"), load_tensors(cut / "student.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("critic.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _rows(full / "loss.csv") == _rows(cut / "loss.csv")


def test_training_flops_are_the_forward_and_backward_passes(tiny_shard, tmp_path):
    """A regression-only step costs its forward pass and a backward pass of about twice that: loss.csv's FLOPs,
    counted on each epoch's first step and scaled to its images, come to about 3x the sampling FLOPs per image."""
    from advkd.metrics.cost import count_flops

    _distill(TINY | {"loss": "regression", "phases": 1}, tiny_shard, tmp_path)
    summary = json.loads((tmp_path / "train.json").read_text())
    per_image = summary["train_flops_total"] / (summary["epochs_run"] * 24)
    m = build_method("tiny", {"family": "advkd"}, {"student_dir": str(tmp_path), "device": "cpu"})
    with torch.inference_mode():
        forward = count_flops(lambda: m.network(*m.network_inputs(1)))
    assert 2.7 < per_image / forward < 3.05


def test_training_notes_each_phases_step_speed_against_its_convolution_probe(tiny_shard, tmp_path):
    """For the DAG profile (issue 36, item 5): each phase's step GFLOP/s (its epochs' counted FLOPs over their
    seconds) beside the forward+backward probe of the step's own largest convolutions, in the job's clock record."""
    from advkd import jobclock

    _distill(TINY | {"phases": 2}, tiny_shard, tmp_path)
    rows = jobclock.record("distill", 0.0, 0.0, 0.0, 1.0)["notes"]["training_speed"]
    curve = list(csv.DictReader(open(tmp_path / "loss.csv")))
    assert [r["segment"] for r in rows] == [0, 1] and sum(r["epochs"] for r in rows) == len(curve)
    for r in rows:
        epochs = [c for c in curve if int(c["phase"]) == r["phase"]]
        speeds = [float(c["flops"]) / float(c["seconds"]) / 1e9 for c in epochs]
        assert r["step_gflops"] == pytest.approx(statistics.median(speeds), rel=1e-3)
        assert r["probe"].startswith("conv fwd+bwd") and r["probe_gflops"] > 0
        assert r["fraction_of_probe"] == pytest.approx(r["step_gflops"] / r["probe_gflops"])


def test_ema_student_is_the_average_not_the_last_weights(tiny_shard, tmp_path):
    # The average never feeds back into training, so the run without it ends on the EMA run's last live weights.
    _distill(TINY | {"ema": 0.9}, tiny_shard, tmp_path / "ema")
    _distill(TINY, tiny_shard, tmp_path / "live")
    saved = load_tensors(tmp_path / "ema/student.safetensors")
    live = load_tensors(tmp_path / "live/student.safetensors")
    w = "gen.blocks.0.0.0.weight"
    assert not torch.equal(saved[w], live[w])
    # BatchNorm statistics were re-measured for the averaged weights, not copied from the live generator
    bn = "gen.blocks.0.0.1.running_mean"
    assert not torch.equal(saved[bn], live[bn])


def _same_student(a, b):
    ta, tb = load_tensors(a / "student.safetensors"), load_tensors(b / "student.safetensors")
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize("change", ["lr", "trajectories"])
def test_a_checkpoint_made_for_another_run_is_not_resumed(tiny_shard, tmp_path, change, caplog):
    """Issue 10/18 item 1: an interrupted run's checkpoint, then a changed recipe (same tensor shapes) or new
    trajectories of the same count: the rerun trains afresh, says why, and equals a clean run of the new recipe."""
    old = TINY
    new, shard = dict(TINY), tiny_shard
    if change == "trajectories":
        t = load_tensors(tiny_shard[0])
        shard = [str(tmp_path / "other-shard.safetensors")]
        save_tensors(shard[0], t | {"x_T": t["x_T"].flip(0), "states": t["states"].flip(0)})
    else:
        new[change] = 0.5 * TINY.get(change, 1.0)
    _distill(old, tiny_shard, tmp_path / "cut", stop_after_epochs=2)
    assert (tmp_path / "cut/checkpoint.safetensors").exists()
    with caplog.at_level("WARNING"):
        r = _distill(new, shard, tmp_path / "cut")
    assert r["done"] and r["resumed_from"] is None
    expect = {"lr": "student.lr", "trajectories": "distillation_set_sha256"}
    assert "made for another run" in caplog.text and expect[change] in caplog.text, caplog.text
    _distill(new, shard, tmp_path / "clean")
    assert _same_student(tmp_path / "cut", tmp_path / "clean")
    assert _rows(tmp_path / "cut/loss.csv") == _rows(tmp_path / "clean/loss.csv")


def test_a_checkpoint_made_on_another_kind_of_device_is_not_resumed(tiny_shard, tmp_path, caplog):
    """A job killed on a GPU node and rerun on a CPU one would otherwise be half one, half the other."""
    from advkd.io import read_metadata

    _distill(TINY, tiny_shard, tmp_path, stop_after_epochs=2)
    ckpt = tmp_path / "checkpoint.safetensors"
    meta = read_metadata(ckpt)
    identity = json.loads(meta["identity"])
    assert identity["device"] == "cpu"
    save_tensors(ckpt, load_tensors(ckpt), metadata=meta | {"identity": json.dumps(identity | {"device": "cuda"})})
    with caplog.at_level("WARNING"):
        r = _distill(TINY, tiny_shard, tmp_path)
    assert r["resumed_from"] is None and "made for another run" in caplog.text and "device" in caplog.text


def test_a_rerun_of_a_finished_student_trains_anew(tiny_shard, tmp_path, caplog):
    """`snakemake -f` on a student: no finished checkpoint is "resumed" in no time; the same bits come from
    training again."""
    _distill(TINY, tiny_shard, tmp_path / "a")
    first = load_tensors(tmp_path / "a/student.safetensors")
    with caplog.at_level("INFO"):
        r = _distill(TINY, tiny_shard, tmp_path / "a")
    assert r["resumed_from"] is None and "resuming" not in caplog.text
    assert len(_rows(tmp_path / "a/loss.csv")) == len(r["history"]) > 0
    again = load_tensors(tmp_path / "a/student.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_diff_augment_is_seeded_differentiable_and_shape_preserving():
    from advkd.students.advkd.model import diff_augment

    x = torch.randn(5, 1, 16, 16, requires_grad=True)
    y1 = diff_augment(x, torch.Generator().manual_seed(1))
    y2 = diff_augment(x, torch.Generator().manual_seed(1))
    assert y1.shape == x.shape and torch.equal(y1, y2)
    assert not torch.equal(y1, x) and (y1 == 0).flatten(1).sum(1).min() >= 8 * 8  # a half-side cutout each
    y1.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_low_resolution_regression_leaves_detail_to_the_critic():
    from advkd.students.training import regression_loss

    target = torch.rand(2, 1, 32, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 2.0 - 1  # zero mean over every 2x2 cell
    pred = target + 0.5 * checker
    assert regression_loss("mse", pred, target) == pytest.approx(0.25)
    assert regression_loss("mse", pred, target, resolution=8) == pytest.approx(0.0, abs=1e-12)
    shifted = target + 0.5  # a change of the layout itself is still penalised
    assert regression_loss("l1", shifted, target, resolution=8) == pytest.approx(0.5)


def test_regression_only_student_reduces_its_loss(tiny_shard, tmp_path):
    params = {"family": "advkd", "loss": "regression", "noise_resolution": "full", "heads": False,
              "training": "joint", "epochs_scale": 0.4, "batch_size": 8, "lr": 3e-3, "width": 0.5}
    _distill(params, tiny_shard, tmp_path)
    reg = [float(r["reg"]) for r in _rows(tmp_path / "loss.csv")]
    assert len(reg) == 12 and reg[-1] < 0.6 * reg[0]


@pytest.mark.parametrize("output,start", [("residual", "blank"), ("x0", "noise")])
def test_teacher_initialised_unet_student_starts_where_its_output_says(repo_root, output, start):
    from advkd.teacher import load_pipeline_dir

    unet, _ = load_pipeline_dir(str(repo_root / "experiments/assets/teacher-fmnist32"))
    z = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = UNetStudent(unet.float(), 999, residual=output == "residual")(z)
    # At t=999 the teacher's noise estimate is ~x_T: as x0 that is the noise itself, as a residual ~0
    dist_to_noise = (x - z).pow(2).mean().sqrt().item()
    assert (dist_to_noise > 0.9 if start == "blank" else dist_to_noise < 0.1), dist_to_noise
    assert (x.abs().mean() < 0.1) == (start == "blank")


def test_build_refuses_a_student_of_another_family(tiny_shard, tmp_path):
    _distill(TINY | {"phases": 1, "loss": "regression"}, tiny_shard, tmp_path)
    with pytest.raises(BadInputError, match="family"):
        build_method("x", {"family": "denoising-student"}, {"student_dir": str(tmp_path), "device": "cpu"})
    block = copy.deepcopy(TINY)
    with pytest.raises(BadInputError, match="not found"):
        build_method("x", block, {"student_dir": str(tmp_path / "missing"), "device": "cpu"})
    # a student written before a parameter existed is refused by name, not guessed
    recipe = json.loads((tmp_path / "student.json").read_text())
    del recipe["critic_width"]
    (tmp_path / "student.json").write_text(json.dumps(recipe))
    with pytest.raises(BadInputError, match="older version of advkd .no critic_width"):
        build_method("x", block, {"student_dir": str(tmp_path), "device": "cpu"})


def test_each_phase_leaves_a_snapshot_with_what_training_had_cost_by_then(tiny_shard, tmp_path):
    """Quality by phase is measured afterwards from these (advkd.students.advkd.phases): the last phase's snapshot
    is the trained student, and each says the cumulative steps and FLOPs loss.csv counts up to its phase."""
    from advkd.io import read_metadata, save_tensors
    from advkd.students.advkd.phases import snapshots

    with pytest.raises(BadInputError, match="no phase snapshots"):
        snapshots(tmp_path)
    # an earlier run in this folder had more phases: its last snapshot must not pass for a phase of this run
    stale = {"gen.w": torch.zeros(1)}, {"spent": "{}", "identity": json.dumps({"another": "run"})}
    save_tensors(tmp_path / "segments" / "segment-07.safetensors", stale[0], metadata=stale[1])
    _distill(TINY, tiny_shard, tmp_path)
    assert not (tmp_path / "segments" / "segment-07.safetensors").exists()   # a fresh run clears them
    save_tensors(tmp_path / "segments" / "segment-05.safetensors", stale[0], metadata=stale[1])   # or one after it
    found = snapshots(tmp_path)
    assert [p.name for p in found] == [f"segment-{k:02d}.safetensors" for k in range(3)]
    rows = list(csv.DictReader(open(tmp_path / "loss.csv")))
    for k, path in enumerate(found):
        spent = json.loads(read_metadata(path)["spent"])
        mine = [r for r in rows if int(r["phase"]) <= k]
        assert spent["segment"] == k and spent["epochs"] == len(mine)
        assert spent["steps"] == sum(int(r["steps"]) for r in mine)
        assert spent["flops"] == pytest.approx(sum(float(r["flops"]) for r in mine), rel=1e-6)
    last, final = load_tensors(found[-1]), load_tensors(tmp_path / "student.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final if k.startswith("gen."))


def test_quality_by_phase_scores_every_phase_of_a_run_at_the_experiments_n_and_seed(judge, tmp_path, repo_root):
    """`python -m advkd.students.advkd.phases` (issue 34's figure): every finished phase's head and the teacher's
    state it was trained on, scored by the judge at the experiment's n, first sample seed and metrics block."""
    from advkd.config import load_config
    from advkd.io import save_images
    from advkd.stages.metrics import reference_stats
    from advkd.students.advkd import phases

    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(40, 1, 32, 32, generator=g)
    x0 = torch.tanh(2 * F.avg_pool2d(x_T, 5, 1, 2))
    shard = tmp_path / "shard-00000.safetensors"
    save_tensors(shard, {"x_T": x_T, "states": torch.stack([(1 - a) * 0.3 * x_T + a * x0 for a in (0.5, 1.0)], 1),
                         "timesteps": torch.tensor([0, 9])})
    _distill(TINY | {"phases": 2, "widths": [8, 8]}, [str(shard)], tmp_path / "run")
    cfg = load_config(repo_root / "experiments" / "ci.yaml")
    save_images(tmp_path / "heldout.npz", torch.randint(0, 255, (40, 32, 32, 1), generator=g).to(torch.uint8).numpy())
    reference_stats(judge, tmp_path / "heldout.npz", cfg["metrics"], tmp_path / "ref")
    phases.main(["--config", str(repo_root / "experiments" / "ci.yaml"), "--run", str(tmp_path / "run"),
                 "--trajectories", str(shard), "--evaluator", str(judge), "--reference", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "out")])
    out = json.loads((tmp_path / "out" / "run" / "phase_quality.json").read_text())
    assert out["n"] == cfg["sampling"]["n"] and out["seed"] == cfg["sampling"]["seeds"][0]
    assert [r["phase"] for r in out["rows"]] == [0, 1]
    assert all(r["student_fd"] > 0 and r["teacher_state_fd"] > 0 and r["flops"] > 0 for r in out["rows"])
    # the distance to its own target (the teacher's states at that noise level), and both image grids per phase
    assert all(r["fd_to_target"] > 0 for r in out["rows"])
    assert all((tmp_path / "out" / "run" / f"{kind}-{k:02d}.png").stat().st_size > 0
               for kind in ("phase", "target") for k in (0, 1))
    table = pd.read_csv(tmp_path / "out" / "phase_quality.csv")
    assert list(table.run) == ["run", "run"] and list(table.fd_to_target) == [r["fd_to_target"] for r in out["rows"]]
    assert (tmp_path / "out" / "phase_quality.png").stat().st_size > 0
    assert (tmp_path / "out" / "phase_losses.png").stat().st_size > 0   # the critic's losses through the phases


def test_the_losses_figure_draws_each_runs_losses_through_its_phases_and_no_critic_where_none_trained(tmp_path):
    """The report's phase_losses figure (issue 34: what the critic did where a head fell away from its targets):
    one line per loss a run logged, phase boundaries marked; the control's critic columns, all zero, draw nothing."""
    import matplotlib

    matplotlib.use("Agg")
    from advkd.students.advkd.phases import losses_figure

    cols = ["phase", "epoch", "g_adv", "reg", "critic_real", "critic_fake", "gp"]
    rows = lambda a: [[k, e, 0.69 * a, 0.01 * (k + 1), -0.01 * a, 0.02 * a, 0.5 * a]   # noqa: E731
                      for k in range(3) for e in range(2 * (k + 1))]
    for name, critic in (("published", 1), ("control", 0)):
        (tmp_path / name).mkdir()
        pd.DataFrame(rows(critic), columns=cols).to_csv(tmp_path / name / "loss.csv", index=False)
    fig = losses_figure({n: tmp_path / n / "loss.csv" for n in ("published", "control")})
    labels = [[line.get_label() for line in ax.lines if not line.get_label().startswith("_")] for ax in fig.axes]
    assert labels == [["published: g_adv", "published: reg", "control: reg"],
                      ["published: critic_real", "published: critic_fake"], ["published: gp"]]
    # phases 1 and 2 begin after 2 and 2 + 4 epochs
    assert sorted({line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == "-"
                   and len(set(line.get_xdata())) == 1}) == [1.5, 5.5]
