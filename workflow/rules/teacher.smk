TEACHER = config["teacher"]
TRAJ = config["trajectories"]


rule train_teacher:
    input:
        f"{R}/data/train.npz",
    output:
        card=f"{R}/teacher/train/teacher.json",
        curve=f"{R}/teacher/train/loss.csv",
    params:
        out=lambda w, output: os.path.dirname(output.card),
        t=TEACHER,
        seed=config["seed"],
        device=DEVICE,
    log:
        f"{LOGS}/train_teacher.log",
    benchmark:
        f"{R}/benchmarks/train_teacher.tsv"
    threads: all_cores
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd train-teacher --images {input} --out {params.out} --architecture {params.t[architecture]}"
        " --epochs {params.t[epochs]} --batch-size {params.t[batch_size]} --lr {params.t[lr]}"
        " --warmup-steps {params.t[warmup_steps]} --ema-decay {params.t[ema_decay]} --seed {params.seed}"
        " --device {params.device} --threads {threads} > {log} 2>&1"


rule teacher:
    input:
        [f"{R}/teacher/train/teacher.json"] if TEACHER["source"] == "train" else [],
    output:
        f"{R}/teacher/teacher.json",
    params:
        teacher=as_json(TEACHER),
        trained=lambda w, input: os.path.dirname(input[0]) if input else "none",
    log:
        f"{LOGS}/teacher.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        ENV
    shell:
        "advkd teacher --teacher {params.teacher:q} --trained {params.trained} --out {output} > {log} 2>&1"


rule trajectories:
    input:
        f"{R}/teacher/teacher.json",
    output:
        f"{R}/trajectories/shard-{{shard}}.safetensors",
    wildcard_constraints:
        shard=r"\d{5}",
    params:
        traj=as_json(TRAJ),
        seed=config["seed"],
        batch_size=TRAJ["batch_size"] or config["sampling"]["batch_size"],
        device=DEVICE,
    log:
        f"{LOGS}/trajectories/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/trajectories/shard-{{shard}}.tsv"
    threads: all_cores
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd trajectories --teacher {input} --params {params.traj:q} --shard {wildcards.shard}"
        " --seed {params.seed} --batch-size {params.batch_size} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"
