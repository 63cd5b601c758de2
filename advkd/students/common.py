"""What every student family shares around its training: reading the distillation set, writing the distill rule's
files, and turning saved weights into a `Method`.

The distill rule's files (the generic trainer, advkd.students.family, writes them through `write_student`):
student.safetensors (the weights, under "gen."), student.json (the resolved recipe `build` rebuilds it from),
loss.csv (one row per epoch: the family's loss columns), panel.png (the family's picture of what it learnt: the
teacher's targets next to its outputs), grid.png (samples from fresh noise) and train.json (summary and
provenance).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import rng
from ..data import save_grid, to_uint8
from ..io import BadInputError, load_tensors, provenance, read_json, save_tensors, write_json
from ..method import Method
from ..teacher import load_teacher
from .networks import count
from .training import state_tensors


def load_trajectories(paths, checkpoints: int | None = None) -> dict:
    """Concatenate shards into x_T (N,C,H,W) and states (N,K,C,H,W) float32; a bad shard is named."""
    xs, ss, steps = [], [], None
    for p in paths:
        t = load_tensors(p)
        if set(t) != {"x_T", "states", "timesteps"} or t["states"].ndim != 5 or len(t["states"]) != len(t["x_T"]):
            raise BadInputError(f"{p}: not a trajectory shard (expected x_T, states (N,K,C,H,W), timesteps); "
                                "delete it and rerun the trajectories rule")
        if checkpoints is not None and t["states"].shape[1] != checkpoints:
            raise BadInputError(f"{p}: holds {t['states'].shape[1]} checkpoints, config asks for {checkpoints}; "
                                "delete the shard so the trajectories rule rewrites it")
        if steps is not None and not torch.equal(steps, t["timesteps"]):
            raise BadInputError(f"{p}: its checkpoint steps differ from the other shards'")
        steps = t["timesteps"]
        xs.append(t["x_T"].float())
        ss.append(t["states"].float())
    if not xs:
        raise BadInputError("no trajectory shards given")
    return {"x_T": torch.cat(xs), "states": torch.cat(ss), "timesteps": steps}


def load_distillation_set(paths, max_runs: int | None = None) -> dict:
    t = load_trajectories([Path(p) for p in paths])
    if max_runs is not None:
        t = {"x_T": t["x_T"][:max_runs], "states": t["states"][:max_runs], "timesteps": t["timesteps"]}
    return t


def write_student(out_dir, cfg: dict, generator, modules: dict, result: dict, traj: dict, seed: int, panel,
                  sample, grid: int = 64, extra: dict | None = None) -> None:
    """The distill rule's files once training is done (see the module docstring), then the checkpoint goes: a
    rerun (`snakemake -f`) trains anew. `modules` (name -> module) are saved beside the generator; `panel(path)`
    draws the family's panel; `sample(x_T)` the grid's images."""
    out_dir = Path(out_dir)
    generator.cpu().eval()
    for m in modules.values():
        m.cpu()
    panel(out_dir / "panel.png")
    # Fresh noise, not training noise: the grid shows what sampling gives.
    g = rng.torch_generator("student-grid", seed)
    x_T = torch.randn((grid, *traj["x_T"].shape[1:]), generator=g)
    with torch.no_grad():
        images = sample(x_T)
        save_grid(out_dir / "grid.png", to_uint8(images))
    write_json(out_dir / "student.json", cfg)
    tensors = state_tensors({"gen": generator, **modules})
    save_tensors(out_dir / "student.safetensors", tensors, metadata={"family": cfg["family"], "name": cfg["name"]})
    hist = result["history"]
    write_json(out_dir / "train.json", {
        "config": cfg, "epochs_run": len(hist), "final": hist[-1] if hist else None,
        "train_seconds_total": round(sum(r["seconds"] for r in hist), 3),
        "train_flops_total": sum(r["flops"] for r in hist), "resumed_from": result.get("resumed_from"),
        "generator_parameters": count(generator), **{f"{k}_parameters": count(m) for k, m in modules.items()},
        "trajectory_runs": len(traj["x_T"]), "trajectory_steps": traj["timesteps"].tolist(), **(extra or {}),
        "provenance": provenance(cfg)})
    (out_dir / "checkpoint.safetensors").unlink(missing_ok=True)


def teacher_unet(card_path) -> tuple:
    """(the teacher's UNet in fp32, {"unet_config", "timestep"} to rebuild it as a one-step student, card)."""
    unet, train_config, card = load_teacher(card_path, "cpu")
    unet = unet.to(memory_format=torch.contiguous_format).float()
    return unet, {"unet_config": dict(unet.config), "timestep": int(train_config["num_train_timesteps"]) - 1}, card


def load_student(student_dir, family: str, keys=()) -> tuple[dict, dict]:
    """(resolved config, tensors) of a trained student; a missing or foreign folder, or one written by an older
    version (its recipe lacks some of `keys`, the family's parameters today), is a BadInputError."""
    d = Path(student_dir or "")
    cfg = read_json(d / "student.json")
    if cfg.get("family") != family:
        raise BadInputError(f"{d}/student.json: trained family {cfg.get('family')!r}, expected {family!r}; "
                            "delete the folder and rerun the distill rule")
    missing = sorted(set(keys) - set(cfg))
    if missing:
        raise BadInputError(f"{d}/student.json: written by an older version of advkd (no {', '.join(missing)}); "
                            "results are reproducible: delete the folder and rerun the distill rule")
    return cfg, load_tensors(d / "student.safetensors")


def last_checkpoint_recipe(params, family: str, name: str, available: int, resolution: int, channels: int,
                           teacher_card=None) -> dict:
    """The resolved recipe of a student distilled onto the teacher's final x_0 (of `available` checkpoints): its
    training parameters (the family's sampling keys left out), family, name and the data's shape."""
    return {**params.training_dict(), "family": family, "name": name, "checkpoints": [available - 1],
            "resolution": resolution, "image_channels": channels, "teacher": teacher_card}


def student_config(name: str, ctx: dict, family: str, resolve, keys=()) -> tuple[dict, dict | None]:
    """(config, weights) of a student to build. A trained student: what the distill rule saved. A cost-only
    experiment (ctx["random_weights"] = {resolution, channels, checkpoints}): the config `resolve(name,
    checkpoints, resolution, channels)` gives at that shape and no weights, since parameters, FLOPs and latency
    depend on the architecture alone."""
    rw = ctx.get("random_weights")
    if rw:
        rng.seed_torch("random-weights", rw["seed"])
        return resolve(name, rw["checkpoints"], rw["resolution"], rw["channels"]), None
    return load_student(ctx.get("student_dir"), family, keys)


def generator_weights(tensors: dict) -> dict:
    return {k[4:]: v for k, v in tensors.items() if k.startswith("gen.")}


def student_method(name: str, family: str, nfe: int, generate, network, image_shape, net_input_shape,
                   all_parameters: int, info: dict, device="cpu", training_only_parameters: int = 0,
                   draws_noise: bool = False):
    """A `Method` over a trained student: `generate(x_T on the device) -> images` is the whole sampling path, from
    fresh x_T (the same draws the teacher's samplers make for this seed); with `draws_noise` it is
    `generate(x_T, generator)` and draws any further noise from the batch's generator. `network` is what it calls
    `nfe` times per sample (for FLOPs, latency and the parameters on the sampling path)."""

    def sample(n, seed, batch_size, progress, first_batch=0):
        outs = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in range(-(-n // batch_size)):
                m = min(batch_size, n - b * batch_size)
                g = rng.sample_batch(seed, first_batch + b)
                x_T = torch.randn((m, *image_shape), generator=g)
                x_T = x_T.to(device)
                outs.append((generate(x_T, g) if draws_noise else generate(x_T)).float().cpu())
        seconds = time.perf_counter() - t0
        return torch.cat(outs), {"n": n, "seed": seed, "steps": nfe, "nfe_per_sample": nfe, "batch_size": batch_size,
                                 "seconds": seconds, "images_per_s": n / seconds}

    # the teacher's memory format, so that a student and the sampler it is compared with run their convolutions
    # the same way (sampled and timed alike)
    network.to(device).to(memory_format=torch.channels_last).eval()
    return Method(name, family, nfe=nfe, sample=sample, network=network,
                  network_inputs=lambda b: (torch.randn(b, *net_input_shape, generator=rng.torch_generator(
                      "timing-inputs", "network", b)).to(device),),
                  inference_parameters=count(network), all_parameters=all_parameters, info=info,
                  training_only_parameters=training_only_parameters)
