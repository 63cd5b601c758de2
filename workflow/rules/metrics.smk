# Quality of every method in config["methods"] against the fixed judges (cost and timing: cost.smk).
# Targets live in common.smk (quality_dirs); see docs/metrics.md.
EVAL = config["evaluator"]
METRICS = config["metrics"]


rule evaluator:
    input:
        train=[f"{R}/data/train.npz"] if EVAL["source"] == "train" else [],
        # the judge's accuracy is reported on the validation half (the test half only ever scores samples)
        heldout=[f"{R}/data/validation.npz"] if EVAL["source"] != "inception" else [],
    output:
        f"{R}/evaluator/evaluator.json",
    params:
        ev=as_json(EVAL),
        data=as_json(config["data"]),
        files=lambda w, input: " ".join(f"--{k} {v}" for k, v in input.items() if v),
        out=lambda w, output: os.path.dirname(output[0]),
        seed=config["seed"],
        border=zero_border(config["data"]),   # padded data: the judge scores the region the data defines
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
        " --border {params.border}"
        " --device {params.device} --threads {threads} --out {params.out} > {log} 2>&1"


# The second, independent judge (an autoencoder's encoder): FD under it beside FD under the first.
rule second_judge:
    input:
        train=[f"{R}/data/train.npz"] if JUDGE2 == "train" else [],
        heldout=f"{R}/data/validation.npz",
    output:
        f"{R}/judge2/evaluator.json",
    params:
        judge=as_json(EVAL["second"]),
        data=as_json(config["data"]),
        files=lambda w, input: " ".join(f"--{k} {v}" for k, v in input.items() if v),
        out=lambda w, output: os.path.dirname(output[0]),
        seed=config["seed"],
        border=zero_border(config["data"]),
        device=DEVICE,
    log:
        f"{LOGS}/second_judge.log",
    benchmark:
        f"{R}/benchmarks/second_judge.tsv"
    threads: all_cores if JUDGE2 == "train" else 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU if JUDGE2 == "train" else 0,
    conda:
        ENV
    shell:
        "advkd second-judge --judge {params.judge:q} --data {params.data:q} {params.files} --seed {params.seed}"
        " --border {params.border} --device {params.device} --threads {threads} --out {params.out} > {log} 2>&1"


# A judge's statistics of one half of the held-out split: samples are scored against REFERENCE (the test half
# in a report experiment, the validation half in a tuning one). judge: evaluator (the first) or judge2.
rule reference_stats:
    input:
        evaluator=f"{R}/{{judge}}/evaluator.json",
        heldout=f"{R}/data/{{half}}.npz",
    output:
        stats=f"{R}/metrics/reference/{{judge}}/{{half}}.safetensors",
        card=f"{R}/metrics/reference/{{judge}}/{{half}}.json",
    wildcard_constraints:
        half="validation|test",
        judge="evaluator|judge2",
    params:
        metrics=as_json(METRICS),
        stem=lambda w, output: output.stats.removesuffix(".safetensors"),
        device=DEVICE,
    log:
        f"{LOGS}/reference_stats-{{judge}}-{{half}}.log",
    benchmark:
        f"{R}/benchmarks/reference_stats-{{judge}}-{{half}}.tsv"
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


# Quality by phase (report.phase_quality): every end-of-phase snapshot of an Adv-KD run trained phase by phase,
# head k's images and the teacher's states at head k's noise level, scored on the validation half
# (advkd.students.advkd.phases): metrics/phase_quality/<method>/phase_quality.json and a grid of each per phase.
rule phase_quality:
    input:
        student=lambda w: f"{student_dir(w.method)}/student.safetensors",
        trajectories=expand(f"{R}/trajectories/shard-{{shard:05d}}.safetensors", shard=range(N_SHARDS)),
        evaluator=f"{R}/evaluator/evaluator.json",
        reference=f"{R}/metrics/reference/evaluator/validation.safetensors",
    output:
        directory(f"{R}/metrics/phase_quality/{{method}}"),
    wildcard_constraints:
        method="|".join(map(re.escape, PHASE_RUNS)) or "$^",
    params:
        run=lambda w, input: os.path.dirname(input.student),
        ref=lambda w, input: input.reference.removesuffix(".safetensors"),
        metrics=as_json(METRICS),
        n=config["sampling"]["n"],
        seed=SEEDS[0],
        batch_size=config["sampling"]["batch_size"],
        device=DEVICE,
    log:
        f"{LOGS}/phase_quality/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/phase_quality/{{method}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd phase-quality --run {params.run} --trajectories {input.trajectories} --evaluator {input.evaluator}"
        " --reference {params.ref} --metrics {params.metrics:q} --n {params.n} --seed {params.seed}"
        " --batch-size {params.batch_size} --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


# One job per method for all its seeds (the real row too): metrics/quality/<method>/seed<k>.json.
rule quality:
    input:
        samples=lambda w: [f"{R}/samples/{w.method}/seed{s}.npz" for s in method_seeds(w.method)],
        evaluator=f"{R}/evaluator/evaluator.json",
        reference=REFERENCE,
        judge2=[f"{R}/judge2/evaluator.json"] if JUDGE2 != "none" else [],
        reference2=[REFERENCE2] if JUDGE2 != "none" else [],
        teacher=lambda w: [f"{R}/samples/{TEACHER_METHOD}/seed{s}.npz" for s in method_seeds(w.method)]
        if TEACHER_METHOD and w.method != REAL else [],
    output:
        directory(f"{R}/metrics/quality/{{method}}"),
    wildcard_constraints:
        method="[^/]+",
    params:
        samples=lambda w, input: seed_pairs(w.method, input.samples),
        metrics=as_json(METRICS),
        # the config slice that determines these numbers, hashed into their provenance
        cfg=lambda w: as_json({"method": method_block(w.method) if w.method != REAL else REAL_SOURCE,
                               "metrics": METRICS, "evaluator": EVAL, "data": config["data"]}),
        ref=lambda w, input: input.reference.removesuffix(".safetensors"),
        scored_by=lambda w: "all" if w.method == REAL else METHODS[w.method].get("scored_by", "all"),
        judge2=lambda w, input: (f"--judge2 {input.judge2[0]} --judge2-reference "
                                 f"{input.reference2[0].removesuffix('.safetensors')}") if input.judge2 else "",
        teacher=lambda w, input: f"--teacher-samples {seed_pairs(w.method, input.teacher)}" if input.teacher else "",
        device=DEVICE,
    log:
        f"{LOGS}/quality/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/quality/{{method}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda w: 30 * len(method_seeds(w.method)),
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd quality --method {wildcards.method} --samples {params.samples}"
        " --evaluator {input.evaluator} --reference {params.ref} --metrics {params.metrics:q}"
        " --cfg {params.cfg:q} --scored-by {params.scored_by} {params.judge2} {params.teacher}"
        " --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"


# Does a student copy the teacher outputs it learnt from? Its samples against the x_0 of the distillation set,
# real held-out images against as many training images (advkd.metrics.memorisation).
rule memorisation:
    input:
        samples=lambda w: [f"{R}/samples/{w.method}/seed{s}.npz" for s in method_seeds(w.method)],
        trajectories=expand(f"{R}/trajectories/shard-{{shard:05d}}.safetensors", shard=range(N_SHARDS)),
        train=f"{R}/data/train.npz",
        real=f"{R}/data/{reference_split(config)}.npz",
        evaluator=f"{R}/evaluator/evaluator.json",
    output:
        f"{R}/metrics/memorisation/{{method}}.json",
    wildcard_constraints:
        method="|".join(map(re.escape, MEMORISED)) or "$^",
    params:
        samples=lambda w, input: seed_pairs(w.method, input.samples),
        seed=config["seed"],
        device=DEVICE,
    log:
        f"{LOGS}/memorisation/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/memorisation/{{method}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd memorisation --method {wildcards.method} --samples {params.samples} --trajectories"
        " {input.trajectories} --train {input.train} --real {input.real} --evaluator {input.evaluator}"
        " --seed {params.seed} --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule sanity:
    input:
        evaluator=f"{R}/evaluator/evaluator.json",
        reference=REFERENCE,
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
