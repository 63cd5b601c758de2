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


rule sample_baseline:
    input:
        f"{R}/teacher/teacher.json",
    output:
        npz=temp(f"{R}/samples/{{method}}/seed{{seed}}/part-{{part}}.npz"),
        stats=temp(f"{R}/samples/{{method}}/seed{{seed}}/part-{{part}}.json"),
    wildcard_constraints:
        method="|".join(map(re.escape, SAMPLER_METHODS)) or "$^",
        seed=r"\d+",
        part=r"\d{5}",
    params:
        spec=lambda w: as_json(method_block(w.method)),
        n=lambda w: method_n(w.method),
        s=config["sampling"],
        part_size=lambda w: config["sampling"]["shard_size"] or method_n(w.method),
        compile=COMPILE,
        device=DEVICE,
        out=lambda w, output: os.path.splitext(output.npz)[0],
    log:
        f"{LOGS}/sample/{{method}}-seed{{seed}}-part{{part}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{method}}-seed{{seed}}-part{{part}}.tsv"
    threads: all_cores
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd sample --method {wildcards.method} --spec {params.spec:q} --teacher {input} --n {params.n}"
        " --seed {wildcards.seed} --batch-size {params.s[batch_size]} --part {wildcards.part}"
        " --part-size {params.part_size} {params.compile} --device {params.device} --threads {threads}"
        " --out {params.out} > {log} 2>&1"


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


# Every method's sample parts (rules sample_baseline and sample_student; one part unless sampling.shard_size is
# set) become its run for one seed. Local: it only joins arrays, so a cluster need not queue it.
rule merge_samples:
    input:
        parts=lambda w: [f"{p}.{ext}" for p in sample_parts(w) for ext in ("npz", "json")],
    output:
        npz=f"{R}/samples/{{method}}/seed{{seed}}.npz",
        grid=report(f"{R}/samples/{{method}}/seed{{seed}}.png", category="Samples", subcategory="{method}",
                    caption="../report/samples.rst"),
        stats=f"{R}/samples/{{method}}/seed{{seed}}.json",
    wildcard_constraints:
        seed=r"\d+",
    params:
        # the method's spec too: a changed method reruns this job and so its parts (temporary, gone by then)
        spec=lambda w: as_json(method_block(w.method)),
        stems=lambda w: " ".join(sample_parts(w)),
        n=lambda w: method_n(w.method),
        grid=config["sampling"]["grid"],
        out=lambda w, output: os.path.splitext(output.npz)[0],
    log:
        f"{LOGS}/sample/{{method}}-seed{{seed}}-merge.log",
    threads: 1
    resources:
        # the parts and the joined array in memory at once (50,000 RGB 256x256 images: ~20 GB)
        mem_mb=lambda w: 1000 + 2 * method_n(w.method) * config["data"]["resolution"] ** 2
        * config["data"]["channels"] // 2**20,
        runtime=30,
    localrule: True
    conda:
        ENV
    shell:
        "advkd merge-samples --parts {params.stems} --n {params.n} --grid {params.grid} --out {params.out}"
        " > {log} 2>&1"
