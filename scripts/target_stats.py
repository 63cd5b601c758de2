"""What each Adv-KD head is asked to draw: per phase, the std of its target's pixels and the share outside [-1, 1],
as the heads saw them before the targets were made reachable (unclamped, the earlier layout's resolutions) and now
(clamped, each head at the published fraction of the image side). The table in docs/students.md.

    python scripts/target_stats.py results/default/trajectories
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from advkd.students.advkd.model import head_target
from advkd.students.advkd.params import AdvKDParams
from advkd.students.common import load_distillation_set
from advkd.students.networks import resize_to

# The embedded preset's head resolutions before: the up-slots used from the first block while doublings remained.
BEFORE = (8, 8, 16, 16, 32, 32, 32, 32, 32, 32, 32)


def main(folder: str) -> None:
    traj = load_distillation_set(sorted(Path(folder).glob("shard-*.safetensors")))
    states, steps = traj["states"], traj["timesteps"].tolist()
    _, available, ch, res, _ = states.shape
    after = [b["resolution"] for b in AdvKDParams().resolve("advkd", available, res, ch)["layout"]]
    if available != len(BEFORE):
        sys.exit(f"{folder}: {available} checkpoints; this table is for the default's {len(BEFORE)}")
    print(f"{states.shape[0]} runs. std = pixel std over all runs; out = share of pixels outside [-1, 1].\n")
    print("| phase | sampler step | before: side | std | out | after: side | std | out |")
    print("|---|---|---|---|---|---|---|---|")
    for k in range(available):
        s = states[:, k]
        old, new = resize_to(s, BEFORE[k]), head_target(s, after[k])
        out = lambda x: f"{(x.abs() > 1).double().mean().item():.1%}"  # noqa: E731
        print(f"| {k} | {steps[k]} | {BEFORE[k]} | {old.std().item():.3f} | {out(old)} | {after[k]} | "
              f"{new.std().item():.3f} | {out(new)} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main(*sys.argv[1:])
