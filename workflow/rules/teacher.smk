TEACHER = config["teacher"]
TRAJ = config["trajectories"]


rule train_teacher:
    input:
        f"{R}/data/train.npz",
    output:
        card=f"{R}/teacher/train/teacher.json",
        curve=f"{R}/teacher/train/loss.csv",
    params:
        out=f"{R}/teacher/train",
    log:
        f"{LOGS}/train_teacher.log",
    benchmark:
        f"{R}/benchmarks/train_teacher.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=GPU,
    shell:
        "advkd train-teacher --images {input} --out {params.out} --architecture {TEACHER[architecture]}"
        " --epochs {TEACHER[epochs]} --batch-size {TEACHER[batch_size]} --lr {TEACHER[lr]}"
        " --warmup-steps {TEACHER[warmup_steps]} --ema-decay {TEACHER[ema_decay]} --seed {config[seed]}"
        " --device {DEVICE} --threads {threads} > {log} 2>&1"


rule teacher:
    input:
        [f"{R}/teacher/train/teacher.json"] if TEACHER["source"] == "train" else [],
    output:
        f"{R}/teacher/teacher.json",
    params:
        teacher=as_json(TEACHER),
        trained=f"{R}/teacher/train",
    log:
        f"{LOGS}/teacher.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "advkd teacher --teacher {params.teacher:q} --trained {params.trained} --out {output} > {log} 2>&1"


rule sample_baseline:
    input:
        f"{R}/teacher/teacher.json",
    output:
        npz=f"{R}/samples/{{method}}/seed{{seed}}.npz",
        grid=report(f"{R}/samples/{{method}}/seed{{seed}}.png", category="Samples", subcategory="{method}",
                    caption="../report/samples.rst"),
        stats=f"{R}/samples/{{method}}/seed{{seed}}.json",
    wildcard_constraints:
        method="|".join(map(re.escape, SAMPLER_METHODS)) or "$^",
        seed=r"\d+",
    params:
        spec=lambda w: as_json(METHODS[w.method]),
        n=lambda w: method_n(w.method),
        s=config["sampling"],
    log:
        f"{LOGS}/sample/{{method}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{method}}-seed{{seed}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=GPU,
    shell:
        "advkd sample --method {wildcards.method} --spec {params.spec:q} --teacher {input} --n {params.n}"
        " --seed {wildcards.seed} --batch-size {params.s[batch_size]} --grid {params.s[grid]} --device {DEVICE}"
        " --threads {threads} --out {R}/samples/{wildcards.method}/seed{wildcards.seed} > {log} 2>&1"


rule trajectories:
    input:
        f"{R}/teacher/teacher.json",
    output:
        f"{R}/trajectories/shard-{{shard}}.safetensors",
    wildcard_constraints:
        shard=r"\d{5}",
    params:
        traj=as_json(TRAJ),
    log:
        f"{LOGS}/trajectories/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/trajectories/shard-{{shard}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=GPU,
    shell:
        "advkd trajectories --teacher {input} --params {params.traj:q} --shard {wildcards.shard}"
        " --seed {config[seed]} --batch-size {config[sampling][batch_size]} --device {DEVICE} --threads {threads}"
        " --out {output} > {log} 2>&1"
