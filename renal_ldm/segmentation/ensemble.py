"""Several trained segmenters, each run at several magnifications, used as one segmenter.

With a dozen training tiles one network's validation Dice swings by 0.05-0.1 from epoch to epoch, and two
recipes fail on different tiles (models/segmenter-glomeruli-pas/README.md). Averaging the probabilities of
independently trained networks, and of each network run on the image magnified and shrunk (test-time
augmentation over scale), is how nnU-Net and most challenge entries steady such models; it needs no new
training. An ensemble folder holds `segmenter_ensemble.json` and a `members/` folder of ordinary segmenter
folders (`renal-ldm train-segmenter` output); `renal_ldm.segment.load_segmenter` opens either kind, and an
ensemble answers `predict`, `predict_scores` and `features` as a single segmenter does. Unlike a single
segmenter's tiled `predict`, it holds float32 probability planes the size of the image (one for glomeruli, eight
for all classes), so segment whole slides region by region.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from renal_ldm.fsutil import read_kind_json, write_file_atomically
from renal_ldm.segmentation.config import DEFAULT_TILE

ENSEMBLE_MANIFEST = "segmenter_ensemble.json"
KIND_ENSEMBLE = "segmenter-ensemble"
MEMBERS_DIR = "members"


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """The magnifications as a tuple; a ValueError names a bad one."""
    out = tuple(float(s) for s in scales)
    if not out:
        raise ValueError("an ensemble needs at least one scale (1.0 is the image as it is)")
    for s in out:
        if not math.isfinite(s) or not 0.25 <= s <= 4.0:
            raise ValueError(f"scale {s} is outside 0.25..4 (a magnification of the image before segmenting)")
    return out


class SegmenterEnsemble:
    """Mean probability over members x scales; labels from the mean as a single segmenter takes them."""

    def __init__(self, members: Sequence, scales: Sequence[float], *, manifest: dict | None = None, path=None):
        if not members:
            raise ValueError("an ensemble needs at least one member segmenter")
        kinds = {m.config.classes for m in members}
        if len(kinds) > 1:
            raise ValueError(f"ensemble members segment different classes ({', '.join(sorted(kinds))}); expected one")
        self.members = list(members)
        self.scales = check_scales(scales)
        self.manifest = manifest or {}
        self.path = path

    @property
    def config(self):
        """The first member's config: classes, label scheme and feature width are shared by every member."""
        return self.members[0].config

    @property
    def feature_dim(self) -> int:
        return self.members[0].feature_dim

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def to(self, device) -> SegmenterEnsemble:
        for member in self.members:
            member.to(device)
        return self

    def features(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> np.ndarray:
        """The first member's encoder features (one fixed feature space for Frechet distances)."""
        return self.members[0].features(images, batch_size=batch_size)

    def predict_scores(self, image: np.ndarray, *, tile: int = DEFAULT_TILE) -> np.ndarray:
        """(C, H, W) float32 probabilities averaged over members and scales, at the image's own size."""
        height, width = image.shape[:2]
        total = None
        for scale in self.scales:
            scaled = _resize_image(image, scale)
            for member in self.members:
                scores = member.predict_scores(scaled, tile=tile)
                scores = scores if scale == 1.0 else _resize_scores(scores, height, width)
                total = scores if total is None else total + scores
        return total / (len(self.scales) * len(self.members))

    def predict(self, image: np.ndarray, *, tile: int = DEFAULT_TILE) -> np.ndarray:
        """HxWx3 uint8 -> HxW uint8 label mask in the product's class ids, as `Segmenter.predict` writes it."""
        from renal_ldm.segment import labels_from_scores

        return labels_from_scores(self.predict_scores(image, tile=tile), self.config.classes)


def _resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _resize_scores(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.fromarray(channel).resize((width, height), Image.BILINEAR)) for channel in scores]
    ).astype(np.float32)


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_MANIFEST).is_file()


def load_ensemble(path: str | Path, *, device="cpu") -> SegmenterEnsemble:
    """An ensemble folder; errors name the file and what was expected."""
    from renal_ldm.segment import Segmenter

    path = Path(path)
    manifest_file = path / ENSEMBLE_MANIFEST
    manifest = read_kind_json(manifest_file, KIND_ENSEMBLE)
    names = manifest.get("members")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{manifest_file}: 'members' must be a non-empty list of member folder names")
    members = [Segmenter.from_dir(path / MEMBERS_DIR / name, device=device) for name in names]
    return SegmenterEnsemble(members, manifest.get("scales", [1.0]), manifest=manifest, path=path)


def write_ensemble(members: Sequence[str | Path], scales: Sequence[float], out: str | Path) -> SegmenterEnsemble:
    """Copy the member segmenter folders into OUT/members/ and write OUT/segmenter_ensemble.json.

    The members are opened first, so a wrong folder or mixed classes fail before anything is written; an existing
    ensemble in OUT is refused rather than overwritten.
    """
    from renal_ldm.segment import METRICS_FILE, SEGMENTER_MANIFEST, SEGMENTER_WEIGHTS, Segmenter

    out = Path(out)
    if (out / ENSEMBLE_MANIFEST).exists() or (out / MEMBERS_DIR).exists():
        raise FileExistsError(f"{out} already holds an ensemble; choose another --out")
    sources = [Path(m) for m in members]
    names = [p.resolve().name for p in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"member folders must have distinct names; got {', '.join(names)}")
    opened = [Segmenter.from_dir(p) for p in sources]
    ensemble = SegmenterEnsemble(opened, scales)
    for source, name in zip(sources, names, strict=True):
        target = out / MEMBERS_DIR / name
        target.mkdir(parents=True)
        for file in (SEGMENTER_MANIFEST, SEGMENTER_WEIGHTS, METRICS_FILE):  # the ensemble's card documents them
            if (source / file).is_file():
                shutil.copy2(source / file, target / file)
    manifest = {
        "kind": KIND_ENSEMBLE,
        "members": names,
        "scales": list(ensemble.scales),
        "classes": ensemble.config.classes,
        "member_val_dice": {
            name: member.manifest.get("metrics", {}).get("val_dice") for name, member in zip(names, opened, strict=True)
        },
    }
    write_file_atomically(out / ENSEMBLE_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    ensemble.manifest, ensemble.path = manifest, out
    return ensemble
