# Tables and figures from finished results (advkd.report reads files only: regenerating them retrains nothing).
FIGURES = ["fd_vs_latency", "fd_vs_nfe", "params_flops", "sample_grids"]
if STUDENT_METHODS:
    FIGURES += ["phase_panels", "training_curves"]
PAPER = f"paper_figures/{config['experiment']}"


def report_inputs(wildcards):
    return {
        "quality": quality_files(METHODS),
        "cost": expand(f"{R}/metrics/cost/{{method}}.json", method=METHODS),
        "samples": expand(f"{R}/samples/{{method}}/seed{{seed}}.png", method=METHODS, seed=SEEDS),
        "students": expand(f"{R}/students/{{method}}/loss.csv", method=STUDENT_METHODS),
    }


rule report:
    input:
        unpack(report_inputs),
    output:
        tables=multiext(f"{R}/tables/summary", ".csv", ".md", ".tex"),
        paper_csv=report(f"{PAPER}/summary.csv", category="Tables", caption="../report/summary.rst"),
        paper_md=f"{PAPER}/summary.md",
        paper_tex=f"{PAPER}/summary.tex",
        figures=[
            report(f"{PAPER}/{name}.{ext}", category="Figures", caption=f"../report/{name}.rst")
            if ext == "png"
            else f"{PAPER}/{name}.{ext}"
            for name in FIGURES
            for ext in ("png", "pdf")
        ],
    params:
        results=R,
        paper=PAPER,
    log:
        f"{LOGS}/report.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        ENV
    shell:
        "advkd report --results {params.results} --out {params.paper} > {log} 2>&1"
