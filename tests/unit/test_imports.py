"""The package's imports go one way: each module of advkd/ imports only modules listed before it in ORDER (so
there is no cycle), and imports advkd modules at module level, except the CLI, which imports a stage only when
its command runs (start-up time of `advkd --help`)."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "advkd"

# The one written order, lowest first: files and provenance; data; the distillation set's layout; what a method is
# and each family's parameters; the registry of families; config validation, which asks the registry (all of these
# without torch: planning a run reads them); networks and what they compute (teacher, samplers, metrics, students);
# the stages, one module per rule file (workflow/rules/<x>.smk -> advkd/stages/<x>.py); the CLI.
ORDER = [
    "advkd.io",
    "advkd.rng",
    "advkd.assets",
    "advkd.data",
    "advkd.trajectories",
    "advkd.method",
    "advkd.students.advkd.params",
    "advkd.students.denoising_params",
    "advkd.students.progressive.params",
    "advkd.students.consistency.params",
    "advkd.students.reflow.params",
    "advkd.families",
    "advkd.config",
    "advkd.teacher",
    "advkd.samplers",
    "advkd.metrics.cost",
    "advkd.metrics.inception",
    "advkd.metrics.evaluator",
    "advkd.metrics.autoencoder",
    "advkd.metrics.quality",
    "advkd.metrics.sanity",
    "advkd.metrics.memorisation",
    "advkd.students.networks",
    "advkd.students.training",
    "advkd.students.common",
    "advkd.students.advkd.networks",
    "advkd.students.advkd.model",
    "advkd.students.advkd.phases",
    "advkd.students.denoising",
    "advkd.students.vp",
    "advkd.students.progressive.model",
    "advkd.students.consistency.model",
    "advkd.students.reflow.model",
    "advkd.stages.data",
    "advkd.stages.teacher",
    "advkd.stages.sample",
    "advkd.stages.students",
    "advkd.stages.metrics",
    "advkd.stages.cost",
    "advkd.stages.report",
    "advkd.cli",
]
# Read when a run is planned (the Snakefile validates the config and asks the registry): they must not load torch.
PLANNING = ["advkd.config", "advkd.families"]
PACKAGES = ["advkd", "advkd.metrics", "advkd.students", "advkd.students.advkd", "advkd.students.progressive",
            "advkd.students.consistency", "advkd.students.reflow", "advkd.stages"]   # import nothing
LAZY_OK = {"advkd.cli"}


def modules() -> dict:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path):
    """(imported advkd module, line, at module level?) for every import statement in the file."""
    mods = modules()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("advkd"):
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield (target if target in mods else base), node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("advkd"):
                    yield alias.name, node.lineno, id(node) in top


def test_every_module_has_a_place_in_the_order():
    assert sorted(modules()) == sorted(ORDER + PACKAGES), "add the new module to ORDER (or PACKAGES)"


def test_imports_go_down_only_and_at_module_level():
    rank = {m: i for i, m in enumerate(ORDER)}
    problems = []
    for name, path in modules().items():
        for target, line, at_top in imports(name, path):
            where = f"{path.relative_to(PKG.parent)}:{line}: {name} imports {target}"
            if target not in rank and target not in PACKAGES:
                problems.append(f"{where}, which is no module of the package")
            elif name in PACKAGES:
                problems.append(f"{where} (a package's __init__ imports nothing)")
            elif target in PACKAGES:
                problems.append(f"{where} (import the module, not its package)")
            elif rank[target] >= rank[name]:
                problems.append(f"{where}, which is not below it in ORDER")
            elif not at_top and name not in LAZY_OK:
                problems.append(f"{where} inside a function (import it at the top)")
    assert not problems, "\n".join(problems)


def test_planning_loads_no_torch():
    """`snakemake -n` and `--lint` import these (and what they import); torch alone takes seconds to load."""
    code = f"import sys; import {', '.join(PLANNING)}; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('torch', 'diffusers', 'cleanfid')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_scoring_stages_load_no_diffusers():
    """Every quality, memorisation and sanity job imports advkd.stages.metrics and writes provenance; diffusers
    takes seconds to import (it pulls in torch._dynamo and scipy.stats), paid once per job, ~60 jobs a run."""
    code = "import sys; import advkd.stages.metrics as m; from advkd.io import provenance; " \
           "v = provenance()['versions']; print('diffusers' in sys.modules, sorted(v))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(" ", 1)[0] == "False", out.stdout
    assert "diffusers" in out.stdout and "cleanfid" in out.stdout, "provenance still names the versions"


def test_every_rule_file_has_its_stage_module():
    rules = {p.stem for p in (PKG.parent / "workflow" / "rules").glob("*.smk")} - {"common"}
    stages = {m.rsplit(".", 1)[1] for m in ORDER if m.startswith("advkd.stages.")}
    assert rules == stages, "workflow/rules/<x>.smk and advkd/stages/<x>.py go in pairs"
