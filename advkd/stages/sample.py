"""The stages of workflow/rules/sample.smk: sampling any method, a sampler over the teacher or a trained student
(rule sample), and joining the shards of a run (rule merge_samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data import save_grid
from ..io import BadInputError, load_images, provenance, save_images, write_json
from ..method import Method
from ..metrics import cost  # as a module: tests stub cost.matmul_peak_gflops

PEAK_CHUNKS = 6  # a sampling job measures the matmul peak PEAK_CHUNKS + 1 times (see sample)


def sample(method: Method, n: int, seed: int, batch_size: int, out_npz, out_json, device,
           shard: int = 0, shard_size: int | None = None, progress=True) -> dict:
    """The sample stage: images [shard*shard_size, ...) of the seed's n-image run (all n by default) to .npz, with a
    JSON of speed figures. Batch b of the run always draws from batch_seed(seed, b), so the shards of a run, merged
    by `merge_samples`, equal the run made in one piece; shard_size must therefore be a multiple of batch_size."""
    shard_size = shard_size or n
    start = shard * shard_size
    if shard_size % batch_size and shard_size < n:
        raise BadInputError(f"sampling.shard_size: {shard_size} must be a multiple of sampling.batch_size "
                            f"({batch_size}) so that every shard starts at a batch boundary")
    if not 0 <= start < n:
        raise BadInputError(f"shard {shard} of size {shard_size} starts at image {start}, beyond n = {n}")
    count = min(shard_size, n - start)
    # The host is shared and its speed drifts by +-10% within a job, so one or two peak measurements say more about
    # the moment they land in than about the job. The batches run in up to PEAK_CHUNKS chunks with the peak
    # measured before, between and after them (outside the sampling clock); the fraction of peak uses their
    # median, the speed the machine offered while the job ran. The best of them is kept too (fraction_of_best_peak,
    # the conservative reading). Chunks are batch ranges of the same run, so the images do not change.
    n_batches = -(-count // batch_size)
    bounds = [int(b) for b in np.linspace(0, n_batches, min(PEAK_CHUNKS, n_batches) + 1).round()]
    peaks, chunks, seconds = [cost.matmul_peak_gflops(device)], [], 0.0
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        m = min(count, b1 * batch_size) - b0 * batch_size
        images, stats = method.generate(m, seed, batch_size, progress, first_batch=start // batch_size + b0)
        chunks.append(images)
        seconds += stats["seconds"]
        peaks.append(cost.matmul_peak_gflops(device))
    images = np.concatenate(chunks)
    with torch.inference_mode():
        flops_per_call = cost.count_flops(lambda: method.network(*method.network_inputs(1)))
    peak = float(np.median(peaks))
    achieved = flops_per_call * method.nfe * count / seconds / 1e9
    stats |= {"method": method.name, "family": method.family, "nfe": method.nfe, "start": start, "n": count,
              "seconds": round(seconds, 3), "images_per_s": count / seconds,
              "flops_per_image": flops_per_call * method.nfe, "achieved_gflops": achieved,
              "matmul_peak_gflops": peak, "matmul_peak_gflops_probes": peaks, "fraction_of_peak": achieved / peak,
              "matmul_peak_gflops_best": max(peaks), "fraction_of_best_peak": achieved / max(peaks)}
    save_images(out_npz, images, seed=np.int64(seed), start=np.int64(start))
    write_json(out_json, stats | {"provenance": provenance(device=device), **method.info})
    return stats


def merge_samples(shards, n: int, out_npz, out_png, out_json, grid: int) -> dict:
    """Join the shards of one method's run for one seed (stems: STEM.npz + STEM.json, from `sample`) into
    the run's .npz, PNG grid and JSON; speed figures are over the summed sampling time of all shards."""
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
    seconds = sum(s["seconds"] for s in stats)
    first = stats[0]
    achieved = first["flops_per_image"] * n / seconds / 1e9
    peak = float(np.median([s["matmul_peak_gflops"] for s in stats]))
    best = max(s["matmul_peak_gflops_best"] for s in stats)
    merged = {k: v for k, v in first.items() if k != "start"} | {
        "n": n, "seconds": round(seconds, 3), "images_per_s": n / seconds, "achieved_gflops": achieved,
        "matmul_peak_gflops": peak, "matmul_peak_gflops_shards": [s["matmul_peak_gflops"] for s in stats],
        "matmul_peak_gflops_probes": [s["matmul_peak_gflops_probes"] for s in stats],  # one list per shard
        "fraction_of_peak": achieved / peak, "matmul_peak_gflops_best": best,
        "fraction_of_best_peak": achieved / best, "shards": len(shards)}
    save_images(out_npz, images, seed=np.int64(first["seed"]))
    save_grid(out_png, images[:grid])
    write_json(out_json, merged)
    return merged
