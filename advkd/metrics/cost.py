"""Cost measured, not assumed: FLOPs from torch.utils.flop_counter, latency medians, a matmul peak."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, repeats: int = 5, warmup: int = 1) -> dict:
    """Median and spread (min/max, seconds) of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
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
