"""`advkd <stage> ...`: one thin subcommand per stage; each parses arguments and calls one plain function.

The DAG passes each stage its slice of the validated config as JSON (so Snakemake reruns exactly the jobs
whose parameters changed); people can call the same commands by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .io import BadInputError


def _setup(a):
    import torch

    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on GPUs too: comparable numbers


def _device(a):
    from .teacher import pick_device

    return pick_device(a.device)


def cmd_prepare_data(a):
    from .config import load_config
    from .data import prepare

    data = json.loads(a.data) if a.data else load_config(a.config)["data"]
    prepare(data, a.out)


def cmd_train_teacher(a):
    from .data import load_split
    from .io import load_images
    from .teacher import train_teacher

    if a.images:
        images = load_images(a.images)
    else:
        images = load_split({"dataset": a.dataset, "root": a.data_root, "resolution": a.resolution,
                             "channels": a.channels}, "train")["images"]
    info = train_teacher(images, a.out, architecture=a.architecture, epochs=a.epochs, batch_size=a.batch_size,
                         lr=a.lr, warmup_steps=a.warmup_steps, ema_decay=a.ema_decay, seed=a.seed, device=_device(a),
                         max_minutes=a.max_minutes,
                         cfg_for_provenance={k: v for k, v in vars(a).items() if k != "func"})
    print({k: info[k] for k in ("epochs", "steps", "final_loss", "train_seconds_this_run")})


def cmd_teacher(a):
    from .teacher import describe_teacher

    card = describe_teacher(json.loads(a.teacher), a.out, trained_dir=a.trained)
    print({k: card[k] for k in ("source", "pipeline", "parameters", "flops_per_call")})


def cmd_sample(a):
    from .methods import build_method, sample_method

    device = _device(a)
    method = build_method(a.method, json.loads(a.spec), {"teacher": a.teacher, "device": device,
                                                         "student_dir": a.student_dir})
    out = Path(a.out)
    stats = sample_method(method, a.n, a.seed, a.batch_size, out.with_suffix(".npz"), out.with_suffix(".png"),
                          out.with_suffix(".json"), a.grid, device)
    print(json.dumps({k: stats[k] for k in ("method", "n", "seconds", "images_per_s", "achieved_gflops",
                                            "matmul_peak_gflops", "fraction_of_peak")}))


def cmd_trajectories(a):
    from .teacher import load_teacher
    from .trajectories import write_shard

    device = _device(a)
    unet, train_config, _ = load_teacher(a.teacher, device)
    stats = write_shard(unet, train_config, json.loads(a.params), a.shard, a.seed, a.batch_size, device, a.out)
    print(json.dumps(stats))


# --- metrics stages (command functions) ---
# --- end metrics stages ---

# --- student stages (command functions) ---
def cmd_distill(a):
    from .students import distill

    result = distill(a.method, json.loads(a.spec), {"trajectories": a.trajectories, "teacher": a.teacher,
                                                    "out": a.out, "seed": a.seed, "device": _device(a)})
    print(json.dumps({k: result[k] for k in ("done", "seconds_this_call") if k in result}))
# --- end student stages ---


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

    s = stage("prepare-data", cmd_prepare_data, "write train/heldout .npz and a data card")
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
    s.add_argument("--spec", required=True, help="the method's config block as JSON")
    s.add_argument("--teacher", required=True, help="teacher.json")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--batch-size", type=int, default=250)
    s.add_argument("--grid", type=int, default=64)
    s.add_argument("--out", required=True, help="path stem: writes STEM.npz, STEM.png, STEM.json")
    s.add_argument("--student-dir", default=None, help="the trained student's folder (student methods only)")

    s = stage("trajectories", cmd_trajectories, "write one shard of teacher trajectories", device=True)
    s.add_argument("--teacher", required=True, help="teacher.json")
    s.add_argument("--params", required=True, help="the trajectories: block as JSON")
    s.add_argument("--shard", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=250)
    s.add_argument("--out", required=True)

    # --- metrics stages (parsers) ---
    # --- end metrics stages (parsers) ---

    # --- student stages (parsers) ---
    s = stage("distill", cmd_distill, "train one student method on the teacher's trajectories (resumable)",
              device=True)
    s.add_argument("--method", required=True)
    s.add_argument("--spec", required=True, help="the method's config block as JSON")
    s.add_argument("--trajectories", nargs="+", required=True, help="trajectory shards (.safetensors)")
    s.add_argument("--teacher", default=None, help="teacher.json (students initialised from the teacher)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="student folder: student.safetensors, student.json, loss.csv, ...")
    # --- end student stages (parsers) ---

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
