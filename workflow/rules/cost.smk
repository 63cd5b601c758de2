# Cost (measured on the device) of every method in config["methods"]: one job per method, and one that times them
# all. Apart from metrics.smk because their code (advkd/stages/cost.py) imports diffusers, which the scoring jobs
# need not. Targets and the cost input function live in common.smk (cost_inputs); see docs/metrics.md.


rule cost:
    input:
        cost_inputs,
    output:
        f"{R}/metrics/cost/{{method}}.json",
    params:
        block=lambda w: as_json(method_block(w.method)),
        cost=as_json(METRICS["cost"]),
        cfg=lambda w: as_json({"method": method_block(w.method), "cost": METRICS["cost"], "device": DEVICE}),
        teacher=f"{R}/teacher/teacher.json",
        student_dir=lambda w: student_dir(w.method) if is_student(w.method) else f"{R}/students/{w.method}",
        checkpoints=config["trajectories"]["checkpoints"],
        device=DEVICE,
    log:
        f"{LOGS}/cost/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/cost/{{method}}.tsv"
    # the CPU memory measure is the process's high-water mark: nothing else may run in the job's process
    threads: all_cores
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd cost --method {wildcards.method} --block {params.block:q} --teacher {params.teacher}"
        " --student-dir {params.student_dir} --checkpoints {params.checkpoints} --cost {params.cost:q}"
        " --cfg {params.cfg:q}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


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
