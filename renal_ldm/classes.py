"""The eight tissue classes of the renal segmentation masks: the single source of truth for ids, names, colours.

Label ids are the mask pixel values of the reference study's segmentation model; captions use the names
verbatim, so they must never be re-spelled elsewhere. Import from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TissueClass:
    """One mask label: its pixel value, its caption name and the RGB colour used for palette masks/overlays."""

    id: int
    name: str
    color: tuple[int, int, int]


BACKGROUND_ID = 0
"""Label 0 is white glass background: counted in the pixel total, never captioned."""

TISSUE_CLASSES: tuple[TissueClass, ...] = (
    TissueClass(0, "White background, should be ignored", (0, 0, 0)),
    TissueClass(1, "Arteries", (220, 40, 40)),
    TissueClass(2, "Atrophic Tubuli", (245, 130, 48)),
    TissueClass(3, "Tubuli", (255, 225, 25)),
    TissueClass(4, "Glomeruli", (60, 180, 75)),
    TissueClass(5, "Sclerotic Glomeruli", (145, 30, 180)),
    TissueClass(6, "other kidney tissue", (70, 140, 240)),
    TissueClass(7, "Dilated Tubuli", (70, 240, 240)),
)

NUM_CLASSES = len(TISSUE_CLASSES)
MAX_LABEL = NUM_CLASSES - 1

CAPTIONED_CLASSES: tuple[TissueClass, ...] = tuple(c for c in TISSUE_CLASSES if c.id != BACKGROUND_ID)
"""Classes 1..7 in label-id order: the order of sentences in a caption."""

OTHER_TISSUE_ID = 6
GLOMERULI_ID = 4
SCLEROTIC_GLOMERULI_ID = 5

_BY_ID = {c.id: c for c in TISSUE_CLASSES}
_BY_LOWER_NAME = {c.name.lower(): c for c in TISSUE_CLASSES}


def by_id(label: int) -> TissueClass:
    """Class for a label id; a ValueError names the id and the valid range."""
    try:
        return _BY_ID[int(label)]
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"unknown tissue class id {label!r}; expected an integer 0..{MAX_LABEL}") from None


def by_name(name: str) -> TissueClass:
    """Class for a name, case- and whitespace-insensitive; a ValueError lists the valid names."""
    key = " ".join(str(name).split()).lower()
    found = _BY_LOWER_NAME.get(key)
    if found is None:
        valid = ", ".join(repr(c.name) for c in CAPTIONED_CLASSES)
        raise ValueError(f"unknown tissue class name {name!r}; valid names are: {valid}")
    return found


def palette() -> dict[tuple[int, int, int], int]:
    """RGB colour -> label id, for reading RGB palette masks."""
    return {c.color: c.id for c in TISSUE_CLASSES}
