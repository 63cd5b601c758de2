rule prepare_data:
    output:
        train=f"{R}/data/train.npz",
        heldout=f"{R}/data/heldout.npz",
        card=report(f"{R}/data/data_card.json", category="Data", caption="../report/data_card.rst"),
    params:
        data=as_json(config["data"]),
    log:
        f"{LOGS}/prepare_data.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "advkd prepare-data --data {params.data:q} --out {R}/data > {log} 2>&1"
