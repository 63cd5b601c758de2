"""Sampling over the teacher with diffusers schedulers (set_timesteps / scale_model_input / step), batched: the
implementation of every sampler family of the registry (advkd.families).

Seeds: batch b of a run with seed s draws x_T and every ancestral noise from its own CPU generator, the stream
`advkd.rng.sample_batch(s, b)`, so results do not depend on the device's RNG and a run can be split into shards
freely.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import rng
from .families import FAMILIES, SamplerParams
from .io import BadInputError
from .method import Method
from .teacher import load_teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler class by name, its constructor overrides and step() keyword arguments."""
    cls: str
    kwargs: dict = field(default_factory=dict)
    step_kwargs: dict = field(default_factory=dict)


def scheduler_spec(family: str) -> SchedulerSpec:
    extra = FAMILIES[family].extra
    return SchedulerSpec(extra["scheduler"], extra["scheduler_kwargs"], extra["step_kwargs"])


def make_scheduler(spec: SchedulerSpec, steps: int, train_config, timesteps=None):
    """The scheduler of `spec` built from the teacher's training schedule, set to `steps` steps (at the teacher
    timesteps `timesteps`, one per step, where given)."""
    import diffusers

    sched = getattr(diffusers, spec.cls).from_config(train_config, **spec.kwargs)
    if timesteps is None:
        sched.set_timesteps(steps)
        return sched
    if "timesteps" not in inspect.signature(sched.set_timesteps).parameters:
        raise BadInputError(f"trajectories.timesteps: {spec.cls} takes no custom timesteps; use a sampler whose "
                            "scheduler does (ddpm, dpmsolver) or drop the key")
    sched.set_timesteps(timesteps=list(timesteps))
    if [int(t) for t in sched.timesteps] != list(timesteps):
        raise BadInputError(f"trajectories.timesteps: {spec.cls} set {sched.timesteps.tolist()}, not the "
                            f"timesteps asked for {list(timesteps)}")
    return sched


# unet -> (compiled net, input shapes it has run), for the life of the process (the compiled net refers to its
# unet anyway): a sample or timing job holds its few networks to the end.
_COMPILED: dict = {}


def compiled_network(unet, xs, t):
    """unet under torch.compile (inductor, static shapes), compiled now by one call per input in `xs` (each
    batch shape the run will use: a shorter last batch is a shape of its own) so that sampling times leave the
    compilation out; the eager unet, with a warning, where it cannot be compiled (on CPU inductor needs a C++
    compiler). One compiled net per unet for the process (a sample job runs its batches in several chunks);
    compiled kernels are also cached on disk (e.g. /tmp/torchinductor_$USER): later jobs start fast."""
    try:
        net, shapes = _COMPILED.get(unet) or (torch.compile(unet, dynamic=False), set())
        for x in xs:
            if (tuple(x.shape), x.dtype) not in shapes:
                net(x, t)
                shapes.add((tuple(x.shape), x.dtype))
        _COMPILED[unet] = net, shapes
        return net, True
    except Exception as e:  # noqa: BLE001 - any backend failure leaves eager sampling, which is always correct
        log.warning("torch.compile failed (%s: %s); sampling eagerly", type(e).__name__, str(e).splitlines()[0])
        return unet, False


@torch.inference_mode()
def run_sampler(unet, spec: SchedulerSpec, steps: int, train_config, n: int, seed: int, batch_size: int, device,
                keep_steps=(), progress=True, desc=None, first_batch: int = 0, compile: bool = False, draws=None,
                timesteps=None):
    """Run the teacher's reverse process for n samples: batches first_batch, first_batch+1, ... of the seed's run
    (a shard of a larger run starts at its first batch and gets exactly that run's draws).

    Returns (x0 float (n,C,H,W) in [-1,1] on CPU, x_T (n,C,H,W), states (n,len(keep_steps),C,H,W) or None, stats),
    where states[:, j] is the sample right after step index keep_steps[j] (0-based; steps-1 is x_0).
    compile: run the network through torch.compile (compiled before the clock starts; see compiled_network).
    draws: batch index -> its generator; the sample stream of `seed` by default (the distillation set passes its
    own, advkd.rng.trajectory_batch). timesteps: the teacher timesteps of the steps (see make_scheduler).
    """
    draws = draws or (lambda b: rng.sample_batch(seed, b))
    c, h = unet.config.in_channels, unet.config.sample_size
    keep = {int(i): j for j, i in enumerate(keep_steps)}
    outs, inits, kept = [], [], []
    net, is_compiled = unet, False
    n_batches = -(-n // batch_size)
    if compile:
        sizes = sorted({min(batch_size, n - b * batch_size) for b in (0, n_batches - 1)})
        xs = [torch.zeros((m, c, h, h), device=device).contiguous(memory_format=torch.channels_last) for m in sizes]
        net, is_compiled = compiled_network(unet, xs, make_scheduler(spec, steps, train_config, timesteps).timesteps[0])
    t0 = time.perf_counter()
    bar = tqdm(total=n * steps, disable=not progress, desc=desc, unit="img-step", mininterval=2)
    for b in range(n_batches):
        m = min(batch_size, n - b * batch_size)
        gen = draws(first_batch + b)
        sched = make_scheduler(spec, steps, train_config, timesteps)
        x = torch.randn((m, c, h, h), generator=gen)
        inits.append(x.clone())
        x = (x * sched.init_noise_sigma).to(device).contiguous(memory_format=torch.channels_last)
        states = [None] * len(keep)
        # Stochastic schedulers (DDPM) take the batch's generator; deterministic ones (UniPC, ...) have no such
        # argument.
        step_kwargs = dict(spec.step_kwargs)
        if "generator" in inspect.signature(sched.step).parameters:
            step_kwargs["generator"] = gen
        for i, t in enumerate(sched.timesteps):
            eps = net(sched.scale_model_input(x, t), t).sample
            x = sched.step(eps, t, x, **step_kwargs).prev_sample
            if i in keep:
                states[keep[i]] = x.float().cpu()
            bar.update(m)
        outs.append(x.float().cpu())
        if keep:
            kept.append(torch.stack(states, 1))
    bar.close()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    stats = {"n": n, "seed": seed, "steps": steps, "nfe_per_sample": len(sched.timesteps), "batch_size": batch_size,
             "seconds": seconds, "images_per_s": n / seconds, "compiled": is_compiled}
    return torch.cat(outs), torch.cat(inits), (torch.cat(kept) if keep else None), stats


def build(name: str, params: SamplerParams, ctx: dict) -> Method:
    """A sampler family's method: its scheduler over the teacher (ctx: teacher card, device, compile)."""
    spec = scheduler_spec(ctx["family"])
    unet, train_config, card = load_teacher(ctx["teacher"], ctx["device"])
    steps = params.steps

    def sample(n, seed, batch_size, progress, first_batch=0):
        x0, _, _, stats = run_sampler(unet, spec, steps, train_config, n, seed, batch_size, ctx["device"],
                                      progress=progress, desc=name, first_batch=first_batch,
                                      compile=ctx.get("compile", False))
        return x0, stats

    c, h = unet.config.in_channels, unet.config.sample_size
    params_n = sum(p.numel() for p in unet.parameters())

    def network_inputs(b):
        x = torch.randn(b, c, h, h, generator=rng.torch_generator("timing-inputs", "network", b))
        return (x.to(ctx["device"]).contiguous(memory_format=torch.channels_last),
                torch.full((b,), 500, device=ctx["device"]))

    return Method(name, ctx["family"], nfe=params.nfe, sample=sample, network=unet, network_inputs=network_inputs,
                  inference_parameters=params_n, all_parameters=params_n,
                  info={"teacher": card["pipeline"], "steps": steps})
