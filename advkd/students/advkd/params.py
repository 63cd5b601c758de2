"""The Adv-KD family's parameters (the published recipe as defaults: /work/shared/reference/advkd-method.md), what
the schema cannot check about them, and the layout rules that turn them into a generator: phases = blocks = teacher
checkpoints distilled. No torch here: config validation and planning read this module."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...method import Params, max_runs_errors, param

PAPER_WIDTHS = (16, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128)
CRITIC_NETS = ("published", "suite", "spectral")   # advkd.students.advkd.networks.CRITICS
PUBLISHED_CRITIC_WIDTH = 32            # the authors' ndf

# A preset fixes what the data does not: base widths (one per published phase), noise resolution, the suite
# critic's width.
# `embedded` is the published design at half the width (so no block has fewer than 8 channels), for 1x32x32 on a
# CPU: from 4x4 noise its heads keep the published ratio of head to image side (block_layout), so blocks 0-5 work
# at 4x4 and blocks 6, 8 and 10 double to 8, 16 and 32.
PRESETS = {
    "paper": {"widths": PAPER_WIDTHS, "noise_resolution": 4, "critic_width": 64, "resolution": 256,
              "image_channels": 3},
    "embedded": {"widths": (8, 8, 16, 16, 32, 32, 64, 64, 64, 64, 64), "noise_resolution": 4, "critic_width": 16,
                 "resolution": None, "image_channels": None},
}

# What generator: teacher-unet fixes (the teacher's UNet on the whole x_T, one phase on x_0).
TEACHER_UNET_FIXED = {"phases": 1, "noise_resolution": "full", "heads": False, "training": "joint"}
LAYOUT_KEYS = ("phases", "checkpoints", "width", "widths", "layers_per_block", "upsample", "noise_resolution",
               "heads", "training", "preset")


@dataclass(frozen=True)
class AdvKDParams(Params):
    generator: str = param(
        "progressive", "progressive = the published generator (blocks = phases, each with a head); teacher-unet = "
        "the teacher's UNet initialised from its weights, fed the whole x_T, its output read as x_T minus the image "
        "(the Denoising Student's network): one phase on x_0, trained with this recipe's losses and critics (not "
        "published)", enum=["progressive", "teacher-unet"])
    preset: str = param("embedded", "paper = published 256x256 RGB student; embedded = the same design at half "
                        "width for 1x32x32", enum=sorted(PRESETS))
    phases: int | None = param(None, "student phases = blocks = teacher checkpoints distilled (null: all of "
                               "trajectories.checkpoints; fewer are thinned evenly, ending at x_0)",
                               type=["integer", "null"], minimum=1)
    checkpoints: list | None = param(None, "explicit trajectory checkpoint indices, one per phase, increasing, "
                                     "ending at the last (x_0): the checkpoint-spacing ablation",
                                     type=["array", "null"], items={"type": "integer", "minimum": 0}, minItems=1)
    width: float = param(1.0, "multiplier on the preset's block widths", type="number", exclusiveMinimum=0)
    widths: list | None = param(None, "base channel widths from the first block to the last (replace the preset's; "
                                "spread over the blocks by relative depth, then scaled by `width`): e.g. wide early "
                                "blocks, as in DCGAN, instead of the published growth",
                                type=["array", "null"], items={"type": "integer", "minimum": 1}, minItems=1)
    layers_per_block: int | None = param(None, "plain layers per block (null: the published 1-2 pattern)",
                                         type=["integer", "null"], minimum=1, maximum=8)
    upsample: str = param("transposed", "up layers: transposed = the published stride-2 3x3 transposed conv; "
                          "nearest = nearest upsampling + 3x3 conv (no checkerboard, same parameters, 4x the FLOPs "
                          "of that layer)", enum=["transposed", "nearest"])
    noise_resolution: int | str | None = param(
        None, "resolution x_T is downsampled to before the generator: 4 (published) .. the image resolution, or "
        "'full' (null: the preset's)", oneOf=[{"type": "integer", "minimum": 1}, {"const": "full"}, {"type": "null"}])
    heads: bool = param(True, "intermediate heads (true = published); false keeps only the last head and needs "
                        "training: joint", type="boolean")
    loss: str = param("adversarial", "adversarial = published; regression = Denoising-Student-style; both = sum",
                      enum=["adversarial", "regression", "both"])
    regression: str = param("mse", "regression loss kind", enum=["mse", "l1"])
    reg_weight: float = param(1.0, "weight of the regression loss", type="number", minimum=0)
    reg_resolution: int | None = param(
        None, "compare student and teacher images area-averaged to this side (a power-of-2 divisor of the image) in "
        "the regression loss, so that it anchors the layout the input noise determines and leaves the detail to the "
        "critic; null = at the rendered resolution (published)", type=["integer", "null"], minimum=1)
    adv_weight: float = param(1.0, "weight of the generator's adversarial loss", type="number", minimum=0)
    gradient_penalty: float = param(10.0, "gradient-penalty weight (10 published, 0 = off)", type="number",
                                    minimum=0)
    clip: float | None = param(0.1, "critic weight clipping +-clip (0.1 published; null or 0 = off)",
                               type=["number", "null"], minimum=0)
    training: str = param("phases", "phases = published phase-by-phase; joint = all blocks and heads at once",
                          enum=["phases", "joint"])
    epochs_scale: float = param(1.0, "phase k trains max(1, round(10(k+1) * epochs_scale)) epochs (1 = published)",
                                type="number", exclusiveMinimum=0)
    batch_size: int | None = param(None, "null = published 64 (k<8), 32 (k=8), 16 (k>=9)",
                                   type=["integer", "null"], minimum=2)
    lr: float = param(1e-4, "Adam learning rate (1e-4 published)", type="number", exclusiveMinimum=0)
    critic_lr: float | None = param(None, "critic learning rate (null = lr)", type=["number", "null"],
                               exclusiveMinimum=0)
    critic_net: str | None = param(
        None, "published = the authors' critic (bias-free strided 4x4 convs with BatchNorm from 32 to 128 channels, a "
        "two-conv noise branch built for 4x4 noise, an MLP with BatchNorm1d); suite = the suite's earlier critic (no "
        "BatchNorm, a stride-1 first conv, biases): an ablation; spectral = the published layout without BatchNorm, "
        "every layer spectrally normalised (the small-data GAN recipe's; set gradient_penalty 0 and clip null). "
        "null: published for the progressive generator, suite for generator: teacher-unet (whose 32x32 noise the "
        "published noise branch was not built for)", enum=[*CRITIC_NETS, None])
    critic_width: int | None = param(None, "first critic conv width (null: 32 for the published and spectral "
                                     "critics, the preset's for the suite's)", type=["integer", "null"], minimum=1)
    critic: str = param("conditional", "conditional = published: the critic judges (image, input noise) pairs; "
                        "unconditional = the image alone (realism, not the match to x_T)",
                        enum=["conditional", "unconditional"])
    noise: str = param("stored", "the generator's input: stored = each run's x_T, paired with its teacher states "
                       "(published); fresh = new noise drawn for every step, unpaired (the small-data GAN habit; "
                       "needs loss adversarial and critic unconditional)", enum=["stored", "fresh"])
    ema: float | None = param(None, "sample from an exponential moving average of the generator weights with this "
                              "decay per generator step, e.g. 0.95 for a few hundred steps (null = off, published)",
                              type=["number", "null"], exclusiveMinimum=0, exclusiveMaximum=1)
    augment: bool = param(False, "DiffAugment (random shift + cutout) on every image a critic sees, against critic "
                          "overfitting on few trajectories (false = published)", type="boolean")
    max_runs: int | None = param(None, "train on the first N trajectory runs only (null: all)",
                                 type=["integer", "null"], minimum=2)

    example = {"width": 0.5, "epochs_scale": 0.02, "batch_size": 8}
    budget_keys = ("epochs_scale",)

    def recipe_class(self) -> str:
        """published = every parameter at the authors' value (the embedded preset's widths; any budget);
        control = the published recipe trained by regression alone (no critic); deviation = anything else."""
        changed = self.changed_keys()
        if not changed:
            return "published"
        return "control" if changed == {"loss"} and self.loss == "regression" else "deviation"

    @property
    def teacher_unet(self) -> bool:
        return self.generator == "teacher-unet"

    @property
    def critic_name(self) -> str:
        return self.critic_net or ("suite" if self.teacher_unet else "published")

    def errors(self, where: str, block: dict, cfg: dict) -> list[str]:
        """The recipe must fit the experiment's data and trajectories."""
        available = cfg["trajectories"]["checkpoints"]
        res, ch = cfg["data"]["resolution"], cfg["data"]["channels"]
        errs = checkpoint_errors(where, available, self.phases, self.checkpoints)
        if self.teacher_unet:
            for key in LAYOUT_KEYS:
                if key in block and block[key] != TEACHER_UNET_FIXED.get(key, object()):
                    errs.append(f"{where}.{key}: does not apply to generator: teacher-unet (the teacher's UNet on "
                                "the whole x_T, one phase on x_0); remove it")
        preset = PRESETS[self.preset]
        for key in ("resolution", "image_channels"):
            want, have = preset[key], res if key == "resolution" else ch
            if want is not None and want != have:
                errs.append(f"{where}.preset: {self.preset} is built for {key} {want}, the data has {have}; use "
                            "preset embedded")
        nr = self.noise_resolution or preset["noise_resolution"]
        if nr != "full" and log2_ratio(res, nr) is None:
            errs.append(f"{where}.noise_resolution: {nr} must divide the image resolution {res} by a power of 2")
        rr = self.reg_resolution
        if rr is not None and log2_ratio(res, rr) is None:
            errs.append(f"{where}.reg_resolution: {rr} must divide the image resolution {res} by a power of 2")
        if not self.heads and self.training != "joint":
            errs.append(f"{where}.heads: false leaves the intermediate phases without an image to supervise; set "
                        "training: joint")
        if self.loss == "adversarial" and self.adv_weight == 0:
            errs.append(f"{where}.adv_weight: 0 with loss adversarial trains nothing")
        branch = self.critic_name in ("published", "spectral") and self.critic == "conditional"
        if branch and nr != "full" and nr < 3:
            errs.append(f"{where}.noise_resolution: {nr} is too small for the {self.critic_name} critic's noise "
                        "branch (an unpadded 3x3 conv: at least 3); use critic_net: suite or critic: unconditional")
        if branch and self.teacher_unet:
            errs.append(f"{where}.critic_net: {self.critic_name} with generator: teacher-unet feeds the whole 32x32 "
                        "x_T to a noise branch built for 4x4 noise; use critic_net: suite (the default there)")
        if self.noise == "fresh" and (self.loss != "adversarial" or self.critic != "unconditional"):
            errs.append(f"{where}.noise: fresh noise has no teacher state to pair with, so it needs loss: "
                        "adversarial and critic: unconditional")
        errs += max_runs_errors(where, self.max_runs, cfg)
        return errs

    def resolve(self, name: str, available: int, resolution: int, channels: int) -> dict:
        """The full recipe: defaults filled, checkpoints chosen, layout computed. Saved as student.json."""
        p = self.as_dict()
        preset = PRESETS[self.preset]
        critic = {"critic_net": self.critic_name, "critic_width": self.critic_width or (
            preset["critic_width"] if self.critic_name == "suite" else PUBLISHED_CRITIC_WIDTH)}
        if self.teacher_unet:  # one network on the whole x_T: no blocks, heads or noise resizing
            return {**p, "family": "advkd", "name": name, "phases": 1, "noise_resolution": resolution,
                    "heads": False, "training": "joint", "checkpoints": [available - 1], "resolution": resolution,
                    "image_channels": channels, "layout": None, **critic}
        phases = self.phases or (len(self.checkpoints) if self.checkpoints else available)
        nr = self.noise_resolution or preset["noise_resolution"]
        nr = resolution if nr == "full" else nr
        checkpoints = select_checkpoints(available, phases, self.checkpoints)
        positions = [c / (available - 1) if available > 1 else 1.0 for c in checkpoints]
        layout = block_layout(phases, nr, resolution, self.widths or preset["widths"], self.width,
                              self.layers_per_block, positions)
        return {**p, "family": "advkd", "name": name, "phases": phases, "noise_resolution": nr,
                "checkpoints": checkpoints, "resolution": resolution,
                "image_channels": channels, "layout": layout, **critic}


def select_checkpoints(available: int, phases: int, explicit=None) -> list[int]:
    """Trajectory checkpoint indices the student distils, one per phase, always ending at x_0 (index available-1).

    Rule: phase j takes checkpoint ceil((j+1)*available/phases) - 1, i.e. the checkpoints evenly thinned from the
    end, so phases=available keeps all of them and phases=1 keeps x_0 only. An explicit list overrides the rule.
    """
    if explicit is not None:
        return [int(i) for i in explicit]
    return [math.ceil((j + 1) * available / phases) - 1 for j in range(phases)]


def checkpoint_errors(where: str, available: int, phases: int | None, explicit) -> list[str]:
    errs = []
    if phases is not None and phases > available:
        errs.append(f"{where}.phases: {phases} phases need as many teacher checkpoints, but trajectories.checkpoints "
                    f"is {available}")
    if explicit is not None:
        if phases is not None and len(explicit) != phases:
            errs.append(f"{where}.checkpoints: {len(explicit)} indices given but phases is {phases}")
        if explicit != sorted(set(explicit)) or explicit[-1] != available - 1 or explicit[0] < 0:
            errs.append(f"{where}.checkpoints: indices must strictly increase within 0..{available - 1} and end at "
                        f"{available - 1} (x_0)")
    return errs


def published_batch(k: int) -> int:
    return 64 if k < 8 else 32 if k == 8 else 16


def log2_ratio(out_res: int, in_res: int) -> int | None:
    """Number of doublings from in_res to out_res, or None if it is not a whole power of two."""
    if in_res <= 0 or out_res < in_res or out_res % in_res:
        return None
    r = out_res // in_res
    return r.bit_length() - 1 if r & (r - 1) == 0 else None


# The published student's head resolutions relative to the image, per teacher checkpoint k = 0..10 (t = 999, 899,
# ..., 99, then x_0): 1/32, 1/32, 1/16, 1/16, ..., 1/2, 1/2, 1 (8, 8, 16, ..., 128, 128, 256 px at 256 px).
def published_shrink(k: int) -> int:
    """log2 of how much smaller than the image the published head for checkpoint k (of 11) is."""
    return 5 - k // 2


def block_layout(n_blocks: int, noise_res: int, out_res: int, base_widths=PAPER_WIDTHS, width: float = 1.0,
                 layers_per_block: int | None = None, positions=None) -> list[dict]:
    """Per block: its layers ('plain'/'up'), width and output resolution.

    A block renders at the resolution the published student gives its noise level: the image side shrunk by
    `published_shrink` of the checkpoint at the same place along the teacher's trajectory (`positions`: each
    block's checkpoint as a fraction of the way from the first to x_0; default evenly spread), but never below
    the noise resolution. So a 32x32 student from 4x4 noise keeps its first six heads at 4x4, where the published
    ones low-pass the noisiest states most, and doubles at blocks 6, 8 and 10. The published pattern marks an
    upsampling slot at every even block; a slot a block does not need becomes a plain layer (the block keeps its
    depth) and a block that needs more doublings than it has slots gets extra up layers.
    With n_blocks < len(base_widths) each block takes the base width at the same relative depth.
    """
    if log2_ratio(out_res, noise_res) is None:
        raise ValueError(f"image resolution {out_res} must be the noise resolution {noise_res} times a power of 2")
    if positions is None:
        positions = [1.0] if n_blocks == 1 else [b / (n_blocks - 1) for b in range(n_blocks)]
    nb = len(base_widths)
    blocks, res = [], noise_res
    for b, pos in enumerate(positions):
        if layers_per_block is None:
            kinds = ["up"] if b == 0 else ["plain"] if b == 1 else ["plain", "plain"] if b % 2 else ["plain", "up"]
        else:
            kinds = ["plain"] * layers_per_block
            if b % 2 == 0:
                kinds[-1] = "up"
        target = max(noise_res, out_res >> published_shrink(round(10 * pos)))
        left = log2_ratio(target, res)
        layers = []
        for k in kinds:
            use = k == "up" and left > 0
            left -= use
            layers.append("up" if use else "plain")
        layers += ["up"] * left
        res = target
        idx = b if n_blocks == nb else (nb - 1 if n_blocks == 1 else round(b * (nb - 1) / (n_blocks - 1)))
        blocks.append({"layers": layers, "width": max(1, int(round(base_widths[idx] * width))), "resolution": res})
    return blocks
