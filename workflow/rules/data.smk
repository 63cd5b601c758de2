rule prepare_data:
    output:
        train=f"{R}/data/train.npz",
        validation=f"{R}/data/validation.npz",
        test=f"{R}/data/test.npz",
        card=report(f"{R}/data/data_card.json", category="Data", caption="../report/data_card.rst"),
    params:
        data=as_json(config["data"]),
        out=lambda w, output: os.path.dirname(output.card),
    log:
        f"{LOGS}/prepare_data.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        ENV
    shell:
        "advkd prepare-data --data {params.data:q} --out {params.out} > {log} 2>&1"
