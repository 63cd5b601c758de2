"""The summary table from finished results: which rows are starred, which columns a small-n row leaves empty, the
noise-floor row, and the ratios against the reference method."""

import json
import math
from pathlib import Path

import pytest

from advkd.io import write_json
from advkd.stages.report import collect, display_table, footnotes

SAMPLER = {"family": "ddim", "steps": 10}


def _result(root, method, block, gflops, latency_ms, images_per_s, fds, classes=10, recall=0.6, kid_only=False,
            kind="sampler", judge2=2.0):
    """One method's cost JSON and its per-seed quality JSONs, as the cost and quality rules write them."""
    if block is not None:
        write_json(root / "metrics" / "cost" / f"{method}.json", {
            "method": method, "family": block["family"], "kind": kind, "nfe": block.get("steps", 1),
            "parameters_inference": 1e6, "parameters_all": 1e6, "parameters_training_only": 0,
            "flops_per_image": gflops * 1e9,
            "device": "cpu (test, 2 threads)", "threads": 2, "provenance": {"method": block}})
        path = root / "metrics" / "timing.json"
        timing = json.loads(path.read_text()) if path.exists() else {"timing": {}}
        timing["timing"][method] = {
            "latency_s_per_image_batch1": {"median": latency_ms / 1e3, "q1": latency_ms / 1e3 * 0.95,
                                           "q3": latency_ms / 1e3 * 1.05, "repeats": 10},
            "images_per_s": {"median": images_per_s, "q1": images_per_s * 0.95, "q3": images_per_s * 1.05,
                             "repeats": 10}, "throughput_batch": 16, "extrapolated": False}
        speed = timing.setdefault("sampling_speed", {"methods": {}, "probe_gflops": {"sgemm 2048": 100.0},
                                                     "rounds": 10, "threads": 1, "theoretical_peak": None})
        speed["methods"][method] = {
            "kind": kind, "batch_size": 25, "nfe": block.get("steps", 1), "compiled": kind == "sampler",
            "images_per_s": {"median": images_per_s, "q1": images_per_s * 0.95, "q3": images_per_s * 1.05},
            "achieved_gflops": gflops * images_per_s, "peak_gflops": 100.0, "peak_probe": "sgemm 2048",
            "fraction_of_peak": gflops * images_per_s / 100.0, "extrapolated": False}
        timing |= {"device": "cpu (test, 2 threads)", "threads": 2, "timing_warmup_rounds": 1}
        write_json(path, timing)
    for seed, fd in enumerate(fds):
        n_dep = dict.fromkeys(("fd", "fd_judge2", "inception_score", "inception_score_std_splits", "precision",
                               "recall", "class_coverage")) if kid_only else {
            "fd": fd, "fd_judge2": judge2 * fd, "inception_score": 5.0, "inception_score_std_splits": 0.1,
            "precision": 0.7, "recall": recall, "class_coverage": {"classes_covered": classes, "largest_share": 0.2}}
        write_json(root / "metrics" / "quality" / method / f"seed{seed}.json", {
            "method": method, "seed": seed, "n": 50 if kid_only else 500, "kid": fd / 1000,
            "kid_std_subsets": fd / 1e4, "reference": "test", **n_dep})


@pytest.fixture
def results(tmp_path):
    _result(tmp_path, "ddpm-1000", {"family": "ddpm", "steps": 1000}, 550.0, 6000.0, 0.2, [30.0], kid_only=True)
    _result(tmp_path, "ddim-10", SAMPLER, 5.5, 60.0, 16.0, [9.0, 10.0, 11.0])
    _result(tmp_path, "ddim-20", SAMPLER | {"steps": 20}, 11.0, 120.0, 8.0, [9.5, 10.5, 11.5])  # not better
    _result(tmp_path, "dpm-10", {"family": "dpmsolver", "steps": 10}, 5.5, 60.0, 16.0, [9.5, 10.1, 10.7])
    _result(tmp_path, "good-ddim-40", SAMPLER | {"steps": 40}, 22.0, 240.0, 4.0, [4.0, 4.1, 4.2], judge2=5.0)
    _result(tmp_path, "collapsed", {"family": "denoising-student", "epochs": 3}, 0.5, 6.0, 160.0, [3.0, 3.1, 3.2],
            classes=7, kind="student")
    _result(tmp_path, "real", None, 0, 0, 0, [2.5, 2.6, 2.7])
    return tmp_path


def test_the_front_stars_only_rows_better_beyond_the_spread(results):
    df = collect(results, "ddpm-1000").set_index("method")
    # ddim-20 costs twice ddim-10 and its FD is within ddim-10's spread: dominated. ddim-10 and dpm-10 cost the
    # same and their FDs overlap: neither dominates the other. good-ddim-40 is clearly better than both.
    assert df.pareto_flops.to_dict() == {"ddpm-1000": False, "ddim-10": True, "ddim-20": False, "dpm-10": True,
                                         "good-ddim-40": True, "collapsed": False, "real": False}
    assert df.pareto_throughput["ddim-10"] and not df.pareto_throughput["ddim-20"]


def test_a_method_removed_from_the_experiment_leaves_the_tables(results):
    # dpm-10's results stay on disk from an earlier run of the experiment; it is no longer one of its methods
    methods = ["ddpm-1000", "ddim-10", "ddim-20", "good-ddim-40", "collapsed"]
    assert set(collect(results, "ddpm-1000", methods).method) == {*methods, "real"}
    assert "dpm-10" in set(collect(results, "ddpm-1000").method)   # no list (a folder on its own): every result
    with pytest.raises(FileNotFoundError, match="unipc-5"):
        collect(results, "ddpm-1000", [*methods, "unipc-5"])


def test_a_collapsed_row_is_marked_and_never_starred(results):
    df = collect(results, "ddpm-1000")
    row = df.set_index("method").loc["collapsed"]
    assert row.collapsed and not row.pareto_flops and not row.pareto_throughput   # best FD, cheapest, 7 classes
    shown = display_table(df).set_index("family").loc["denoising-student", "method"]
    assert shown == "collapsed (collapsed)" and "*" not in shown


def test_small_n_rows_show_kid_only_and_real_is_the_noise_floor(results):
    df = collect(results, "ddpm-1000")
    disp = display_table(df).set_index(df.method)
    assert (disp.loc["ddpm-1000", ["FD", "IS", "precision", "recall", "classes"]] == "—").all()
    assert disp.loc["ddpm-1000", "KID"] == "0.03 ± n/a (1 seed)"
    assert disp.loc["real", "FD"] == "2.60 ± 0.10" and disp.loc["real", "GFLOPs/img"] == ""
    assert df.kind.iloc[0] == "real"   # the floor heads the table


def test_three_ratios_against_the_reference(results):
    df = collect(results, "ddpm-1000").set_index("method")
    assert df.flop_ratio["ddim-10"] == pytest.approx(100.0)          # 550 / 5.5 GFLOPs, exact
    assert df.throughput_ratio["ddim-10"] == pytest.approx(80.0)     # 16 / 0.2 images/s
    assert df.speedup["ddim-10"] == pytest.approx(100.0)             # 6000 / 60 ms at batch 1
    assert math.isnan(df.flop_ratio["real"])
    disp = display_table(df.reset_index()).set_index(df.index)
    assert disp.loc["ddim-10", "throughput ratio"] == "80x (72x-88x)"   # with the spread of both IQRs


def test_the_judges_rank_agreement_and_the_pairs_that_flip(results):
    """Judge 2 doubles every FD except good-ddim-40's (x5: 20.5, above ddim-10's 20 and dpm-10's 20.2)."""
    df = collect(results, "ddpm-1000")
    agree = df.attrs["judges"]
    assert agree["rows"] == 6 and 0 < agree["spearman"] < 1   # ddpm-1000 has no FD: left out
    assert sorted(map(sorted, agree["flips"])) == [["ddim-10", "good-ddim-40"], ["dpm-10", "good-ddim-40"]]
    assert display_table(df).set_index(df.method).loc["ddim-10", "FD judge 2"] == "20.00 ± 2.00"


def test_the_caption_names_the_judge_region_and_reference(results):
    write_json(results / "evaluator" / "evaluator.json", {"source": "shipped", "kind": "classifier", "border": 2,
                                                         "sha256": "ab" * 32, "architecture": {"features": 128}})
    write_json(results / "metrics" / "reference" / "evaluator" / "test.json", {"n": 5000, "source": "data/test.npz"})
    df = collect(results, "ddpm-1000")
    note = footnotes(df, df.attrs["scoring"])
    assert "comparable only within its judge (the shipped classifier judge, 128-d features, sha256 abab" in note
    assert "2-pixel zero border" in note and "test half (5,000 images)" in note


def test_the_caption_says_where_the_floor_and_the_speeds_come_from(results):
    write_json(results / "evaluator" / "evaluator.json", {"source": "shipped", "kind": "classifier",
                                                         "sha256": "ab" * 32})
    write_json(results / "metrics" / "reference" / "evaluator" / "test.json", {"n": 5000})
    timing = json.loads((results / "metrics" / "timing.json").read_text())
    timing["timing"]["ddpm-1000"]["extrapolated"] = True   # one network call x 1000, both at batch 1 and in bulk
    write_json(results / "metrics" / "timing.json", timing)
    df = collect(results, "ddpm-1000")
    note = footnotes(df, df.attrs["scoring"])
    # scored on the test half: the floor is the validation half; a tuning experiment's floor is training images
    assert "real = images of the validation half (held out from all training)" in note
    assert "images of the training split" in footnotes(df, df.attrs["scoring"] | {"real_source": "train"})
    assert "batch 16" in note and "after 1 warm-up round(s)" in note and "2 threads), eager" in note
    shown = display_table(df).set_index(df.method)
    # the mark sits on the row: its images/s and ratios are extrapolated too, not only its latency
    assert shown.loc["ddpm-1000", "method"] == "ddpm-1000 ‡" and "‡" not in shown.loc["ddpm-1000", "latency b=1 (ms)"]


def test_a_resumed_run_has_no_cpu_seconds_rather_than_its_last_invocations(tmp_path):
    from advkd.stages.report import training_cost

    bench = tmp_path / "bench.tsv"
    bench.write_text("s\tcpu_time\n10.0\t9.5\n")   # Snakemake's benchmark: the job's last invocation
    summary = {"train_flops_total": 1e12, "train_seconds_total": 100.0, "resumed_from": None}
    write_json(tmp_path / "run" / "train.json", summary)
    assert training_cost(tmp_path / "run", bench)["train_cpu_seconds"] == 9.5
    write_json(tmp_path / "run" / "train.json", summary | {"resumed_from": {"segment": 3, "epoch": 2}})
    cost = training_cost(tmp_path / "run", bench)
    assert math.isnan(cost["train_cpu_seconds"]) and cost["train_flops"] == 1e12   # FLOPs count every epoch


def test_knob_table_gives_each_family_only_its_own_knobs():
    import pandas as pd

    from advkd.stages.report import knob_blocks

    knobs = pd.DataFrame({"family": ["a", "a", "b", "b"], "method": ["a1", "a2", "b1", "b2"],
                          "adv_weight": [0.1, 0.2, None, None], "NFE": [1, 1, 1, 1], "FD": ["1", "2", "3", "4"],
                          "epochs": [None, None, 6, 12]})
    a, b = knob_blocks(knobs)
    assert list(a.columns) == ["family", "method", "adv_weight", "NFE", "FD"]
    assert list(b.columns) == ["family", "method", "epochs", "NFE", "FD"]


def test_students_differing_only_in_budget_form_one_compute_curve(results, tmp_path):
    from advkd.stages.report import compute_curves, fig_training_compute

    ds = {"family": "denoising-student", "batch_size": 64}
    # ds-e71-20k: the same recipe at a larger budget, but learnt from another teacher-run set (published-budget's
    # 20,000 runs): a point of its own, not the next point of ds-e5's line
    for name, block, flops, teacher_runs in [
            ("ds-e5", ds | {"epochs": 5}, 1e12, "a"), ("ds-e20", ds | {"epochs": 20}, 4e12, "a"),
            ("ds-l1-e5", ds | {"epochs": 5, "regression": "l1"}, 1e12, "a"),
            ("ds-e71-20k", ds | {"epochs": 71}, 2e15, "b")]:
        _result(results, name, block, 0.5, 6.0, 160.0, [20.0, 21.0, 22.0], kind="student")
        write_json(results / "students" / name / "train.json", {
            "train_flops_total": flops, "train_seconds_total": flops / 1e10,
            "run_identity": {"distillation_set_sha256": teacher_runs * 64}})
    df = collect(results, "ddpm-1000")
    curves = {label: list(c.method) for label, c in compute_curves(df)}
    assert curves == {"denoising-student: ds-e5, ds-e20": ["ds-e5", "ds-e20"], "ds-l1-e5": ["ds-l1-e5"],
                      "ds-e71-20k": ["ds-e71-20k"]}
    assert display_table(df.set_index("method").loc[["ds-e20"]].reset_index())["training TFLOP"].tolist() == ["4"]
    assert [p.name for p in fig_training_compute(df, tmp_path / "figs")] == ["training_compute.png",
                                                                            "training_compute.pdf"]


def test_every_row_says_what_recipe_it_is(results):
    df = collect(results, "ddpm-1000").set_index("method")
    assert df.recipe.to_dict() == {"ddpm-1000": "sampler", "ddim-10": "sampler", "ddim-20": "sampler",
                                   "dpm-10": "sampler", "good-ddim-40": "sampler", "collapsed": "peer",
                                   "real": "real"}
    assert display_table(df.reset_index()).set_index(df.index).loc["collapsed", "recipe"] == "peer"


@pytest.mark.parametrize(("block", "recipe"), [
    ({"family": "advkd", "epochs_scale": 0.16}, "published"),
    ({"family": "advkd"}, "published"),
    ({"family": "advkd", "loss": "regression"}, "control"),
    ({"family": "advkd", "loss": "regression", "lr": 0.001}, "deviation"),
    ({"family": "advkd", "generator": "teacher-unet", "loss": "both"}, "deviation"),
    ({"family": "advkd", "batch_size": 16}, "deviation"),
    ({"family": "reflow"}, "peer"),
    ({"family": "ddim", "steps": 10}, "sampler"),
])
def test_recipe_classes_follow_the_published_defaults(block, recipe):
    from advkd.families import recipe_class

    assert recipe_class(block) == recipe


def test_the_competing_rows_have_their_own_rank_agreement(results):
    """Without the real row and the collapsed one, four rows remain; their two flips with good-ddim-40 stay."""
    agree = collect(results, "ddpm-1000").attrs["judges"]
    assert agree["rows_scored"] == 4 and agree["spearman_scored"] < agree["spearman"]


def test_the_theoretical_peak_is_shown_only_where_it_bounds_every_probe(tmp_path):
    import pandas as pd

    from advkd.stages.report import theoretical_peak_holds, write_speed_tables

    def speed(peaks, theory):
        return pd.DataFrame({"method": [f"ddim-{10 + i}" for i in range(len(peaks))], "kind": "sampler",
                             "batch_size": 25, "threads": 1, "compiled": True, "nfe": 10, "images_per_s": 50.0,
                             "images_per_s_q1": 49.0, "images_per_s_q3": 51.0, "achieved_gflops": 80.0,
                             "peak_gflops": peaks, "peak_probe": "sgemm 2048",
                             "fraction_of_peak": [80.0 / p for p in peaks], "theoretical_gflops": theory,
                             "fraction_of_theoretical_peak": 80.0 / theory, "extrapolated": False, "device": "cpu"})

    assert theoretical_peak_holds(speed([100.0, 120.0], 150.0))
    assert not theoretical_peak_holds(speed([100.0, 160.0], 150.0))   # one probe beats it: no upper bound
    write_speed_tables(speed([100.0, 160.0], 150.0), [tmp_path], rounds=10)
    md = (tmp_path / "sampling_speed.md").read_text()
    assert "of theoretical" not in md.split("\n\n")[0] and "no upper bound" in md   # the column goes, every row
    write_speed_tables(speed([100.0, 120.0], 150.0), [tmp_path], rounds=10)
    table = (tmp_path / "sampling_speed.md").read_text().split("\n\n")[0]
    assert "of theoretical" in table and "—" not in table


def test_the_caption_quotes_how_a_shipped_students_recipe_was_chosen(results, tmp_path):
    """A shipped student's card says whether its recipe was a validation pick and which distillation set it learnt
    from; the caption repeats both, so that a reader cannot take a recipe no validation rule picked for one that
    was, nor a student distilled from 20,000 teacher runs for one of this experiment's set."""
    folder = tmp_path / "shipped-ds"
    write_json(folder / "card.json", {"selection": "no validation pick: every candidate collapsed.",
                                      "trajectories": {"count": 20000, "sampler": "dpmsolver-21"}})
    _result(results, "ds-long", {"family": "denoising-student", "shipped": str(folder)}, 0.5, 6.0, 160.0,
            [20.0, 21.0, 22.0], kind="student")
    note = footnotes(collect(results, "ddim-10"))
    assert note.endswith(" ds-long (shipped, learnt from 20,000 teacher runs by dpmsolver-21): no validation pick: "
                         "every candidate collapsed.")
    # the runs its training used, where the recipe took fewer than the set holds (max_runs)
    write_json(folder / "train.json", {"train_flops_total": 1e12, "train_seconds_total": 1.0,
                                       "trajectory_runs": 5000})
    assert "(shipped, learnt from 5,000 teacher runs by dpmsolver-21)" in footnotes(collect(results, "ddim-10"))


def test_every_figure_the_registry_names_has_a_caption(repo_root):
    """The report rule declares report_figures' list as outputs with workflow/report/<name>.rst as caption, and the
    report stage draws that same list: a figure a family adds needs its caption there."""
    from advkd.families import FAMILIES, report_figures

    names = set(report_figures(set(FAMILIES) - {f for f, fam in FAMILIES.items() if fam.kind == "sampler"},
                               scored=True, fidelity=True, phases=True))
    assert {"fd_vs_flops", "latency", "training_compute", "teacher_fidelity", "phase_quality"} <= names
    missing = sorted(n for n in names if not (repo_root / "workflow" / "report" / f"{n}.rst").is_file())
    assert not missing, f"no caption workflow/report/<name>.rst for {missing}"
    assert report_figures(set(), scored=False, fidelity=False) == ["params_flops", "latency"]


def test_the_report_draws_exactly_the_figures_the_rule_declares(results, tmp_path):
    """A scored experiment without student families: the quality and cost figures and nothing else (the rule would
    fail on a declared figure not drawn; a figure drawn but not declared would be an untracked output)."""
    from advkd.families import report_figures
    from advkd.stages.report import report

    out = tmp_path / "paper"
    (results / "students").mkdir(exist_ok=True)
    drawn = {Path(p).stem for p in report(results, out)["figures"]}
    assert drawn <= set(report_figures({"denoising-student"}, scored=True, fidelity=False))
    assert {"fd_vs_flops", "fd_vs_throughput", "fd_vs_nfe", "params_flops", "latency"} <= drawn


def test_a_report_that_fails_leaves_the_earlier_tables_and_figures_as_they_were(results, tmp_path):
    """`make figures` on results an older advkd wrote (no sampling_speed block) stops with an error naming the
    file; the paper folder keeps every earlier file unchanged, none half replaced, and no staging folder is left."""
    from advkd.io import BadInputError
    from advkd.stages.report import report

    out = tmp_path / "paper"
    (results / "students").mkdir(exist_ok=True)
    report(results, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    tables = {p.name: p.read_bytes() for p in (results / "tables").iterdir()}
    _result(results, "new-ddim-5", SAMPLER | {"steps": 5}, 2.7, 30.0, 32.0, [20.0, 21.0, 22.0])   # a row to add
    timing = json.loads((results / "metrics" / "timing.json").read_text())
    del timing["sampling_speed"]
    write_json(results / "metrics" / "timing.json", timing)
    with pytest.raises(BadInputError, match="timing.json has no sampling_speed block"):
        report(results, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert {p.name: p.read_bytes() for p in (results / "tables").iterdir()} == tables
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not list(results.glob(".*report-tmp"))
