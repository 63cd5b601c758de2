# Tables and figures from finished results (advkd.stages.report reads files only: regenerating them retrains nothing).
rule report:
    input:
        unpack(report_inputs),
    output:
        tables=multiext(f"{R}/tables/summary", ".csv", ".md", ".tex"),
        knobs=multiext(f"{R}/tables/knobs", ".csv", ".md"),
        paper_knobs_csv=report(f"{PAPER}/knobs.csv", category="Tables", caption="../report/knobs.rst"),
        paper_knobs_md=f"{PAPER}/knobs.md",
        speed=multiext(f"{R}/tables/sampling_speed", ".csv", ".md"),
        paper_speed_csv=report(f"{PAPER}/sampling_speed.csv", category="Tables", caption="../report/sampling_speed.rst"),
        paper_speed_md=f"{PAPER}/sampling_speed.md",
        paper_csv=report(f"{PAPER}/summary.csv", category="Tables", caption="../report/summary.rst"),
        paper_md=f"{PAPER}/summary.md",
        memorisation=[report(f"{PAPER}/memorisation.csv", category="Tables", caption="../report/memorisation.rst"),
                      f"{PAPER}/memorisation.md"] if MEMORISED and not COST_ONLY else [],
        phase_quality=[report(f"{PAPER}/phase_quality.csv", category="Tables", caption="../report/phase_quality.rst"),
                       f"{PAPER}/phase_quality.md"] if PHASE_RUNS and not COST_ONLY else [],
        paper_tex=f"{PAPER}/summary.tex",
        # the run's own profile (advkd.dag_profile): from the jobs' logs and Snakemake's metadata
        profile=[report(f"{PAPER}/dag_profile.png", category="Figures", caption="../report/dag_profile.rst"),
                 f"{PAPER}/dag_profile.md", f"{PAPER}/dag_profile.csv"],
        figures=[
            report(f"{PAPER}/{name}.{ext}", category="Figures", caption=f"../report/{name}.rst")
            if ext == "png"
            else f"{PAPER}/{name}.{ext}"
            for name in FIGURES
            for ext in ("png", "pdf")
        ],
    params:
        results=lambda w, output: os.path.dirname(os.path.dirname(output.tables[0])),
        paper=lambda w, output: os.path.dirname(output.paper_md),
        reference=f"--reference {config['report']['reference']}" if config["report"]["reference"] else "",
        # the experiment's rows: a method removed from the config leaves its results on disk, not in the tables
        methods=list(METHODS),
        memorised=as_json(MEMORISED if not COST_ONLY else []),
        phase_runs=as_json(PHASE_RUNS if not COST_ONLY else []),
        cores=run_cores,   # for the DAG profile: what the run's CPU seconds are spread over
    log:
        f"{LOGS}/report.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        ENV
    shell:
        "advkd report --results {params.results} --out {params.paper} {params.reference} --methods {params.methods:q}"
        " --memorised {params.memorised:q} --phase-runs {params.phase_runs:q} --cores {params.cores}"
        " > {log} 2>&1"
