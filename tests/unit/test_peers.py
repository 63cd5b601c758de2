"""The multi-step distillation peers (progressive, consistency, reflow) beyond the common family tests: what each
method promises by construction or after a little training, on a random-weight 1x8x8 teacher."""

import copy

import pytest
import torch

from advkd.families import build_method, method_errors, trained_folder, trainers
from advkd.io import load_tensors, save_tensors
from advkd.rng import sample_batch
from advkd.samplers import run_sampler, scheduler_spec
from advkd.students.consistency import model as cd
from advkd.students.consistency.params import ConsistencyParams
from advkd.students.progressive import model as pd
from advkd.students.progressive.params import ProgressiveParams
from advkd.students.reflow import model as rf
from advkd.students.reflow.params import ReflowParams
from advkd.students.vp import DDIM, ddim_step, teacher_grid, teacher_parts
from advkd.teacher import load_teacher


@pytest.fixture(scope="module")
def teacher_card(tmp_path_factory):
    from advkd.stages.teacher import teacher_card

    card = tmp_path_factory.mktemp("peers") / "teacher.json"
    teacher_card({"source": "random", "architecture": "digits8", "seed": 0}, card)
    return str(card)


def _shard(path, x_T, x_0):
    states = torch.stack([x_T * 0.5, x_0], 1)
    save_tensors(path, {"x_T": x_T, "states": states, "timesteps": torch.tensor([0, 1])})
    return [str(path)]


def test_the_grid_steps_are_the_suites_ddim_sampler(teacher_card):
    unet, train_config, _ = load_teacher(teacher_card)
    x, _, _, _ = run_sampler(unet, DDIM, 4, train_config, 3, seed=5, batch_size=3, device="cpu", progress=False)
    grid = teacher_grid(train_config, 4)
    z = torch.randn((3, 1, 8, 8), generator=sample_batch(5, 0))
    with torch.no_grad():
        for k in range(4):
            z = ddim_step(grid, unet, z, torch.full((3,), k))
    assert torch.allclose(z, x, atol=1e-5)


@pytest.mark.parametrize("output", ["v", "eps"])
def test_consistency_function_is_the_identity_at_the_smallest_time(teacher_card, output):
    unet, parts, _ = teacher_parts(teacher_card)
    f = cd.make_function({**parts, "grid_steps": 6, "output": output}, unet)
    z = torch.randn(4, 1, 8, 8)
    last = torch.full((4,), f.grid.steps - 1)
    a, _ = f.grid.alpha_sigma(last)
    with torch.no_grad():
        assert torch.equal(f(z, last), z / a)
        assert not torch.allclose(f(z, torch.zeros(4, dtype=torch.long)), z / f.grid.alpha_sigma(torch.zeros(
            4, dtype=torch.long))[0])


def _teacher_x0(f, unet, z, k):
    a, s = f.grid.alpha_sigma(k)
    return ((z - s * unet(z, f.grid.timesteps[k]).sample) / a).clamp(-f.grid.clip, f.grid.clip)


def test_the_eps_consistency_function_starts_at_the_teachers_x0_estimate(teacher_card):
    # Song et al.'s c_out on a noise-predicting UNet made f(x_T) half the noise; f must start at the teacher's
    # one-step denoiser where c_skip is small (the noisiest states), so one step from x_T is an image estimate.
    unet, parts, _ = teacher_parts(teacher_card)
    f = cd.make_function({**parts, "grid_steps": 6, "output": "eps"}, unet)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    first = torch.zeros(4, dtype=torch.long)
    a, s = f.grid.alpha_sigma(first)
    with torch.no_grad():
        x0 = (z - s * unet(z, f.grid.timesteps[first]).sample) / a
        assert float(f.c_skip(first).max()) < 0.01
        assert torch.allclose(f(z, first), x0, atol=0.01 * float(x0.abs().max()))


def test_the_denoiser_stage_brings_the_v_function_to_the_teachers_x0_estimate(teacher_card, tmp_path):
    """The v-network starts from the eps teacher's weights, so its x_0 reading is wrong until the denoiser stage
    has taught it the teacher's (clipped) one-step estimate: after it, f at the noisiest state is nearer."""
    unet, parts, _ = teacher_parts(teacher_card)
    g = torch.Generator().manual_seed(1)
    x_T, x_0 = torch.randn(64, 1, 8, 8, generator=g), torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    shard = _shard(tmp_path / "shard-00000.safetensors", x_T, x_0)
    block = {"family": "consistency-distillation", "grid_steps": 6, "denoiser_epochs": 4, "epochs": 1,
             "batch_size": 16, "lr": 1e-3, "target_ema": 0.0}
    torch.set_num_threads(1)
    params = ConsistencyParams.from_block(block)
    before = cd.make_function({**parts, "grid_steps": 6, "output": "v"}, copy.deepcopy(unet))
    r = cd.ConsistencyDistillation().train("cd", params, {"trajectories": shard, "teacher": teacher_card,
                                                          "out": str(tmp_path), "seed": 0, "progress": False,
                                                          "stop_after_epochs": 4})
    assert [row["stage"] for row in r["history"]] == ["denoiser"] * 4
    after = cd.make_function({**parts, "grid_steps": 6, "output": "v"}, copy.deepcopy(unet))
    tensors = load_tensors(tmp_path / "checkpoint.safetensors")
    after.net.load_state_dict({k[len("online."):]: v for k, v in tensors.items() if k.startswith("online.")})
    first = torch.zeros(64, dtype=torch.long)
    z = torch.randn(64, 1, 8, 8, generator=g)
    with torch.no_grad():
        want = _teacher_x0(before, unet, z, first)
        err_before = (before(z, first) - want).pow(2).mean()
        err_after = (after(z, first) - want).pow(2).mean()
    assert err_after < 0.7 * err_before, (err_after, err_before)   # 0.53 measured


def test_a_progressive_round_halves_the_steps_and_learns_its_teachers_two_steps(teacher_card, tmp_path):
    g = torch.Generator().manual_seed(0)
    x_T, x_0 = torch.randn(192, 1, 8, 8, generator=g), torch.rand(192, 1, 8, 8, generator=g) * 2 - 1
    shard = _shard(tmp_path / "shard-00000.safetensors", x_T, x_0)
    # few epochs of many steps: every epoch writes a checkpoint of all the round's students
    params = ProgressiveParams(teacher_steps=4, min_steps=2, epochs_per_round=2, batch_size=8, lr=1e-3)
    torch.set_num_threads(1)
    r = pd.ProgressiveDistillation().train("pd", params, {"trajectories": shard, "teacher": teacher_card,
                                                          "out": str(tmp_path), "seed": 0, "progress": False})
    assert r["done"] and [row["nfe"] for row in r["history"]][::2] == [4, 2]
    block = {"family": "progressive-distillation", "teacher_steps": 4, "min_steps": 2}
    four, two = (build_method(f"pd-{k}", block | {"steps": k}, {"student_dir": str(tmp_path), "device": "cpu"})
                 for k in (4, 2))
    assert (four.nfe, two.nfe) == (4, 2)
    grid = teacher_grid(teacher_parts(teacher_card)[1]["scheduler_config"], 4)
    with torch.no_grad():
        want = pd.ddim_sample(grid, four.network, x_T, 4)
        trained = pd.ddim_sample(grid, two.network, x_T, 2)
        untrained = pd.ddim_sample(grid, four.network, x_T, 2)   # the round's starting point
    assert (trained - want).pow(2).mean() < 0.5 * (untrained - want).pow(2).mean()


def test_reflow_trained_on_one_pair_reproduces_it_in_one_euler_step(teacher_card, tmp_path):
    g = torch.Generator().manual_seed(1)
    x_T, x_0 = torch.randn(1, 1, 8, 8, generator=g), torch.rand(1, 1, 8, 8, generator=g) * 2 - 1
    shard = _shard(tmp_path / "shard-00000.safetensors", x_T.repeat(160, 1, 1, 1), x_0.repeat(160, 1, 1, 1))
    torch.set_num_threads(1)
    rf.Reflow().train("rf", ReflowParams(epochs=4, batch_size=16, lr=2e-3),
             {"trajectories": shard, "teacher": teacher_card, "out": str(tmp_path), "seed": 0, "progress": False})
    m = build_method("rf", {"family": "reflow"}, {"student_dir": str(tmp_path), "device": "cpu"})
    with torch.no_grad():
        one = rf.euler(m.network, x_T, 1)
    assert (one - x_0).pow(2).mean() < 0.01 * (x_T - x_0).pow(2).mean()


@pytest.mark.parametrize("family,steps", [("consistency-distillation", 4), ("reflow", 2)])
def test_more_sampling_steps_call_the_network_that_often(teacher_card, tmp_path, family, steps):
    """Rows differing in steps share one training run (trainers) and each samples with its own NFE."""
    from advkd.families import FAMILIES

    fam = FAMILIES[family]
    block = {"family": family, **fam.params.example}
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    shard = _shard(tmp_path / "shard-00000.safetensors", torch.randn(8, 1, 8, 8, generator=g),
                   torch.rand(8, 1, 8, 8, generator=g) * 2 - 1)
    fam.load().train("a", fam.params.from_block(block), {"trajectories": shard, "teacher": teacher_card,
                                                           "out": str(tmp_path), "seed": 0, "progress": False})
    assert trainers({"a": block, "b": block | {"steps": steps}}) == {"a": "a", "b": "a"}
    m = build_method("b", block | {"steps": steps}, {"student_dir": str(tmp_path), "device": "cpu"})
    calls = []
    hook = m.network.register_forward_hook(lambda *a: calls.append(1))
    images, _ = m.generate(2, seed=0, batch_size=2, progress=False)
    hook.remove()
    assert m.nfe == steps and len(calls) == steps and images.shape == (2, 8, 8, 1)


def _config(**methods):
    return {"data": {"resolution": 8, "channels": 1}, "trajectories": {"checkpoints": 2, "count": 16},
            "methods": methods}


@pytest.mark.parametrize("block,key", [
    ({"family": "progressive-distillation", "teacher_steps": 6}, "methods.x.teacher_steps"),
    ({"family": "progressive-distillation", "teacher_steps": 8, "min_steps": 3}, "methods.x.min_steps"),
    ({"family": "progressive-distillation", "teacher_steps": 8, "min_steps": 2, "steps": 1}, "methods.x.steps"),
    ({"family": "progressive-distillation", "epochs_per_round": 0}, "methods.x.epochs_per_round"),
    ({"family": "consistency-distillation", "grid_steps": 1}, "methods.x.grid_steps"),
    ({"family": "consistency-distillation", "grid_steps": 4, "steps": 5}, "methods.x.steps"),
    ({"family": "consistency-distillation", "epochs": 0}, "methods.x.epochs"),
    ({"family": "reflow", "epochs": 0}, "methods.x.epochs"),
    ({"family": "reflow", "steps": 0}, "methods.x.steps"),
])
def test_bad_peer_blocks_are_refused_by_name(block, key):
    errs = method_errors(_config(x=block))
    assert errs and all(key in e for e in errs), errs


def test_trainers_group_rows_by_everything_but_sampling_and_scoring_keys():
    rf_ = {"family": "reflow", "epochs": 3}
    methods = {"ddim-10": {"family": "ddim", "steps": 10}, "rf-1": rf_, "rf-2": rf_ | {"steps": 2, "seeds": [0]},
               "rf-long": rf_ | {"epochs": 6}, "pd-2": {"family": "progressive-distillation", "steps": 2}}
    assert trainers(methods) == {"rf-1": "rf-1", "rf-2": "rf-1", "rf-long": "rf-long", "pd-2": "pd-2"}


def test_a_stage_finds_the_run_the_dag_trained_whatever_the_order_of_the_methods(tmp_path):
    pd_ = {"family": "progressive-distillation"}
    methods = {"pd-4": pd_ | {"steps": 4}, "pd-1": pd_}   # config order; a stage gets them sorted
    assert trainers(methods) == trainers(dict(sorted(methods.items()))) == {"pd-1": "pd-1", "pd-4": "pd-1"}
    (tmp_path / "pd-4").mkdir()   # left by an earlier config that trained pd-4 alone: not this run
    assert trained_folder(tmp_path, "pd-4", methods) is None
    (tmp_path / "pd-1").mkdir()
    assert trained_folder(tmp_path, "pd-1", methods) == trained_folder(tmp_path, "pd-4", methods) == tmp_path / "pd-1"


SHIPPED_TEACHER = {"source": "shipped", "shipped": "experiments/assets/teacher-fmnist32"}


@pytest.fixture(scope="module")
def real_teacher(tmp_path_factory):
    from advkd.stages.teacher import teacher_card

    card = tmp_path_factory.mktemp("real") / "teacher.json"
    teacher_card(SHIPPED_TEACHER, card)
    return load_teacher(card)


def test_sigma_samplers_solve_the_teachers_ode(real_teacher):
    """Through the teacher wrapper, an EDM-preconditioned Euler over Karras sigmas and Heun over the teacher's
    sigmas reach the image DPM-Solver reaches from the same x_T (the probability-flow ODE of one teacher): far
    closer than two unrelated teacher samples, and with the network calls their families declare."""
    from advkd.families import FAMILIES, params_of

    unet, cfg, _ = real_teacher
    torch.set_num_threads(2)
    ref, _, _, _ = run_sampler(unet, scheduler_spec("dpmsolver"), 30, cfg, 4, seed=3, batch_size=4, device="cpu",
                               progress=False)
    unrelated = (ref - ref.roll(1, 0)).abs().mean()
    for family, steps in (("edm-euler", 60), ("heun", 30)):
        x, _, _, stats = run_sampler(unet, scheduler_spec(family), steps, cfg, 4, seed=3, batch_size=4,
                                     device="cpu", progress=False)
        assert (x - ref).abs().mean() < 0.3 * unrelated, family
        assert stats["nfe_per_sample"] == params_of({"family": family, "steps": steps}).nfe
        assert FAMILIES[family].kind == "sampler"


def test_the_wrapper_maps_a_teachers_sigma_back_to_its_timestep():
    import json as _json
    from pathlib import Path

    from advkd.samplers import TeacherDenoiser, teacher_sigmas

    cfg = _json.loads((Path(__file__).resolve().parents[2] / SHIPPED_TEACHER["shipped"] / "scheduler" /
                       "scheduler_config.json").read_text())
    wrapper, sigmas = TeacherDenoiser(None, cfg), teacher_sigmas(cfg)
    for t in (0, 1, 250, 998, 999):
        assert float(wrapper.sigma_to_t(sigmas[t])) == pytest.approx(t, abs=1e-3)
    mid = (sigmas[500].log() + sigmas[501].log()) / 2
    assert float(wrapper.sigma_to_t(mid.exp())) == pytest.approx(500.5, abs=1e-3)


def test_a_sampler_with_more_calls_than_steps_cannot_make_the_distillation_set(repo_root):
    from advkd.config import read_yaml, semantic_errors, validate_config

    cfg = validate_config(read_yaml(repo_root / "experiments/ci.yaml"), "ci", require_inputs=False)
    cfg["trajectories"]["sampler"] = "heun-5"
    assert any("trajectories.sampler: heun-5 makes more network calls" in e for e in semantic_errors(cfg))


def test_the_peer_yardstick_times_the_stock_diffusers_loop_beside_the_suites(teacher_card):
    """The timing rule's peer ratio: the registry's peer-yardstick family (DDIM) as the stock diffusers loop a user
    would write and as the suite's loop, timed in the same rounds; stock / stock is 1 by construction."""
    from advkd.families import peer_yardstick
    from advkd.stages.cost import peer_ratio

    assert peer_yardstick() == "ddim"
    out = peer_ratio(teacher_card, 2, 2, "cpu", compile=False, rounds=2, threads=1)
    assert out["method"] == "ddim-2" and out["stock"].startswith("diffusers.DDIMScheduler.step")
    rows = {r["variant"]: r for r in out["rows"]}
    assert set(rows) == {"stock diffusers loop, eager", "suite loop, eager"}
    assert rows["stock diffusers loop, eager"]["ratio"] == 1.0 and rows["suite loop, eager"]["ratio"] > 0
