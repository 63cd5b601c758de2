"""`advkd <stage> --key value ...`: one generic dispatcher from a rule's shell line (or a person's) to a stage
function. There is no hand-written argument layer: a stage's options are its function's keyword-only parameters
(`batch_size: int` is `--batch-size N`; a dict is JSON; a list takes several values; a bool is --x / --no-x; a
Literal gives the choices), required unless the signature gives a default, and the only defaults are the
signature's (None: not given). The DAG passes each job the resolved config's values (so Snakemake reruns exactly
the jobs whose values changed); nothing here restates a config default.

A stage with a `device` parameter also takes --threads; the dispatcher resolves the device (auto: cuda if there is
one) and sets torch up before the call. Only the called stage's module is imported: the stages pull in torch,
diffusers and clean-fid (seconds), which `advkd --help` and a mistyped command should not wait for (the one place
in the package that imports inside a function, tests/unit/test_imports.py).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import sys
import time
import types
import typing

from . import jobclock
from .io import BadInputError

# command -> (module:function, what it does). Each function is the job of the rule of the same name
# (workflow/rules/*.smk), with the prepared arguments a rule gives.
STAGES = {
    "prepare-data": ("advkd.stages.data:prepare_data_job",
                     "write train, validation and test .npz (the held-out split halved) and a data card"),
    "train-teacher": ("advkd.stages.teacher:train_teacher_job",
                      "train a DDPM teacher (resumable); writes a diffusers pipeline"),
    "teacher": ("advkd.stages.teacher:teacher_job", "resolve the configured teacher and write its card"),
    "trajectories": ("advkd.stages.teacher:trajectories_job", "write one shard of teacher trajectories"),
    "sample": ("advkd.stages.sample:sample_job", "generate samples with one method and one seed"),
    "merge-samples": ("advkd.stages.sample:merge_samples_job",
                      "join the shards of one sample run into .npz, PNG grid, JSON"),
    "real-samples": ("advkd.stages.sample:real_samples_job",
                     "draw the noise-floor row: n real images not in the reference"),
    "distill": ("advkd.stages.students:distill_job",
                "train one student method on the teacher's trajectories (resumable)"),
    "evaluator": ("advkd.stages.metrics:evaluator_job",
                  "install (shipped), train, or locate (inception) the fixed judge"),
    "second-judge": ("advkd.stages.metrics:second_judge_job",
                     "install (shipped) or train the second, autoencoder judge"),
    "reference-stats": ("advkd.stages.metrics:reference_stats_job",
                        "a judge's features of one held-out half: mu, sigma, features"),
    "quality": ("advkd.stages.metrics:quality_job",
                "FD, KID, IS, precision/recall and class coverage of one sample set"),
    "memorisation": ("advkd.stages.metrics:memorisation_job",
                     "how close a student's samples come to its distillation targets"),
    "phase-quality": ("advkd.students.advkd.phases:phase_quality_job",
                      "score every end-of-phase snapshot of a phase-by-phase Adv-KD run on the validation half"),
    "sanity": ("advkd.stages.metrics:sanity_job",
               "score real and deliberately degraded sets: the metrics must rank them"),
    "cost": ("advkd.stages.cost:cost_job", "params, NFE, FLOPs and memory of every method (times: the timing stage)"),
    "timing": ("advkd.stages.cost:timing_job",
               "latency and images/s of every method, timed interleaved in one process"),
    "report": ("advkd.stages.report:report_job", "tables and figures from finished results (retrains nothing)"),
}


def stage_function(command: str):
    module, name = STAGES[command][0].split(":")
    return getattr(importlib.import_module(module), name)


def _unwrap(tp):
    """(the type, whether None is allowed) of an annotation `X` or `X | None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), len(args) < len(typing.get_args(tp))
    return tp, False


def _annotation(func, param):
    """The parameter's annotation as a type (the stage modules use `from __future__ import annotations`)."""
    ann = param.annotation
    return eval(ann, vars(inspect.getmodule(func))) if isinstance(ann, str) else ann   # noqa: S307 - our own source


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None


def stage_parser(command: str, func) -> argparse.ArgumentParser:
    """The options of `advkd <command>`, from the function's keyword-only parameters and their annotations."""
    p = argparse.ArgumentParser(prog=f"advkd {command}", description=inspect.getdoc(func))
    for name, param in inspect.signature(func).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{func.__qualname__}: parameter {name} must be keyword-only (after *)")
        # each annotation read on its own: `device`'s (torch.device) is never evaluated, so that a stage module
        # whose jobs need no torch (joining arrays) need not import it for the annotation alone
        tp, _ = (str, False) if name == "device" else _unwrap(_annotation(func, param))
        kw = {"dest": name} | ({"required": True} if param.default is inspect.Parameter.empty
                               else {"default": param.default})
        origin = typing.get_origin(tp)
        if name == "device":   # torch.device, resolved by main (auto: cuda if there is one)
            kw["type"] = str
        elif tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kw["choices"] = typing.get_args(tp)
        elif tp in (dict, list) or origin is dict:
            kw["type"] = _json
        elif origin is list:
            kw |= {"nargs": "+", "type": typing.get_args(tp)[0]}
        elif tp in (int, float, str):
            kw["type"] = tp
        else:
            raise TypeError(f"{func.__qualname__}: parameter {name}: no option for type {tp}")
        p.add_argument("--" + name.replace("_", "-"), **kw)
    if "device" in inspect.signature(func).parameters:
        p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    return p


def _setup_torch(threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    # fp32 means fp32 on GPUs too (no TF32 in matmuls or convolutions): numbers comparable across devices
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _usage() -> str:
    width = max(map(len, STAGES))
    return ("usage: advkd [-v] <stage> [options]   (advkd <stage> --help: its options)\n\n" + __doc__.split("\n\n")[0]
            + "\n\nstages:\n" + "\n".join(f"  {c:<{width}}  {h}" for c, (_, h) in STAGES.items()))


def main(argv=None) -> int:
    entered = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    argv = argv[1:] if verbose else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in STAGES:
        print(f"{_usage()}\n\nadvkd: error: unknown stage {command!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    func = stage_function(command)
    imported = time.time()
    args = vars(stage_parser(command, func).parse_args(rest))
    if "device" in args:
        from .teacher import pick_device

        _setup_torch(args.pop("threads"))
        args["device"] = pick_device(args["device"])
    called = time.time()
    try:
        result = func(**args)
    except BadInputError as e:
        print(f"advkd {command}: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, default=str)[:4000])
    # where the job's seconds went (start-up against work): the report's DAG profile reads it from the job's log
    print(jobclock.line(jobclock.record(command, entered, imported, called, time.time())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
