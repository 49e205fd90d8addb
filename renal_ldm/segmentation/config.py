"""Segmenter configs and training settings: torch-free, so the CLI parser reads its defaults from here.

The geometry of the valid-padding UNet is pure arithmetic over the config (`output_size`, `input_size_for`,
`padding_per_side`); tests check it against the network in renal_ldm.segment.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from renal_ldm.classes import NUM_CLASSES

CLASS_MODES = ("all", "glomeruli")
DEFAULT_TILE = 512
"""Output tile side of whole-image inference: memory is bounded by a tile of this size."""


@dataclass(frozen=True)
class SegmenterConfig:
    """A valid-padding UNet: `depth` poolings, `convs` unpadded kernel x kernel convolutions per level.

    classes: "all" (eight label classes, softmax) or "glomeruli" (one logit: Glomeruli vs the rest).
    Channels double per level from `base_channels`; the bottleneck has base_channels * 2**depth (feature_dim).

    downsample: the network works at 1/downsample of the image's resolution. The segmenter shrinks its input by
    area averaging (downsample x downsample blocks), predicts, and upsamples its logits bilinearly back to the
    image's size before the threshold or argmax, so it takes and returns full-resolution images; training reads
    images and masks shrunk the same way and validates at full resolution. The geometry below (sizes, padding,
    tiles, training crops) is in network pixels: one of them is downsample x downsample image pixels, so the
    receptive field grows by the factor (depth 4: 185 px at 1, 370 px at 2). Configs saved without it are 1.
    """

    classes: str = "all"
    base_channels: int = 16
    depth: int = 4
    convs: int = 2
    kernel: int = 3
    batch_norm: bool = True
    group_norm: bool = False
    """GroupNorm instead of BatchNorm: statistics per image, so what the network computes in training is what it
    computes at inference. With small batches of large crops, BatchNorm's running statistics lag the weights and
    validation Dice jumps between epochs (seen on kidney-pas: 0.03 to 0.55 from one epoch to the next)."""
    downsample: int = 1

    def __post_init__(self) -> None:
        if self.classes not in CLASS_MODES:
            raise ValueError(f"unknown segmenter classes {self.classes!r}; expected one of {', '.join(CLASS_MODES)}")
        for name, low in (("base_channels", 1), ("depth", 1), ("convs", 1), ("kernel", 1), ("downsample", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"SegmenterConfig.{name} must be an integer >= {low}; got {value!r}")
        if self.kernel % 2 == 0:
            raise ValueError(f"SegmenterConfig.kernel must be odd; got {self.kernel}")
        if self.batch_norm and self.group_norm:
            raise ValueError("SegmenterConfig takes batch_norm or group_norm, not both")

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmenterConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown SegmenterConfig keys {unknown}; expected some of {sorted(names)}")
        return cls(**data)

    # -- outputs
    @property
    def num_outputs(self) -> int:
        return NUM_CLASSES if self.classes == "all" else 1

    @property
    def feature_dim(self) -> int:
        return self.base_channels * 2**self.depth

    # -- geometry (pure arithmetic over the layers; tests check it against the network itself)
    @property
    def _block_loss(self) -> int:
        return self.convs * (self.kernel - 1)

    @property
    def size_step(self) -> int:
        """Valid input (and output) sizes are spaced by this (2**depth): the pooling grid."""
        return 2**self.depth

    def _forward_size(self, size: int) -> int | None:
        s, loss = int(size), self._block_loss
        for _ in range(self.depth):
            s -= loss
            if s < 2 or s % 2:
                return None
            s //= 2
        s -= loss
        if s < 1:
            return None
        for _ in range(self.depth):
            s = 2 * s - loss
            if s < 1:
                return None
        return s

    @property
    def min_input_size(self) -> int:
        """The smallest input the network takes."""
        s = 1
        while self._forward_size(s) is None:
            s += 1
        return s

    @property
    def padding_per_side(self) -> int:
        """Pixels the network loses on each side (valid convolutions): the mirror padding of whole-image inference."""
        s = self.min_input_size
        return (s - self._forward_size(s)) // 2

    def output_size(self, input_size: int) -> int:
        """Output side for an input side; a ValueError names the nearest sizes the network takes."""
        out = self._forward_size(input_size)
        if out is None:
            low = self.min_input_size
            below = low + (max(int(input_size) - low, 0) // self.size_step) * self.size_step
            above = below if below >= int(input_size) else below + self.size_step
            nearest = f"{above}" if below == above or below > int(input_size) else f"{below} or {above}"
            raise ValueError(
                f"input size {input_size} does not fit this segmenter (depth {self.depth}: every pooling step needs "
                f"an even size); expected {low} + {self.size_step}k, e.g. {nearest}"
            )
        return out

    def input_size_for(self, output_size: int) -> int:
        """The smallest input size whose output covers `output_size` px (its output may be a few px larger)."""
        if int(output_size) < 1:
            raise ValueError(f"output size must be at least 1 px; got {output_size}")
        low = self.min_input_size
        need = int(output_size) + 2 * self.padding_per_side
        steps = max(0, math.ceil((need - low) / self.size_step))
        return low + steps * self.size_step

    def valid_output_size(self, size: int) -> int:
        """The smallest output size the network produces that is at least `size`."""
        return self.output_size(self.input_size_for(size))


SEGMENTER_CONFIGS: dict[str, SegmenterConfig] = {
    # trains in seconds on a CPU thread (tests); 20 px lost per side
    "tiny": SegmenterConfig(base_channels=8, depth=2),
    # the reference geometry (depth 4, 92 px per side, 428 -> 244) at 1/8 of the original UNet's width (0.5 M
    # parameters, 2 MB): what a shared 2-core CPU trains in about 20 minutes; the shipped segmenters use it
    "small": SegmenterConfig(base_channels=8, depth=4),
    # 1/4 of the original width (1.9 M parameters, 7.8 MB): for a machine with more time or a GPU
    "medium": SegmenterConfig(base_channels=16, depth=4),
    # "small" with GroupNorm (see SegmenterConfig.group_norm): steadier on real tissue with small batches
    "small-gn": SegmenterConfig(base_channels=8, depth=4, batch_norm=False, group_norm=True),
}


def named_config(name: str, classes: str, downsample: int | None = None) -> SegmenterConfig:
    """SEGMENTER_CONFIGS[name] for `classes` (and `downsample`, where given); a ValueError lists the names."""
    if name not in SEGMENTER_CONFIGS:
        raise ValueError(f"unknown segmenter config {name!r}; expected one of {', '.join(SEGMENTER_CONFIGS)}")
    config = dataclasses.replace(SEGMENTER_CONFIGS[name], classes=classes)
    return config if downsample is None else dataclasses.replace(config, downsample=downsample)


LR_SCHEDULES = ("constant", "cosine")
MAX_BLUR_SIGMA = 4.0
"""The largest blur sigma (px) train-segmenter accepts: beyond it the structures themselves are gone."""


@dataclass(frozen=True)
class SegmenterTrainSettings:
    """One run of `train-segmenter`; the CLI's defaults are these fields' defaults.

    crop: output pixels of each random training crop (rounded up to a size the network produces); the network
    sees crop + 2 * padding_per_side px of the mirror-padded patch. Early stopping watches the validation loss:
    `patience` epochs without a new best (by more than min_delta) end the run. The saved weights are those of the
    best epoch by `monitor` ("val_loss", as the reference's EarlyStopping, or "val_dice").

    Augmentation of every crop: `flips` (horizontal, vertical), `rotations` (a random multiple of 90 degrees; with
    flips, all eight symmetries of the square), `stain_jitter` s (per crop: contrast and per-channel intensity
    scaled by 1 + U(-s, s), brightness shifted by U(-s, s) / 2 of the range). `lr_schedule` "cosine" decays the
    learning rate per step from `lr` to 0 at the end of `epochs` (so resuming with another `epochs` changes it).

    `scale_jitter` s magnifies every crop about its centre by a factor drawn log-uniformly from [1 / (1 + s), 1 + s]
    (glomeruli differ in size between patients and magnifications).

    `blur` b > 0 blurs half of the crops, drawn at random, with a Gaussian of sigma U(0, b) px: generated images
    (decoded by a VQ autoencoder, from a short-trained UNet) are softer than the tissue a segmenter learns from,
    and a judge of them must not read softness as absence. On phantoms (models/segmenter-phantom/README.md)
    blur 1.5 made the judge read soft glomeruli right but take tubuli for glomeruli; the shipped judge learns
    from autoencoded copies of its patches instead (`renal-ldm autoencode`).

    `ema` d > 0 keeps an exponential moving average of the weights (decay d per optimizer step, torch's
    AveragedModel); validation judges, and the checkpoint holds, the averaged weights. With a dozen training tiles
    the raw weights' validation Dice swings by 0.05-0.1 from epoch to epoch; the average smooths that out.
    """

    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    crop: int = 128
    crops_per_image: int = 1
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 10
    min_delta: float = 0.0
    monitor: str = "val_loss"
    flips: bool = True
    rotations: bool = False
    stain_jitter: float = 0.0
    lr_schedule: str = "constant"
    scale_jitter: float = 0.0
    blur: float = 0.0
    ema: float = 0.0
    resume: bool = False
    progress: bool = True
    cache_mb: int = 1024
    val_tile: int = DEFAULT_TILE

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "crop", "crops_per_image", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive; got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if not 0.0 <= self.stain_jitter < 1.0:
            raise ValueError(f"stain_jitter must be in [0, 1); got {self.stain_jitter}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if not 0.0 <= self.scale_jitter < 1.0:
            raise ValueError(f"scale_jitter must be in [0, 1) (0: off, e.g. 0.25); got {self.scale_jitter}")
        if not 0.0 <= self.blur <= MAX_BLUR_SIGMA:
            raise ValueError(f"blur must be a sigma in px from 0 (off) to {MAX_BLUR_SIGMA}, e.g. 1.5; got {self.blur}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be a decay in [0, 1) (0: off, e.g. 0.995); got {self.ema}")
        if self.monitor not in ("val_loss", "val_dice"):
            raise ValueError(f"monitor must be 'val_loss' or 'val_dice'; got {self.monitor!r}")
