# Sampling, one rule for every method, a sampler over the teacher or a trained student (both answer the same
# contract, advkd.method.Method): one job per method and shard (sampling.shard_size images; one shard unless set)
# that samples the shard for every seed of the method, so a method is loaded (and its teacher compiled) once, not
# once per seed; then each seed's shards are joined (rule merge_samples). Stage code: advkd/stages/sample.py.


rule sample:
    input:
        unpack(sample_inputs),
    output:
        # seed<k>.npz and seed<k>.json for each seed; temporary: merge_samples joins them into the seed's run
        temp(directory(f"{R}/samples/{{method}}/shard-{{shard}}")),
    wildcard_constraints:
        method="|".join(map(re.escape, METHODS)) or "$^",
        shard=r"\d{5}",
    params:
        block=lambda w: as_json(method_block(w.method)),
        n=lambda w: method_n(w.method),
        seeds=lambda w: " ".join(map(str, sampled_seeds(w.method))),
        s=config["sampling"],
        shard_size=lambda w: config["sampling"]["shard_size"] or method_n(w.method),
        # torch.compile for the teacher's samplers only (a one-pass student has nothing to gain)
        compile=lambda w: "" if is_student(w.method) else COMPILE,
        student=lambda w: f"--student-dir {student_dir(w.method)}" if is_student(w.method) else "",
        device=DEVICE,
    log:
        f"{LOGS}/sample/{{method}}-shard{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{method}}-shard{{shard}}.tsv"
    threads: sample_threads
    resources:
        mem_mb=lambda w: 4000 if is_student(w.method) else 8000,
        runtime=lambda w: (30 if is_student(w.method) else 12 * 60) * len(sampled_seeds(w.method)),
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd sample --method {wildcards.method} --block {params.block:q} --teacher {input.teacher} {params.student}"
        " --n {params.n} --seeds {params.seeds} --batch-size {params.s[batch_size]} --shard {wildcards.shard}"
        " --shard-size {params.shard_size} {params.compile} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"


# Every method's sample shards (rule sample; one shard unless sampling.shard_size is set) become its run for one
# seed. Local: it only joins arrays, so a cluster need not queue it.
rule merge_samples:
    input:
        shards=lambda w: sample_shards(w.method),
    output:
        npz=f"{R}/samples/{{method}}/seed{{seed}}.npz",
        grid=report(f"{R}/samples/{{method}}/seed{{seed}}.png", category="Samples", subcategory="{method}",
                    caption="../report/samples.rst"),
        stats=f"{R}/samples/{{method}}/seed{{seed}}.json",
    wildcard_constraints:
        method="|".join(map(re.escape, METHODS)) or "$^",
        seed=r"\d+",
    params:
        # the method's block too: a changed method reruns this job and so its shards (temporary, gone by then)
        block=lambda w: as_json(method_block(w.method)),
        stems=lambda w: " ".join(f"{d}/seed{w.seed}" for d in sample_shards(w.method)),
        n=lambda w: method_n(w.method),
        grid=config["sampling"]["grid"],
        out=lambda w, output: os.path.splitext(output.npz)[0],
    log:
        f"{LOGS}/sample/{{method}}-seed{{seed}}-merge.log",
    threads: 1
    resources:
        # the shards and the joined array in memory at once (50,000 RGB 256x256 images: ~20 GB)
        mem_mb=lambda w: 1000 + 2 * method_n(w.method) * config["data"]["resolution"] ** 2
        * config["data"]["channels"] // 2**20,
        runtime=30,
    localrule: True
    conda:
        ENV
    shell:
        "advkd merge-samples --shards {params.stems} --n {params.n} --grid {params.grid} --out {params.out}"
        " > {log} 2>&1"


# The noise floor: real images the reference never saw (REAL_SOURCE), sampling.n per seed, scored by the quality
# rule like any method (the tables' row "real").
rule real_samples:
    input:
        f"{R}/data/{REAL_SOURCE}.npz",
    output:
        npz=f"{R}/samples/{REAL}/seed{{seed}}.npz",
        grid=f"{R}/samples/{REAL}/seed{{seed}}.png",
    wildcard_constraints:
        seed=r"\d+",
    params:
        n=config["sampling"]["n"],
        grid=config["sampling"]["grid"],
        out=lambda w, output: os.path.splitext(output.npz)[0],
    log:
        f"{LOGS}/sample/{REAL}-seed{{seed}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    localrule: True
    conda:
        ENV
    shell:
        "advkd real-samples --images {input} --n {params.n} --seed {wildcards.seed} --grid {params.grid}"
        " --out {params.out} > {log} 2>&1"
