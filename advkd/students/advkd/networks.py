"""Adv-KD networks: the progressive generator (one block per denoising phase, one image head per block) and the
per-phase critics (the authors'; as ablations the suite's earlier one and a spectrally normalised one).

Layer layout of the published student (checked against its published sizes, see tests/unit/test_students.py):
  plain layer  = Conv2d(cin, cout, 3, stride 1, padding 1, bias) + BatchNorm2d(cout, affine) + LeakyReLU(0.01)
  up layer     = ConvTranspose2d(cin, cout, 3, stride 2, padding 1, output_padding 1, bias) + BN + LeakyReLU(0.01)
  head         = Conv2d(c, c, 3, p 1, bias) + BN + LeakyReLU(0.01) + Conv2d(c, image_channels, 3, p 1, bias) + tanh
  (LeakyReLU(0.01): torch's default slope, which the authors' nn.LeakyReLU() uses; their critic's is 0.2)
  block 0 = [up]; block 1 = [plain]; odd k >= 3 = [plain, plain]; even k >= 2 = [plain, up];
  the first layer of a block changes the width, the others keep it.
With widths 16,16,32,32,64,64,128x5, 3x4x4 noise in and 256x256 RGB out this gives exactly 2,429,937 parameters,
1,721,235 of them on the inference path (all trunks + the last head). A kernel-4 transposed conv (the DCGAN habit)
would give 1,950,176 on the inference path, so the authors' upsampling layer has a 3x3 kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GENERATOR_SLOPE = 0.01  # the authors' nn.LeakyReLU() default


def _layer(kind: str, cin: int, cout: int, upsample: str = "transposed") -> nn.Sequential:
    if kind != "up":
        conv = [nn.Conv2d(cin, cout, 3, padding=1)]
    elif upsample == "transposed":  # the published layer
        conv = [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)]
    else:
        # Resize-convolution (Odena et al. 2016): a stride-2 transposed conv covers output pixels unevenly and
        # leaves a checkerboard; nearest upsampling then a 3x3 conv does not. Same parameters, 4x the FLOPs.
        conv = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1)]
    return nn.Sequential(*conv, nn.BatchNorm2d(cout), nn.LeakyReLU(GENERATOR_SLOPE))


def _head(c: int, image_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(GENERATOR_SLOPE),
                         nn.Conv2d(c, image_channels, 3, padding=1), nn.Tanh())


class ProgressiveGenerator(nn.Module):
    """Blocks = denoising phases. `render` runs blocks 0..upto and returns the requested heads' images."""

    def __init__(self, layout: list[dict], noise_channels: int, image_channels: int, heads: bool = True,
                 upsample: str = "transposed"):
        super().__init__()
        self.layout = layout
        self.blocks = nn.ModuleList()
        cin = noise_channels
        for blk in layout:
            layers = []
            for j, kind in enumerate(blk["layers"]):
                layers.append(_layer(kind, cin if j == 0 else blk["width"], blk["width"], upsample))
            self.blocks.append(nn.Sequential(*layers))
            cin = blk["width"]
        last = len(layout) - 1
        # Without intermediate heads only the last block renders an image (the only supervised output).
        self.heads = nn.ModuleDict({str(b): _head(blk["width"], image_channels) for b, blk in enumerate(layout)
                                    if heads or b == last})

    def head_ids(self) -> list[int]:
        return sorted(int(k) for k in self.heads)

    def render(self, z, upto: int, heads) -> dict:
        out, h = {}, z
        for b in range(upto + 1):
            h = self.blocks[b](h)
            if b in heads:
                out[b] = self.heads[str(b)](h)
        return out

    def forward(self, z):
        """One forward pass: every block, then the last head's image."""
        last = len(self.blocks) - 1
        return self.render(z, last, (last,))[last]


class InferencePath(nn.Module):
    """What sampling runs (and what is costed): all trunks plus the last head; intermediate heads are left out."""

    def __init__(self, gen: ProgressiveGenerator):
        super().__init__()
        self.blocks = gen.blocks
        self.head = gen.heads[str(len(gen.blocks) - 1)]

    def forward(self, z):
        for blk in self.blocks:
            z = blk(z)
        return self.head(z)


class PairCritic(nn.Module):
    """A critic of the pair (image at the phase's resolution, the generator's input noise): an image branch, a noise
    branch (None: unconditional, an ablation that judges realism, not the match to x_T) and an MLP on both."""

    image: nn.Module
    noise: nn.Module | None
    mlp: nn.Module

    def forward(self, image, noise):
        feats = [self.image(image).flatten(1)] + ([self.noise(noise).flatten(1)] if self.noise is not None else [])
        return self.mlp(torch.cat(feats, 1)).squeeze(1)


class PublishedCritic(PairCritic):
    """The authors' critic of one phase (kidist-amde/Adv-KD, src/prodm/models/kd_gan.py), judging the pair (image at
    the phase's resolution, the generator's input noise):
      image: Conv2d(c, w, 4, s2, p1, no bias) + LeakyReLU(0.2), then while the side is above 4:
             Conv2d(4, s2, p1, no bias) + BatchNorm2d + LeakyReLU(0.2), doubling the width up to 4w;
      noise: Conv2d(c, 32, 3, p1, no bias) + BN + LeakyReLU(0.2) + Conv2d(32, 64, 3, p0, no bias) + BN + LeakyReLU(0.2)
             (64x2x2 from 4x4 noise);
      joined: Linear(features, 128) + BatchNorm1d + LeakyReLU(0.2) + Linear(128, 1).
    With w = 32 and RGB this is 119,841 parameters at 8 px ... 1,267,873 at 256 (tests/unit/test_advkd.py). The
    BatchNorm gains are what the published +-0.1 weight clipping bounds."""

    def __init__(self, image_channels: int, resolution: int, noise_channels: int, noise_resolution: int,
                 width: int = 32, hidden: int = 128):
        super().__init__()
        lrelu = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        layers, c, res = [nn.Conv2d(image_channels, width, 4, 2, 1, bias=False), lrelu()], width, resolution // 2
        while res > 4:
            cn = min(4 * width, 2 * c)
            layers += [nn.Conv2d(c, cn, 4, 2, 1, bias=False), nn.BatchNorm2d(cn), lrelu()]
            c, res = cn, res // 2
        self.image = nn.Sequential(*layers)
        self.noise = nn.Sequential(nn.Conv2d(noise_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), lrelu(),
                                   nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), lrelu()) \
            if noise_channels else None
        feats = c * res * res + (64 * (noise_resolution - 2) ** 2 if noise_channels else 0)
        self.mlp = nn.Sequential(nn.Linear(feats, hidden), nn.BatchNorm1d(hidden), lrelu(), nn.Linear(hidden, 1))


class SpectralCritic(PairCritic):
    """critic_net: spectral (the small-data GAN recipe's): the authors' critic with its BatchNorms removed and every
    conv and linear layer spectrally normalised (Miyato et al. 2018), so it is about 1-Lipschitz by construction and
    needs neither a gradient penalty nor weight clipping; with biases, since no normalisation follows them."""

    def __init__(self, image_channels: int, resolution: int, noise_channels: int, noise_resolution: int,
                 width: int = 32, hidden: int = 128):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        lrelu = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        layers, c, res = [sn(nn.Conv2d(image_channels, width, 4, 2, 1)), lrelu()], width, resolution // 2
        while res > 4:
            cn = min(4 * width, 2 * c)
            layers += [sn(nn.Conv2d(c, cn, 4, 2, 1)), lrelu()]
            c, res = cn, res // 2
        self.image = nn.Sequential(*layers)
        self.noise = nn.Sequential(sn(nn.Conv2d(noise_channels, 32, 3, 1, 1)), lrelu(), sn(nn.Conv2d(32, 64, 3)),
                                   lrelu()) if noise_channels else None
        feats = c * res * res + (64 * (noise_resolution - 2) ** 2 if noise_channels else 0)
        self.mlp = nn.Sequential(sn(nn.Linear(feats, hidden)), lrelu(), sn(nn.Linear(hidden, 1)))


class SuiteCritic(PairCritic):
    """The suite's earlier critic (critic_net: suite, an ablation): judges the pair (image at the phase's
    resolution, the generator's input noise) with a stride-1 3x3 first conv at full resolution, biased strided
    convs down to 4x4 on each input and an MLP; no BatchNorm (the gradient penalty is per-sample)."""

    def __init__(self, image_channels: int, resolution: int, noise_channels: int, noise_resolution: int,
                 width: int = 16, max_width: int = 256, hidden: int = 128):
        super().__init__()
        self.image = self._branch(image_channels, resolution, width, max_width)
        feats = self._features(self.image, image_channels, resolution)
        self.noise = self._branch(noise_channels, noise_resolution, max(4, width // 2), max_width) \
            if noise_channels else None
        if self.noise is not None:
            feats += self._features(self.noise, noise_channels, noise_resolution)
        self.mlp = nn.Sequential(nn.Linear(feats, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    @staticmethod
    def _branch(cin: int, res: int, width: int, max_width: int) -> nn.Sequential:
        layers = [nn.Conv2d(cin, width, 3, padding=1), nn.LeakyReLU(0.2)]
        c = width
        while res > 4:
            cn = min(max_width, c * 2)
            layers += [nn.Conv2d(c, cn, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c, res = cn, res // 2
        return nn.Sequential(*layers)

    @staticmethod
    def _features(branch, cin, res) -> int:
        with torch.no_grad():
            return branch(torch.zeros(1, cin, res, res)).numel()


CRITICS = {"published": PublishedCritic, "suite": SuiteCritic, "spectral": SpectralCritic}  # critic_net


def downsample_noise(x_T, resolution: int):
    """x_T (N,C,H,W) -> (N,C,r,r) by area averaging, rescaled by H/r so each entry is again ~N(0,1)
    (the mean of f^2 iid normals has std 1/f)."""
    h = x_T.shape[-1]
    if resolution == h:
        return x_T
    return F.avg_pool2d(x_T, h // resolution) * (h / resolution)
