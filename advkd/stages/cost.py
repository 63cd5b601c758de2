"""The stages of workflow/rules/cost.smk, which build methods and time them: the cost of every method (one job,
a process per method), and every method's latency and throughput timed interleaved in one process with the peer
ratio against the stock diffusers loop. Apart from advkd.stages.metrics because they need diffusers (seconds to
import), which the scoring jobs do not. What they compute lives in advkd.metrics.cost."""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch

from .. import jobclock
from ..families import FAMILIES, build_method, peer_yardstick, trained_folder
from ..io import BadInputError, device_name, provenance, write_json
from ..metrics.cost import (
    matmul_peak_gflops,
    measure_cost,
    measure_sampling_speed,
    measure_timing,
    spread,
    time_interleaved,
)
from ..rng import torch_generator
from ..samplers import compiled_network, compiled_now, make_scheduler, run_sampler, scheduler_spec
from ..teacher import load_teacher


def _student_folder(students_root, name: str, blocks: dict):
    """Where a student method samples from: its recipe's training run (a shipped one names its own folder in its
    block); None for a sampler."""
    if FAMILIES[blocks[name]["family"]].kind != "student":
        return None
    return trained_folder(students_root, name, blocks) or Path(students_root) / name


def cost_context(teacher_json, device, student_dir, checkpoints: int) -> dict:
    """The build context of a method to be costed. With a random-weight teacher (a cost-only experiment) students
    are built with random weights at the teacher's image shape, distilling `checkpoints` checkpoints."""
    ctx = {"teacher": str(teacher_json), "device": device, "student_dir": student_dir}
    card = json.loads(Path(teacher_json).read_text())
    if card["source"] == "random":
        ctx["random_weights"] = {"resolution": card["sample_size"], "channels": card["channels"],
                                 "checkpoints": checkpoints, "seed": card["seed"]}
    return ctx


def method_cost(name: str, block: dict, ctx: dict, settings: dict, out, cfg=None, forked: bool = False) -> dict:
    """One method's cost row: build the method from the registry (sampler or student alike) and write one JSON;
    `settings` is the config's metrics.cost block; `forked`: in a process forked from the cost job (its memory
    measure says so)."""
    method = build_method(name, block, ctx)
    jobclock.begin("costing")
    row = measure_cost(method, ctx["device"], settings, settings["seed"])
    if forked and torch.device(ctx["device"]).type == "cpu":
        # a forked child maps the parent's libraries but counts only the pages it touches in its RSS: its peak is
        # below a fresh process's (ddim-10: 597 MB against 865 MB on the default); the growth is the call's alike
        row["memory_measure"] += ("; in a process of its own forked from one that had imported the libraries "
                                  "(library pages the method never touches are not in its RSS)")
    row |= {"kind": FAMILIES[block["family"]].kind, "info": method.info,
            # the method's config block, as written, is part of what produced the row (and the report's knob table)
            "provenance": provenance(cfg=cfg if cfg is not None else {"method": block, "cost": settings},
                                     device=ctx["device"], method=block)}
    write_json(out, row)
    return row


PEER_ROUNDS = 5   # each round samples a whole batch twice: a few seconds on 2 CPU cores


def peer_ratio(teacher_json, steps: int, batch: int, device, compile: bool, rounds: int = PEER_ROUNDS,
               threads: int | None = None) -> dict:
    """The suite's sampler of the registry's peer-yardstick family (DDIM) against the stock diffusers loop a user
    would write (the same UNet in its default memory format, the scheduler's `step` over its timesteps), same batch
    and steps, timed interleaved in one process at the sample jobs' thread count: three rows, so that the loop's
    share (the suite's loop eager: channels-last, one scheduler per batch) and the compiler's (the same loop
    compiled, when sampling.compile) are apart. A probe-free yardstick of the sampler's speed."""
    family = peer_yardstick()
    spec = scheduler_spec(family)
    unet, train_config, _ = load_teacher(teacher_json, device)
    stock_unet = copy.deepcopy(unet).to(memory_format=torch.contiguous_format)
    c, h = unet.config.in_channels, unet.config.sample_size
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    variants = {"suite loop, eager": unet}
    if compile:
        x = torch.zeros((batch, c, h, h), device=device).contiguous(memory_format=torch.channels_last)
        variants["suite loop, compiled"] = compiled_network(
            unet, [x], make_scheduler(spec, steps, train_config).timesteps[0])[0]

    def suite(net):
        return lambda: run_sampler(net, spec, steps, train_config, batch, 0, batch, device, progress=False)

    @torch.inference_mode()
    def stock():
        sched = getattr(diffusers, spec.cls).from_config(train_config, **spec.kwargs)
        sched.set_timesteps(steps)
        x = torch.randn((batch, c, h, h), generator=torch_generator("timing-inputs", "stock-ddim")).to(device)
        for t in sched.timesteps:
            x = sched.step(stock_unet(x, t).sample, t, x, **spec.step_kwargs).prev_sample

    stock_name = "stock diffusers loop, eager"
    try:
        times = time_interleaved({stock_name: stock, **{k: suite(net) for k, net in variants.items()}}, device,
                                 rounds, warmup=1)
    finally:
        torch.set_num_threads(before)
    rows = []
    for name, t in times.items():
        ratios = sorted(st / su for st, su in zip(times[stock_name], t))   # per round: both timed in it
        rows.append({"variant": name, "seconds": spread(t), "ratio": float(np.median(ratios)),
                     "ratio_q1": float(np.percentile(ratios, 25)), "ratio_q3": float(np.percentile(ratios, 75))})
    return {"method": f"{family}-{steps}", "stock": f"diffusers.{spec.cls}.step over the UNet, eager, contiguous",
            "compiled": compile, "batch": batch, "steps": steps, "rounds": rounds,
            "threads": torch.get_num_threads() if not threads else threads, "rows": rows}


def sampling_speed(methods: dict, blocks: dict, teacher_json, device, settings: dict, sampling: dict,
                   threads: int | None, checkpoints: int, folder) -> dict:
    """Every method's images/s and fraction of peak as the sample jobs run it: their batch, thread count and, for
    the teacher's samplers, torch.compile when sampling.compile; the probes interleaved (measure_sampling_speed).
    Measured here, once, instead of in each of the sample jobs."""
    if sampling["compile"]:
        methods = {name: build_method(name, b, cost_context(teacher_json, device, folder(name), checkpoints)
                                      | {"compile": True}) if FAMILIES[b["family"]].kind == "sampler"
                   else methods[name] for name, b in blocks.items()}
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        speed = measure_sampling_speed(methods, device, sampling["batch_size"], settings, settings["seed"])
    finally:
        torch.set_num_threads(before)
    for name, row in speed["methods"].items():   # only a compiled sampler's network is ever compiled_now
        row |= {"kind": FAMILIES[blocks[name]["family"]].kind,
                "compiled": not row["extrapolated"] and compiled_now(methods[name].network)}
    return speed


def timing(blocks: dict, teacher_json, students_root, checkpoints: int, device, settings: dict, out,
           cfg=None, sampling: dict | None = None) -> dict:
    """The `timing` rule: latency at batch 1 and images/s at the throughput batch of every method (name -> config
    block), timed interleaved in one process (advkd.metrics.cost.measure_timing), so that their ratios are
    measured under the same conditions; a matmul peak before and after says how fast the host was. With
    `sampling` (the config's block), also every method's speed as the sample jobs run it, against the peak probes
    (sampling_speed; the sample jobs themselves time nothing), and, given a DDIM method with NFE <=
    full_sample_max_nfe, the peer ratio against the stock diffusers loop."""
    def folder(name):
        return _student_folder(students_root, name, blocks)

    methods = {name: build_method(name, block, cost_context(teacher_json, device, folder(name), checkpoints))
               for name, block in blocks.items()}
    jobclock.begin("timing")   # building the compiled samplers below counts too: this job is all measurement
    peaks = [matmul_peak_gflops(device)]
    rows = measure_timing(methods, device, settings, settings["seed"])
    # the peer ratio times whole sampling loops: only for a method of the peer-yardstick family whose full sample
    # the config affords timing (metrics.cost.full_sample_max_nfe; at paper scale on a CPU it does not)
    family = peer_yardstick()
    yardstick = [b for b in blocks.values()
                 if b["family"] == family and b["steps"] <= settings["full_sample_max_nfe"]]
    threads = None if not sampling or sampling["threads"] == "all" else sampling["threads"]
    peer = peer_ratio(teacher_json, yardstick[0]["steps"], sampling["batch_size"], device, sampling["compile"],
                      threads=threads) if sampling and yardstick else None
    speed = sampling_speed(methods, blocks, teacher_json, device, settings, sampling, threads, checkpoints, folder) \
        if sampling else None
    peaks.append(matmul_peak_gflops(device))
    # every key names a timing: compare_runs treats the whole file as measured, never as a result
    out_json = {"timing": rows, "peer_timing": peer, "sampling_speed": speed,
                "timing_order": "round-robin, rotated by one method each round",
                "timing_warmup_rounds": settings["warmup"], "timing_rounds": settings["repeats"],
                "matmul_peak_gflops_before_after": peaks, "device": device_name(device),
                "threads": torch.get_num_threads(),
                "provenance": provenance(cfg=cfg if cfg is not None else {"methods": blocks, "cost": settings},
                                         device=device)}
    write_json(out, out_json)
    return out_json


def _cost_child(name: str, block: dict, ctx: dict, settings: dict, out, cfg: dict, forked: bool,
                threads: int) -> None:
    torch.set_num_threads(threads)   # as the job was given (--threads): a fresh or served process has torch's own
    try:
        method_cost(name, block, ctx, settings, out, cfg=cfg, forked=forked)
    except BadInputError as e:
        print(f"advkd cost: error: {e}", file=sys.stderr)
        sys.exit(2)


def cost_job(*, blocks: dict, teacher: str, students: str, checkpoints: int, cost: dict, device: torch.device,
             out: str, cfg: dict) -> list[dict]:
    """The cost rule: every method of --blocks (name -> resolved block, JSON) costed with the metrics.cost: block
    (--cost) to OUT/<method>.json; --students: the folder of the training runs; --checkpoints: the checkpoints a
    student would distil (random-weight teachers only); --cfg: the config slice hashed into each method's provenance
    with its block. Each method in a process of its own (the memory measure is the process's high-water mark, so
    no method may see another's), forked from a server process that imported the libraries once: one job's imports,
    not one per method. Not forked from this process: a fork of a process whose OpenMP threads ever ran hangs at
    its first parallel region (multiprocessing's forkserver; spawn where there is none)."""
    forked = "forkserver" in mp.get_all_start_methods()
    context = mp.get_context("forkserver" if forked else "spawn")
    if forked:
        context.set_forkserver_preload([__name__])
    jobclock.begin("costing")
    rows = []
    for name, block in blocks.items():
        folder = _student_folder(students, name, blocks)
        ctx = cost_context(teacher, device, None if folder is None else str(folder), checkpoints)
        path = Path(out) / f"{name}.json"
        child = context.Process(target=_cost_child,
                                args=(name, block, ctx, cost, path, {"method": block} | cfg, forked,
                                      torch.get_num_threads()))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise BadInputError(f"costing method {name} failed (exit status {child.exitcode}; its error is above)")
        row = json.loads(path.read_text())
        rows.append({k: row[k] for k in ("method", "nfe", "flops_per_image", "peak_memory_mb")})
    return rows


def timing_job(*, blocks: dict, teacher: str, students: str, checkpoints: int, cost: dict, device: torch.device,
               out: str, cfg: dict | None = None, sampling: dict | None = None) -> dict:
    """The timing rule: every method of --blocks (name -> resolved block, JSON) timed interleaved in one process;
    --students: the folder holding the students' training runs; --sampling (the sampling: block) adds each method's
    speed as the sample jobs run it and the peer ratio against the stock diffusers loop."""
    result = timing(blocks, teacher, students, checkpoints, device, cost, out, cfg=cfg, sampling=sampling)
    return {m: round(r["latency_s_per_image_batch1"]["median"], 6) for m, r in result["timing"].items()}
