# advkd: the whole benchmark as one DAG. Run `snakemake --cores 2` (default experiment) or
# `snakemake --cores 2 --configfile experiments/ci.yaml`. See README.md.
from snakemake.utils import min_version

min_version("9.0")


# --configfile replaces the default experiment instead of being merged into it (Snakemake would otherwise
# deep-merge both files, leaking the default's methods into every other experiment).
if not config:

    configfile: "experiments/default.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/cost.smk"
include: "workflow/rules/students.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
