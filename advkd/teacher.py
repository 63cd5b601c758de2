"""The teacher: a diffusers UNet2DModel + DDPMScheduler, trained here, shipped, or loaded from a pipeline dir."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import rng
from .assets import verify_shipped
from .config import UNET_PRESETS
from .data import to_float
from .io import (
    BadInputError,
    identity_mismatch,
    load_tensors,
    provenance,
    read_json,
    read_metadata,
    save_tensors,
    sha256_file,
    write_json,
    write_text,
)

log = logging.getLogger(__name__)

# The training noise schedule every teacher here shares (DDPM, Ho et al. 2020).
DDPM_SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                     variance_type="fixed_small", clip_sample=True)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_unet(preset: str):
    from diffusers import UNet2DModel

    if preset not in UNET_PRESETS:
        raise BadInputError(f"teacher.architecture: unknown preset {preset!r}; expected one of {sorted(UNET_PRESETS)}")
    return UNet2DModel(**UNET_PRESETS[preset])


def build_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**DDPM_SCHEDULE)


def _offline_env():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def load_pipeline_dir(path_or_id: str, device="cpu"):
    """(unet, scheduler) from a diffusers pipeline folder or hub id, safetensors only, never the network."""
    _offline_env()
    from diffusers import DDPMScheduler, UNet2DModel

    p = Path(path_or_id)
    if not p.is_dir():
        # A hub id works only if it is already in the local Hugging Face cache: nothing is downloaded at run time.
        try:
            from huggingface_hub import snapshot_download

            p = Path(snapshot_download(path_or_id, local_files_only=True))
        except Exception:
            raise BadInputError(
                f"teacher.pretrained: {path_or_id!r} is neither a local pipeline folder nor in the local Hugging Face "
                f"cache, and this suite never downloads at run time. On a machine with internet run "
                f"`huggingface-cli download {path_or_id} --local-dir experiments/assets/{Path(path_or_id).name}` "
                f"and set teacher.pretrained to that folder (it must hold unet/ with safetensors weights and "
                f"scheduler/scheduler_config.json)."
            ) from None
    verify_shipped(p)
    unet_dir = p / "unet" if (p / "unet").is_dir() else p
    sched_dir = p / "scheduler" if (p / "scheduler").is_dir() else p
    weights = list(unet_dir.glob("*.safetensors"))
    if not weights:
        pickled = [q.name for q in unet_dir.glob("*.bin")] + [q.name for q in unet_dir.glob("*.pt*")]
        raise BadInputError(
            f"{unet_dir}: no safetensors weights"
            + (f" (found pickle checkpoint(s) {pickled}, which this suite refuses to load because unpickling can run "
               "arbitrary code; convert them to safetensors on a trusted machine)" if pickled else ""))
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, low_cpu_mem_usage=False)
    except Exception as e:
        raise BadInputError(f"{unet_dir}: cannot load UNet2DModel ({type(e).__name__}: {e})") from None
    try:
        sched = DDPMScheduler.from_pretrained(sched_dir)
    except Exception as e:
        raise BadInputError(f"{sched_dir}: cannot load scheduler_config.json ({type(e).__name__}: {e})") from None
    return unet.to(device).eval(), sched


def save_pipeline_dir(unet, scheduler, out_dir) -> None:
    """diffusers DDPMPipeline layout (model_index.json, unet/, scheduler/), written to a temp dir then renamed."""
    import shutil
    import tempfile

    from diffusers import DDPMPipeline

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
    os.chmod(tmp, 0o755)  # mkdtemp makes a private dir; the pipeline is meant to be shared
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


# ----------------------------------------------------------------------------------------------------------------
# Training


HISTORY_FIELDS = ("epoch", "step", "loss", "seconds", "images_per_s")


def _state_tensors(unet, ema, opt, gen: torch.Generator, step: int, epoch: int, history: list) -> dict:
    t = {f"model.{k}": v for k, v in unet.state_dict().items()}
    t.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            t[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    t["rng"] = gen.get_state()
    t["progress"] = torch.tensor([step, epoch], dtype=torch.int64)
    # The loss history lives in the checkpoint, so loss.csv can always be rewritten whole (Snakemake deletes a
    # failed job's outputs, loss.csv among them, but not the checkpoint).
    t["history"] = torch.tensor([[r[k] for k in HISTORY_FIELDS] for r in history], dtype=torch.float64).reshape(
        -1, len(HISTORY_FIELDS))
    return t


def _load_state(t: dict, unet, ema, opt, gen: torch.Generator):
    """Put a checkpoint's tensors (load_tensors of it) back into the model, EMA, optimiser and RNG."""
    unet.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    sd = opt.state_dict()
    for k, v in t.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            sd["state"].setdefault(int(i), {})[name] = v
    opt.load_state_dict(sd)
    gen.set_state(t["rng"])
    step, epoch = (int(x) for x in t["progress"])
    history = [dict(zip(HISTORY_FIELDS, row.tolist())) for row in t["history"]]
    return step, epoch, history


def _write_curve(path, history: list) -> None:
    import io as _io

    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    w.writeheader()
    for r in history:
        w.writerow(r | {"epoch": int(r["epoch"]), "step": int(r["step"])})
    write_text(path, buf.getvalue())


def train(train_images: np.ndarray, out_dir, *, architecture: str, epochs: int, batch_size: int, lr: float,
          warmup_steps: int, ema_decay: float, seed: int, device, max_minutes=None, cfg_for_provenance=None) -> dict:
    """Train a DDPM teacher (epsilon-prediction MSE) and write a diffusers pipeline dir of its EMA weights.

    Resumable: `out_dir/checkpoint.safetensors` holds model, EMA, Adam state and the data RNG at the end of each
    epoch, so a killed run continues where it stopped and ends with the same weights. The learning rate is constant
    after warm-up, so stopping after E epochs (e.g. at `max_minutes`) gives exactly the `epochs=E` result.
    """
    device = pick_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng.seed_torch("teacher-training", seed)
    unet = build_unet(architecture).to(device).to(memory_format=torch.channels_last)
    ema = build_unet(architecture).to(device)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    scheduler = build_scheduler()
    opt = torch.optim.Adam(unet.parameters(), lr=lr)
    gen = rng.torch_generator("teacher-training", seed, "data")
    ckpt = out_dir / "checkpoint.safetensors"
    # Everything but the epoch count must match for a checkpoint to be resumed; otherwise it is another run. More
    # epochs continue a finished run: the lr is constant after warm-up, so that equals training them at once.
    identity = {"architecture": architecture, "batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps,
                "ema_decay": ema_decay, "seed": seed, "images": int(len(train_images)),
                "images_sha256": hashlib.sha256(np.ascontiguousarray(train_images).tobytes()).hexdigest(),
                "code_sha256": sha256_file(__file__), "torch": torch.__version__,
                "device": torch.device(device).type}   # bf16 autocast on a GPU: resumed elsewhere, another recipe
    step, start_epoch, history = 0, 0, []
    if ckpt.exists():
        stored = read_metadata(ckpt).get("recipe")
        stale = identity_mismatch(json.loads(stored) if stored else None, identity)
        state = None if stale else load_tensors(ckpt)
        if state is not None and int(state["progress"][1]) > epochs:
            stale = [f"epochs (it has trained more than the {epochs} asked for)"]
        if stale:
            log.warning("not resuming %s: it was made for another run (differs in: %s); training afresh", ckpt,
                        ", ".join(stale))
        else:
            step, start_epoch, history = _load_state(state, unet, ema, opt, gen)
            log.info("resumed from %s at epoch %d (step %d)", ckpt, start_epoch, step)
    data = to_float(train_images).to(device)
    n = len(data)
    alphas = scheduler.alphas_cumprod.to(device)
    curve_path = out_dir / "loss.csv"
    t_start = time.time()
    done_epochs = start_epoch
    amp = device.type == "cuda"
    for epoch in range(start_epoch, epochs):
        unet.train()
        perm = torch.randperm(n, generator=gen)
        losses = []
        t_epoch = time.time()
        for b in range(n // batch_size):  # drop the last partial batch: every step sees batch_size images
            x0 = data[perm[b * batch_size:(b + 1) * batch_size].to(device)]
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
            noise, t = noise.to(device), t.to(device)
            a = alphas[t].view(-1, 1, 1, 1)
            xt = (a.sqrt() * x0 + (1 - a).sqrt() * noise).contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warmup_steps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                pred = unet(xt, t).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - ema_decay)
            losses.append(loss.item())
            step += 1
        done_epochs = epoch + 1
        row = {"epoch": done_epochs, "step": step, "loss": float(np.mean(losses)),
               "seconds": round(time.time() - t_epoch, 2), "images_per_s": round(n / (time.time() - t_epoch), 1)}
        log.info("epoch %(epoch)d step %(step)d loss %(loss).5f (%(images_per_s).0f img/s)", row)
        history.append(row)
        save_tensors(ckpt, _state_tensors(unet, ema, opt, gen, step, done_epochs, history),
                     {"recipe": json.dumps(identity, sort_keys=True)})
        _write_curve(curve_path, history)
        if max_minutes is not None and (time.time() - t_start) / 60 > max_minutes and done_epochs < epochs:
            log.warning("stopping after epoch %d: max_minutes=%s reached", done_epochs, max_minutes)
            break
    ema.to("cpu")
    save_pipeline_dir(ema, scheduler, out_dir / "pipeline")
    _write_curve(curve_path, history)
    info = provenance(cfg_for_provenance, device=device, architecture=architecture, epochs=done_epochs,
                      batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, ema_decay=ema_decay, seed=seed,
                      steps=step, train_images=int(n), final_loss=history[-1]["loss"] if history else None,
                      train_seconds_this_run=round(time.time() - t_start, 1),
                      parameters=sum(p.numel() for p in ema.parameters()))
    write_json(out_dir / "teacher.json", info)
    return info


# ----------------------------------------------------------------------------------------------------------------
# A teacher as its card describes it (the card is written by the teacher stage, advkd.stages.teacher).


def load_teacher(card_path, device="cpu"):
    """(unet, train scheduler config, card) from the card the teacher stage wrote."""
    card = read_json(card_path)
    if card["source"] == "random":
        rng.seed_torch("random-weights", card["seed"])
        unet, sched = build_unet(card["architecture"]).to(device).eval(), build_scheduler()
        return unet.to(memory_format=torch.channels_last), sched.config, card
    if Path(card["pipeline"]).is_absolute() and not Path(card["pipeline"]).is_dir():
        raise BadInputError(f"{card_path}: names the teacher pipeline folder {card['pipeline']}, which does not exist; "
                            "restore it or rerun the teacher rule (delete the card first)")
    unet, sched = load_pipeline_dir(card["pipeline"], device)
    # the card's hashes are what every result downstream was made with: weights swapped in place since (a new
    # download into the same folder, a pulled asset) would mix two teachers in one experiment
    folder = Path(str(unet.config._name_or_path))
    found = {w.name: sha256_file(w) for w in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}
    if card.get("weights_sha256") and found != card["weights_sha256"]:
        raise BadInputError(f"{card_path}: the teacher's weights in {folder} are not the ones this card (and every "
                            "result made from it) was made with; if the change is meant, delete the results folder "
                            "(or at least the card) and rerun, else restore the weights")
    return unet.to(memory_format=torch.channels_last), sched.config, card
