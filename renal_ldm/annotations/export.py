"""Annotated regions as a patch-mask data set in the product's layout (renal_ldm.data.layout), ready for
`renal-ldm train-segmenter` and the mix experiment.

Guarantees (tests/renal_ldm/test_annotations.py):

- `label_mask` turns one annotator's per-class masks of a region into label ids: painted pixels get their class
  (a pixel painted in two classes gets the larger id), unpainted pixels "other kidney tissue", as
  renal_ldm.data.masks reads a binary mask by default.
- `write_dataset` cuts each region into `patch` x `patch` pairs (only whole patches inside the region; the rest
  is counted as left over), names them 000000.png, 000001.png, ... and records slide, annotator and the
  patch's full-resolution x, y beside each caption. The data set is written through DatasetWriter: whole or
  not at all, an existing one refused unless overwrite.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from renal_ldm.annotations.masks import RegionBox
from renal_ldm.classes import MAX_LABEL, OTHER_TISSUE_ID
from renal_ldm.data.layout import DatasetWriter

DEFAULT_PATCH = 512
UNPAINTED_ID = OTHER_TISSUE_ID


@dataclass(frozen=True)
class AnnotatedRegion:
    """One annotator's masks of one region, with the region's pixels."""

    box: RegionBox
    annotator: str
    image: np.ndarray
    masks: dict[int, np.ndarray]


@dataclass(frozen=True)
class ExportSummary:
    pairs: int
    regions: int
    leftover_regions: int


def label_mask(masks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.full(shape, UNPAINTED_ID, dtype=np.uint8)
    for class_id in sorted(masks):
        if not 0 <= class_id <= MAX_LABEL:
            raise ValueError(f"class id {class_id} is not a label 0..{MAX_LABEL}")
        out[np.asarray(masks[class_id], dtype=bool)] = class_id
    return out


def write_dataset(
    out: str | Path,
    regions: Iterable[AnnotatedRegion],
    *,
    slide_id: int,
    patch: int = DEFAULT_PATCH,
    overwrite: bool = False,
) -> ExportSummary:
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 8:
        raise ValueError(f"patch side must be a whole number of pixels of at least 8; got {patch!r}")
    pairs = seen = leftover = 0
    with DatasetWriter(out, overwrite=overwrite) as writer:
        for region in regions:
            seen += 1
            box = region.box
            labels = label_mask(region.masks, box.shape)
            cut = 0
            for top in range(0, box.h - patch + 1, patch):
                for left in range(0, box.w - patch + 1, patch):
                    image = np.ascontiguousarray(region.image[top : top + patch, left : left + patch])
                    mask = np.ascontiguousarray(labels[top : top + patch, left : left + patch])
                    writer.add(
                        f"{pairs:06d}.png",
                        image,
                        mask,
                        slide=slide_id,
                        annotator=region.annotator,
                        x=box.x + left,
                        y=box.y + top,
                    )
                    pairs += 1
                    cut += 1
            if cut == 0 or box.w % patch or box.h % patch:
                leftover += 1
    return ExportSummary(pairs, seen, leftover)
