"""`advkd <stage> ...`: one thin subcommand per stage; each parses arguments and calls one plain function.

The DAG passes each stage its slice of the validated config as JSON (so Snakemake reruns exactly the jobs
whose parameters changed); people can call the same commands by hand.

Each command imports its stage when it runs, the one place in the package that imports inside functions: the
stages pull in torch, diffusers and clean-fid (seconds), which `advkd --help` and a mistyped argument should not
wait for (tests/unit/test_imports.py allows it here only).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .io import BadInputError


def _setup(a):
    if not hasattr(a, "device"):   # a stage without --device runs no network on a GPU: it need not wait for torch
        return
    import torch

    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    # fp32 means fp32 on GPUs too (no TF32 in matmuls or convolutions): numbers comparable across devices
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _device(a):
    from .teacher import pick_device

    return pick_device(a.device)


def cmd_prepare_data(a):
    from .config import block_defaults, load_config
    from .stages.data import prepare_data

    # by hand, --data may leave keys out: the schema's defaults fill them, as they do in an experiment
    data = block_defaults("data") | json.loads(a.data) if a.data else load_config(a.config)["data"]
    prepare_data(data, a.out)


def cmd_train_teacher(a):
    from .stages.teacher import train_teacher

    data = {"dataset": a.dataset, "root": a.data_root, "resolution": a.resolution, "channels": a.channels}
    info = train_teacher(a.images or data, a.out, architecture=a.architecture, epochs=a.epochs,
                         batch_size=a.batch_size, lr=a.lr, warmup_steps=a.warmup_steps, ema_decay=a.ema_decay,
                         seed=a.seed, device=_device(a), max_minutes=a.max_minutes,
                         cfg_for_provenance={k: v for k, v in vars(a).items() if k != "func"})
    print({k: info[k] for k in ("epochs", "steps", "final_loss", "train_seconds_this_run")})


def cmd_teacher(a):
    from .stages.teacher import teacher

    card = teacher(json.loads(a.teacher), a.out, trained_dir=a.trained)
    print({k: card[k] for k in ("source", "pipeline", "parameters", "flops_per_call")})


def cmd_sample(a):
    from .families import build_method
    from .stages.sample import sample

    device = _device(a)
    method = build_method(a.method, json.loads(a.block), {"teacher": a.teacher, "device": device,
                                                         "student_dir": a.student_dir, "compile": a.compile})
    out = Path(a.out)
    stats = sample(method, a.n, a.seed, a.batch_size, out.with_suffix(".npz"), out.with_suffix(".json"),
                          device, a.shard, a.shard_size)
    print(json.dumps({k: stats[k] for k in ("method", "n", "start", "seconds", "images_per_s", "achieved_gflops",
                                            "peak_gflops", "fraction_of_peak")}))


def cmd_real_samples(a):
    from .stages.sample import real_samples

    out = Path(a.out)
    real_samples(a.images, a.n, a.seed, out.with_suffix(".npz"), out.with_suffix(".png"), a.grid)
    print(json.dumps({"n": a.n, "seed": a.seed, "from": a.images}))


def cmd_merge_samples(a):
    from .stages.sample import merge_samples

    out = Path(a.out)
    stats = merge_samples(a.shards, a.n, out.with_suffix(".npz"), out.with_suffix(".png"), out.with_suffix(".json"),
                          a.grid)
    print(json.dumps({k: stats[k] for k in ("method", "n", "shards", "seconds", "images_per_s")}))


def cmd_trajectories(a):
    from .stages.teacher import trajectories

    stats = trajectories(a.teacher, json.loads(a.params), a.shard, a.seed, a.batch_size, _device(a), a.out)
    print(json.dumps(stats))


def cmd_report(a):
    from .stages.report import report

    reference = a.reference
    if a.config:
        from .config import load_config

        reference = load_config(a.config)["report"]["reference"]
    summary = report(a.results, a.out, reference)
    print(json.dumps(summary, indent=1))


def cmd_evaluator(a):
    from .stages.metrics import evaluator

    card = evaluator(json.loads(a.evaluator), json.loads(a.data), a.out, a.train, a.heldout, a.seed,
                     _device(a), command=" ".join(["advkd", *sys.argv[1:]]), border=a.border)
    print(json.dumps({k: card.get(k) for k in ("source", "sha256", "heldout_accuracy", "feature_condition_number")}))


def cmd_second_judge(a):
    from .stages.metrics import second_judge

    card = second_judge(json.loads(a.judge), json.loads(a.data), a.out, a.train, a.heldout, a.seed, _device(a),
                        command=" ".join(["advkd", *sys.argv[1:]]), border=a.border)
    print(json.dumps({k: card.get(k) for k in ("source", "sha256", "heldout_mse", "feature_condition_number")}))


def cmd_reference_stats(a):
    from .stages.metrics import reference_stats

    card = reference_stats(a.evaluator, a.heldout, json.loads(a.metrics), a.out, _device(a))
    print(json.dumps({k: card[k] for k in ("n", "feature_dim", "feature_condition_number")}))


def cmd_quality(a):
    from .stages.metrics import quality

    row = quality(a.method, a.samples, a.seed, a.evaluator, a.reference, json.loads(a.metrics), a.out,
                  _device(a), cfg=json.loads(a.cfg) if a.cfg else None, scored_by=a.scored_by,
                  judge2_json=a.judge2, judge2_reference=a.judge2_reference, teacher_npz=a.teacher_samples)
    print(json.dumps({k: row[k] for k in ("method", "seed", "n", "fd", "kid", "inception_score")}))


def cmd_cost(a):
    from .stages.cost import cost, cost_context

    ctx = cost_context(a.teacher, _device(a), a.student_dir, a.checkpoints)
    row = cost(a.method, json.loads(a.block), ctx, json.loads(a.cost), a.out, cfg=json.loads(a.cfg or "null"))
    print(json.dumps({k: row[k] for k in ("method", "nfe", "flops_per_image", "peak_memory_mb")}))


def cmd_timing(a):
    from .stages.cost import timing

    out = timing(json.loads(a.blocks), a.teacher, a.students, a.checkpoints, _device(a), json.loads(a.cost), a.out,
                 cfg=json.loads(a.cfg or "null"), sampling=json.loads(a.sampling) if a.sampling else None)
    print(json.dumps({m: round(r["latency_s_per_image_batch1"]["median"], 6) for m, r in out["timing"].items()}))


def cmd_memorisation(a):
    from .stages.metrics import memorisation

    samples = dict(s.split("=", 1) for s in a.samples)
    row = memorisation(a.method, samples, a.trajectories, a.train, a.real, a.evaluator, a.seed, a.out, _device(a))
    print(json.dumps({"method": a.method, "share_below_threshold": row["share_below_threshold"]}))


def cmd_sanity(a):
    from .stages.metrics import sanity

    rows = sanity(a.evaluator, a.reference, a.images, json.loads(a.metrics), a.seed, a.out, _device(a))
    print("\n".join(f"{r['set']:>16}  FD {r['fd']:10.3f}  recall {r['recall']:.3f}" for r in rows))


def cmd_distill(a):
    from .stages.students import distill

    result = distill(a.method, json.loads(a.block), {"trajectories": a.trajectories, "teacher": a.teacher,
                                                    "out": a.out, "seed": a.seed, "device": _device(a)})
    print(json.dumps({k: result[k] for k in ("done", "seconds_this_call") if k in result}))


def costing_args(s) -> None:
    """The arguments of the stages that build methods to cost them (cost, timing)."""
    s.add_argument("--checkpoints", type=int, default=11,
                   help="teacher checkpoints a student would distil (random-weight teachers only)")
    s.add_argument("--cost", required=True, help="the metrics.cost: block as JSON")
    s.add_argument("--cfg", default=None, help="config slice as JSON, hashed into the provenance")
    s.add_argument("--out", required=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="advkd", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    def stage(name, func, help, device=False):
        s = sub.add_parser(name, help=help)
        s.set_defaults(func=func)
        if device:
            s.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
            s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
        return s

    s = stage("prepare-data", cmd_prepare_data,
              "write train, validation and test .npz (the held-out split halved) and a data card")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="experiment YAML (its data: block is used)")
    g.add_argument("--data", help="the data: block as JSON")
    s.add_argument("--out", required=True)

    s = stage("train-teacher", cmd_train_teacher, "train a DDPM teacher (resumable); writes a diffusers pipeline",
              device=True)
    s.add_argument("--images", help="train.npz from prepare-data (else --dataset/--data-root)")
    s.add_argument("--dataset", default="fashion-mnist")
    s.add_argument("--data-root", default=None)
    s.add_argument("--resolution", type=int, default=32)
    s.add_argument("--channels", type=int, default=1)
    s.add_argument("--architecture", default="fmnist32")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--lr", type=float, default=5e-4)
    s.add_argument("--warmup-steps", type=int, default=500)
    s.add_argument("--ema-decay", type=float, default=0.9995)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that passes this")
    s.add_argument("--out", required=True)

    s = stage("teacher", cmd_teacher, "resolve the configured teacher and write its card (teacher.json)")
    s.add_argument("--teacher", required=True, help="the teacher: block as JSON")
    s.add_argument("--trained", default=None, help="train_teacher output folder (source: train)")
    s.add_argument("--out", required=True)

    s = stage("sample", cmd_sample, "generate samples with one method and one seed", device=True)
    s.add_argument("--method", required=True)
    s.add_argument("--block", required=True, help="the method's config block as JSON")
    s.add_argument("--teacher", required=True, help="teacher.json")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--batch-size", type=int, default=250)
    s.add_argument("--shard", type=int, default=0, help="which shard of the run: images [shard*shard_size, ...)")
    s.add_argument("--shard-size", type=int, default=None,
                   help="images per shard, a multiple of --batch-size (default: all n in one shard)")
    s.add_argument("--out", required=True, help="path stem: writes STEM.npz and STEM.json")
    s.add_argument("--student-dir", default=None, help="the trained student's folder (student methods only)")
    s.add_argument("--compile", action="store_true", help="torch.compile the teacher network (sampling.compile)")

    s = stage("merge-samples", cmd_merge_samples, "join the shards of one sample run into .npz, PNG grid, JSON")
    s.add_argument("--shards", nargs="+", required=True, help="shard stems (STEM.npz + STEM.json, from `sample`)")
    s.add_argument("--n", type=int, required=True, help="images in the whole run (checked against the shards)")
    s.add_argument("--grid", type=int, default=64)
    s.add_argument("--out", required=True, help="path stem: writes STEM.npz, STEM.png, STEM.json")

    s = stage("real-samples", cmd_real_samples, "draw the noise-floor row: n real images not in the reference")
    s.add_argument("--images", required=True, help="a split's .npz the reference never saw (e.g. validation.npz)")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--grid", type=int, default=64)
    s.add_argument("--out", required=True, help="path stem: writes STEM.npz and STEM.png")

    s = stage("trajectories", cmd_trajectories, "write one shard of teacher trajectories", device=True)
    s.add_argument("--teacher", required=True, help="teacher.json")
    s.add_argument("--params", required=True, help="the trajectories: block as JSON")
    s.add_argument("--shard", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=250)
    s.add_argument("--out", required=True)

    s = stage("report", cmd_report, "tables and figures from finished results (retrains nothing)")
    s.add_argument("--results", required=True, help="results/<experiment>")
    s.add_argument("--out", required=True, help="paper_figures/<experiment>")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--reference", default=None, help="method the speed-ups are measured against (report.reference)")
    g.add_argument("--config", default=None, help="experiment YAML to read report.reference from")

    s = stage("evaluator", cmd_evaluator, "install (shipped), train, or locate (inception) the fixed judge",
              device=True)
    s.add_argument("--evaluator", required=True, help="the evaluator: block as JSON")
    s.add_argument("--data", required=True, help="the data: block as JSON")
    s.add_argument("--train", default=None, help="train.npz with labels (source: train; else read from --data)")
    s.add_argument("--heldout", default=None, help="heldout.npz with labels (else read from --data)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--border", type=int, default=0,
                   help="the data's zero-padding in pixels: the judge scores the region inside it")
    s.add_argument("--out", required=True, help="folder: evaluator.json (+ evaluator.safetensors)")

    s = stage("second-judge", cmd_second_judge, "install (shipped) or train the second, autoencoder judge",
              device=True)
    s.add_argument("--judge", required=True, help="the evaluator.second: block as JSON")
    s.add_argument("--data", required=True, help="the data: block as JSON")
    s.add_argument("--train", default=None, help="train.npz (source: train; else read from --data)")
    s.add_argument("--heldout", default=None, help="held-out images for its card (else read from --data)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--border", type=int, default=0, help="the data's zero-padding in pixels")
    s.add_argument("--out", required=True, help="folder: evaluator.json + autoencoder.safetensors")

    s = stage("reference-stats", cmd_reference_stats, "a judge's features of one held-out half: mu, sigma, features",
              device=True)
    s.add_argument("--evaluator", required=True, help="evaluator.json written by the evaluator stage")
    s.add_argument("--heldout", required=True, help="one held-out half (validation.npz or test.npz)")
    s.add_argument("--metrics", required=True, help="the metrics: block as JSON")
    s.add_argument("--out", required=True, help="path stem: writes STEM.safetensors and STEM.json")

    s = stage("quality", cmd_quality, "FD, KID, IS, precision/recall and class coverage of one sample set",
              device=True)
    s.add_argument("--method", required=True)
    s.add_argument("--samples", required=True, help="samples .npz (uint8 images)")
    s.add_argument("--seed", type=int, required=True, help="the seed the samples were drawn with")
    s.add_argument("--evaluator", required=True, help="evaluator.json")
    s.add_argument("--reference", required=True, help="reference stats stem (STEM.safetensors)")
    s.add_argument("--metrics", required=True, help="the metrics: block as JSON")
    s.add_argument("--cfg", default=None, help="config slice as JSON, hashed into the provenance")
    s.add_argument("--scored-by", choices=("all", "kid"), default="all",
                   help="kid: below the matched n, so only KID is kept (the method's scored_by)")
    s.add_argument("--judge2", default=None, help="the second judge's evaluator.json: adds FD under it")
    s.add_argument("--judge2-reference", default=None, help="the second judge's reference stats stem")
    s.add_argument("--teacher-samples", default=None,
                   help="the teacher sampler's samples of the same seed (.npz): adds teacher fidelity")
    s.add_argument("--out", required=True)

    s = stage("cost", cmd_cost, "params, NFE, FLOPs and memory of one method (times: the timing stage)",
              device=True)
    s.add_argument("--method", required=True)
    s.add_argument("--block", required=True, help="the method's config block as JSON")
    s.add_argument("--teacher", required=True, help="teacher.json")
    s.add_argument("--student-dir", default=None, help="the student's folder (students only)")
    costing_args(s)

    s = stage("timing", cmd_timing, "latency and images/s of every method, timed interleaved in one process",
              device=True)
    s.add_argument("--blocks", required=True, help="method name -> config block, as JSON")
    s.add_argument("--teacher", required=True, help="teacher.json")
    s.add_argument("--students", required=True, help="folder holding each student's folder (results/<exp>/students)")
    s.add_argument("--sampling", default=None,
                   help="the sampling: block as JSON: adds the peer ratio of the first DDIM method")
    costing_args(s)

    s = stage("memorisation", cmd_memorisation, "how close a student's samples come to its distillation targets",
              device=True)
    s.add_argument("--method", required=True)
    s.add_argument("--samples", nargs="+", required=True, help="SEED=samples.npz, one per seed")
    s.add_argument("--trajectories", nargs="+", required=True, help="the distillation set's shards")
    s.add_argument("--train", required=True, help="train.npz")
    s.add_argument("--real", required=True, help="held-out images the judge's reference uses (e.g. test.npz)")
    s.add_argument("--evaluator", required=True, help="evaluator.json")
    s.add_argument("--seed", type=int, default=0, help="seeds which training and held-out images are drawn")
    s.add_argument("--out", required=True)

    s = stage("sanity", cmd_sanity, "score real and deliberately degraded sets: the metrics must rank them",
              device=True)
    s.add_argument("--evaluator", required=True, help="evaluator.json")
    s.add_argument("--reference", required=True, help="reference stats stem")
    s.add_argument("--images", required=True, help="real images .npz not in the reference (e.g. train.npz)")
    s.add_argument("--metrics", required=True, help="the metrics: block as JSON")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="path stem: writes STEM.json and STEM.csv")

    s = stage("distill", cmd_distill, "train one student method on the teacher's trajectories (resumable)",
              device=True)
    s.add_argument("--method", required=True)
    s.add_argument("--block", required=True, help="the method's config block as JSON")
    s.add_argument("--trajectories", nargs="+", required=True, help="trajectory shards (.safetensors)")
    s.add_argument("--teacher", default=None, help="teacher.json (students initialised from the teacher)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="student folder: student.safetensors, student.json, loss.csv, ...")

    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _setup(a)
    try:
        a.func(a)
    except BadInputError as e:
        print(f"advkd {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
