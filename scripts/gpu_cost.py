"""Run a cost-only experiment's stages (teacher card, the cost of every method, then the interleaved timing of
all of them) in one process, without Snakemake: for a GPU machine that has PyTorch and diffusers but not the whole
DAG toolchain. Writes the same files as the DAG (results/<experiment>-<device>/teacher/teacher.json,
metrics/cost/<method>.json, metrics/timing.json), so `advkd report` turns them into the same table and figures.

    python scripts/gpu_cost.py experiments/paper-cost.yaml --device cuda --out results/paper-cost-gpu
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advkd.config import load_config  # noqa: E402
from advkd.stages.cost import cost_context, method_cost, timing  # noqa: E402
from advkd.stages.teacher import teacher_card  # noqa: E402
from advkd.teacher import pick_device  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True)
    p.add_argument("--throughput-batch", type=int, help="override metrics.cost.throughput_batch")
    p.add_argument("--repeats", type=int, help="override metrics.cost.repeats")
    p.add_argument("--full-sample-max-nfe", type=int, help="override metrics.cost.full_sample_max_nfe")
    a = p.parse_args()
    cfg = load_config(a.config)
    # A GPU affords bigger batches, more repeats and timing whole samples: overrides are recorded in each JSON.
    for key in ("throughput_batch", "repeats", "full_sample_max_nfe"):
        if getattr(a, key) is not None:
            cfg["metrics"]["cost"][key] = getattr(a, key)
    if cfg["teacher"]["source"] != "random":
        sys.exit(f"{a.config}: scripts/gpu_cost.py runs cost-only experiments (teacher.source: random)")
    # fp32 means fp32 on GPUs too, as in the CLI: no TF32 in matmuls or convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = pick_device(a.device)
    out = Path(a.out)
    teacher_card(cfg["teacher"], out / "teacher" / "teacher.json")
    ctx = cost_context(out / "teacher" / "teacher.json", device, None, checkpoints=cfg["trajectories"]["checkpoints"])
    for name, block in cfg["methods"].items():
        row = method_cost(name, block, ctx, cfg["metrics"]["cost"], out / "metrics" / "cost" / f"{name}.json",
                         cfg={"method": block, "cost": cfg["metrics"]["cost"], "device": str(device)})
        print(json.dumps({k: row[k] for k in ("method", "nfe", "flops_per_image", "parameters_inference",
                                              "device")}), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # The peer ratio (whole DDIM loops, suite against stock diffusers) at the throughput batch, not the sampling
    # batch: at 256x256 a GPU affords that.
    sampling = cfg["sampling"] | {"batch_size": cfg["metrics"]["cost"]["throughput_batch"]}
    rows = timing(cfg["methods"], out / "teacher" / "teacher.json", out / "students",
                  cfg["trajectories"]["checkpoints"], device, cfg["metrics"]["cost"], out / "metrics" / "timing.json",
                  cfg={"methods": cfg["methods"], "cost": cfg["metrics"]["cost"], "device": str(device)},
                  sampling=sampling)["timing"]
    for name, r in rows.items():
        print(json.dumps({"method": name, "latency_s_per_image_batch1": r["latency_s_per_image_batch1"]["median"],
                          "images_per_s": r["images_per_s"]["median"], "extrapolated": r["extrapolated"]}),
              flush=True)


if __name__ == "__main__":
    main()
