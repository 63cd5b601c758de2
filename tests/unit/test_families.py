"""One test class over every registered method family, the way diffusers tests every scheduler with one class: build
a tiny method of the family (training it first where the family is a student), sample, count its parameters and
FLOPs, save and load it, and reject a bad parameter by name. A new family passes these by adding its registry line
and an `example` block to its Params; nothing here names a family."""

import dataclasses
import json

import pytest
import torch
from jsonschema import Draft202012Validator

from advkd.families import FAMILIES, block_schema, build_method, method_errors
from advkd.io import load_tensors, save_tensors
from advkd.metrics.cost import count_flops

RES, CHECKPOINTS = 8, 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A random-weight 1x8x8 teacher (digits8) and a distillation set of 16 fake runs with 3 checkpoints."""
    from advkd.stages.teacher import teacher_card

    root = tmp_path_factory.mktemp("family")
    card = root / "teacher.json"
    teacher_card({"source": "random", "architecture": "digits8", "seed": 0}, card)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(16, 1, RES, RES, generator=g)
    x0 = torch.tanh(2 * torch.nn.functional.avg_pool2d(x_T, 3, 1, 1))
    states = torch.stack([(1 - a) * 0.3 * x_T + a * x0 for a in (0.3, 0.7, 1.0)], 1)
    shard = root / "shard-00000.safetensors"
    save_tensors(shard, {"x_T": x_T, "states": states, "timesteps": torch.tensor([0, 1, 2])})
    return {"root": root, "card": str(card), "shard": str(shard), "students": {}}


def _block(fam):
    return {"family": fam.name, **fam.params.example}


def _method(world, fam):
    """The family's tiny method, trained once per module where the family is a student."""
    ctx = {"teacher": world["card"], "device": "cpu"}
    if fam.kind == "student":
        out = world["root"] / fam.name
        if fam.name not in world["students"]:
            out.mkdir()
            torch.set_num_threads(1)
            result = fam.load().train(fam.name, fam.params.from_block(_block(fam)),
                                        {"trajectories": [world["shard"]], "teacher": world["card"], "out": str(out),
                                         "seed": 0, "device": "cpu", "progress": False})
            world["students"][fam.name] = result
        ctx["student_dir"] = str(out)
    return build_method(fam.name, _block(fam), ctx)


def _config(**methods):
    return {"data": {"resolution": RES, "channels": 1}, "trajectories": {"checkpoints": CHECKPOINTS, "count": 16},
            "methods": methods}


@pytest.mark.parametrize("name", sorted(FAMILIES))
class TestFamily:
    def test_schema_is_generated_from_the_params_dataclass(self, name):
        fam = FAMILIES[name]
        props = fam.params.schema()
        fields = {f.name: f.default for f in dataclasses.fields(fam.params)}
        assert props.keys() == fields.keys()
        for key, default in fields.items():
            assert props[key]["default"] == default and props[key]["description"], key
            # a default is either a value the schema accepts or None for a key the user must give
            assert Draft202012Validator(props[key]).is_valid(default) or key in block_schema(fam)["required"], key

    def test_example_block_is_valid(self, name):
        assert method_errors(_config(x=_block(FAMILIES[name]))) == []

    def test_a_bad_parameter_is_refused_by_name(self, name):
        fam = FAMILIES[name]
        errs = method_errors(_config(x=_block(fam) | {"bogus_knob": 1}))
        assert len(errs) == 1 and "methods.x.bogus_knob" in errs[0] and f"family {name}" in errs[0]
        key = next(iter(fam.params.schema()))
        errs = method_errors(_config(x=_block(fam) | {key: {"not": "a value"}}))
        assert errs and all(f"methods.x.{key}" in e for e in errs)

    def test_samples_with_its_declared_nfe(self, world, name):
        fam = FAMILIES[name]
        m = _method(world, fam)
        assert m.family == name and m.nfe == fam.params.from_block(_block(fam)).nfe
        calls = []
        hook = m.network.register_forward_hook(lambda *a: calls.append(1))
        images, stats = m.generate(3, seed=0, batch_size=3, progress=False)
        hook.remove()
        assert images.shape == (3, RES, RES, 1) and images.dtype.name == "uint8"
        assert len(calls) == m.nfe and stats["nfe_per_sample"] == m.nfe
        again, _ = m.generate(3, seed=0, batch_size=3, progress=False)
        assert (again == images).all()

    def test_counts_parameters_and_flops(self, world, name):
        m = _method(world, FAMILIES[name])
        assert 0 < m.inference_parameters <= m.all_parameters
        assert m.inference_parameters == sum(p.numel() for p in m.network.parameters())
        with torch.inference_mode():
            assert count_flops(lambda: m.network(*m.network_inputs(1))) > 0

    def test_saves_and_loads(self, world, name):
        fam = FAMILIES[name]
        m = _method(world, fam)
        if fam.kind != "student":
            pytest.skip("a sampler stores nothing of its own: the teacher is its weights")
        out = world["root"] / name
        saved = load_tensors(out / "student.safetensors")
        net = {f"gen.{k}": v for k, v in m.network.state_dict().items()}
        loaded = {k: v for k, v in saved.items() if k in net}
        assert loaded and all(torch.equal(loaded[k], net[k]) for k in loaded)
        assert json.loads((out / "student.json").read_text())["family"] == name
        header = (out / "loss.csv").read_text().splitlines()[0].split(",")
        assert header[-len(fam.loss_columns) - 2:] == [*fam.loss_columns, "flops", "seconds"]
        assert not (out / "checkpoint.safetensors").exists()

    def test_an_interrupted_training_resumes_to_the_uninterrupted_result(self, world, name, tmp_path):
        """A student stopped after its first epoch (as a kill leaves it: the last checkpoint on disk) and trained
        again ends with the uninterrupted run's weights and loss curve, bit for bit (tests/e2e kills the DAG)."""
        fam = FAMILIES[name]
        if fam.kind != "student":
            pytest.skip("a sampler trains nothing")
        _method(world, fam)
        full = world["students"][name]
        assert len(full["history"]) >= 2, "the example block must train at least 2 epochs"
        params = fam.params.from_block(_block(fam))
        ctx = {"trajectories": [world["shard"]], "teacher": world["card"], "out": str(tmp_path), "seed": 0,
               "device": "cpu", "progress": False}
        torch.set_num_threads(1)
        assert not fam.load().train(name, params, ctx | {"stop_after_epochs": 1})["done"]
        resumed = fam.load().train(name, params, ctx)
        assert resumed["done"] and resumed["resumed_from"]
        without_time = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
        assert without_time(resumed["history"]) == without_time(full["history"])
        a = load_tensors(world["root"] / name / "student.safetensors")
        b = load_tensors(tmp_path / "student.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_jobs_get_resolved_blocks_so_a_changed_default_reruns_exactly_its_jobs():
    """Rule params carry every parameter (defaults filled), never the scoring keys; a key set to its default and a
    key left out are the same block, and so one training run."""
    from advkd.families import resolved_block, trainers
    from advkd.students.reflow.params import ReflowParams

    block = {"family": "reflow", "steps": 2, "n": 100, "seeds": [0]}
    assert resolved_block(block) == {"family": "reflow", **ReflowParams(steps=2).as_dict()}
    assert resolved_block(block, sampling=False) == {"family": "reflow", **ReflowParams().training_dict()}
    assert "steps" not in resolved_block(block, sampling=False)
    assert trainers({"a": {"family": "reflow"}, "b": {"family": "reflow", "epochs": 12, "steps": 2},
                     "c": {"family": "reflow", "epochs": 13}}) == {"a": "a", "b": "a", "c": "c"}
