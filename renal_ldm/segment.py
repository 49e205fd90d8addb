"""Tissue segmenters: a valid-padding UNet (as the reference study's segmentation model), its training and inference.

Geometry. Every convolution is unpadded ("valid"), so the network's output is smaller than its input by a fixed
margin, and its skip connections only line up for input sizes that stay even through every pooling step. Both
follow from the config alone (`SegmenterConfig.output_size`, `input_size_for`, `padding_per_side`); the
reference's model (depth 4, two 3x3 convolutions per level: the original UNet) loses 92 px per side and takes
input sizes 16k + 12 (572 -> 388, 428 -> 244).

Whole-image inference mirrors the image by `padding_per_side` on every side (numpy's "symmetric" mode), then on
the bottom/right up to the next size the network takes, and crops the output back to the image: every pixel is
segmented (the reference, padding 86 px, left a 6 px border unsegmented). Large images go through in output
tiles of about `tile` px whose starts are multiples of 2**depth (the pooling grid), so a tiled result is the
untiled one and memory is bounded by the tile.

Resolution. A config with `downsample` f > 1 runs the network at 1/f of the image's resolution: the image is
shrunk by area averaging (the mean of each f x f block, mirrored at the bottom/right up to a multiple of f), the
network segments that whole (as above, in network pixels), and its logits are upsampled bilinearly (half-pixel
centres, as F.interpolate with align_corners=False) back to the image's size before the threshold or argmax, in
windows with a one-pixel margin so the windowed result is the one-pass one. Validation measures Dice this way, at
full resolution against the full-resolution masks; training crops come from images and masks shrunk once (masks
by the most frequent label of each block).

Classes. "all": eight outputs (label ids 0..7 of renal_ldm.classes), softmax, cross-entropy + soft Dice.
"glomeruli": one logit for Glomeruli (label 4) against everything else, binary cross-entropy + Dice; its
masks hold 4 = Glomeruli and 6 = other kidney tissue, so `renal-ldm caption --mask` reads them directly.

A segmenter directory holds `segmenter.json` (kind "segmenter", classes, config, metrics, data fingerprint,
package version, weights sha256) and `segmenter.safetensors`; a training run adds `metrics.jsonl` (one line per
epoch) and `train_state.pt` (model, optimizer, RNG and early-stopping state, for `resume`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import ConcatDataset, Dataset, Subset

from renal_ldm import __version__
from renal_ldm.classes import GLOMERULI_ID, NUM_CLASSES, OTHER_TISSUE_ID, by_id
from renal_ldm.fsutil import read_kind_json, write_file_atomically
from renal_ldm.segmentation.config import (
    CLASS_MODES,
    DEFAULT_TILE,
    SEGMENTER_CONFIGS,
    SegmenterConfig,
    SegmenterTrainSettings,
    named_config,
)
from renal_ldm.segmentation.ensemble import SegmenterEnsemble, is_ensemble, load_ensemble

__all__ = [
    "CLASS_MODES",
    "DEFAULT_TILE",
    "SEGMENTER_CONFIGS",
    "EpochMetrics",
    "Segmenter",
    "SegmenterConfig",
    "SegmenterEnsemble",
    "SegmenterTrainResult",
    "SegmenterTrainSettings",
    "ValidUNet",
    "dice_score",
    "labels_from_scores",
    "load_segmenter",
    "named_config",
    "segmenter_dice",
    "train_segmenter",
]

SEGMENTER_MANIFEST = "segmenter.json"
SEGMENTER_WEIGHTS = "segmenter.safetensors"
METRICS_FILE = "metrics.jsonl"
TRAIN_STATE = "train_state.pt"
KIND_SEGMENTER = "segmenter"


# -------------------------------------------------------------------------------------------------- network


GROUPS = 8  # GroupNorm groups (fewer where a layer has fewer channels)


def _block(cin: int, cout: int, config: SegmenterConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(config.convs):
        normed = config.batch_norm or config.group_norm
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, config.kernel, bias=not normed))
        if config.batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        elif config.group_norm:
            layers.append(nn.GroupNorm(min(GROUPS, cout), cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    dy, dx = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., dy : dy + height, dx : dx + width]


class ValidUNet(nn.Module):
    """The UNet of the original paper, sized by SegmenterConfig; input (N, 3, H, W) in [-1, 1], logits out."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        ch = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList([_block(3 if i == 0 else ch[i - 1], ch[i], config) for i in range(config.depth)])
        self.bottom = _block(ch[-2], ch[-1], config)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(config.depth)])
        self.dec = nn.ModuleList([_block(2 * ch[i], ch[i], config) for i in range(config.depth)])
        self.head = nn.Conv2d(ch[0], config.num_outputs, 1)

    def _check(self, x: torch.Tensor) -> None:
        for side in x.shape[-2:]:
            self.config.output_size(int(side))  # the clear error for a size the skips cannot take

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return self.bottom(x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encode(x)
        for i in reversed(range(self.config.depth)):
            x = self.up[i](x)
            x = self.dec[i](torch.cat([_center_crop(skips[i], x.shape[-2], x.shape[-1]), x], dim=1))
        return self.head(x)


# ---------------------------------------------------------------------------------------- mirror padding


def mirror_index(start: int, stop: int, n: int) -> np.ndarray:
    """Source indices of positions start..stop-1 of an axis of length n mirrored without end (np.pad "symmetric")."""
    idx = np.arange(start, stop) % (2 * n)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)


def mirror_window(array: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """array[top:top+height, left:left+width] of the endlessly mirrored array (coordinates may be negative)."""
    rows = mirror_index(top, top + height, array.shape[0])
    cols = mirror_index(left, left + width, array.shape[1])
    return array[rows[:, None], cols[None, :]]


# ------------------------------------------------------------------------------------------------ resolution


def _block_view(array: np.ndarray, factor: int) -> np.ndarray:
    """(h, f, w, f, ...) blocks of `array` mirrored at the bottom/right up to a multiple of f."""
    height, width = array.shape[:2]
    h, w = -(-height // factor), -(-width // factor)
    padded = mirror_window(array, 0, 0, h * factor, w * factor)
    return padded.reshape(h, factor, w, factor, *array.shape[2:])


def downsample_image(image: np.ndarray, factor: int) -> np.ndarray:
    """HxWx3 uint8 -> ceil(H/f) x ceil(W/f) x 3 uint8, the rounded mean of every f x f block (area averaging)."""
    if factor == 1:
        return image
    blocks = _block_view(image, factor).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """HxW label mask -> ceil(H/f) x ceil(W/f): the most frequent label of every f x f block (ties: the lowest)."""
    if factor == 1:
        return mask
    blocks = _block_view(mask, factor)
    labels = np.unique(mask)
    counts = np.stack([(blocks == label).sum(axis=(1, 3)) for label in labels])
    return labels[counts.argmax(axis=0)].astype(mask.dtype)


def upsample_window(low: torch.Tensor, factor: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """Rows y0:y1, columns x0:x1 of F.interpolate(low, scale_factor=factor, mode="bilinear"), low (C, h, w).

    Only the low-resolution pixels the window needs (plus one on each side) are interpolated; the margin keeps
    the edge clamping of a slice away from the window, so windows agree exactly with the whole upsampled map.
    """
    h, w = low.shape[-2:]
    top, bottom = max(y0 // factor - 1, 0), min((y1 - 1) // factor + 2, h)
    left, right = max(x0 // factor - 1, 0), min((x1 - 1) // factor + 2, w)
    part = F.interpolate(low[None, :, top:bottom, left:right], scale_factor=factor, mode="bilinear")[0]
    return part[:, y0 - top * factor : y1 - top * factor, x0 - left * factor : x1 - left * factor]


# ------------------------------------------------------------------------------------------------ losses


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, classes: str) -> torch.Tensor:
    """Cross-entropy + soft Dice ("all"), binary cross-entropy + Dice of Glomeruli ("glomeruli").

    logits (N, C, h, w); target (N, h, w) int64 label ids 0..7.
    """
    eps = 1.0
    if classes == "glomeruli":
        logit = logits[:, 0]
        positive = (target == GLOMERULI_ID).float()
        bce = F.binary_cross_entropy_with_logits(logit, positive)
        prob = torch.sigmoid(logit)
        dice = (2 * (prob * positive).sum() + eps) / (prob.sum() + positive.sum() + eps)
        return bce + (1 - dice)
    ce = F.cross_entropy(logits, target)
    prob = logits.softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    dice = (2 * (prob * onehot).sum(dims) + eps) / (prob.sum(dims) + onehot.sum(dims) + eps)
    return ce + (1 - dice.mean())


def _labels_from_logits(logits: torch.Tensor, classes: str) -> torch.Tensor:
    if classes == "glomeruli":
        positive = logits[:, 0] > 0
        return torch.where(positive, GLOMERULI_ID, OTHER_TISSUE_ID).to(torch.uint8)
    return logits.argmax(dim=1).to(torch.uint8)


def labels_from_scores(scores: np.ndarray, classes: str) -> np.ndarray:
    """(C, H, W) probabilities (`predict_scores`) -> HxW uint8 labels, the rule `predict` applies to logits."""
    if classes == "glomeruli":
        return np.where(scores[0] > 0.5, GLOMERULI_ID, OTHER_TISSUE_ID).astype(np.uint8)
    return scores.argmax(axis=0).astype(np.uint8)


class DiceCounter:
    """Pixel counts over a whole set (not a mean of per-image scores): Dice per class = 2TP / (2TP + FP + FN)."""

    def __init__(self, classes: str) -> None:
        self.classes = classes
        self.tp = np.zeros(NUM_CLASSES, np.int64)
        self.pred = np.zeros(NUM_CLASSES, np.int64)
        self.true = np.zeros(NUM_CLASSES, np.int64)

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        predicted, truth = np.asarray(predicted).ravel(), np.asarray(truth).ravel().astype(np.int64)
        if self.classes == "glomeruli":  # everything that is not Glomeruli is the other class
            truth = np.where(truth == GLOMERULI_ID, GLOMERULI_ID, OTHER_TISSUE_ID)
        self.pred += np.bincount(predicted, minlength=NUM_CLASSES)[:NUM_CLASSES]
        self.true += np.bincount(truth, minlength=NUM_CLASSES)[:NUM_CLASSES]
        self.tp += np.bincount(truth[predicted == truth], minlength=NUM_CLASSES)[:NUM_CLASSES]

    def per_class(self) -> dict[str, float]:
        """Dice of every class with ground-truth pixels, by class name ("glomeruli": Glomeruli only)."""
        ids = [GLOMERULI_ID] if self.classes == "glomeruli" else [i for i in range(NUM_CLASSES) if self.true[i] > 0]
        out = {}
        for i in ids:
            denominator = self.pred[i] + self.true[i]
            out[by_id(i).name] = float(2 * self.tp[i] / denominator) if denominator else 1.0
        return out

    def dice(self) -> float:
        """Glomeruli's Dice ("glomeruli"), or the mean Dice over the classes present ("all")."""
        scores = self.per_class()
        return float(np.mean(list(scores.values()))) if scores else float("nan")


def dice_score(predicted: np.ndarray, truth: np.ndarray, classes: str = "all") -> float:
    """Dice of one (or a list of) predicted label mask(s) against the truth, as validation measures it."""
    counter = DiceCounter(classes)
    if isinstance(predicted, (list, tuple)):
        for p, t in zip(predicted, truth, strict=True):
            counter.add(p, t)
    else:
        counter.add(predicted, truth)
    return counter.dice()


# ---------------------------------------------------------------------------------------------- segmenter


class Segmenter:
    """A trained segmenter: `predict` label masks, `features` for Frechet distances."""

    def __init__(
        self,
        config: SegmenterConfig,
        net: ValidUNet | None = None,
        *,
        manifest: dict | None = None,
        path: Path | None = None,
    ) -> None:
        self.config = config
        self.net = (net or ValidUNet(config)).eval()
        self.manifest = manifest or {}
        self.path = path

    @classmethod
    def from_dir(cls, path: str | Path, *, device: str | torch.device = "cpu") -> Segmenter:
        path = Path(path)
        manifest = read_segmenter_manifest(path)
        config = SegmenterConfig.from_dict(manifest["config"])
        weights = path / SEGMENTER_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"segmenter {path} is incomplete: {SEGMENTER_WEIGHTS} is missing")
        net = ValidUNet(config)
        _load_state(net, weights)
        return cls(config, net, manifest=manifest, path=path).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def to(self, device: str | torch.device) -> Segmenter:
        self.net.to(device)
        return self

    def _tensor(self, window: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(window)).to(self.device)
        return x.permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)

    @torch.no_grad()
    def predict(self, image: np.ndarray, *, tile: int = DEFAULT_TILE) -> np.ndarray:
        """HxWx3 uint8 -> HxW uint8 label mask (product class ids), any size; tiles of about `tile` px."""
        image = _check_image(image)
        return self._predict(image, tile, lambda logits: _labels_from_logits(logits, self.config.classes))

    @torch.no_grad()
    def predict_scores(self, image: np.ndarray, *, tile: int = DEFAULT_TILE) -> np.ndarray:
        """Probabilities: (8, H, W) softmax ("all") or (1, H, W) Glomeruli sigmoid ("glomeruli"), float32."""
        image = _check_image(image)

        def scores(logits: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(logits[0]) if self.config.classes == "glomeruli" else logits[0].softmax(0)

        return self._predict(image, tile, scores, channels=self.config.num_outputs)

    def _predict(self, image: np.ndarray, tile: int, convert: Callable, channels: int | None = None) -> np.ndarray:
        height, width = image.shape[:2]
        shape = (height, width) if channels is None else (channels, height, width)
        out = np.zeros(shape, np.uint8 if channels is None else np.float32)
        was_training = self.net.training
        self.net.eval()
        try:
            for y0, x0, logits in self.logit_blocks(image, tile):
                result = convert(logits[None])
                result = result[0] if channels is None else result
                out[..., y0 : y0 + logits.shape[-2], x0 : x0 + logits.shape[-1]] = result.cpu().numpy()
        finally:
            self.net.train(was_training)
        return out

    def logit_blocks(self, image: np.ndarray, tile: int = DEFAULT_TILE):
        """(top, left, logits (C, h, w)) blocks that cover the image at its own resolution, each inside it.

        The network's tiles of about `tile` network px; with `downsample` f > 1, the logits of the shrunk image
        upsampled in windows of about f * tile image px (see the module doc). Call in eval mode, without grad.
        """
        factor = self.config.downsample
        if factor == 1:
            yield from self._network_blocks(image, tile)
            return
        small = downsample_image(image, factor)
        low = torch.zeros((self.config.num_outputs, *small.shape[:2]), device=self.device)
        for y0, x0, logits in self._network_blocks(small, tile):
            low[:, y0 : y0 + logits.shape[-2], x0 : x0 + logits.shape[-1]] = logits
        height, width = image.shape[:2]
        step = factor * max(int(tile), 1)
        for y0 in range(0, height, step):
            for x0 in range(0, width, step):
                y1, x1 = min(y0 + step, height), min(x0 + step, width)
                yield y0, x0, upsample_window(low, factor, y0, y1, x0, x1)

    def _network_blocks(self, image: np.ndarray, tile: int):
        """The network's output tiles over `image` (at the network's resolution), cropped to it."""
        height, width = image.shape[:2]
        pad = self.config.padding_per_side
        for (y0, th), (x0, tw) in _tile_grid(self.config, height, width, tile):
            window = mirror_window(image, y0 - pad, x0 - pad, th + 2 * pad, tw + 2 * pad)
            logits = self.net(self._tensor(window))[0]
            yield y0, x0, logits[:, : min(th, height - y0), : min(tw, width - x0)]

    @torch.no_grad()
    def features(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> np.ndarray:
        """(N, feature_dim) float32: the deepest encoder features, globally average-pooled, of same-size images.

        Each image is shrunk (`downsample`) and mirror-padded as for `predict`, so the features see the whole image.
        """
        images = [downsample_image(_check_image(im), self.config.downsample) for im in images]
        if not images:
            return np.zeros((0, self.feature_dim), np.float32)
        sizes = {im.shape for im in images}
        if len(sizes) > 1:
            raise ValueError(f"features() needs images of one size; got {sorted(s[:2] for s in sizes)}")
        height, width = images[0].shape[:2]
        pad = self.config.padding_per_side
        ih, iw = self.config.input_size_for(height), self.config.input_size_for(width)
        was_training = self.net.training
        self.net.eval()
        out = []
        try:
            for start in range(0, len(images), batch_size):
                batch = torch.cat(
                    [self._tensor(mirror_window(im, -pad, -pad, ih, iw)) for im in images[start : start + batch_size]]
                )
                deep, _ = self.net.encode(batch)
                out.append(deep.mean(dim=(2, 3)).float().cpu().numpy())
        finally:
            self.net.train(was_training)
        return np.concatenate(out).astype(np.float32)


def load_segmenter(path: str | Path, *, device: str | torch.device = "cpu") -> Segmenter | SegmenterEnsemble:
    """A segmenter directory written by `train-segmenter`, or an ensemble of them (`ensemble-segmenters`);
    FileNotFoundError / ValueError say what is wrong."""
    if is_ensemble(path):
        return load_ensemble(path, device=device)
    return Segmenter.from_dir(path, device=device)


def is_segmenter(path: str | Path) -> bool:
    """A folder `load_segmenter` opens: one trained segmenter, or an ensemble of them."""
    return (Path(path) / SEGMENTER_MANIFEST).is_file() or is_ensemble(path)


def segmenter_dice(segmenter: Segmenter | SegmenterEnsemble, dataset: Dataset, *, tile: int = DEFAULT_TILE):
    """(pooled Dice, Dice per patch) of whole-patch predictions, as `renal-ldm segment` makes them, against a
    masked data set at full resolution (PatchDataset(..., return_mask=True))."""
    pooled, per_patch = DiceCounter(segmenter.config.classes), []
    examples = _Examples(dataset, cache_mb=0)
    for i in range(len(examples)):
        image, mask = examples[i]
        predicted = segmenter.predict(image, tile=tile)
        pooled.add(predicted, mask)
        per_patch.append(dice_score(predicted, mask, segmenter.config.classes))
    return pooled.dice(), per_patch


def read_segmenter_manifest(path: str | Path) -> dict[str, Any]:
    """segmenter.json of a segmenter directory, with a clear error for a missing, foreign or LDM folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"segmenter directory not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(
            f"segmenter path is not a directory: {path}; expected a folder with {SEGMENTER_MANIFEST}"
        )
    manifest_file = path / SEGMENTER_MANIFEST
    if not manifest_file.is_file():
        from renal_ldm.models.manifest import MANIFEST, is_checkpoint

        if is_checkpoint(path):
            try:
                kind = json.loads((path / MANIFEST).read_text()).get("kind", "?")
            except (OSError, ValueError, AttributeError):
                kind = "?"
            raise ValueError(
                f"{path} is a renal-ldm model checkpoint (kind {kind!r}, {MANIFEST}), not a segmenter; expected a "
                f"folder with {SEGMENTER_MANIFEST} from `renal-ldm train-segmenter` (e.g. models/segmenter-phantom)"
            )
        raise FileNotFoundError(
            f"{path} is not a segmenter: {SEGMENTER_MANIFEST} is missing (train one with `renal-ldm train-segmenter`, "
            "or use models/segmenter-phantom or models/segmenter-glomeruli-pas)"
        )
    manifest = read_kind_json(manifest_file, KIND_SEGMENTER)
    if not isinstance(manifest.get("config"), dict):
        raise ValueError(f"{manifest_file} lacks the segmenter config")
    return manifest


def _load_state(net: nn.Module, weights: Path) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for a truncated file
        raise ValueError(f"{weights}: cannot read weights ({exc})") from None
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{weights} does not match its segmenter.json config: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} of another shape (e.g. "
            f"{', '.join((missing + unexpected + mismatched)[:3])})"
        )
    net.load_state_dict(state, strict=True)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB image as an (H, W, 3) uint8 array; got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return image


def _axis_tiles(config: SegmenterConfig, n: int, tile: int) -> list[tuple[int, int]]:
    """(start, output size) of the tiles along one axis: starts on the pooling grid, the last one covering n."""
    whole = config.valid_output_size(n)
    size = config.valid_output_size(max(int(tile), config.size_step + 1))
    if whole <= size:
        return [(0, whole)]
    stride = (size // config.size_step) * config.size_step
    starts = list(range(0, n - size, stride)) + [math.ceil((n - size) / stride) * stride]
    return [(s, size) for s in sorted(set(starts))]


def _tile_grid(config: SegmenterConfig, height: int, width: int, tile: int):
    for y in _axis_tiles(config, height, tile):
        for x in _axis_tiles(config, width, tile):
            yield y, x


# ----------------------------------------------------------------------------------------------- training


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float
    val_dice: float
    class_dice: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SegmenterTrainResult:
    out_dir: Path
    history: list[EpochMetrics]
    best_epoch: int
    best_val_dice: float
    stopped_early: bool = False


class _Examples:
    """Training items as uint8 (image HxWx3, mask HxW), shrunk by `downsample`, decoded once while they fit in
    `cache_mb`."""

    def __init__(self, dataset: Dataset, cache_mb: int, downsample: int = 1) -> None:
        self.dataset, self.budget, self.downsample = dataset, cache_mb * 2**20, downsample
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.used = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self.cache:
            return self.cache[index]
        item = self.dataset[index]
        if not isinstance(item, dict) or "image" not in item or "mask" not in item:
            raise ValueError(
                "segmenter training items must hold 'image' and 'mask' (open the data set with "
                "PatchDataset(..., return_mask=True))"
            )
        image = torch.as_tensor(item["image"]).float()
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"training images must be (3, H, W) tensors in [-1, 1]; got {tuple(image.shape)}")
        rgb = ((image.permute(1, 2, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        mask = torch.as_tensor(item["mask"]).numpy().astype(np.uint8)
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {rgb.shape[:2]} of item {index} differ in size")
        rgb, mask = downsample_image(rgb, self.downsample), downsample_mask(mask, self.downsample)
        size = rgb.nbytes + mask.nbytes
        if self.used + size <= self.budget:
            self.cache[index] = (rgb, mask)
            self.used += size
        return rgb, mask


def _random_crop(
    image,
    mask,
    config: SegmenterConfig,
    out_size: int,
    gen: torch.Generator,
    flips: bool,
    rotations: bool = False,
    scale_jitter: float = 0.0,
):
    """A random output-size crop of the mask and its mirror-padded window of the image, rescaled, flipped and
    rotated alike."""
    pad = config.padding_per_side
    height, width = mask.shape
    top = int(torch.randint(0, max(height - out_size, 0) + 1, (1,), generator=gen))
    left = int(torch.randint(0, max(width - out_size, 0) + 1, (1,), generator=gen))
    if scale_jitter > 0:
        bound = math.log1p(scale_jitter)
        scale = math.exp((float(torch.rand(1, generator=gen)) * 2 - 1) * bound)
        window, target = _scaled_windows(image, mask, top, left, out_size, pad, scale)
    else:  # mirror beyond the patch, as whole-image inference does
        window = mirror_window(image, top - pad, left - pad, out_size + 2 * pad, out_size + 2 * pad)
        target = mirror_window(mask, top, left, out_size, out_size)
    if flips:
        horizontal, vertical = (torch.rand(2, generator=gen) < 0.5).tolist()
        if horizontal:
            window, target = window[:, ::-1], target[:, ::-1]
        if vertical:
            window, target = window[::-1], target[::-1]
    if rotations:  # square crops, so a quarter turn keeps the target at the centre of the window
        turns = int(torch.randint(0, 4, (1,), generator=gen))
        window, target = np.rot90(window, turns), np.rot90(target, turns)
    return np.ascontiguousarray(window), np.ascontiguousarray(target)


def _scaled_windows(image, mask, top: int, left: int, out_size: int, pad: int, scale: float):
    """The crop at (top, left) magnified by `scale` about its centre: the image window (out_size + 2 pad) by
    bilinear and the mask (out_size) by nearest resampling from the same mirror-padded source, so they stay
    aligned; scale > 1 shows tissue larger than it is."""
    from PIL import Image

    in_size = out_size + 2 * pad
    cy, cx = top + out_size / 2, left + out_size / 2
    half_in, half_out = in_size / (2 * scale), out_size / (2 * scale)
    y0, x0 = math.floor(cy - half_in) - 1, math.floor(cx - half_in) - 1
    side = math.ceil(2 * half_in) + 3
    source = mirror_window(image, y0, x0, side, side)
    labels = mirror_window(mask, y0, x0, side, side)

    def box(half: float) -> tuple[float, float, float, float]:
        return (cx - half - x0, cy - half - y0, cx + half - x0, cy + half - y0)

    window = Image.fromarray(np.ascontiguousarray(source)).resize((in_size, in_size), Image.BILINEAR, box=box(half_in))
    target = Image.fromarray(np.ascontiguousarray(labels)).resize(
        (out_size, out_size), Image.NEAREST, box=box(half_out)
    )
    return np.asarray(window), np.asarray(target)


def stain_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """A batch (N, 3, H, W) in [-1, 1] with each image's contrast and per-channel intensity scaled by 1 + U(-s, s)
    and its brightness shifted by U(-s, s) / 2 of the range, clipped to [-1, 1] (mild stain and scanner change)."""
    if strength <= 0:
        return x
    n = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1) * strength

    contrast, channel, brightness = 1 + uniform(n, 1, 1, 1), 1 + uniform(n, 3, 1, 1), uniform(n, 1, 1, 1)
    unit = (x + 1) / 2
    mean = unit.mean(dim=(1, 2, 3), keepdim=True)
    unit = (unit - mean) * contrast + mean
    return ((unit * channel + brightness / 2).clamp(0, 1) * 2 - 1).contiguous()


def blur_jitter(x: torch.Tensor, max_sigma: float, gen: torch.Generator) -> torch.Tensor:
    """A batch (N, 3, H, W) with each image, with probability 1/2, blurred by a Gaussian of sigma U(0, max_sigma)
    px (separable, edges mirrored); the others unchanged. Off at 0."""
    if max_sigma <= 0:
        return x
    blurred = torch.rand(x.shape[0], generator=gen) < 0.5
    sigmas = torch.rand(x.shape[0], generator=gen) * max_sigma
    out = x.clone()
    for i in torch.nonzero(blurred).flatten().tolist():
        sigma = float(sigmas[i])
        radius = math.ceil(3 * sigma)
        if radius < 1:
            continue
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
        kernel = torch.exp(-(taps**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).to(x.device)
        image = F.pad(x[i : i + 1], (radius, radius, radius, radius), mode="reflect")
        image = F.conv2d(image, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        out[i] = F.conv2d(image, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
    return out


def learning_rate(settings: SegmenterTrainSettings, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total_steps`: constant, or a cosine from lr to 0."""
    if settings.lr_schedule == "cosine":
        return settings.lr * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    return settings.lr


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _evaluate(segmenter: Segmenter, val: _Examples, tile: int) -> tuple[float, DiceCounter]:
    """Validation loss (mean over patches) and Dice counts, each patch segmented whole as `predict` does it (mirror
    padding; with `downsample`, shrunk and its logits upsampled) against its full-resolution mask."""
    config = segmenter.config
    counter = DiceCounter(config.classes)
    losses = []
    segmenter.net.eval()
    with torch.no_grad():
        for i in range(len(val)):
            image, mask = val[i]
            logits_full = torch.zeros((config.num_outputs, *mask.shape))
            for y0, x0, logits in segmenter.logit_blocks(image, tile):
                logits_full[:, y0 : y0 + logits.shape[-2], x0 : x0 + logits.shape[-1]] = logits.cpu()
            target = torch.from_numpy(mask.astype(np.int64))
            losses.append(float(segmentation_loss(logits_full[None], target[None], config.classes)))
            counter.add(_labels_from_logits(logits_full[None], config.classes)[0].numpy(), mask)
    return float(np.mean(losses)), counter


def dataset_fingerprint(dataset: Dataset) -> str | None:
    """data_fingerprint of PatchDatasets, Subsets and ConcatDatasets of them; None for other data sets."""
    from renal_ldm.data.patches import PatchDataset, data_fingerprint

    if isinstance(dataset, ConcatDataset):
        parts = [dataset_fingerprint(d) for d in dataset.datasets]
        if any(p is None for p in parts):
            return None
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    if isinstance(base, PatchDataset):
        try:
            return data_fingerprint(dataset)  # type: ignore[arg-type]
        except (TypeError, AttributeError):  # a Subset of a ConcatDataset and the like
            return None
    return None


def _write_segmenter(out_dir: Path, net: ValidUNet, manifest: dict[str, Any]) -> None:
    """Weights, then the manifest that names their sha256, each replaced atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    tmp = out_dir / f".{SEGMENTER_WEIGHTS}.{os.getpid()}.tmp"
    try:
        save_file(state, str(tmp))
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, out_dir / SEGMENTER_WEIGHTS)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_file_atomically(
        out_dir / SEGMENTER_MANIFEST, json.dumps({**manifest, "weights_sha256": digest}, indent=2) + "\n"
    )


def _save_state(out_dir: Path, state: dict[str, Any]) -> None:
    tmp = out_dir / f".{TRAIN_STATE}.{os.getpid()}.tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, out_dir / TRAIN_STATE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def train_segmenter(
    train_set: Dataset,
    val_set: Dataset,
    out_dir: str | Path,
    *,
    config: SegmenterConfig | str = "small",
    settings: SegmenterTrainSettings | None = None,
    log: Callable[[str], None] = print,
) -> SegmenterTrainResult:
    """Train a segmenter on items with 'image' and 'mask' (PatchDataset(..., return_mask=True)); see the module doc.

    Writes out_dir/segmenter.{json,safetensors} (the best epoch's weights), metrics.jsonl and train_state.pt after
    every epoch; `settings.resume` continues from train_state.pt (same config required).
    """
    from tqdm.auto import tqdm

    settings = settings or SegmenterTrainSettings()
    if isinstance(config, str):
        config = named_config(config, "all")
    out_dir = Path(out_dir)
    if len(train_set) == 0:  # type: ignore[arg-type]
        raise ValueError("the segmenter training set is empty; expected patches with masks")
    if val_set is None or len(val_set) == 0:  # type: ignore[arg-type]
        raise ValueError("the segmenter validation set is empty; expected at least one patch with a mask")
    state_file = out_dir / TRAIN_STATE
    if settings.resume:
        if not state_file.is_file():
            raise FileNotFoundError(f"nothing to resume in {out_dir}: {TRAIN_STATE} is missing")
    elif out_dir.exists() and any(out_dir.iterdir()):
        if not is_segmenter(out_dir) and not state_file.is_file():
            raise FileExistsError(f"{out_dir} exists and is not a segmenter run; expected a new or empty folder")
        raise FileExistsError(f"{out_dir} already holds a segmenter run; pass resume (--resume) or another folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    crop = config.valid_output_size(settings.crop)
    # training crops at the network's resolution; validation at the images' own, as `predict` sees them
    train = _Examples(train_set, settings.cache_mb, config.downsample)
    val = _Examples(val_set, settings.cache_mb)
    torch.manual_seed(settings.seed)
    net = ValidUNet(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    ema = (
        AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(settings.ema), use_buffers=True) if settings.ema else None
    )
    gen = torch.Generator().manual_seed(settings.seed)
    history: list[EpochMetrics] = []
    best: dict[str, Any] = {"epoch": 0, "score": math.inf, "since": 0}
    if settings.resume:
        saved = torch.load(state_file, map_location="cpu", weights_only=False)
        if SegmenterConfig.from_dict(saved["config"]) != config:
            raise ValueError(
                f"{out_dir} was trained with config {saved['config']}; resume it with the same config, not "
                f"{config.to_dict()}"
            )
        net.load_state_dict(saved["model"])
        saved_ema = saved.get("settings_ema", 0.0)
        if saved_ema != settings.ema:
            raise ValueError(f"{out_dir} was trained with --ema {saved_ema}; resume with the same, not {settings.ema}")
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        history = [EpochMetrics(**h) for h in saved["history"]]
        best = saved["best"]
        log(f"train-segmenter: resuming {out_dir} after epoch {len(history)}")
    judged = net if ema is None else ema.module  # what validation scores and the checkpoint holds
    segmenter = Segmenter(config, judged)
    fingerprint = dataset_fingerprint(train_set)

    def score(m: EpochMetrics) -> float:
        return m.val_loss if settings.monitor == "val_loss" else -m.val_dice

    stopped_early = best["since"] >= settings.patience
    start = len(history) + 1
    steps_per_epoch = len(_batches(len(train) * settings.crops_per_image, settings.batch_size))
    total_steps = steps_per_epoch * settings.epochs
    if settings.resume and (stopped_early or start > settings.epochs):
        why = "it stopped early" if stopped_early else f"it has run {len(history)} of {settings.epochs} epochs"
        log(f"train-segmenter: nothing left to train in {out_dir} ({why}); ask for more epochs to continue")
    bar = tqdm(
        total=settings.epochs,
        initial=min(start - 1, settings.epochs),
        desc="train-segmenter",
        unit="epoch",
        disable=not settings.progress,
    )
    try:
        for epoch in range(start, settings.epochs + 1):
            if stopped_early:
                break
            net.train()
            order = torch.randperm(len(train), generator=gen).repeat(settings.crops_per_image).tolist()
            losses = []
            for step, (lo, hi) in enumerate(_batches(len(order), settings.batch_size)):
                crops = [
                    _random_crop(
                        *train[i], config, crop, gen, settings.flips, settings.rotations, settings.scale_jitter
                    )
                    for i in order[lo:hi]
                ]
                x = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)
                x = stain_jitter(x, settings.stain_jitter, gen)
                x = blur_jitter(x, settings.blur, gen)
                y = torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.int64))
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(settings, (epoch - 1) * steps_per_epoch + step, total_steps)
                loss = segmentation_loss(net(x), y, config.classes)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"the training loss became {float(loss)} in epoch {epoch}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(net)
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            val_loss, counter = _evaluate(segmenter, val, settings.val_tile)
            metrics = EpochMetrics(epoch, float(np.mean(losses)), val_loss, counter.dice(), counter.per_class())
            history.append(metrics)
            improved = score(metrics) < best["score"] - settings.min_delta
            if improved:
                best = {"epoch": epoch, "score": score(metrics), "since": 0}
                manifest = _manifest(config, settings, metrics, fingerprint, crop, len(train_set), len(val_set))
                _write_segmenter(out_dir, judged, manifest)
            else:
                best["since"] += 1
            stopped_early = best["since"] >= settings.patience
            write_file_atomically(out_dir / METRICS_FILE, "".join(json.dumps(h.to_dict()) + "\n" for h in history))
            _save_state(
                out_dir,
                {
                    "config": config.to_dict(),
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "ema": None if ema is None else ema.state_dict(),
                    "settings_ema": settings.ema,
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": [h.to_dict() for h in history],
                    "best": best,
                },
            )
            bar.update(1)
            bar.set_postfix(val_loss=f"{val_loss:.3f}", val_dice=f"{metrics.val_dice:.3f}")
            log(
                f"epoch {epoch}: train_loss {metrics.train_loss:.4f}  val_loss {val_loss:.4f}  "
                f"val_dice {metrics.val_dice:.4f}" + ("  (best)" if improved else "")
            )
            if stopped_early:
                log(f"early stop: no better validation {settings.monitor} for {settings.patience} epochs")
    finally:
        bar.close()
    best_epoch = best["epoch"]
    return SegmenterTrainResult(
        out_dir=out_dir,
        history=history,
        best_epoch=best_epoch,
        best_val_dice=max(h.val_dice for h in history),
        stopped_early=stopped_early,
    )


def _manifest(config, settings, metrics: EpochMetrics, fingerprint, crop: int, n_train: int, n_val: int) -> dict:
    return {
        "kind": KIND_SEGMENTER,
        "renal_ldm_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "classes": config.classes,
        "config": config.to_dict(),
        "padding_per_side": config.padding_per_side,
        "metrics": metrics.to_dict(),
        "data_fingerprint": fingerprint,
        "training": {
            **dataclasses.asdict(settings),
            "crop_output": crop,
            "train_patches": n_train,
            "val_patches": n_val,
        },
    }
