# Cost (measured on the device) of every method in config["methods"]: one job that costs them all, each in a
# process of its own, and one that times them all. Apart from metrics.smk because their code (advkd/stages/cost.py)
# imports diffusers, which the scoring jobs need not. Targets live in common.smk; see docs/metrics.md.


rule cost:
    input:
        teacher=f"{R}/teacher/teacher.json",
        # a student is costed from its own weights (and the teacher it may wrap); a shipped one from its folder
        students=[f"{student_dir(m)}/student.safetensors" for m in STUDENT_METHODS if not COST_ONLY],
    output:
        [f"{R}/metrics/cost/{m}.json" for m in METHODS],
    params:
        blocks=as_json({m: method_block(m) for m in METHODS}),
        cost=as_json(METRICS["cost"]),
        # with each method's block, the config slice hashed into its row's provenance
        cfg=as_json({"cost": METRICS["cost"], "device": DEVICE}),
        students=lambda w: f"{R}/students",   # each training run's folder is <this>/<method> (advkd.families.trainers)
        checkpoints=config["trajectories"]["checkpoints"],
        out=lambda w, output: os.path.dirname(output[0]),
        device=DEVICE,
    log:
        f"{LOGS}/cost.log",
    benchmark:
        f"{R}/benchmarks/cost.tsv"
    # the CPU memory measure is a process's high-water mark: each method is costed in a process of its own
    threads: all_cores
    resources:
        mem_mb=8000,
        runtime=lambda w: 5 * len(METHODS),
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd cost --blocks {params.blocks:q} --teacher {input.teacher} --students {params.students}"
        " --checkpoints {params.checkpoints} --cost {params.cost:q} --cfg {params.cfg:q}"
        " --device {params.device} --threads {threads} --out {params.out} > {log} 2>&1"


# Every method timed in one job, round-robin, so that speed ratios are measured under the same conditions (the
# shared host drifts by up to 2x between days and by 10% within a job).
rule timing:
    input:
        teacher=f"{R}/teacher/teacher.json",
        students=[f"{R}/students/{m}/student.safetensors" for m in TRAINED if not COST_ONLY],
    output:
        f"{R}/metrics/timing.json",
    params:
        blocks=as_json({m: method_block(m) for m in METHODS}),
        cost=as_json(METRICS["cost"]),
        cfg=as_json({"methods": {m: method_block(m) for m in METHODS}, "cost": METRICS["cost"], "device": DEVICE}),
        students=lambda w: f"{R}/students",   # each training run's folder is <this>/<method> (advkd.families.trainers)
        sampling=as_json(config["sampling"]),
        checkpoints=config["trajectories"]["checkpoints"],
        device=DEVICE,
    log:
        f"{LOGS}/timing.log",
    benchmark:
        f"{R}/benchmarks/timing.tsv"
    # Timings want the machine to themselves: the job takes every core so no other job runs beside it.
    threads: all_cores
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd timing --blocks {params.blocks:q} --teacher {input.teacher} --students {params.students}"
        " --checkpoints {params.checkpoints} --cost {params.cost:q} --cfg {params.cfg:q} --sampling {params.sampling:q}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"
