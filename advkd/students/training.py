"""The training loop every student family runs: resumable, seeded, logged alike.

A family hands over its modules (what a checkpoint holds), the modules that train, and a list of `Segment`s: a
stretch of epochs with its own optimisers and batch step (a one-network student has one; a family that trains in
stages has one per stage). This module owns the rest: epochs, batch order, checkpoints, the loss CSV.

A checkpoint carries the identity of the run it belongs to (the family's resolved recipe and segments, the seed,
digests of the distillation set, of the initial weights (the teacher's, for a teacher-initialised student) and of
the code training computes with, the torch version and the kind of device); it is resumed only when that identity
equals the new run's, otherwise training starts afresh and the log says which parts differ. Resume is exact on
CPU: every random draw of an epoch (data order, anything the step draws from the generator it is given) comes from
a generator seeded by (seed, segment, epoch), and a checkpoint holds the weights, buffers, optimisers, torch's RNG
and the loss history at an epoch boundary, so a resumed run replays the same arithmetic.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import jobclock, rng
from ..io import (
    BadInputError,
    atomic_path,
    identity_mismatch,
    load_tensors,
    save_tensors,
    sources_sha256,
    tensors_sha256,
)
from ..metrics.cost import conv_training_probe, step_convs
from .networks import resize_to

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("epoch", "steps", "images")
# After the family's loss columns: the epoch's training FLOPs (its first step counted by torch's FlopCounterMode,
# forward and backward, critics and penalties included, scaled to the images the epoch trained on) and its wall
# time.
COST_COLUMNS = ("flops", "seconds")


@dataclass
class Segment:
    """A stretch of training with fresh optimisers: `epochs` passes over the runs in batches of `batch_size`."""
    label: dict                     # leading columns of its loss.csv rows: the family's index of the segment
    epochs: int
    batch_size: int
    begin: Callable                 # () -> (optimisers by name, step); step(batch indices, torch.Generator of the
                                    #   epoch) -> {loss column: float}; called when the segment starts or resumes
    identity: dict                  # what defines it, for the run identity (e.g. its epochs and batch size)
    end: Callable | None = None     # () -> None after its last epoch, before that epoch's checkpoint (e.g. keep
                                    #   a copy of the weights a later segment learns from)


class _NoModules:
    """Stands in for FlopCounterMode's per-module tracker, whose backward hooks torch.autograd.grad (the gradient
    penalty's) refuses: every FLOP is then counted under "Global" alone, which is all `fit` reads."""
    parents = ("Global",)
    is_bw = False

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


class StepFlops(FlopCounterMode):
    """torch's FLOP counter for a whole training step (forward, backward, double backward); total FLOPs only."""

    def __init__(self):
        super().__init__(display=False)
        self.mod_tracker = _NoModules()


class TrainingSpeed:
    """The training steps' GFLOP/s against the host's same-shaped convolution probe, per segment trained in this
    call, for the DAG profile (a note in the job's clock record, advkd.jobclock): a step's GFLOP/s is an epoch's
    counted FLOPs over its wall time, the median over the segment's epochs; its probe is the faster of the step's two
    largest convolutions (any network the step runs) run forward and backward alone at the same shapes and thread
    count (metrics.cost.conv_training_probe), timed after the segment's epochs, outside their clocks."""

    def __init__(self):
        self.rows: dict[int, dict] = {}
        self._probed: dict[tuple, dict] = {}   # a shape probed once per job (segments of one family share them)

    def epoch(self, s: int, seg: Segment, row: dict) -> None:
        if row["flops"] > 0 and row["seconds"] > 0:
            r = self.rows.setdefault(s, {"segment": s, **seg.label, "batch_size": seg.batch_size, "epoch_gflops": []})
            r["epoch_gflops"].append(row["flops"] / row["seconds"] / 1e9)

    def probe(self, s: int, convs: list[dict]) -> None:
        if s not in self.rows:
            return
        found = []
        for c in convs:
            m = c["module"]
            key = (c["input_shape"], tuple(m.weight.shape), m.stride, m.padding, m.dilation, m.groups)
            if key not in self._probed:
                self._probed[key] = conv_training_probe(c, m.weight.device)
            found.append(self._probed[key])
        best = max(found, key=lambda p: p["gflops"])
        r = self.rows[s]
        r |= {"epochs": len(r["epoch_gflops"]), "step_gflops": statistics.median(r["epoch_gflops"]),
              "probe": best["probe"], "probe_gflops": best["gflops"]}
        r["fraction_of_probe"] = r["step_gflops"] / r["probe_gflops"]
        jobclock.note("training_speed", [{k: v for k, v in row.items() if k != "epoch_gflops"}
                                         for row in self.rows.values() if "probe" in row])


def regression_loss(kind: str, pred, target, resolution: int | None = None):
    """kind = mse | l1; with `resolution`, both images are first area-averaged to that side (detail finer than
    that is left to the critic)."""
    if resolution and resolution < pred.shape[-1]:
        pred, target = resize_to(pred, resolution), resize_to(target, resolution)
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


# ----------------------------------------------------------------------------------------------- checkpoints

def _flat_optimizer(prefix: str, opt) -> tuple[dict, dict]:
    """Optimizer state as flat tensors + JSON-able hyperparameters (safetensors holds tensors only)."""
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt, prefix: str, tensors: dict, meta: dict) -> None:
    state = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def state_tensors(modules: dict) -> dict:
    """Every module's state under its name: {"gen.<key>": tensor, ...}."""
    return {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}


def save_checkpoint(path, modules: dict, optimizers: dict, progress: dict, history: list, identity: dict) -> None:
    tensors = state_tensors(modules) | {"rng.torch": torch.get_rng_state()}
    meta = {"progress": json.dumps(progress), "history": json.dumps(history),
            "identity": json.dumps(identity, sort_keys=True)}
    for name, opt in optimizers.items():
        t, m = _flat_optimizer(f"opt.{name}", opt)
        tensors |= t
        meta[f"opt.{name}"] = json.dumps(m)
    save_tensors(path, tensors, metadata=meta)


def load_checkpoint(path) -> tuple[dict, dict]:
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return tensors, meta


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def save_snapshot(out_dir, segment: int, modules: dict, history: list, identity: dict) -> None:
    """out_dir/segments/segment-SS.safetensors: the weights at the end of a segment (an Adv-KD phase, a
    progressive round), with what training had cost by then, so that quality can be measured by phase afterwards
    without retraining."""
    spent = {"segment": segment, "epochs": len(history), "steps": int(sum(r["steps"] for r in history)),
             "flops": float(sum(r["flops"] for r in history)), "seconds": float(sum(r["seconds"] for r in history))}
    save_tensors(Path(out_dir) / "segments" / f"segment-{segment:02d}.safetensors", state_tensors(modules),
                 metadata={"spent": json.dumps(spent), "identity": json.dumps(identity, sort_keys=True)})


def write_loss_csv(path, history: list, columns: list) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in columns})
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


# ----------------------------------------------------------------------------------------------- identity

STUDENTS = Path(__file__).resolve().parent
# the package's modules outside students/ whose code a student's training computes with (the teacher's samplers
# for progressive and consistency targets, the random streams, the data and teacher loading)
OUTSIDE_STUDENTS = ("samplers.py", "rng.py", "data.py", "teacher.py")


def run_identity(modules: dict, segments: list[Segment], x_T, targets, seed: int, resolved: dict,
                 device="cpu") -> dict:
    """What a checkpoint must have been made for to be resumed by this run (see the module docstring), training on
    `device`. Call it before training: the initial weights are part of it."""
    # Where the teacher lies is no part of it (its weights are, through the initial weights and the distillation
    # set): a results folder moved or mounted elsewhere still resumes.
    identity = {"student": _without_locations(resolved), "segments": [s.identity for s in segments], "seed": seed,
                "distillation_set_sha256": tensors_sha256({"x_T": x_T, "targets": targets}),
                "initial_weights_sha256": tensors_sha256(state_tensors(modules)),
                "code_sha256": sources_sha256(STUDENTS, [STUDENTS.parent / f for f in OUTSIDE_STUDENTS]),
                "torch": torch.__version__,
                # a run resumed on another kind of device would be part one, part the other
                "device": torch.device(device).type}
    return json.loads(json.dumps(identity, sort_keys=True, default=str))   # as it reads back from the file


def _without_locations(obj):
    if isinstance(obj, dict):
        return {k: _without_locations(v) for k, v in obj.items() if k not in ("teacher", "_name_or_path")}
    return obj


# ----------------------------------------------------------------------------------------------- the loop

def fit(modules: dict, trained: list[nn.Module], segments: list[Segment], n: int, loss_columns, out_dir, seed: int,
        identity: dict, stop_after_epochs: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) the segments over n training runs. `modules` (name -> module, on the device) is what a
    checkpoint holds; `trained` are put in training mode each epoch. `identity` is this run's `run_identity`: a
    checkpoint with another one is not resumed.

    Writes out_dir/checkpoint.safetensors and out_dir/loss.csv after every epoch, and a snapshot of the weights
    after each segment (save_snapshot). `stop_after_epochs` ends the call
    after that many epochs of this call (to simulate an interruption); returns {"done": bool, "history", ...}.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.safetensors"
    columns = [*segments[0].label, *INDEX_COLUMNS, *loss_columns, *COST_COLUMNS]
    start_seg, start_epoch, history, resumed = 0, 0, [], None
    ck = None
    if ckpt_path.exists():
        try:
            ck = load_checkpoint(ckpt_path)
        except BadInputError as e:  # a half-written checkpoint cannot exist (atomic writes); a foreign one can
            log.warning("ignoring unreadable checkpoint: %s", e)
    if ck is not None:
        stale = identity_mismatch(json.loads(ck[1].get("identity", "null")), identity)
        if stale:
            log.warning("not resuming %s: it was made for another run (differs in: %s); training afresh",
                        ckpt_path, ", ".join(stale))
            ck = None
    if ck is not None:
        tensors, meta = ck
        prog = json.loads(meta["progress"])
        for name, m in modules.items():
            m.load_state_dict(_strip(tensors, f"{name}."))
        torch.set_rng_state(tensors["rng.torch"])
        history = json.loads(meta["history"])
        start_seg, start_epoch = prog["segment"], prog["epoch"]
        resumed = prog
        log.info("resuming from %s at segment %d epoch %d", ckpt_path, start_seg, start_epoch)
    else:   # afresh: a snapshot left by an earlier run (one with more segments) is no segment of this one
        for stale in sorted((out_dir / "segments").glob("segment-*.safetensors")):
            stale.unlink()
    epochs_this_call = 0
    t_start = time.perf_counter()
    speed = TrainingSpeed()
    for s, seg in enumerate(segments):
        if s < start_seg:
            continue
        optimizers, step = seg.begin()
        convs = None
        if ck is not None and s == start_seg and start_epoch > 0:
            for name, opt in optimizers.items():
                _load_optimizer(opt, f"opt.{name}", ck[0], json.loads(ck[1][f"opt.{name}"]))
        for epoch in range(start_epoch if s == start_seg else 0, seg.epochs):
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                return {"done": False, "history": history, "resumed_from": resumed}
            gen = rng.torch_generator("training-batches", seed, s, epoch)
            order = torch.randperm(n, generator=gen)
            for m in trained:
                m.train()
            t0 = time.perf_counter()
            acc, steps, used, first_flops = {}, 0, 0, None
            for b in range(0, n, seg.batch_size):
                idx = order[b:b + seg.batch_size]
                if len(idx) < 2:  # BatchNorm needs 2 samples; a lone leftover is skipped, not padded
                    continue
                if first_flops is None:
                    # Counted under a dispatch mode, whose kernels may round differently from the plain
                    # path: a counted run differs from an uncounted one in the last bits, and stays exact to
                    # resume (every run counts the same steps).
                    with StepFlops() as counter, step_convs() as found:
                        out = step(idx, gen)
                    first_flops = counter.get_total_flops() / len(idx)
                    convs = convs or found
                else:
                    out = step(idx, gen)
                for k, v in out.items():
                    acc[k] = acc.get(k, 0.0) + v
                steps += 1
                used += len(idx)
            row = {**seg.label, "epoch": epoch, "steps": steps, "images": n,
                   **{k: acc.get(k, 0.0) / max(steps, 1) for k in loss_columns},
                   "flops": float(round((first_flops or 0) * used)), "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            epochs_this_call += 1
            # The epoch boundary after a segment's last epoch is stored as the start of the next segment, whose
            # optimisers are fresh: nothing of the finished segment's optimisers is needed to resume.
            last_epoch = epoch + 1 == seg.epochs
            speed.epoch(s, seg, row)
            if last_epoch and seg.end is not None:
                seg.end()
            if last_epoch:
                save_snapshot(out_dir, s, modules, history, identity)
            prog = {"segment": s + 1, "epoch": 0} if last_epoch else {"segment": s, "epoch": epoch + 1}
            save_checkpoint(ckpt_path, modules, optimizers, prog, history, identity)
            write_loss_csv(out_dir / "loss.csv", history, columns)
            if progress:
                log.info("%s epoch %d/%d: %s", seg.label or "", epoch + 1, seg.epochs,
                         {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        if convs:   # outside the epochs' clocks, after the segment's epochs of this call
            speed.probe(s, convs)
    write_loss_csv(out_dir / "loss.csv", history, columns)
    return {"done": True, "history": history, "resumed_from": resumed,
            "seconds_this_call": round(time.perf_counter() - t_start, 3)}

