"""scripts/compare_runs.py, the judge of the SLURM test: equal runs pass, any computed difference fails,
and what only measures the machine (timings, host, provenance) is not compared."""

import importlib.util
import json

import numpy as np
import pytest


@pytest.fixture
def compare(repo_root):
    spec = importlib.util.spec_from_file_location("compare_runs", repo_root / "scripts" / "compare_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_run(root, images, fd, seconds, host):
    (root / "samples" / "ddim-5").mkdir(parents=True)
    np.savez(root / "samples" / "ddim-5" / "seed0.npz", images=images, seed=np.int64(0))
    (root / "metrics" / "quality").mkdir(parents=True)
    (root / "metrics" / "quality" / "ddim-5.json").write_text(json.dumps(
        {"fd": fd, "n": 16, "classes": [3, 5], "seconds": seconds, "images_per_s": 16 / seconds,
         "latency_batch1": {"median_s": seconds / 16}, "provenance": {"host": host, "git_commit": host}}))


def test_same_numbers_pass_despite_timings_and_host(compare, tmp_path):
    images = np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3)
    write_run(tmp_path / "a", images, 1.25, 3.0, "node1")
    write_run(tmp_path / "b", images.copy(), 1.25, 9.0, "node2")
    assert compare.compare_trees(tmp_path / "a", tmp_path / "b") == []


def test_a_changed_number_pixel_or_file_fails(compare, tmp_path):
    images = np.zeros((1, 4, 4, 3), np.uint8)
    write_run(tmp_path / "a", images, 1.25, 3.0, "node1")
    other = images.copy()
    other[0, 0, 0, 0] = 1
    write_run(tmp_path / "b", other, 1.2500001, 3.0, "node1")
    (tmp_path / "b" / "samples" / "ddim-5" / "seed1.npz").write_bytes(
        (tmp_path / "b" / "samples" / "ddim-5" / "seed0.npz").read_bytes())
    problems = compare.compare_trees(tmp_path / "a", tmp_path / "b")
    assert any("fd: 1.25 vs 1.2500001" in p for p in problems)
    assert any("seed0.npz: array 'images' differs" in p for p in problems)
    assert any("seed1.npz: only in" in p for p in problems)
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    # --common: the file only one run has is listed, not a difference; the changed ones still are
    common = compare.compare_trees(tmp_path / "a", tmp_path / "b", common=True)
    assert not any("only in" in p for p in common) and any("differs" in p for p in common)


def test_tensors_compare_as_bytes_whatever_their_dtype(compare, tmp_path):
    import torch
    from safetensors.torch import save_file

    for side, last in (("a", 1.0), ("b", 1.0), ("c", 1.0078125)):
        save_file({"step": torch.tensor(3), "x": torch.tensor([0.5, last], dtype=torch.bfloat16)},
                  tmp_path / f"{side}.safetensors")
    assert compare.compare_arrays(tmp_path / "a.safetensors", tmp_path / "b.safetensors") == []
    assert compare.compare_arrays(tmp_path / "a.safetensors", tmp_path / "c.safetensors") == ["array 'x' differs"]


def test_every_key_is_a_result_or_a_measurement_never_both(compare, tmp_path):
    """One rule sorts keys: a new field is a difference until it is classified, a result is never skipped because
    a measurement's word appears inside its name, and text results are compared too."""
    assert not [k for k in compare.RESULTS if compare.is_measured(k)]
    assert compare.is_measured("fraction_of_best_peak") and compare.is_measured("images_per_s")
    assert not compare.is_measured("nfe_per_sample") and not compare.is_measured("candidates")
    for side, extra in (("a", {"judge_sha256": "aa"}), ("b", {"judge_sha256": "bb", "new_field": 1})):
        (tmp_path / side / "metrics").mkdir(parents=True)
        (tmp_path / side / "metrics" / "q.json").write_text(json.dumps({"fd": 1.0, "seconds": 2.0, **extra}))
    problems = compare.compare_trees(tmp_path / "a", tmp_path / "b")
    assert any("new_field: unclassified key" in p for p in problems), problems
    assert any("judge_sha256: 'aa' vs 'bb'" in p for p in problems), problems
