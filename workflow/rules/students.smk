# Students: each student recipe of the config is trained on the teacher's trajectories (rule distill; methods that
# differ only in sampling keys share one run, common.smk TRAINER), then sampled like any other method (rule sample,
# workflow/rules/sample.smk).
TRAJ_SHARDS = expand(f"{R}/trajectories/shard-{{shard:05d}}.safetensors", shard=range(N_SHARDS))


rule distill:
    input:
        shards=TRAJ_SHARDS,
        teacher=f"{R}/teacher/teacher.json",
    output:
        weights=f"{R}/students/{{method}}/student.safetensors",
        recipe=f"{R}/students/{{method}}/student.json",
        curve=f"{R}/students/{{method}}/loss.csv",
        panel=report(f"{R}/students/{{method}}/panel.png", category="Students", subcategory="{method}",
                     caption="../report/student_panel.rst"),
        grid=f"{R}/students/{{method}}/grid.png",
        summary=f"{R}/students/{{method}}/train.json",
    wildcard_constraints:
        method="|".join(map(re.escape, TRAINED)) or "$^",
    params:
        block=lambda w: as_json(training_block(w.method)),
        seed=config["seed"],
        device=DEVICE,
        out=lambda w, output: os.path.dirname(output.weights),
    log:
        f"{LOGS}/distill/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{method}}.tsv"
    threads: all_cores
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPU,
    conda:
        ENV
    shell:
        "advkd distill --method {wildcards.method} --block {params.block:q} --trajectories {input.shards}"
        " --teacher {input.teacher} --seed {params.seed} --device {params.device} --threads {threads}"
        " --out {params.out} > {log} 2>&1"
