"""The distillation set's layout: for each teacher run, x_T and the states at K checkpoints down to x_0, in shards
(written by the trajectories stage, advkd.stages.teacher; read by advkd.students.common). No torch: the planner
reads this module."""

from __future__ import annotations

from .io import BadInputError


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


def timestep_errors(timesteps, steps: int, train_steps: int = 1000) -> list[str]:
    """trajectories.timesteps must give one teacher timestep per sampler step, strictly decreasing."""
    if timesteps is None:
        return []
    errs = []
    if len(timesteps) != steps:
        errs.append(f"trajectories.timesteps: {len(timesteps)} timesteps given but the sampler has {steps} steps")
    if any(b >= a for a, b in zip(timesteps, timesteps[1:])) or max(timesteps) >= train_steps:
        errs.append(f"trajectories.timesteps: must strictly decrease within 0..{train_steps - 1}")
    return errs


def kept_levels(timesteps: list[int], keep: list[int]) -> list[int]:
    """The teacher timestep (noise level) of each kept state: the state after step i is at timesteps[i+1]; after
    the last step it is x_0, written -1."""
    return [timesteps[i + 1] if i + 1 < len(timesteps) else -1 for i in keep]


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, count)) for s in range(0, count, shard_size)]
