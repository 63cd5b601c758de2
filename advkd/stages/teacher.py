"""The stages of workflow/rules/teacher.smk: training a teacher (rule train_teacher), the teacher's card (teacher)
and the distillation set (trajectories)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import jobclock, rng
from ..data import load_split
from ..families import parse_sampler
from ..io import REPO_ROOT, load_images, provenance, save_tensors, sha256_file, write_json
from ..metrics.cost import count_flops
from ..samplers import SchedulerSpec, run_sampler, scheduler_spec
from ..teacher import build_scheduler, build_unet, load_pipeline_dir, load_teacher, train
from ..trajectories import checkpoint_steps, kept_levels, shard_ranges


def train_teacher(images, out_dir, **recipe) -> dict:
    """The train_teacher stage: a DDPM teacher (advkd.teacher.train, resumable) on the prepared training images
    (a train.npz) or, by hand, on a data block's training split."""
    images = load_images(images) if isinstance(images, (str, Path)) else load_split(images, "train")["images"]
    jobclock.begin("training")
    return train(images, out_dir, **recipe)


def train_teacher_job(*, images: str, out: str, architecture: str, epochs: int, batch_size: int, lr: float,
                      warmup_steps: int, ema_decay: float, seed: int, device: torch.device,
                      max_minutes: float | None = None) -> dict:
    """The train_teacher rule: a DDPM teacher on the prepared train.npz (resumable; --max-minutes stops after the
    epoch that passes it)."""
    recipe = {"architecture": architecture, "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "warmup_steps": warmup_steps, "ema_decay": ema_decay, "seed": seed}
    info = train_teacher(images, out, **recipe, device=device, max_minutes=max_minutes,
                         cfg_for_provenance={"images": images, **recipe, "max_minutes": max_minutes})
    return {k: info[k] for k in ("epochs", "steps", "final_loss", "train_seconds_this_run")}


def trajectories_job(*, teacher: str, params: dict, shard: int, seed: int, batch_size: int, device: torch.device,
                     out: str) -> dict:
    """The trajectories rule: shard --shard of the distillation set (--params: the trajectories: block as JSON)."""
    return trajectories(teacher, params, shard, seed, batch_size, device, out)


def teacher_job(*, teacher: dict, trained: str, out: str) -> dict:
    """The teacher rule: the teacher: block's teacher (--trained: the train_teacher rule's folder, or none) loaded
    once and described in its card (teacher.json)."""
    card = teacher_card(teacher, out, trained_dir=None if trained == "none" else trained)
    return {k: card[k] for k in ("source", "pipeline", "parameters", "flops_per_call")}


def trajectories(teacher_json, traj_cfg: dict, shard: int, seed: int, batch_size: int, device, out_path) -> dict:
    """The trajectories stage: one shard of the distillation set, drawn with the sampler traj_cfg names."""
    unet, train_config, _ = load_teacher(teacher_json, device)
    family, steps = parse_sampler(traj_cfg["sampler"])
    stats = write_shard(unet, train_config, traj_cfg, (scheduler_spec(family), steps), shard, seed, batch_size,
                        device, out_path)
    jobclock.add("teacher runs", stats["seconds"])
    return stats


def write_shard(unet, train_config, traj_cfg: dict, sampler: tuple[SchedulerSpec, int], shard: int, seed: int,
                batch_size: int, device, out_path, progress=True) -> dict:
    """Run the teacher for one shard of the distillation set and save x_T, states and step indices. `sampler` is
    (scheduler, steps) of traj_cfg["sampler"] (the registry resolves the name: `trajectories`)."""
    scheduler, steps = sampler
    start, stop = shard_ranges(traj_cfg["count"], traj_cfg["shard_size"])[shard]
    keep = checkpoint_steps(steps, traj_cfg["checkpoints"], traj_cfg["spacing"])
    x0, xT, states, stats = run_sampler(unet, scheduler, steps, train_config, stop - start, seed=seed,
                                        batch_size=batch_size, device=device, keep_steps=keep, progress=progress,
                                        desc=f"trajectories shard {shard}",
                                        draws=lambda b: rng.trajectory_batch(seed, shard, b),
                                        timesteps=traj_cfg.get("timesteps"))
    dtype = getattr(torch, traj_cfg["dtype"])
    meta = {"sampler": traj_cfg["sampler"], "shard": shard, "runs": f"{start}:{stop}",
            "keep_steps": ",".join(map(str, keep)), "seed": seed,
            **({"kept_levels": ",".join(map(str, kept_levels(traj_cfg["timesteps"], keep)))}
               if traj_cfg.get("timesteps") else {}), **{k: v for k, v in stats.items()}}
    save_tensors(out_path, {"x_T": xT.to(dtype), "states": states.to(dtype),
                            "timesteps": torch.tensor(keep)}, metadata=meta | {"provenance": provenance(device=device)})
    return stats


def teacher_source_dir(teacher_cfg: dict, trained_dir=None) -> str:
    src = teacher_cfg["source"]
    if src == "shipped":
        p = Path(teacher_cfg["shipped"])
        return str(p if p.is_absolute() or p.exists() else REPO_ROOT / p)
    if src == "train":
        return str(Path(trained_dir) / "pipeline")
    return teacher_cfg["pretrained"]


def teacher_card(teacher_cfg: dict, out_json, trained_dir=None) -> dict:
    """The `teacher` stage: load the teacher once (proving it loads) and write its card: where it is, sha256 of
    its weights, parameters and FLOPs per network call."""
    if teacher_cfg["source"] == "random":
        return _describe_random_teacher(teacher_cfg, out_json)
    src = teacher_source_dir(teacher_cfg, trained_dir)
    unet, sched = load_pipeline_dir(src, "cpu")
    weights = sorted(Path(unet.config._name_or_path).glob("*.safetensors")) if Path(
        str(unet.config._name_or_path)).is_dir() else []
    card = {
        "source": teacher_cfg["source"], "pipeline": str(Path(src).resolve()) if Path(src).exists() else src,
        "weights_sha256": {w.name: sha256_file(w) for w in weights},
        **_network_card(unet), "scheduler": dict(sched.config),
    }
    shipped_info = Path(src) / "teacher.json"
    if shipped_info.exists():
        card["training"] = json.loads(shipped_info.read_text())
    write_json(out_json, card)
    return card


def _network_card(unet) -> dict:
    """What every teacher card says about the network: size, image shape, FLOPs of one call at batch 1."""
    c, h = unet.config.in_channels, unet.config.sample_size
    with torch.inference_mode():
        flops = count_flops(lambda: unet(torch.zeros(1, c, h, h), torch.tensor([500])))
    return {"parameters": sum(p.numel() for p in unet.parameters()), "flops_per_call": flops, "sample_size": h,
            "channels": c}


def _describe_random_teacher(teacher_cfg: dict, out_json) -> dict:
    """Cost-only experiments: the teacher's architecture with seeded random weights. Parameters, FLOPs and
    latency depend only on the architecture, so the paper's cost comparison needs no weights."""
    rng.seed_torch("random-weights", teacher_cfg["seed"])
    unet = build_unet(teacher_cfg["architecture"]).eval()
    card = {"source": "random", "architecture": teacher_cfg["architecture"], "seed": teacher_cfg["seed"],
            "pipeline": None, **_network_card(unet), "scheduler": dict(build_scheduler().config),
            "note": "random weights: valid for cost only, never for quality"}
    write_json(out_json, card)
    return card
