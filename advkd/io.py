"""Atomic writes, safetensors/npz/JSON files and provenance: every file a stage writes goes through here."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np

# The checkout this package runs from: shipped assets, the config schema and relative config paths are found here.
REPO_ROOT = Path(__file__).resolve().parent.parent


class BadInputError(RuntimeError):
    """A user-facing error about a file or config value; the message names it and the fix."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A reader therefore sees either the old file or the complete new one, never a half-written file. A writer
    killed mid-write (kill -9, a lost node) cannot remove its temporary file; the next write of the same file
    does (Snakemake's lock keeps two jobs from writing one file at once).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp's names: prefix + 8 random characters + suffix
        for stale in path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}.tmp{glob.escape(path.suffix)}"):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    except OSError as e:  # read-only results, a full disk, someone else's folder: say where, not a traceback
        raise BadInputError(f"{path.parent}: cannot write {path.name} there ({e.strerror}); make the results "
                            "directory writable (or free space) and rerun. Nothing in it was changed.") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results should be readable like any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path}: not valid JSON ({e}); delete it and rerun the rule that writes it") from None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def save_images(path, images: np.ndarray, **extra) -> None:
    """uint8 images (N,H,W,C) to a compressed .npz (key 'images')."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N,H,W,C), got {images.dtype} {images.shape}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, **extra)


def load_images(path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
    except Exception as e:  # zipfile/np errors vary; the message is what matters
        raise BadInputError(f"{path}: not a readable image .npz ({type(e).__name__}: {e}); delete it and "
                            "rerun") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise BadInputError(f"{path}: 'images' must be uint8 (N,H,W,C), got {images.dtype} {images.shape}")
    return images


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_tensors(path, device="cpu") -> dict:
    """Load a safetensors file; a missing, truncated or foreign file is a BadInputError naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: file not found")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:
        raise BadInputError(
            f"{path}: not a valid safetensors file ({type(e).__name__}: {e}). "
            "It is truncated or corrupt (or a pickle checkpoint, which this suite refuses to load); "
            "delete it and rerun the rule that writes it."
        ) from None


def read_metadata(path) -> dict:
    """The string metadata stored in a safetensors header (empty if none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise BadInputError(f"{path}: not a valid safetensors file ({type(e).__name__}: {e}); delete it and "
                            "rerun") from None


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def tensors_sha256(tensors) -> str:
    """One digest of named tensors (dtype, shape and bytes): what a checkpoint's identity says of its inputs."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())   # the buffer itself, no copy of a large set
    return h.hexdigest()


def sources_sha256(folder, files=()) -> str:
    """One digest of the Python sources under `folder` and of `files` (beside it): the code that a checkpoint's
    arithmetic came from."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*.py")):
        h.update(f"{f.relative_to(folder)}|".encode() + f.read_bytes())
    for f in map(Path, files):
        h.update(f"{f.name}|".encode() + f.read_bytes())
    return h.hexdigest()


def identity_mismatch(stored: dict | None, wanted: dict) -> list[str]:
    """The keys (dotted, one level into dicts) in which a checkpoint's stored identity differs from the run's."""
    if not isinstance(stored, dict):
        return ["(no identity recorded)"]
    out = []
    for k in sorted(stored.keys() | wanted.keys()):
        a, b = stored.get(k), wanted.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{j}" for j in sorted(a.keys() | b.keys()) if a.get(j) != b.get(j)]
        elif a != b:
            out.append(k)
    return out


def config_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(cfg=None, device=None, **extra) -> dict:
    """Who/what/where produced a result: config hash, software versions, git commit, device."""
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    # installed versions read from package metadata: importing diffusers to ask would cost a scoring job seconds
    for mod, dist in (("diffusers", "diffusers"), ("cleanfid", "clean-fid"), ("safetensors", "safetensors")):
        try:
            versions[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    out = {"git_commit": git_commit(), "versions": versions, "host": platform.node()}
    if cfg is not None:
        out["config_hash"] = config_hash(cfg)
    if device is not None:
        out["device"] = device_name(device)
    out.update(extra)
    return out
