"""Agreement between annotators' masks of one region: Dice and IoU, per pair and per region, and a picture of
where they disagree.

Guarantees (tests/renal_ldm/test_annotations.py):

- `dice(a, b) = 2|a & b| / (|a| + |b|)`, `iou(a, b) = |a & b| / |a | b|`; two empty masks agree fully (1.0),
  since both annotators saw nothing to paint.
- `pairwise` compares every pair of annotators of one region, in name order; `region_summary` is the mean
  over those pairs.
- `disagreement_image` colours pixels both painted green, pixels only the first painted magenta, only the
  second cyan, over the region's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

BOTH = (40, 200, 60)
ONLY_FIRST = (230, 40, 200)
ONLY_SECOND = (30, 200, 230)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _pair(a, b)
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {a.shape} and {b.shape} cannot be compared; expected the same region")
    return a, b


@dataclass(frozen=True)
class PairAgreement:
    first: str
    second: str
    dice: float
    iou: float
    first_pixels: int
    second_pixels: int


def pairwise(masks: dict[str, np.ndarray]) -> list[PairAgreement]:
    """Every pair of annotators (name -> mask of one region and class), in name order."""
    names = sorted(masks)
    return [
        PairAgreement(a, b, dice(masks[a], masks[b]), iou(masks[a], masks[b]), int(masks[a].sum()), int(masks[b].sum()))
        for a, b in combinations(names, 2)
    ]


def region_summary(pairs: list[PairAgreement]) -> tuple[float, float]:
    """(mean Dice, mean IoU) over the pairs of one region."""
    if not pairs:
        raise ValueError("a region needs two annotators to have an agreement")
    return float(np.mean([p.dice for p in pairs])), float(np.mean([p.iou for p in pairs]))


def disagreement_image(image: np.ndarray, first: np.ndarray, second: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """RGB (H, W, 3): the region with agreement and each annotator's own pixels coloured."""
    a, b = _pair(first, second)
    rgb = np.asarray(image, dtype=np.float32).copy()
    if rgb.shape[:2] != a.shape:
        raise ValueError(f"image of shape {rgb.shape[:2]} for masks of shape {a.shape}; expected the same")
    for where, colour in ((a & b, BOTH), (a & ~b, ONLY_FIRST), (~a & b, ONLY_SECOND)):
        rgb[where] = (1 - opacity) * rgb[where] + opacity * np.asarray(colour, dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], opacity: float) -> np.ndarray:
    """RGB: the region with the mask's pixels tinted in the class colour (opacity 0..1)."""
    if not 0 <= opacity <= 1:
        raise ValueError(f"overlay opacity must be from 0 to 1; got {opacity!r}")
    rgb = np.asarray(image, dtype=np.float32).copy()
    m = np.asarray(mask, dtype=bool)
    rgb[m] = (1 - opacity) * rgb[m] + opacity * np.asarray(colour, dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)
