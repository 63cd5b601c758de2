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


def teacher_sigmas(train_config) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) of the teacher's discrete schedule, t = 0 .. T-1."""
    import diffusers

    ac = diffusers.DDPMScheduler.from_config(train_config).alphas_cumprod.double()
    return ((1 - ac) / ac).sqrt()


def _is_edm(sched) -> bool:
    """EDM-style schedulers (EDMEulerScheduler, ...) give the network c_noise(sigma) and precondition its output."""
    return hasattr(sched, "precondition_outputs") and hasattr(sched, "precondition_noise")


class TeacherDenoiser:
    """The teacher as any diffusers scheduler asks for it, with its calls counted (the NFE a run actually made).

    The UNet predicts eps from the VP state at a DDPM timestep t. A scheduler over the same discrete timesteps
    (DDPM, DDIM, DPM-Solver, UniPC, Heun, Euler) scales its sample and passes t itself: the UNet is called as the
    diffusers pipelines call it. An EDM-style scheduler works in sigma: it passes c_noise(sigma) and expects EDM's
    preconditioned output F (denoised = c_skip x + c_out F); here, as k-diffusion's DiscreteEpsDDPMDenoiser does,
    sigma becomes the teacher's (fractional) t by interpolating log sigma on its table, the VE sample x becomes the
    VP input x / sqrt(1 + sigma^2), and eps becomes denoised = x - sigma eps, then F."""

    def __init__(self, net, train_config):
        self.net = net
        self.log_sigmas = teacher_sigmas(train_config).log()
        self.calls = 0

    def sigma_to_t(self, sigma) -> torch.Tensor:
        """The fractional teacher timestep whose sigma is `sigma` (linear in log sigma between table entries)."""
        ls = torch.as_tensor(sigma, dtype=torch.float64).log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        hi = int(torch.searchsorted(self.log_sigmas, ls).clamp(1, len(self.log_sigmas) - 1))
        w = (ls - self.log_sigmas[hi - 1]) / (self.log_sigmas[hi] - self.log_sigmas[hi - 1])
        return (hi - 1 + w).float()

    def network_time(self, sched, t):
        """What the UNet gets as its timestep for the scheduler's `t`."""
        if _is_edm(sched):
            if sched.step_index is None:
                sched._init_step_index(t)
            return self.sigma_to_t(sched.sigmas[sched.step_index])
        return t

    def __call__(self, sched, x, t):
        self.calls += 1
        if not _is_edm(sched):
            return self.net(sched.scale_model_input(x, t), t).sample
        t_net = self.network_time(sched, t)
        sched.is_scale_input_called = True   # the input scaling is the teacher's, done here
        sigma = float(sched.sigmas[sched.step_index])
        eps = self.net(x / (1 + sigma**2) ** 0.5, t_net).sample
        denoised = x - sigma * eps
        sd = sched.config.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
        return (denoised - c_skip * x) / c_out


def make_scheduler(spec: SchedulerSpec, steps: int, train_config, timesteps=None):
    """The scheduler of `spec` built from the teacher's training schedule, set to `steps` steps (at the teacher
    timesteps `timesteps`, one per step, where given). An EDM-style scheduler spans the teacher's own sigma range
    unless the family sets it."""
    import diffusers

    cls = getattr(diffusers, spec.cls)
    kwargs = dict(spec.kwargs)
    if hasattr(cls, "precondition_noise") and "sigma_max" not in kwargs:
        sigmas = teacher_sigmas(train_config)
        kwargs |= {"sigma_min": float(sigmas[0]), "sigma_max": float(sigmas[-1])}
    sched = cls.from_config(train_config, **kwargs)
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


def compiled_now(unet) -> bool:
    """Whether this process runs `unet` compiled (compiled_network succeeded for it)."""
    return unet in _COMPILED


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
    teacher = TeacherDenoiser(unet, train_config)
    first = make_scheduler(spec, steps, train_config, timesteps)   # what every batch's scheduler will do
    if compile:
        sizes = sorted({min(batch_size, n - b * batch_size) for b in (0, n_batches - 1)})
        xs = [torch.zeros((m, c, h, h), device=device).contiguous(memory_format=torch.channels_last) for m in sizes]
        net, is_compiled = compiled_network(unet, xs, teacher.network_time(first, first.timesteps[0]))
        teacher.net = net
    calls = len(first.timesteps)
    t0 = time.perf_counter()
    bar = tqdm(total=n * calls, disable=not progress, desc=desc, unit="img-call", mininterval=2)
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
            x = sched.step(teacher(sched, x, t), t, x, **step_kwargs).prev_sample
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
    nfe = teacher.calls / n_batches   # counted, not assumed: the network calls the scheduler made per batch
    stats = {"n": n, "seed": seed, "steps": steps, "nfe_per_sample": int(nfe) if nfe.is_integer() else nfe,
             "batch_size": batch_size,
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
