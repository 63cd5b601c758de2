"""Distillation set: for each teacher run, x_T and the states at K checkpoints down to x_0, as float shards."""

from __future__ import annotations

import torch

from .io import BadInputError, load_tensors, provenance, save_tensors
from .samplers import SchedulerSpec, run_sampler


def checkpoint_steps(steps: int, k: int, spacing="uniform") -> list[int]:
    """0-based step indices after which a state is kept. `uniform` gives floor(j*N/(K-1)) for j < K-1 plus the last
    step: for DDPM-1000 and K=11 the states after t = 999, 899, ..., 99 and x_0, as the paper stores them.
    K distinct states need K sampler steps; anything else is a BadInputError naming the config key."""
    if k > steps:
        raise BadInputError(f"trajectories.checkpoints: {k} checkpoints need at least as many sampler steps, but the "
                            f"sampler has {steps}")
    if isinstance(spacing, list):
        keep = [int(i) for i in spacing]
        if len(keep) != k:
            raise BadInputError(f"trajectories.spacing: {len(keep)} step indices given but checkpoints is {k}")
        if keep != sorted(set(keep)) or keep[0] < 0 or keep[-1] != steps - 1:
            raise BadInputError(f"trajectories.spacing: step indices must strictly increase and end at {steps - 1} "
                                "(x_0)")
        return keep
    if k == 1:
        return [steps - 1]
    return [(j * steps) // (k - 1) for j in range(k - 1)] + [steps - 1]


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, count)) for s in range(0, count, shard_size)]


def write_shard(unet, train_config, traj_cfg: dict, sampler: tuple[SchedulerSpec, int], shard: int, seed: int,
                batch_size: int, device, out_path, progress=True) -> dict:
    """Run the teacher for one shard of the distillation set and save x_T, states and step indices. `sampler` is
    (scheduler, steps) of traj_cfg["sampler"] (the registry resolves the name: advkd.stages.teacher)."""
    scheduler, steps = sampler
    start, stop = shard_ranges(traj_cfg["count"], traj_cfg["shard_size"])[shard]
    keep = checkpoint_steps(steps, traj_cfg["checkpoints"], traj_cfg["spacing"])
    x0, xT, states, stats = run_sampler(unet, scheduler, steps, train_config, stop - start, seed=seed * 7919 + shard,
                                        batch_size=batch_size, device=device, keep_steps=keep, progress=progress,
                                        desc=f"trajectories shard {shard}")
    dtype = getattr(torch, traj_cfg["dtype"])
    meta = {"sampler": traj_cfg["sampler"], "shard": shard, "runs": f"{start}:{stop}",
            "keep_steps": ",".join(map(str, keep)), "seed": seed, **{k: v for k, v in stats.items()}}
    save_tensors(out_path, {"x_T": xT.to(dtype), "states": states.to(dtype),
                            "timesteps": torch.tensor(keep)}, metadata=meta | {"provenance": provenance(device=device)})
    return stats


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

