"""Do two runs of one experiment agree? Used by scripts/slurm_test.sh (SLURM run vs local run, same seeds).

    python scripts/compare_runs.py results_a/ci results_b/ci
    python scripts/compare_runs.py --common results_old/default results_new/ablations

--common compares only the files both trees hold (two experiments that share some methods, e.g. before and after
methods moved between experiments) and lists the others without counting them as differences.

Arrays must match bit for bit: every .npz (samples, data) and .safetensors (weights, trajectories) in either
tree, except training checkpoints (resumable state that also logs wall-clock time per epoch). JSON under samples/
and metrics/ must hold the same keys and the same values, except what measures the
machine rather than the method (timings, speeds, memory, host, provenance: MEASURED below); every other key must
be a known result (RESULTS), whose values are compared whatever their type, so that no new field is silently
skipped or wrongly compared. Exit status 1 on any difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Every key of a compared JSON is one of two kinds, decided here and nowhere else:
# - MEASURED: its value depends on where and when the job ran (timings, speeds, peaks, memory, host, device,
#   provenance, the absolute folder of the teacher); not compared, nor anything below it. A key is MEASURED when one
#   of its words (split at "_") is in MEASURED_WORDS, or it is in MEASURED_KEYS; whole words, so that a result
#   named like `nfe_per_sample` or `candidates` is not swallowed by a substring.
# - RESULTS: compared (numbers, text, flags, null), and so is everything below it.
# A key that is neither is itself a difference ("unclassified"), so a new field is sorted the first time a run
# writes it (tests/e2e/test_dag.py checks every key of the ci run) instead of slipping through on either side; no key
# may be both (tests/unit/test_compare_runs.py).
MEASURED_WORDS = frozenset(
    "provenance host device s second seconds gflops peak latency memory throughput compiled extrapolated measured "
    "time timing date elapsed wall speed".split())
MEASURED_KEYS = frozenset({"teacher"})


def is_measured(key) -> bool:
    key = str(key)
    return key in MEASURED_KEYS or bool(MEASURED_WORDS & set(key.lower().split("_")))


RESULTS = frozenset(
    "all_hold batch batch_size checkpoints checks class_coverage classes classes_covered coverage "
    "critic_parameters density entropy_bits entropy_normalized epochs family fd feature_condition_number "
    "fd_judge2 judge2_sha256 feature_dim flops_counter flops_per_call flops_per_image generator_parameters "
    "fd_infinity fd_infinity_slope fd_infinity_sizes fd_infinity_judge2 fidelity_psnr fidelity_distance "
    "fidelity_relative fidelity_distance_judge2 fidelity_relative_judge2 teacher_samples "
    "heldout_class_coverage "
    "heldout_inception_score histogram holds images inception_score inception_score_splits "
    "inception_score_std_splits info judge_kind judge_sha256 kid kid_std_subsets kid_subsets "
    "kid_subset_size kind largest_share loss mean median_distance median_ratio method metric n nearest_k nfe "
    "nfe_per_sample noise_resolution per_seed percentile real_to_train reference_size share_below_threshold std "
    "grid_steps teacher_steps rounds "
    "targets threshold "
    "parameters_all parameters_inference parameters_training_only shards phases pr_reference_n precision "
    "real_source recall reference reference_n repeats rows samples scored_by seed set source steps than threads "
    "threshold training warmup worse "
    # quality by phase (advkd.students.advkd.phases)
    "run phase segment checkpoint head_resolution flops fd_to_target student_fd student_recall student_classes "
    "student_top_class teacher_state_fd teacher_state_recall teacher_state_classes teacher_state_top_class".split())
JSON_DIRS = ("samples", "metrics")


def unclassified(obj, prefix="") -> list[str]:
    """Key paths in a JSON tree that are neither MEASURED nor RESULTS (the walk stops at MEASURED keys)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if is_measured(k):
                continue
            if k not in RESULTS:
                out.append(path)
            out += unclassified(v, path)
    elif isinstance(obj, list):
        for v in obj:
            out += unclassified(v, f"{prefix}[]")
    return sorted(set(out))


def _arrays(path: Path) -> dict:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    import torch
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        # uint8 views keep bfloat16 and friends comparable as bytes in numpy.
        return {k: (str(t.dtype), tuple(t.shape), t.reshape(-1).contiguous().view(torch.uint8).numpy())
                for k in f.keys() for t in [f.get_tensor(k)]}


def compare_arrays(a: Path, b: Path) -> list[str]:
    x, y = _arrays(a), _arrays(b)
    out = [f"array {k!r} only in one run" for k in sorted(x.keys() ^ y.keys())]
    for k in sorted(x.keys() & y.keys()):
        u, v = x[k], y[k]
        if isinstance(u, tuple):
            same = u[:2] == v[:2] and np.array_equal(u[2], v[2])
        else:
            same = u.dtype == v.dtype and u.shape == v.shape and u.tobytes() == v.tobytes()
        if not same:
            out.append(f"array {k!r} differs")
    return out


def _leaves(obj, prefix=""):
    """(path, value) of every leaf (number, text, flag, null) of a JSON tree outside MEASURED keys."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not is_measured(k):
                yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def compare_json(a: Path, b: Path) -> tuple[list[str], int]:
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    out = [f"{k}: unclassified key (add it to MEASURED_WORDS, MEASURED_KEYS or RESULTS in scripts/compare_runs.py)"
           for k in sorted(set(unclassified(ja)) | set(unclassified(jb)))]
    x, y = dict(_leaves(ja)), dict(_leaves(jb))
    out += [f"{k}: only in one run" for k in sorted(x.keys() ^ y.keys())]
    for k in sorted(x.keys() & y.keys()):
        # Same seeds, same threads: equal means equal, NaN included.
        both_nan = isinstance(x[k], float) and isinstance(y[k], float) and x[k] != x[k] and y[k] != y[k]
        if not (x[k] == y[k] or both_nan):
            out.append(f"{k}: {x[k]!r} vs {y[k]!r}")
    return out, len(x)


def compare_trees(a: Path, b: Path, common: bool = False) -> list[str]:
    def files(root):
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file()
                and ((p.suffix in (".npz", ".safetensors") and not p.name.startswith("checkpoint"))
                     or (p.suffix == ".json" and p.relative_to(root).parts[0] in JSON_DIRS))}

    fa, fb = files(a), files(b)
    only = [f"{p}: only in {a if p in fa else b}" for p in sorted(fa ^ fb)]
    problems = [] if common else only
    if common and only:
        print(f"compare_runs: {len(only)} files in one tree only, not compared (--common):\n  " + "\n  ".join(only))
    counts = {"arrays": 0, "json": 0, "values": 0}
    for rel in sorted(fa & fb):
        if rel.suffix == ".json":
            diffs, n = compare_json(a / rel, b / rel)
            counts["json"] += 1
            counts["values"] += n
        else:
            diffs = compare_arrays(a / rel, b / rel)
            counts["arrays"] += 1
        problems += [f"{rel}: {d}" for d in diffs]
    print(f"compare_runs: {counts['arrays']} array files bit for bit, {counts['json']} JSON files "
          f"({counts['values']} values), {len(problems)} differences")
    if not fa & fb:
        problems.append("nothing to compare")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    common = "--common" in argv
    argv = [a for a in argv if a != "--common"]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = compare_trees(Path(argv[0]), Path(argv[1]), common)
    for p in problems:
        print("  DIFF", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
