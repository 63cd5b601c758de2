"""Cost measured, not assumed: FLOPs from torch.utils.flop_counter, latency medians, a matmul peak."""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import time

import numpy as np
import torch

from ..io import device_name
from ..rng import torch_generator

# Shortest timed block. A student's batch-1 call on a CPU lasts about a millisecond; timed one call per round,
# two copies of one network differed up to 2.6% idle, in blocks of >= 50 ms up to 1.5% (8 runs each, 2026-12-02).
MIN_BLOCK_S = 0.05


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


def sgemm_operands(device, n: int = 2048, dtype=torch.float32):
    """The two n x n operands of the matmul probe (the timing-inputs stream: the same on every run)."""
    g = torch_generator("timing-inputs", "sgemm", n)
    return [torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2)]


def matmul_peak_gflops(device, n: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """Achievable GFLOP/s of a square matmul on `device`, measured now (the machines are shared and noisy)."""
    a, b = sgemm_operands(device, n, dtype)
    t = time_call(lambda: a @ b, device, repeats=repeats, warmup=2)
    return 2 * n**3 / t["min_s"] / 1e9


def _conv_recorder(seen: dict):
    """A forward hook that records each distinct 2-D convolution it sees (shapes, forward FLOPs) into `seen`."""
    def hook(mod, args, out):
        if not isinstance(mod, torch.nn.Conv2d):
            return
        x = args[0]
        key = (tuple(mod.weight.shape), tuple(x.shape), mod.stride, mod.padding, mod.dilation, mod.groups)
        flops = 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        seen.setdefault(key, {"module": mod, "input_shape": tuple(x.shape), "flops": flops,
                              "channels_last": x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                              and not x.is_contiguous()})
    return hook


def _top(seen: dict, top: int) -> list[dict]:
    return sorted(seen.values(), key=lambda c: -c["flops"])[:top]


def conv_layers(network, inputs, top: int = 2) -> list[dict]:
    """The `top` distinct 2-D convolutions of one `network(*inputs)` call with the most FLOPs: what the network
    itself spends its time on, so a probe of them is a peak the network could reach (forward hooks)."""
    seen = {}
    hook = _conv_recorder(seen)
    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            network(*inputs)
    finally:
        for h in handles:
            h.remove()
    return _top(seen, top)


@contextlib.contextmanager
def step_convs(top: int = 2):
    """Within the block, every module's convolutions are recorded (a global forward hook: a training step runs
    several networks, a student's, a critic's, the teacher's); on leaving, the list it yields holds the `top` with
    the most forward FLOPs, as conv_layers gives them."""
    seen, found = {}, []
    handle = torch.nn.modules.module.register_module_forward_hook(_conv_recorder(seen))
    try:
        yield found
    finally:
        handle.remove()
        found.extend(_top(seen, top))


def conv_training_probe(conv: dict, device, repeats: int = 5) -> dict:
    """GFLOP/s of one training step's worth of a convolution found by `step_convs`: its forward and both gradients
    (input and weight) at the same shapes, on a copy of its weight and inputs from the timing-inputs stream (the
    network, its gradients and torch's global RNG are untouched). The yardstick a training step of that network
    could reach at this thread count."""
    mod, shape = conv["module"], conv["input_shape"]
    x = torch.randn(shape, generator=torch_generator("timing-inputs", "conv-train")).to(device).requires_grad_()
    w = mod.weight.detach().clone().requires_grad_()

    def step():
        y = torch.nn.functional.conv2d(x, w, None, mod.stride, mod.padding, mod.dilation, mod.groups)
        torch.autograd.grad(y, (x, w), torch.ones_like(y))

    flops = count_flops(step)
    t = time_call(step, device, repeats=repeats, warmup=2)
    return {"probe": f"conv fwd+bwd {shape[1]}->{mod.out_channels} k{mod.kernel_size[0]} {shape[2]}x{shape[3]} "
                     f"b{shape[0]}", "gflops": flops / t["min_s"] / 1e9}


def theoretical_peak_gflops(threads: int | None = None) -> dict:
    """The CPU's fp32 peak from its own description: cores x clock x FLOP per cycle, with the vector width ATen's
    kernels dispatch to (torch.backends.cpu.get_cpu_capability) and two FMA units per core (assumed: x86 server
    cores since Haswell / Zen have two). The clock is the highest the machine states (lscpu's max MHz, else
    /proc/cpuinfo's MHz, which a VM reports as its nominal clock: a turbo above it would show as a fraction > 1)."""
    import os
    import subprocess

    threads = threads or torch.get_num_threads()
    mhz, source = None, None
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("CPU max MHz:"):
                mhz, source = float(line.split(":")[1]), "lscpu CPU max MHz"
    except (OSError, subprocess.SubprocessError):
        pass
    if mhz is None and os.path.exists("/proc/cpuinfo"):
        found = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
        mhz, source = (max(found), "/proc/cpuinfo cpu MHz") if found else (None, None)
    capability = torch.backends.cpu.get_cpu_capability()
    lanes = {"AVX512": 16, "AVX2": 8}.get(capability, 4)
    vendor, family = _cpu_vendor_family()
    if capability == "AVX512" and vendor == "AuthenticAMD" and family == 25:
        lanes = 8   # Zen 4 runs AVX-512 on 256-bit units: two passes per 512-bit FMA
    flop_per_cycle = 2 * lanes * 2  # FMA = 2 FLOPs per lane, two FMA units
    return {"gflops": threads * mhz / 1e3 * flop_per_cycle if mhz else None, "cores": threads, "mhz": mhz,
            "mhz_source": source, "capability": capability, "fp32_lanes": lanes, "fma_units_assumed": 2,
            "flop_per_cycle": flop_per_cycle, "vendor": vendor, "cpu_family": family}


def _cpu_vendor_family() -> tuple[str | None, int | None]:
    try:
        info = dict(line.split(":", 1) for line in open("/proc/cpuinfo") if ":" in line)
    except OSError:
        return None, None
    family = info.get("cpu family", "").strip()
    return info.get("vendor_id", "").strip() or None, int(family) if family.isdigit() else None


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


def timed_call(method, batch: int, cost: dict, seed: int = 0):
    """(fn, factor, how): one latency measurement of `method` at `batch` is fn()'s seconds x factor. A full sample
    when NFE <= full_sample_max_nfe, else one network call x NFE (the scheduler's own arithmetic between calls,
    small next to a UNet, is left out: the row is marked extrapolated)."""
    if method.nfe <= cost["full_sample_max_nfe"]:
        return (lambda: method.sample(batch, seed, batch, False)), 1, "full sample"
    inputs = method.network_inputs(batch)
    return (lambda: method.network(*inputs)), method.nfe, f"one network call x NFE ({method.nfe})"


def time_interleaved(calls: dict, device, repeats: int, warmup: int, clock=time.perf_counter,
                     min_block_s: float | None = None) -> dict:
    """Seconds of each named fn() in `calls`, timed round-robin in one process: every round times each once, the
    order rotated by one each round, so a slow spell of the shared host lands on all of them alike and no method
    always follows the same one. A call shorter than min_block_s (MIN_BLOCK_S unless given), as timed in the
    last warm-up round, is repeated back to back within its turn until the block lasts about that long, and the
    block's mean is that round's time: a millisecond call timed alone is mostly clock and scheduler noise (the
    idea of timeit's autorange and torch.utils.benchmark's blocked_autorange). Returns {name: [seconds per call,
    one per round]} (after `warmup` untimed rounds; with no warm-up every block is one call)."""
    names = list(calls)
    min_block_s = MIN_BLOCK_S if min_block_s is None else min_block_s
    number = dict.fromkeys(names, 1)
    for w in range(warmup):
        for name in names:
            t0 = clock()
            calls[name]()
            sync(device)
            if w == warmup - 1:
                number[name] = max(1, math.ceil(min_block_s / max(clock() - t0, 1e-9)))
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = clock()
            for _ in range(number[name]):
                calls[name]()
            sync(device)
            times[name].append((clock() - t0) / number[name])
    return times


def spread(seconds, factor: float = 1.0, per: int = 1) -> dict:
    """Median and interquartile range (and min/max) of timings, scaled by factor / per."""
    q1, med, q3 = (float(np.percentile(seconds, q)) * factor / per for q in (25, 50, 75))
    return {"median": med, "q1": q1, "q3": q3, "min": min(seconds) * factor / per,
            "max": max(seconds) * factor / per, "repeats": len(seconds)}


def measure_timing(methods: dict, device, cost: dict, seed: int = 0) -> dict:
    """Latency per image at batch 1 and images/s at cost["throughput_batch"] of every method in `methods`
    (name -> Method), interleaved in one process (time_interleaved), with median and interquartile range."""
    tb = cost["throughput_batch"]
    plan = {(name, b): timed_call(m, b, cost, seed) for name, m in methods.items() for b in sorted({1, tb})}
    with torch.inference_mode():
        times = time_interleaved({key: fn for key, (fn, _, _) in plan.items()}, device, cost["repeats"],
                                 cost["warmup"])
    out = {}
    for name in methods:
        (_, f1, how), (_, ft, _) = plan[name, 1], plan[name, tb]
        per_image = spread(times[name, 1], f1)
        batch_s = spread(times[name, tb], ft)
        ips = sorted(tb / t / ft for t in times[name, tb])
        out[name] = {"latency_s_per_image_batch1": per_image, "seconds_per_batch_throughput": batch_s,
                     "images_per_s": spread(ips), "throughput_batch": tb, "extrapolated": f1 > 1 or ft > 1,
                     "measured": how}
    return out


def measure_sampling_speed(methods: dict, device, batch: int, cost: dict, seed: int = 0) -> dict:
    """Images/s of every method (name -> Method) at the sample jobs' batch (the caller sets their thread count),
    with the speed yardsticks interleaved in the same round-robin (time_interleaved): the 2048x2048 sgemm and each
    network's own two largest convolutions at that batch (conv_layers), each probe one call of every round.
    A method's peak is the fastest any of its probes (the sgemm or its own convolutions) ran in a round, the
    yardstick a sample job used to take over its own probes; achieved GFLOP/s = FLOPs per image x images/s."""
    plan = {name: timed_call(m, batch, cost, seed) for name, m in methods.items()}
    n = 2048
    a, b = sgemm_operands(device, n)
    probes = {"sgemm 2048": ((lambda: a @ b), 2 * n**3)}
    own = {}
    for name, m in methods.items():
        own[name] = ["sgemm 2048"]
        for c in conv_layers(m.network, m.network_inputs(batch)):
            mod, (nb, ci, h, w) = c["module"], c["input_shape"]
            label = f"conv {ci}->{mod.out_channels} k{mod.kernel_size[0]} {h}x{w} b{nb}"
            own[name].append(label)
            if label not in probes:
                x = torch.randn(c["input_shape"], generator=torch_generator("timing-inputs", "conv")).to(device)
                if c["channels_last"]:
                    x = x.contiguous(memory_format=torch.channels_last)
                probes[label] = ((lambda x=x, mod=mod: torch.nn.functional.conv2d(
                    x, mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation, mod.groups)), c["flops"])
    calls = {("method", k): fn for k, (fn, _, _) in plan.items()} | {("probe", k): fn for k, (fn, _) in probes.items()}
    with torch.inference_mode():
        flops = {k: count_flops(lambda m=m: m.network(*m.network_inputs(1))) * m.nfe for k, m in methods.items()}
        times = time_interleaved(calls, device, cost["repeats"], cost["warmup"])
    probe_gflops = {k: f / min(times["probe", k]) / 1e9 for k, (_, f) in probes.items()}
    rows = {}
    for name in methods:
        _, factor, how = plan[name]
        ips = spread(sorted(batch / t / factor for t in times["method", name]))
        best = max(own[name], key=probe_gflops.get)
        achieved = flops[name] * ips["median"] / 1e9
        rows[name] = {"batch_size": batch, "nfe": methods[name].nfe, "images_per_s": ips,
                      "flops_per_image": flops[name], "achieved_gflops": achieved, "peak_probe": best,
                      "peak_gflops": probe_gflops[best], "fraction_of_peak": achieved / probe_gflops[best],
                      "extrapolated": factor > 1, "measured": how}
    return {"methods": rows, "probe_gflops": probe_gflops, "rounds": cost["repeats"], "warmup_rounds": cost["warmup"],
            "threads": torch.get_num_threads(), "device": device_name(device),   # at the threads it was timed with
            "theoretical_peak": theoretical_peak_gflops() if torch.device(device).type == "cpu" else None}


def measure_cost(method, device, cost: dict, seed: int = 0) -> dict:
    """What one method costs that needs no clock: parameters, FLOPs per image, peak memory of a cold call at the
    throughput batch (in its own process: the CPU measure is a process high-water mark). Times: measure_timing."""
    with torch.inference_mode():
        flops_call = count_flops(lambda: method.network(*method.network_inputs(1)))
    tb = cost["throughput_batch"]
    fn, _, _ = timed_call(method, tb, cost, seed)

    def one_batch():
        with torch.inference_mode():
            fn()
    mem = peak_memory(one_batch, device)
    return {"method": method.name, "family": method.family, "nfe": method.nfe,
            "parameters_all": int(method.all_parameters), "parameters_inference": int(method.inference_parameters),
            "parameters_training_only": int(method.training_only_parameters),
            "flops_per_call": flops_call, "flops_per_image": flops_call * method.nfe,
            "flops_counter": "torch.utils.flop_counter, network at batch 1 (multiply-add = 2 FLOPs)",
            "throughput_batch": tb, **mem, "device": device_name(device), "threads": torch.get_num_threads()}
