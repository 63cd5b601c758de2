"""clean-fid's Inception judge for RGB data, from a local TorchScript file only (never a download).

clean-fid fetches `inception-2015-12-05.pt` from a URL when it is missing; offline that hangs or fails with a
URLError deep inside a job. Here the file is looked up in the config (`evaluator.inception_weights`) or the
environment (ADVKD_INCEPTION_WEIGHTS) and a missing file is a BadInputError that says where to put it.
Images are resized exactly as clean-fid's "clean" mode does (PIL bicubic to 299x299 on float pixels).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..io import BadInputError

ENV = "ADVKD_INCEPTION_WEIGHTS"
FILENAME = "inception-2015-12-05.pt"
URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


def resolve_inception_weights(configured=None) -> Path:
    """The local weight file: the config value, else $ADVKD_INCEPTION_WEIGHTS; a folder means folder/FILENAME."""
    raw = configured or os.environ.get(ENV)
    if not raw:
        raise BadInputError(
            f"no Inception weights configured: set evaluator.inception_weights in the experiment config (or the "
            f"environment variable {ENV}) to a local copy of {FILENAME}. On a machine with internet, fetch it from "
            f"{URL} and copy it here; this suite never downloads it.")
    path = Path(raw).expanduser()
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise BadInputError(
            f"Inception weights not found at {path} (from {'evaluator.inception_weights' if configured else ENV}). "
            f"Put {FILENAME} there: fetch it from {URL} on a machine with internet and copy it over; this suite "
            "never downloads it.")
    return path


class InceptionJudge(torch.nn.Module):
    """Features (pool3, 2048) and, when the network has its output layer, class logits for the IS."""

    def __init__(self, path):
        super().__init__()
        try:
            self.base = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as e:
            raise BadInputError(f"{path}: not a TorchScript Inception file ({e}); fetch {FILENAME} again from {URL}") \
                from None
        self.layers = self.base.layers

    def forward(self, x):
        """x: float (N,3,299,299) in [0,255], as clean-fid feeds its InceptionV3W."""
        feats = self.layers.forward((x - 128) / 128).reshape(len(x), -1)  # (N, 2048) for the real file
        # StyleGAN2-ADA's IS (which clean-fid's file comes from) uses the output layer without its bias.
        logits = feats @ self.base.output.weight.T if hasattr(self.base, "output") else None
        return feats, logits


def clean_resize(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,C) -> float (N,3,299,299) in [0,255] with clean-fid's own "clean" resizer."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    out = np.stack([resize(im) for im in images]).astype(np.float32)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


@torch.inference_mode()
def embed_inception(judge: InceptionJudge, images: np.ndarray, batch_size: int = 50, device="cpu"):
    judge = judge.to(device).eval()
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f, z = judge(clean_resize(images[i:i + batch_size]).to(device))
        feats.append(f.double().cpu().numpy())
        if z is not None:
            logits.append(z.double().cpu().numpy())
    return np.concatenate(feats), (np.concatenate(logits) if logits else None)
