"""Data sets as uint8 (N,H,W,C) arrays with explicit train / held-out splits, plus the [-1,1] float view."""

from __future__ import annotations

import gzip
import logging
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from .io import BadInputError, atomic_path, sha256_file
from .rng import split_rng

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "heldout": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLITS = ("train", "heldout")


def read_idx_gz(path) -> np.ndarray:
    """Read one IDX file (uint8 payload) compressed with gzip, as MNIST-style data sets ship."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise BadInputError(f"{path}: not a readable gzip file ({e}); reinstall the data or point data.root "
                            "elsewhere") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise BadInputError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise BadInputError(f"{path}: IDX header promises shape {shape} but the payload has {len(raw) - header} bytes "
                            "(truncated file?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str, root=None):
    """Fashion-MNIST images (N,28,28,1) uint8 and labels; split 'train' (60k) or 'heldout' (the 10k test set)."""
    root = Path(root or FASHION_MNIST_DIR)
    img_name, lab_name = FASHION_MNIST_FILES[split]
    missing = [n for n in (img_name, lab_name) if not (root / n).exists()]
    if missing:
        hint = ("install it with: apt-get update && apt-get install -y dataset-fashion-mnist"
                if str(root) == FASHION_MNIST_DIR else "or set data.root to a folder holding the IDX .gz files")
        raise BadInputError(f"Fashion-MNIST file(s) {missing} not found in {root}; {hint}")
    images = read_idx_gz(root / img_name)
    labels = read_idx_gz(root / lab_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise BadInputError(f"{root}: images {images.shape} and labels {labels.shape} do not match")
    return images[..., None], labels.astype(np.int64), [root / img_name, root / lab_name]


def load_digits(split: str, heldout_fraction=0.2, seed=0):
    """scikit-learn's 8x8 digits (1,797 images) rescaled to 0..255; a fixed seeded split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = split_rng(seed).permutation(len(images))
    n_held = int(round(heldout_fraction * len(images)))
    idx = order[:n_held] if split == "heldout" else order[n_held:]
    return images[idx], d.target[idx].astype(np.int64), []


def list_image_folder(root):
    """Files under `root` that decode as images of the most common size; returns (kept, skipped-with-reason)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"image folder {root} does not exist; set data.root to a folder of RGB image files")
    sizes, skipped = {}, []
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        try:
            with Image.open(p) as im:
                im.verify()
                sizes[p] = im.size
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            skipped.append((p, f"not an image ({type(e).__name__})"))
    if not sizes:
        raise BadInputError(f"image folder {root} holds no readable image files")
    common = Counter(sizes.values()).most_common(1)[0][0]
    kept = [p for p, s in sizes.items() if s == common]
    skipped += [(p, f"size {s} differs from the folder's common size {common}")
                for p, s in sizes.items() if s != common]
    for p, why in skipped:
        log.warning("skipping %s: %s", p, why)
    return kept, skipped


def load_image_folder(split: str, root, resolution: int, channels: int, heldout_fraction=0.1, seed=0):
    """A user's folder of images (e.g. CelebA-HQ): centre-cropped to square and resized; a fixed seeded split."""
    from PIL import Image

    files, skipped = list_image_folder(root)
    order = split_rng(seed).permutation(len(files))
    n_held = int(round(heldout_fraction * len(files)))
    idx = sorted(order[:n_held] if split == "heldout" else order[n_held:])
    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(idx), resolution, resolution, channels), np.uint8)
    for j, i in enumerate(idx):
        with Image.open(files[i]) as im:
            im = im.convert(mode)
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            if s != resolution:
                im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
            out[j] = np.asarray(im).reshape(resolution, resolution, channels)
    return out, None, [files[i] for i in idx], skipped


def fit_resolution(images: np.ndarray, resolution: int) -> np.ndarray:
    """Zero-pad (e.g. Fashion-MNIST 28 -> 32, keeping every pixel) or resize to `resolution`."""
    h = images.shape[1]
    if h == resolution:
        return images
    if h < resolution and (resolution - h) % 2 == 0:
        p = (resolution - h) // 2
        return np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
                                .resize((resolution, resolution), Image.Resampling.BILINEAR))
                     .reshape(resolution, resolution, images.shape[-1]) for im in images])


NATIVE_SIZE = {"fashion-mnist": 28, "digits": 8}   # image-folder data is cropped and resized, never padded


def zero_border(data_cfg: dict) -> int:
    """Pixels of exact-zero border that `fit_resolution` adds around every image of this data (Fashion-MNIST at
    32: 2). Real images are exactly zero there; a generated one is not, and a judge sees it (docs/metrics.md)."""
    native, res = NATIVE_SIZE.get(data_cfg["dataset"]), data_cfg["resolution"]
    return (res - native) // 2 if native and res > native and (res - native) % 2 == 0 else 0


def set_border(images: np.ndarray, border: int, value: int = 0) -> np.ndarray:
    """A copy of uint8 NHWC `images` with a `border`-pixel frame set to `value` (the region the data defines)."""
    if not border:
        return images
    out = images.copy()
    out[:, :border], out[:, -border:], out[:, :, :border], out[:, :, -border:] = value, value, value, value
    return out


HALVES = ("validation", "test")


def split_heldout(n: int, labels, validation_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Sorted indices of the held-out split's validation and test halves: seeded and, where there are labels,
    stratified (each class split in the same proportion), so neither half is short of a class. Recipes are chosen
    on the validation half; the tables report the test half."""
    rng = split_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    val = []
    for g in groups:
        val.append(rng.permutation(g)[:int(round(validation_fraction * len(g)))])
    val = np.sort(np.concatenate(val))
    return {"validation": val, "test": np.setdiff1d(np.arange(n), val)}


def load_split(data_cfg: dict, split: str) -> dict:
    """Load one split as configured; returns images (N,H,W,C uint8), labels (or None) and a card."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    name, res, ch = data_cfg["dataset"], data_cfg["resolution"], data_cfg["channels"]
    skipped = []
    if name == "fashion-mnist":
        images, labels, sources = load_fashion_mnist(split, data_cfg.get("root"))
    elif name == "digits":
        images, labels, sources = load_digits(split)
    elif name == "image-folder":
        images, labels, sources, skipped = load_image_folder(
            split, data_cfg["root"], res, ch, data_cfg["heldout_fraction"], data_cfg["split_seed"])
    else:
        raise BadInputError(f"data.dataset: unknown dataset {name!r}; expected fashion-mnist, digits or image-folder")
    if images.shape[-1] != ch:
        raise BadInputError(f"data.channels is {ch} but {name} images have {images.shape[-1]} channel(s)")
    images = fit_resolution(images, res)
    limit = data_cfg.get(f"{split}_count")
    if limit is not None:
        if limit > len(images):
            raise BadInputError(f"data.{split}_count is {limit} but the {split} split has only {len(images)} images")
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    card = {
        "dataset": name, "split": split, "count": int(len(images)), "shape": list(images.shape[1:]),
        "dtype": "uint8", "layout": "NHWC",
        "source": str(data_cfg.get("root")
                      or (FASHION_MNIST_DIR if name == "fashion-mnist" else "sklearn.datasets.load_digits")),
        "skipped_files": [f"{p}: {why}" for p, why in skipped],
    }
    if name != "image-folder":  # one hash per input file; a folder of 30k images gets a listing hash instead
        card["input_sha256"] = {str(p): sha256_file(p) for p in sources}
    else:
        import hashlib
        card["input_listing_sha256"] = hashlib.sha256("\n".join(map(str, sources)).encode()).hexdigest()
    return {"images": images, "labels": labels, "card": card}


def to_float(images: np.ndarray):
    """uint8 (N,H,W,C) -> float32 torch tensor (N,C,H,W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x) -> np.ndarray:
    """float torch tensor (N,C,H,W) in [-1, 1] -> uint8 (N,H,W,C), rounding like diffusers' pipelines."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to("cpu").byte().permute(0, 2, 3, 1).numpy()


def image_grid(images: np.ndarray, nrow: int | None = None) -> np.ndarray:
    """Tile (N,H,W,C) uint8 images into one (rows*H, cols*W, C) picture with a 1-pixel gap."""
    n, h, w, c = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    grid = np.full((ncol * (h + 1) + 1, nrow * (w + 1) + 1, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, nrow)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = im
    return grid


def save_grid(path, images: np.ndarray, nrow=None) -> None:
    from PIL import Image

    g = image_grid(images, nrow)
    with atomic_path(path) as tmp:
        Image.fromarray(g.squeeze(-1) if g.shape[-1] == 1 else g).save(tmp, format="PNG")
