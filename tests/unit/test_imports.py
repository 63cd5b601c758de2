"""The package's imports go one way: each module of advkd/ imports only modules of its own layer or a lower one
(LAYERS, by the module's place in the package, so a new family's folder needs no entry here), without a cycle,
and imports advkd modules at module level, except the CLI, which imports a stage only when its command runs
(start-up time of `advkd --help`)."""

import ast
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "advkd"

# Lowest first; a module is in the first layer one of whose patterns matches its name. Files and provenance, a
# job's clock, data, the distillation set's layout, what a method is; each family's parameters; the registry of
# families; the config's dataclasses and its validation, which asks the registry (all of these without torch:
# planning a run reads them); the teacher, its samplers, the metrics and the run's profile; what every student
# family shares (networks, the training loop, the generic trainer); each family's implementation (its folder under
# advkd/students); the stages, one module per rule file (workflow/rules/<x>.smk -> advkd/stages/<x>.py); the CLI.
LAYERS = [
    ["advkd.io", "advkd.jobclock", "advkd.rng", "advkd.assets", "advkd.data", "advkd.trajectories", "advkd.method"],
    ["advkd.students.*.params"],
    ["advkd.families"],
    ["advkd.schema", "advkd.config"],
    ["advkd.teacher", "advkd.samplers", "advkd.metrics.*", "advkd.dag_profile"],
    ["advkd.students.networks", "advkd.students.training", "advkd.students.common", "advkd.students.vp",
     "advkd.students.family"],
    ["advkd.students.*.*"],
    ["advkd.stages.*"],
    ["advkd.cli"],
]
# Read when a run is planned (the Snakefile validates the config and asks the registry): they must not load torch.
PLANNING = ["advkd.config", "advkd.schema", "advkd.families"]
LAZY_OK = {"advkd.cli"}


def layer(module: str) -> int | None:
    return next((i for i, pats in enumerate(LAYERS) if any(fnmatch.fnmatchcase(module, p) for p in pats)), None)


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


def packages() -> set:
    return {name for name, path in modules().items() if path.name == "__init__.py"}


def test_every_module_has_a_layer():
    missing = sorted(m for m in set(modules()) - packages() if layer(m) is None)
    assert not missing, f"{missing}: no layer of LAYERS matches (a family's modules go in its folder)"


def test_imports_go_down_only_and_at_module_level():
    pkgs, problems, edges = packages(), [], {}
    for name, path in modules().items():
        for target, line, at_top in imports(name, path):
            where = f"{path.relative_to(PKG.parent)}:{line}: {name} imports {target}"
            if target not in modules():
                problems.append(f"{where}, which is no module of the package")
            elif name in pkgs:
                problems.append(f"{where} (a package's __init__ imports nothing)")
            elif target in pkgs:
                problems.append(f"{where} (import the module, not its package)")
            elif layer(target) > layer(name):
                problems.append(f"{where}, which is in a higher layer (LAYERS)")
            elif not at_top and name not in LAZY_OK:
                problems.append(f"{where} inside a function (import it at the top)")
            else:
                edges.setdefault(name, set()).add(target)
    assert not problems, "\n".join(problems)
    assert not _cycle(edges), f"import cycle within a layer: {' -> '.join(_cycle(edges))}"


def _cycle(edges: dict) -> list:
    """A cycle of the graph, as the modules along it, or []."""
    state = {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                return path[path.index(t):] + [t]
            if t not in state:
                found = visit(t, path + [t])
                if found:
                    return found
        state[m] = "done"
        return []

    for m in sorted(edges):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return []


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) == []


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
    stages = {m.rsplit(".", 1)[1] for m in modules() if m.startswith("advkd.stages.")} - {"stages"}
    assert rules == stages, "workflow/rules/<x>.smk and advkd/stages/<x>.py go in pairs"


# Measured 2026-12-06 (advkd 0.1.0, torch 2.14.1): `advkd sample` of the shipped long student imported 1,393
# modules (torch alone 1,200) and none of these. The bound leaves room for a library's patch release, not for a new
# heavy import.
HEAVY = ("diffusers", "scipy", "torch._dynamo", "torch._inductor", "cleanfid", "torchvision", "pandas", "matplotlib",
         "sympy")
MAX_MODULES = 1500


def test_sampling_a_one_step_student_imports_only_what_it_uses(tmp_path):
    """A student's sample job spends seconds on imports for a fraction of a second of sampling: it loads torch and
    its own network, never the teacher's libraries (diffusers pulls in torch._dynamo and scipy.stats), the
    compiler, clean-fid or the report's pandas and matplotlib. The student here is the shipped one-pass Adv-KD
    generator (the UNet students need diffusers' UNet2DModel, and with it what diffusers imports)."""
    from advkd.config import load_config
    from advkd.families import resolved_block

    cfg = load_config(PKG.parent / "experiments" / "default.yaml")
    block = resolved_block(cfg["methods"]["advkd-gan-reg-long"])
    card = tmp_path / "teacher.json"
    teacher = PKG.parent / "experiments" / "assets" / "teacher-fmnist32"
    card.write_text(json.dumps({"source": "shipped", "pipeline": str(teacher)}))
    code = ("import sys; from advkd.cli import main; rc = main(sys.argv[1:]); "
            "print('MODULES', len(sys.modules), sorted({m for m in sys.modules if m.startswith(" + repr(HEAVY) + ")}))")
    argv = ["sample", "--method", "advkd-gan-reg-long", "--block", json.dumps(block), "--teacher", str(card),
            "--student-dir", str(PKG.parent / block["shipped"]), "--n", "4", "--seeds", "0", "--batch-size", "4",
            "--shard", "0", "--shard-size", "4", "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "s")]
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES"))
    count, heavy = int(line.split()[1]), line.split(" ", 2)[2]
    assert heavy == "[]", f"a student's sample job imported {heavy}"
    assert count <= MAX_MODULES, f"{count} modules imported (bound {MAX_MODULES}): what new import is this?"


def test_joining_sample_shards_loads_no_torch():
    """merge_samples and real_samples jobs (one per method and seed: 51 in the default) only join arrays and draw
    real images: at ~2 s, importing torch was their whole run."""
    code = ("import sys; from advkd.cli import stage_function, stage_parser; "
            "[stage_parser(c, stage_function(c)) for c in ('merge-samples', 'real-samples')]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
