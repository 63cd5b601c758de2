"""What this repository ships under experiments/assets (the Fashion-MNIST teacher and judge), and the check that
a shipped file is still the committed one before any job uses it.

experiments/assets/SHA256SUMS lists every shipped file with its sha256 in `sha256sum` format, so
`cd experiments/assets && sha256sum -c SHA256SUMS` checks them by hand too. After a deliberate change of an asset,
rewrite it with `cd experiments/assets && sha256sum $(git ls-files | grep -vx SHA256SUMS) > SHA256SUMS`.
"""

from __future__ import annotations

from pathlib import Path

from .io import REPO_ROOT, BadInputError, sha256_file

REPO = REPO_ROOT
ASSETS = REPO / "experiments" / "assets"
MANIFEST = ASSETS / "SHA256SUMS"


def manifest() -> dict[str, str]:
    """Shipped file (relative to experiments/assets) -> its committed sha256."""
    if not MANIFEST.is_file():
        raise BadInputError(f"{MANIFEST}: the list of shipped assets is missing; restore it with "
                            f"`git checkout -- {MANIFEST.relative_to(REPO)}`")
    return _read_manifest(MANIFEST)


def _read_manifest(path) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*").removeprefix("./")] = digest
    return out


def shipped_errors(path) -> list[str]:
    """One message per shipped file under `path` (a folder or a file) that is missing or not the committed bytes.
    A path outside experiments/assets is not shipped: nothing to check. The assets of another checkout (a workflow
    run from another clone) are checked against that checkout's own list."""
    path = Path(path).resolve()
    ours = ASSETS.resolve()
    if path == ours or ours in path.parents:
        assets, listed = ours, manifest()
    else:
        assets = next((a for a in path.parents if a.name == "assets" and a.parent.name == "experiments"
                       and (a / "SHA256SUMS").is_file()), None)
        if assets is None:
            return []
        listed = _read_manifest(assets / "SHA256SUMS")
    rel = path.relative_to(assets)
    repo = assets.parent.parent
    errs = []
    for name, want in listed.items():
        if rel != Path(".") and not (Path(name) == rel or rel in Path(name).parents):
            continue
        f = assets / name
        where = f"experiments/assets/{name}"
        restore = f"restore it with `git -C {repo} checkout -- {where}`"
        if not f.is_file():
            errs.append(f"{f}: shipped file missing; {restore}")
            continue
        have = sha256_file(f)
        if have != want:
            errs.append(f"{f}: sha256 {have} is not the shipped {want} (experiments/assets/SHA256SUMS); the file was "
                        f"changed or corrupted: {restore} (after a deliberate change, rewrite SHA256SUMS as "
                        "advkd/assets.py says)")
    return errs


def verify_shipped(path) -> None:
    """Raise a BadInputError naming every shipped file under `path` that is not the committed one."""
    errs = shipped_errors(path)
    if errs:
        raise BadInputError("\n  - ".join(["shipped asset check failed:", *errs]))
