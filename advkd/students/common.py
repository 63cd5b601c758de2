"""What every student family shares around the training loop: reading the distillation set, choosing which
teacher checkpoints the phases distil, writing the stage's files, and turning saved weights into a `Method`."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..data import save_grid, to_uint8
from ..io import BadInputError, load_tensors, read_json, save_tensors, write_json
from ..method import Method
from ..samplers import batch_seed
from ..teacher import load_teacher
from ..trajectories import load_trajectories
from .training import phase_panel, run_identity, save_json_summary, train


def select_checkpoints(available: int, phases: int, explicit=None) -> list[int]:
    """Trajectory checkpoint indices the student distils, one per phase, always ending at x_0 (index available-1).

    Rule: phase j takes checkpoint ceil((j+1)*available/phases) - 1, i.e. the checkpoints evenly thinned from the
    end, so phases=available keeps all of them and phases=1 keeps x_0 only. An explicit list overrides the rule.
    """
    if explicit is not None:
        return [int(i) for i in explicit]
    return [math.ceil((j + 1) * available / phases) - 1 for j in range(phases)]


def checkpoint_errors(where: str, available: int, phases: int | None, explicit) -> list[str]:
    errs = []
    if phases is not None and phases > available:
        errs.append(f"{where}.phases: {phases} phases need as many teacher checkpoints, but trajectories.checkpoints "
                    f"is {available}")
    if explicit is not None:
        if phases is not None and len(explicit) != phases:
            errs.append(f"{where}.checkpoints: {len(explicit)} indices given but phases is {phases}")
        if explicit != sorted(set(explicit)) or explicit[-1] != available - 1 or explicit[0] < 0:
            errs.append(f"{where}.checkpoints: indices must strictly increase within 0..{available - 1} and end at "
                        f"{available - 1} (x_0)")
    return errs


def load_distillation_set(paths, max_runs: int | None = None) -> dict:
    t = load_trajectories([Path(p) for p in paths])
    if max_runs is not None:
        t = {"x_T": t["x_T"][:max_runs], "states": t["states"][:max_runs], "timesteps": t["timesteps"]}
    return t


def run_distillation(student, phases, recipe, cfg: dict, traj: dict, out_dir, seed: int, device="cpu",
                     stop_after_epochs=None, progress=True, grid: int = 64) -> dict:
    """Train (resuming a checkpoint there only if it was made for exactly this run) and write the stage's files.
    `cfg` is the resolved config that `build` needs to rebuild the networks; it is saved as student.json. The
    checkpoint is removed once the student's files are written: a rerun (`snakemake -f`) trains anew."""

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    targets = traj["states"][:, cfg["checkpoints"]]
    identity = run_identity(student, phases, recipe, traj["x_T"], targets, seed, cfg)
    result = train(student, phases, recipe, traj["x_T"], targets, out_dir, seed, device, stop_after_epochs,
                   progress, identity=identity)
    if not result["done"]:
        return result
    student.generator.cpu().eval()
    student.discriminators.cpu()
    phase_panel(student, phases, traj["x_T"], targets, out_dir / "panel.png")
    # Fresh noise, not training noise: the grid shows what sampling gives.
    g = torch.Generator().manual_seed(seed + 1)
    x_T = torch.randn((grid, *traj["x_T"].shape[1:]), generator=g)
    with torch.no_grad():
        save_grid(out_dir / "grid.png", to_uint8(student.generator(student.noise_input(x_T))))
    write_json(out_dir / "student.json", cfg)
    tensors = {f"gen.{k}": v for k, v in student.generator.state_dict().items()}
    tensors |= {f"disc.{k}": v for k, v in student.discriminators.state_dict().items()}
    save_tensors(out_dir / "student.safetensors", tensors, metadata={"family": cfg["family"], "name": cfg["name"]})
    n_gen = sum(p.numel() for p in student.generator.parameters())
    n_disc = sum(p.numel() for p in student.discriminators.parameters())
    save_json_summary(out_dir / "train.json", cfg, result,
                      {"generator_parameters": n_gen, "discriminator_parameters": n_disc,
                       "trajectory_runs": len(traj["x_T"]), "trajectory_steps": traj["timesteps"].tolist(),
                       "run_identity": identity})
    (out_dir / "checkpoint.safetensors").unlink(missing_ok=True)
    return result


def teacher_unet(card_path) -> tuple:
    """(the teacher's UNet in fp32, {"unet_config", "timestep"} to rebuild it as a one-step student, card)."""
    unet, train_config, card = load_teacher(card_path, "cpu")
    unet = unet.to(memory_format=torch.contiguous_format).float()
    return unet, {"unet_config": dict(unet.config), "timestep": int(train_config["num_train_timesteps"]) - 1}, card


def load_student(student_dir, family: str) -> tuple[dict, dict]:
    """(resolved config, tensors) of a trained student; a missing or foreign folder is a BadInputError."""
    d = Path(student_dir or "")
    cfg = read_json(d / "student.json")
    if cfg.get("family") != family:
        raise BadInputError(f"{d}/student.json: trained family {cfg.get('family')!r}, expected {family!r}; "
                            "delete the folder and rerun the distill rule")
    return cfg, load_tensors(d / "student.safetensors")


def student_config(name: str, params: dict, ctx: dict, family: str, resolve) -> tuple[dict, dict | None]:
    """(config, weights) of a student to build. A trained student: what the distill rule saved. A cost-only
    experiment (ctx["random_weights"] = {resolution, channels, checkpoints}): the config `params` resolve to at
    that shape and no weights, since parameters, FLOPs and latency depend on the architecture alone."""
    rw = ctx.get("random_weights")
    if rw:
        torch.manual_seed(rw.get("seed", 0))
        return resolve(name, params, rw["checkpoints"], rw["resolution"], rw["channels"]), None
    return load_student(ctx.get("student_dir"), family)


def student_method(name: str, family: str, generator, noise_input, inference_net, image_shape, net_input_shape,
                   all_parameters: int, info: dict, device="cpu"):
    """A `Method` sampling in one forward pass: fresh x_T (the same draws the teacher's samplers make for this
    seed), the student's noise input, then the inference path."""

    def sample(n, seed, batch_size, progress, first_batch=0):
        outs = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in range(-(-n // batch_size)):
                m = min(batch_size, n - b * batch_size)
                g = torch.Generator().manual_seed(batch_seed(seed, first_batch + b))
                x_T = torch.randn((m, *image_shape), generator=g)
                outs.append(inference_net(noise_input(x_T.to(device))).float().cpu())
        seconds = time.perf_counter() - t0
        return torch.cat(outs), {"n": n, "seed": seed, "steps": 1, "nfe_per_sample": 1, "batch_size": batch_size,
                                 "seconds": seconds, "images_per_s": n / seconds}

    generator.to(device).eval()
    inference_net.to(device).eval()
    return Method(name, family, nfe=1, sample=sample, network=inference_net,
                  network_inputs=lambda b: (torch.randn(b, *net_input_shape, device=device),),
                  inference_parameters=sum(p.numel() for p in inference_net.parameters()),
                  all_parameters=all_parameters, info=info)
