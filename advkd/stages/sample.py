"""The stages of workflow/rules/sample.smk: sampling any method, a sampler over the teacher or a trained student, at
every seed of the method (rule sample), joining the shards of a run for one seed (rule merge_samples) and the real
images of the noise-floor row (rule real_samples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import jobclock
from ..data import save_grid
from ..families import build_method
from ..io import BadInputError, load_images, provenance, save_images, write_json
from ..method import Method
from ..rng import numpy_rng

if TYPE_CHECKING:   # merge_samples and real_samples jobs load no torch (2 s each); a sample job's method does
    import torch


def sample(method: Method, n: int, seed: int, batch_size: int, out_npz, out_json, device,
           shard: int = 0, shard_size: int | None = None, progress=True) -> dict:
    """The sample stage: images [shard*shard_size, ...) of the seed's n-image run (all n by default) to .npz, with a
    JSON of what made them. Batch b of the run always draws from advkd.rng.sample_batch(seed, b), so the shards of a
    run, merged by `merge_samples`, equal the run made in one piece; shard_size must be a multiple of batch_size.
    It generates and nothing else: speeds are measured in the timing job, all methods interleaved with the probes
    there (advkd.stages.cost.timing); `seconds` is the job's sampling time, for the DAG profile."""
    shard_size = shard_size or n
    start = shard * shard_size
    if shard_size % batch_size and shard_size < n:
        raise BadInputError(f"sampling.shard_size: {shard_size} must be a multiple of sampling.batch_size "
                            f"({batch_size}) so that every shard starts at a batch boundary")
    if not 0 <= start < n:
        raise BadInputError(f"shard {shard} of size {shard_size} starts at image {start}, beyond n = {n}")
    count = min(shard_size, n - start)
    images, stats = method.generate(count, seed, batch_size, progress, first_batch=start // batch_size)
    jobclock.add("sampling", stats["seconds"])   # the sampler's own clock: compiling is start-up
    stats = {k: v for k, v in stats.items() if k != "images_per_s"} | {
        "method": method.name, "family": method.family, "nfe": method.nfe, "start": start, "n": count,
        "seconds": round(stats["seconds"], 3)}
    save_images(out_npz, images, seed=np.int64(seed), start=np.int64(start))
    write_json(out_json, stats | {"provenance": provenance(device=device), **method.info})
    return stats


def sample_job(*, method: str, block: dict, teacher: str, n: int, seeds: list[int], batch_size: int, shard: int,
               shard_size: int, device: torch.device, out: str, student_dir: str | None = None,
               compile: bool = False) -> list[dict]:
    """The sample rule: shard --shard (--shard-size images) of method --method's --n-image run for each of --seeds,
    to OUT/seed<k>.npz and OUT/seed<k>.json (--block: the method's resolved block as JSON; --student-dir: a
    student's folder; --compile: torch.compile the teacher network, sampling.compile). One job for all of a
    method's seeds: the method is built (and compiled) once, and each seed's run is the same bits as on its own
    (its batches draw from advkd.rng.sample_batch(seed, b) alone)."""
    built = build_method(method, block, {"teacher": teacher, "device": device, "student_dir": student_dir,
                                         "compile": compile})
    done = []
    for seed in seeds:
        stem = Path(out) / f"seed{seed}"
        stats = sample(built, n, seed, batch_size, stem.with_suffix(".npz"), stem.with_suffix(".json"), device,
                       shard, shard_size)
        done.append({k: stats[k] for k in ("method", "n", "start", "seconds")} | {"seed": seed})
    return done


def real_samples_job(*, images: str, n: int, seed: int, grid: int, out: str) -> dict:
    """The real_samples rule: OUT.npz and OUT.png, n images of the split --images for --seed."""
    real_samples(images, n, seed, Path(out).with_suffix(".npz"), Path(out).with_suffix(".png"), grid)
    return {"n": n, "seed": seed, "from": images}


def merge_samples_job(*, shards: list[str], n: int, grid: int, out: str) -> dict:
    """The merge_samples rule: the shard stems of one run (STEM.npz + STEM.json) joined into OUT.npz, OUT.png and
    OUT.json."""
    stats = merge_samples(shards, n, *(Path(out).with_suffix(s) for s in (".npz", ".png", ".json")), grid)
    return {k: stats[k] for k in ("method", "n", "shards", "seconds")}


def real_samples(images_npz, n: int, seed: int, out_npz, out_png, grid: int) -> np.ndarray:
    """The real_samples rule: n real images drawn (seeded, without replacement) from a split the reference never
    saw, written like a method's samples so that the quality rule scores the noise floor at the same n and seeds."""
    images = load_images(images_npz)
    if n > len(images):
        raise BadInputError(f"{images_npz}: the noise-floor row needs sampling.n = {n} real images per seed but "
                            f"the split has {len(images)}; lower sampling.n or use more held-out images")
    picked = images[np.sort(numpy_rng("real-rows", seed).choice(len(images), n, replace=False))]
    save_images(out_npz, picked, seed=np.int64(seed))
    save_grid(out_png, picked[:grid])
    return picked


def merge_samples(shards, n: int, out_npz, out_png, out_json, grid: int) -> dict:
    """Join the shards of one method's run for one seed (stems: STEM.npz + STEM.json, from `sample`) into
    the run's .npz, PNG grid and JSON (seconds: the shards' summed sampling time)."""
    stats = [json.loads(Path(f"{p}.json").read_text()) for p in shards]
    order = sorted(range(len(shards)), key=lambda i: stats[i]["start"])
    images = [load_images(f"{shards[i]}.npz") for i in order]
    stats = [stats[i] for i in order]
    seeds = {s["seed"] for s in stats}
    starts = [s["start"] for s in stats]
    expected = np.cumsum([0] + [len(x) for x in images[:-1]]).tolist()
    if len(seeds) != 1 or starts != expected or sum(map(len, images)) != n:
        raise BadInputError(f"the sample shards {list(shards)} do not tile images 0..{n - 1} of one seed "
                            f"(seeds {sorted(seeds)}, starts {starts}, sizes {[len(x) for x in images]}); "
                            "delete them and rerun")
    images = np.concatenate(images)
    first = stats[0]
    merged = {k: v for k, v in first.items() if k != "start"} | {
        "n": n, "seconds": round(sum(s["seconds"] for s in stats), 3), "shards": len(shards)}
    save_images(out_npz, images, seed=np.int64(first["seed"]))
    save_grid(out_png, images[:grid])
    write_json(out_json, merged)
    return merged
