"""Adding a student family is its folder, one registry line (with its Params' import) and a config block: the
walk-through of docs/guide.md ("Add a student family"), applied as written to a copy of the repository, passes the
common family tests, the import-order test and Snakemake's dry run there, and touches nothing else."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> list[tuple[str, str]]:
    """(path, text) of every code block of the guide's section; each block's first line names its file."""
    guide = (ROOT / "docs" / "guide.md").read_text()
    section = guide.split("## Add a student family", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for body in re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.S):
        lines = [line[3:] if line.startswith("   ") else line for line in body.splitlines()]
        path = lines[0].lstrip("# ").strip()
        blocks.append((path, "\n".join(lines[1:]) + "\n"))
    return blocks


def apply(copy: Path, path: str, text: str) -> None:
    target = copy / path
    if path == "advkd/families.py":          # the import after the last Params import, the line in FAMILIES
        imp, *entry = text.strip("\n").splitlines()
        src = target.read_text()
        last = max(m.end() for m in re.finditer(r"^from \.students\..*\n", src, re.M))
        src = src[:last] + imp + "\n" + src[last:]
        end = src.index("\n]}\n")
        target.write_text(src[:end] + "\n" + "\n".join("    " + e for e in entry) + src[end:])
    elif path.startswith("experiments/"):      # the block at the end of its methods: (the file's last block)
        src = target.read_text()
        assert src.rstrip().splitlines()[-1].startswith("  "), f"{path}: methods: is not its last block"
        target.write_text(src.rstrip("\n") + "\n  " + text.strip() + "\n")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def test_the_guides_new_family_walkthrough_works_in_a_copy(tmp_path):
    copy = tmp_path / "repo"
    keep = ["advkd", "tests", "workflow", "Snakefile", "pyproject.toml", "experiments"]
    for name in keep:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, copy / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "assets", ".pytest_cache"))
        else:
            shutil.copy2(src, copy / name)
    (copy / "experiments" / "assets").symlink_to(ROOT / "experiments" / "assets")
    blocks = walkthrough()
    assert [p for p, _ in blocks] == ["advkd/students/tiny/params.py", "advkd/students/tiny/model.py",
                                      "advkd/families.py", "experiments/ci.yaml"]
    for path, text in blocks:
        apply(copy, path, text)
    (copy / "advkd/students/tiny/__init__.py").write_text('"""A tiny convolutional student."""\n')

    # nothing else changed: the new folder, two lines of the registry, one of the config
    changed = subprocess.run(["diff", "-rq", "-x", "__pycache__", "-x", "assets", str(ROOT / "advkd"),
                              str(copy / "advkd")], capture_output=True, text=True).stdout.splitlines()
    assert sorted(changed) == sorted([f"Files {ROOT}/advkd/families.py and {copy}/advkd/families.py differ",
                                      f"Only in {copy}/advkd/students: tiny"]), changed

    env = {**os.environ, "PYTHONPATH": str(copy), "PYTEST_XDIST_WORKER_COUNT": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                            "tests/unit/test_families.py", "-k", "tiny-cnn or imports", "tests/unit/test_imports.py"],
                           cwd=copy, env=env, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    summary = tests.stdout.strip().splitlines()[-1]
    assert not re.search(r"\d+ (failed|error)", summary) and int(re.search(r"(\d+) passed", summary)[1]) >= 12, \
        summary

    plan = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "2", "--configfile",
                           "experiments/ci.yaml"], cwd=copy, env=env, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    for rule in ("distill", "sample", "quality"):
        assert re.search(rf"rule {rule}:\n(?:    .*\n)*?    wildcards: method=tiny-cnn", plan.stdout), rule
    assert re.search(r"rule cost:\n(?:    .*\n)*?    output: .*results/ci/metrics/cost/tiny-cnn\.json", plan.stdout)
