"""Cost measured, not assumed: FLOPs from torch.utils.flop_counter, latency medians, a matmul peak."""

from __future__ import annotations

import resource
import statistics
import time

import torch

from ..io import device_name


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, repeats: int = 5, warmup: int = 1, clock=time.perf_counter) -> dict:
    """Median and spread (min/max, seconds) of `fn()` over `repeats` calls after `warmup` calls.

    `clock` is injectable so a test can check the statistics against known durations.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        sync(device)
        times.append(clock() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats,
            "warmup": warmup}


def count_flops(fn) -> int:
    """FLOPs of one call of `fn()` as torch.utils.flop_counter counts them (a multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_gflops(device, n: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """Achievable GFLOP/s of a square matmul on `device`, measured now (the machines are shared and noisy)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_call(lambda: a @ b, device, repeats=repeats, warmup=2)
    return 2 * n**3 / t["min_s"] / 1e9


def peak_memory(fn, device) -> dict:
    """Peak memory of one call of `fn()`, measured the way the device allows (the field `memory_measure` says how).

    On CPU there is no allocator counter: the growth of the process's peak RSS (a high-water mark) is what a cold
    call adds on top of what the process already held, so call this before any warm-up.
    """
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_memory_mb": peak / 2**20, "peak_memory_above_start_mb": (peak - base) / 2**20,
                "memory_measure": "torch.cuda.max_memory_allocated (tensors only, not the CUDA context)"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_mb": after / 1024, "peak_memory_above_start_mb": (after - before) / 1024,
            "memory_measure": "cpu: process peak RSS (resource ru_maxrss) after one cold call; "
                              "above_start = its growth during that call (model and data already loaded)"}


def latency(method, batch: int, cost: dict, device, seed: int = 0) -> dict:
    """Seconds per image at `batch`: a full sample when NFE is small, else one network call x NFE (extrapolated).

    The extrapolation leaves out the scheduler's own arithmetic between calls, which is small next to a UNet.
    """
    direct = method.nfe <= cost["full_sample_max_nfe"]
    if direct:
        def fn():
            method.sample(batch, seed, batch, False)
        factor = 1
    else:
        inputs = method.network_inputs(batch)

        def fn():
            method.network(*inputs)
        factor = method.nfe
    with torch.inference_mode():
        t = time_call(fn, device, repeats=cost["repeats"], warmup=cost["warmup"])
    out = {"batch": batch, "extrapolated": not direct, "repeats": t["repeats"], "warmup": t["warmup"],
           "measured": "full sample" if direct else f"one network call x NFE ({method.nfe})"}
    for k in ("median_s", "min_s", "max_s"):
        out[f"{k}_per_batch"] = t[k] * factor
        out[f"{k}_per_image"] = t[k] * factor / batch
    return out


def measure_cost(method, device, cost: dict, seed: int = 0) -> dict:
    """Every cost number of one method on `device`, in one process (the matmul peak is measured here too)."""
    with torch.inference_mode():
        flops_call = count_flops(lambda: method.network(*method.network_inputs(1)))
    tb = cost["throughput_batch"]
    direct = method.nfe <= cost["full_sample_max_nfe"]
    inputs = None if direct else method.network_inputs(tb)

    def one_batch():
        with torch.inference_mode():
            method.sample(tb, seed, tb, False) if direct else method.network(*inputs)
    mem = peak_memory(one_batch, device)  # first: on CPU only a cold call moves the RSS high-water mark
    b1 = latency(method, 1, cost, device, seed)
    bt = latency(method, tb, cost, device, seed)
    images_per_s = tb / bt["median_s_per_batch"]
    peak = matmul_peak_gflops(device)
    achieved = flops_call * method.nfe * images_per_s / 1e9
    return {"method": method.name, "family": method.family, "nfe": method.nfe,
            "parameters_all": int(method.all_parameters), "parameters_inference": int(method.inference_parameters),
            "flops_per_call": flops_call, "flops_per_image": flops_call * method.nfe,
            "flops_counter": "torch.utils.flop_counter, network at batch 1 (multiply-add = 2 FLOPs)",
            "latency_batch1": b1, "latency_throughput": bt, "throughput_batch": tb,
            "latency_extrapolated": bool(b1["extrapolated"] or bt["extrapolated"]),
            "latency_s_per_image_batch1": b1["median_s_per_image"], "images_per_s": images_per_s, **mem,
            "device": device_name(device), "threads": torch.get_num_threads(),
            "matmul_peak_gflops": peak, "achieved_gflops": achieved, "fraction_of_peak": achieved / peak}
