"""What this repository ships under experiments/assets (the Fashion-MNIST teacher and judge), and the check that
a shipped file is still the committed one before any job uses it.

experiments/assets/SHA256SUMS lists every shipped file with its sha256 in `sha256sum` format, so
`cd experiments/assets && sha256sum -c SHA256SUMS` checks them by hand too. After a deliberate change of an asset,
rewrite it with `cd experiments/assets && sha256sum $(git ls-files | grep -vx SHA256SUMS) > SHA256SUMS`.
"""

from __future__ import annotations

from pathlib import Path

from .io import BadInputError, sha256_file

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "experiments" / "assets"
MANIFEST = ASSETS / "SHA256SUMS"


def manifest() -> dict[str, str]:
    """Shipped file (relative to experiments/assets) -> its committed sha256."""
    if not MANIFEST.is_file():
        raise BadInputError(f"{MANIFEST}: the list of shipped assets is missing; restore it with "
                            f"`git checkout -- {MANIFEST.relative_to(REPO)}`")
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*").removeprefix("./")] = digest
    return out


def shipped_errors(path) -> list[str]:
    """One message per shipped file under `path` (a folder or a file) that is missing or not the committed bytes.
    A path outside experiments/assets is not shipped: nothing to check."""
    try:
        rel = Path(path).resolve().relative_to(ASSETS.resolve())
    except ValueError:
        return []
    errs = []
    for name, want in manifest().items():
        if rel != Path(".") and not (Path(name) == rel or rel in Path(name).parents):
            continue
        f = ASSETS / name
        where = f.relative_to(REPO)
        if not f.is_file():
            errs.append(f"{where}: shipped file missing; restore it with `git checkout -- {where}`")
            continue
        have = sha256_file(f)
        if have != want:
            errs.append(f"{where}: sha256 {have} is not the shipped {want} (experiments/assets/SHA256SUMS); the file "
                        f"was changed or corrupted: restore it with `git checkout -- {where}`")
    return errs


def verify_shipped(path) -> None:
    """Raise a BadInputError naming every shipped file under `path` that is not the committed one."""
    errs = shipped_errors(path)
    if errs:
        raise BadInputError("\n  - ".join(["shipped asset check failed:", *errs]))
