# Quality (against a fixed judge) and cost (measured on the device) of every method in config["methods"].
# Targets and the cost input function live in common.smk (quality_files, cost_inputs); see docs/metrics.md.
EVAL = config["evaluator"]
METRICS = config["metrics"]


rule evaluator:
    input:
        train=[f"{R}/data/train.npz"] if EVAL["source"] == "train" else [],
        heldout=[f"{R}/data/heldout.npz"] if EVAL["source"] != "inception" else [],
    output:
        f"{R}/evaluator/evaluator.json",
    params:
        ev=as_json(EVAL),
        data=as_json(config["data"]),
        files=lambda w, input: " ".join(f"--{k} {v}" for k, v in input.items() if v),
        out=lambda w, output: os.path.dirname(output[0]),
        seed=config["seed"],
        device=DEVICE,
    log:
        f"{LOGS}/evaluator.log",
    benchmark:
        f"{R}/benchmarks/evaluator.tsv"
    threads: all_cores if EVAL["source"] == "train" else 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU if EVAL["source"] == "train" else 0,
    conda:
        ENV
    shell:
        "advkd evaluator --evaluator {params.ev:q} --data {params.data:q} {params.files} --seed {params.seed}"
        " --device {params.device} --threads {threads} --out {params.out} > {log} 2>&1"


rule reference_stats:
    input:
        evaluator=f"{R}/evaluator/evaluator.json",
        heldout=f"{R}/data/heldout.npz",
    output:
        stats=f"{R}/metrics/reference/heldout.safetensors",
        card=f"{R}/metrics/reference/heldout.json",
    params:
        metrics=as_json(METRICS),
        stem=lambda w, output: output.stats.removesuffix(".safetensors"),
        device=DEVICE,
    log:
        f"{LOGS}/reference_stats.log",
    benchmark:
        f"{R}/benchmarks/reference_stats.tsv"
    threads: all_cores
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd reference-stats --evaluator {input.evaluator} --heldout {input.heldout} --metrics {params.metrics:q}"
        " --device {params.device} --threads {threads} --out {params.stem} > {log} 2>&1"


rule quality:
    input:
        samples=f"{R}/samples/{{method}}/seed{{seed}}.npz",
        evaluator=f"{R}/evaluator/evaluator.json",
        reference=f"{R}/metrics/reference/heldout.safetensors",
    output:
        f"{R}/metrics/quality/{{method}}/seed{{seed}}.json",
    wildcard_constraints:
        seed=r"\d+",
    params:
        metrics=as_json(METRICS),
        # the config slice that determines this number, hashed into its provenance
        cfg=lambda w: as_json({"method": method_block(w.method), "metrics": METRICS, "evaluator": EVAL,
                               "data": config["data"]}),
        ref=lambda w, input: input.reference.removesuffix(".safetensors"),
        device=DEVICE,
    log:
        f"{LOGS}/quality/{{method}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/quality/{{method}}-seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd quality --method {wildcards.method} --samples {input.samples} --seed {wildcards.seed}"
        " --evaluator {input.evaluator} --reference {params.ref} --metrics {params.metrics:q}"
        " --cfg {params.cfg:q} --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


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
        student_dir=lambda w: f"{R}/students/{w.method}",
        checkpoints=config["trajectories"]["checkpoints"],
        device=DEVICE,
    log:
        f"{LOGS}/cost/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/cost/{{method}}.tsv"
    # Timings want the machine to themselves: the job takes every core so no other job runs beside it.
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


rule sanity:
    input:
        evaluator=f"{R}/evaluator/evaluator.json",
        reference=f"{R}/metrics/reference/heldout.safetensors",
        images=f"{R}/data/train.npz",
    output:
        json=f"{R}/metrics/sanity.json",
        csv=f"{R}/metrics/sanity.csv",
    params:
        metrics=as_json(METRICS),
        ref=lambda w, input: input.reference.removesuffix(".safetensors"),
        stem=lambda w, output: output.json.removesuffix(".json"),
        seed=config["seed"],
        device=DEVICE,
    log:
        f"{LOGS}/sanity.log",
    benchmark:
        f"{R}/benchmarks/sanity.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd sanity --evaluator {input.evaluator} --reference {params.ref} --images {input.images}"
        " --metrics {params.metrics:q} --seed {params.seed} --device {params.device} --threads {threads}"
        " --out {params.stem} > {log} 2>&1"
