"""The pinned environment: requirements.txt is the single source of pins, environment.yml reaches the same pins,
and the installed packages are the pinned ones."""

import re
from importlib.metadata import PackageNotFoundError, version

import yaml


def _pins(root):
    pins = {}
    for line in (root / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", line)
            assert m, f"requirements.txt: {line!r} is not pinned with =="
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_requirements_pin_the_stack(repo_root):
    pins = _pins(repo_root)
    for name in ["torch", "torchvision", "diffusers", "clean-fid", "snakemake", "pandas", "matplotlib", "seaborn",
                 "pyyaml", "scipy", "safetensors", "tqdm", "pytest"]:
        assert name in pins, f"{name} missing from requirements.txt"
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")
    assert pins["snakemake"].startswith("9.")
    assert tuple(map(int, pins["scipy"].split(".")[:2])) < (1, 18)


def test_environment_yml_reaches_the_same_pins(repo_root):
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.txt" in pip
    pins = _pins(repo_root)
    # Any package that environment.yml names itself (conda or pip) must carry the same version as requirements.txt.
    for dep in [d for d in env["dependencies"] if isinstance(d, str)] + [p for p in pip if not p.startswith("-")]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*=?=\s*([A-Za-z0-9_.+-]+)", dep)
        if m and m.group(1).lower() in pins:
            assert m.group(2) == pins[m.group(1).lower()], f"environment.yml pins {dep}, requirements.txt " \
                                                          f"{pins[m.group(1).lower()]}"


def test_installed_versions_match_pins(repo_root):
    for name, want in _pins(repo_root).items():
        try:
            got = version(name)
        except PackageNotFoundError:
            raise AssertionError(f"{name} is pinned but not installed; run `make setup`") from None
        assert got.split("+")[0] == want, f"{name}: installed {got}, pinned {want}; run `make setup`"


def test_setup_refuses_a_full_disk_before_installing(repo_root, tmp_path):
    """With too little space for the environment, setup.sh stops with the reason before pip starts."""
    import os
    import shutil
    import subprocess
    import sys

    (tmp_path / "scripts").mkdir()
    for f in ("scripts/setup.sh", "requirements.txt", "pyproject.toml"):
        shutil.copy(repo_root / f, tmp_path / f)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    # pip must never be reached: a stand-in that records being called
    pip = tmp_path / ".venv" / "bin" / "pip"
    pip.write_text(f"#!/bin/sh\ntouch {tmp_path}/pip-ran\n")
    pip.chmod(0o755)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "df").write_text("#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted'\n"
                             "echo '/dev/x 100000000 99000000 3000000 97% /'\n")  # 3,000,000 KiB ~ 2.9 GB free
    (fake / "df").chmod(0o755)
    env = os.environ | {"PATH": f"{fake}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", tmp_path / "scripts" / "setup.sh"], capture_output=True, text=True, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 GB free" in r.stderr and "needs ~8 GB" in r.stderr, r.stderr
    assert not (tmp_path / "pip-ran").exists()
