"""Where an Adv-KD training step goes, and what freezing the critics in the generator step saves (issue 21, item 7).

    python scripts/profile_generator_step.py --config experiments/default.yaml \
        --teacher results/default/teacher/teacher.json --out docs/profile-generator-step.json

For every `advkd` method of the config: each phase's training step (one critic step per supervised head, then the
generator step: advkd.students.advkd.model.train_step, on random tensors of the phase's shapes at its batch size) is
timed in two variants, interleaved round-robin in one process so that a busy or slow host moves both alike:
`frozen` (the suite's step: the critics' weights get no gradient in the generator step, as the authors do) and
`unfrozen` (the same step with the critics left trainable there, the work the freeze removes). A phase counts with
its share of the recipe's training images (epochs x runs), so `s_per_1000_images` is the whole recipe's, and
`training_tflop` its training FLOPs counted as the training loop counts them (one step per phase). Each phase's
`step_gflops` (its step's FLOPs over the frozen step's median) stands against `probe_gflops`, the faster of the
step's two largest convolutions run forward and backward alone at the same shapes and threads (the DAG profile's
training-speed yardstick), beside a 2048^2 sgemm probe of the host. Medians
after warm-up; torch.profiler's top operators of the frozen step of the recipe's most expensive phase say where the
rest goes. Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from advkd.config import load_config
from advkd.families import FAMILIES
from advkd.io import provenance, write_json
from advkd.metrics.cost import conv_training_probe, matmul_peak_gflops, step_convs, theoretical_peak_gflops
from advkd.rng import seed_torch, torch_generator
from advkd.students.advkd import model as adv
from advkd.students.common import teacher_unet
from advkd.students.training import StepFlops


def _step(student, phase, recipe, z, targets, opts, frozen: bool, seed: int) -> float:
    critics = [student.critics[str(h)] for h in phase.heads] if recipe.loss != "regression" else []
    if not frozen:  # the generator step's requires_grad_(False) on the critics becomes a no-op
        for c in critics:
            c.requires_grad_ = lambda *_a, _c=c: _c
    t0 = time.perf_counter()
    adv.train_step(student, phase, recipe, z, targets, opts["gen"], opts.get("critic"),
                   torch_generator("timing-inputs", "profile-step", seed))
    seconds = time.perf_counter() - t0
    for c in critics:
        c.__dict__.pop("requires_grad_", None)
    return seconds


def _batch(student, phase, shape, seed: int):
    """Random noise and head targets of one training batch of `phase` (x_T of `shape` per run)."""
    g = torch_generator("timing-inputs", "profile-batch", seed)
    b = phase.batch_size
    z = student.noise_input(torch.randn(b, *shape, generator=g))
    targets = {h: torch.rand(b, shape[0], student.head_resolution[h], student.head_resolution[h], generator=g) * 2 - 1
               for h in phase.heads}
    return z, targets


def profile_method(name: str, block: dict, data: dict, checkpoints: int, teacher, runs: int, repeats: int,
                   warmup: int) -> dict:
    params = FAMILIES["advkd"].params.from_block(block)
    shape = (data["channels"], data["resolution"], data["resolution"])
    cfg = params.resolve(name, checkpoints, data["resolution"], data["channels"])
    unet = None
    if params.teacher_unet:
        unet, unet_cfg, _ = teacher_unet(teacher)
        cfg |= unet_cfg
    seed_torch("timing-inputs", "profile-init")
    student = adv.make_student(cfg)
    if unet is not None:
        student.generator.unet.load_state_dict(unet.state_dict())
    recipe = adv.make_recipe(cfg)
    student.generator.train()
    student.critics.train()
    phases, recipe_phases = [], adv.make_phases(cfg)
    for p, phase in enumerate(recipe_phases):
        z, targets = _batch(student, phase, shape, p)
        opts = adv._optimizers(student, phase, recipe)
        times = {"frozen": [], "unfrozen": []}
        for r in range(warmup + repeats):
            for variant in times:
                s = _step(student, phase, recipe, z, targets, opts, variant == "frozen", r)
                if r >= warmup:
                    times[variant].append(s)
        # as the training loop counts an epoch: its first step, per image; and the step's two largest convolutions
        with StepFlops() as counter, step_convs(2) as convs:
            _step(student, phase, recipe, z, targets, opts, True, warmup + repeats)
        images = phase.epochs * runs
        step_s = statistics.median(times["frozen"])
        # the yardstick (advkd.metrics.cost.conv_training_probe, as the DAG profile's training-speed table): the
        # faster of the step's two largest convolutions run forward and backward alone at the same shapes
        probe = max((conv_training_probe(c, "cpu") for c in convs), key=lambda r: r["gflops"])
        phases.append({"phase": p, "batch_size": phase.batch_size, "epochs": phase.epochs, "images": images,
                       "flops_per_image": counter.get_total_flops() / phase.batch_size,
                       "step_gflops": counter.get_total_flops() / step_s / 1e9, "probe": probe["probe"],
                       "probe_gflops": probe["gflops"],
                       "fraction_of_probe": counter.get_total_flops() / step_s / 1e9 / probe["gflops"],
                       **{f"{v}_s_per_step": statistics.median(t) for v, t in times.items()},
                       **{f"{v}_s_per_step_iqr": statistics.quantiles(t, n=4)[::2] for v, t in times.items()}})
    total = sum(ph["images"] for ph in phases)
    out = {"method": name, "block": block, "training_images": total, "phases": phases,
           "training_tflop": sum(ph["flops_per_image"] * ph["images"] for ph in phases) / 1e12}
    for v in ("frozen", "unfrozen"):
        out[f"{v}_s_per_1000_images"] = 1000 * sum(ph[f"{v}_s_per_step"] / ph["batch_size"] * ph["images"]
                                                   for ph in phases) / total
    out["unfrozen_over_frozen"] = out["unfrozen_s_per_1000_images"] / out["frozen_s_per_1000_images"]
    worst = max(phases, key=lambda ph: ph["frozen_s_per_step"] / ph["batch_size"] * ph["images"])
    phase = recipe_phases[worst["phase"]]
    z, targets = _batch(student, phase, shape, 0)
    opts = adv._optimizers(student, phase, recipe)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for r in range(3):
            _step(student, phase, recipe, z, targets, opts, True, r)
    events = prof.key_averages()
    all_us = sum(e.self_cpu_time_total for e in events)
    out["profiled_phase"] = worst["phase"]
    out["top_operators"] = [{"op": e.key, "self_share": round(e.self_cpu_time_total / all_us, 3)}
                            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="experiments/default.yaml")
    p.add_argument("--teacher", required=True, help="the teacher stage's teacher.json (for generator: teacher-unet)")
    p.add_argument("--methods", nargs="*", help="advkd methods of the config (default: all of them)")
    p.add_argument("--runs", type=int, help="distillation runs an epoch covers (default: trajectories.count)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    names = a.methods or [m for m, b in cfg["methods"].items() if b["family"] == "advkd"]
    runs = a.runs or cfg["trajectories"]["count"]
    result = {"config": a.config, "repeats": a.repeats, "warmup": a.warmup, "threads": a.threads,
              "theoretical_peak": theoretical_peak_gflops(a.threads), "sgemm_gflops": matmul_peak_gflops("cpu"),
              "provenance": provenance(),
              "methods": [profile_method(m, cfg["methods"][m], cfg["data"], cfg["trajectories"]["checkpoints"],
                                         a.teacher, runs, a.repeats, a.warmup) for m in names]}
    print(json.dumps(result, indent=1))
    if a.out:
        write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
