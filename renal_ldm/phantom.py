"""Phantom renal tissue: procedural H&E-like kidney patches with pixel-exact 8-class label masks.

This is the embedded default data set of the product: training, demos and tests run on it without a download.

How one phantom is made (a single numpy Generator drives every draw, so a seed reproduces it exactly):

1. composition: a target fraction per class, given by the caller or drawn at random so that a data set covers
   every caption level (low, medium, high) of every class 1..7;
2. geometry: an optional tissue edge (white background, label 0), then non-overlapping structures packed into
   the tissue until each class reaches its target. Every structure writes its parts (capsule, Bowman's space,
   tuft; basement membrane, epithelium, lumen; adventitia, media, elastic lamina, lumen) into one `parts` map;
   what no structure covers is interstitium;
3. mask = PART_LABELS[parts]; the image is painted from the same `parts` map with a Beer-Lambert
   hematoxylin/eosin stain model, texture noise and nuclei stamped only inside their own structure.
   Because mask and painting both derive from `parts`, they match pixel for pixel.

Label decisions (documented, and tested): Bowman's capsule and Bowman's space belong to their glomerulus
(Glomeruli or Sclerotic Glomeruli); a tubule's basement membrane, epithelium and lumen (with any cast) belong
to that tubule class; an artery's adventitia, media, elastic lamina and lumen belong to Arteries; peritubular
capillaries, fibres and interstitial cells are "other kidney tissue". The magnification is fixed (structure
sizes in pixels do not depend on the patch size), so a larger patch shows more structures.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from renal_ldm import __version__
from renal_ldm.captions import (
    HIGH,
    HIGH_THRESHOLD,
    LEVELS,
    LOW,
    MEDIUM,
    MEDIUM_THRESHOLD,
    mask_fractions,
    mask_to_caption,
)
from renal_ldm.classes import (
    BACKGROUND_ID,
    GLOMERULI_ID,
    OTHER_TISSUE_ID,
    SCLEROTIC_GLOMERULI_ID,
    TISSUE_CLASSES,
    by_id,
    by_name,
)
from renal_ldm.data import layout

ARTERIES_ID = by_name("Arteries").id
ATROPHIC_TUBULI_ID = by_name("Atrophic Tubuli").id
TUBULI_ID = by_name("Tubuli").id
DILATED_TUBULI_ID = by_name("Dilated Tubuli").id

MIN_SIZE = 32
"""Smallest patch side in pixels: below it not even one tubule cross-section fits."""


# --------------------------------------------------------------------------------------------------- parts


class Part(IntEnum):
    """Sub-structures the painter styles differently; each maps to exactly one mask label (PART_LABELS)."""

    GLASS = 0
    STROMA = 1
    CAPILLARY = 2
    TUBULE_MEMBRANE = 3
    PROXIMAL_EPITHELIUM = 4
    DISTAL_EPITHELIUM = 5
    TUBULE_LUMEN = 6
    ATROPHIC_MEMBRANE = 7
    ATROPHIC_EPITHELIUM = 8
    ATROPHIC_LUMEN = 9
    ATROPHIC_CAST = 10
    DILATED_MEMBRANE = 11
    DILATED_EPITHELIUM = 12
    DILATED_LUMEN = 13
    BOWMAN_CAPSULE = 14
    BOWMAN_SPACE = 15
    TUFT = 16
    SCLEROTIC_CAPSULE = 17
    SCLEROTIC_SPACE = 18
    SCLEROTIC_TUFT = 19
    ADVENTITIA = 20
    MEDIA = 21
    ELASTIC_LAMINA = 22
    ARTERY_LUMEN = 23


@dataclass(frozen=True)
class _PartStyle:
    """Mask label of a part, its stain densities (optical density units) and whether nuclei may sit in it."""

    label: int
    eosin: float
    hematoxylin: float
    clear: bool = False  # lumen-like: empty space, no nuclei (red blood cells may float in it)


_STYLES: dict[Part, _PartStyle] = {
    Part.GLASS: _PartStyle(BACKGROUND_ID, 0.0, 0.0, clear=True),
    Part.STROMA: _PartStyle(OTHER_TISSUE_ID, 0.2, 0.03),
    Part.CAPILLARY: _PartStyle(OTHER_TISSUE_ID, 0.04, 0.0, clear=True),
    Part.TUBULE_MEMBRANE: _PartStyle(TUBULI_ID, 0.95, 0.05),
    Part.PROXIMAL_EPITHELIUM: _PartStyle(TUBULI_ID, 0.62, 0.08),
    Part.DISTAL_EPITHELIUM: _PartStyle(TUBULI_ID, 0.42, 0.1),
    Part.TUBULE_LUMEN: _PartStyle(TUBULI_ID, 0.05, 0.0, clear=True),
    Part.ATROPHIC_MEMBRANE: _PartStyle(ATROPHIC_TUBULI_ID, 1.15, 0.04),
    Part.ATROPHIC_EPITHELIUM: _PartStyle(ATROPHIC_TUBULI_ID, 0.3, 0.16),
    Part.ATROPHIC_LUMEN: _PartStyle(ATROPHIC_TUBULI_ID, 0.06, 0.0, clear=True),
    Part.ATROPHIC_CAST: _PartStyle(ATROPHIC_TUBULI_ID, 0.95, 0.0, clear=True),
    Part.DILATED_MEMBRANE: _PartStyle(DILATED_TUBULI_ID, 0.8, 0.05),
    Part.DILATED_EPITHELIUM: _PartStyle(DILATED_TUBULI_ID, 0.45, 0.08),
    Part.DILATED_LUMEN: _PartStyle(DILATED_TUBULI_ID, 0.03, 0.0, clear=True),
    Part.BOWMAN_CAPSULE: _PartStyle(GLOMERULI_ID, 0.8, 0.06),
    Part.BOWMAN_SPACE: _PartStyle(GLOMERULI_ID, 0.03, 0.0, clear=True),
    Part.TUFT: _PartStyle(GLOMERULI_ID, 0.55, 0.14),
    Part.SCLEROTIC_CAPSULE: _PartStyle(SCLEROTIC_GLOMERULI_ID, 0.85, 0.04),
    Part.SCLEROTIC_SPACE: _PartStyle(SCLEROTIC_GLOMERULI_ID, 0.05, 0.0, clear=True),
    Part.SCLEROTIC_TUFT: _PartStyle(SCLEROTIC_GLOMERULI_ID, 0.95, 0.03),
    Part.ADVENTITIA: _PartStyle(ARTERIES_ID, 0.45, 0.03),
    Part.MEDIA: _PartStyle(ARTERIES_ID, 0.8, 0.06),
    Part.ELASTIC_LAMINA: _PartStyle(ARTERIES_ID, 1.2, 0.02),
    Part.ARTERY_LUMEN: _PartStyle(ARTERIES_ID, 0.03, 0.0, clear=True),
}

PART_LABELS = np.array([_STYLES[p].label for p in Part], dtype=np.uint8)
"""Part id -> mask label: the one function from geometry to mask (mask = PART_LABELS[parts])."""
_EOSIN = np.array([_STYLES[p].eosin for p in Part], dtype=np.float32)
_HEMATOXYLIN = np.array([_STYLES[p].hematoxylin for p in Part], dtype=np.float32)
_CLEAR = np.array([_STYLES[p].clear for p in Part], dtype=bool)
_EPITHELIAL = np.isin(
    np.arange(len(Part)),
    [Part.PROXIMAL_EPITHELIUM, Part.DISTAL_EPITHELIUM, Part.ATROPHIC_EPITHELIUM, Part.DILATED_EPITHELIUM],
)
_FIBROUS = np.isin(np.arange(len(Part)), [Part.STROMA, Part.ADVENTITIA, Part.SCLEROTIC_CAPSULE])


# ------------------------------------------------------------------------------------------------ phantom


@dataclass(frozen=True)
class Phantom:
    """One phantom patch. `parts` is the geometry both `mask` and `image` were derived from."""

    image: np.ndarray  # (H, W, 3) uint8, H&E-like RGB
    mask: np.ndarray  # (H, W) uint8 label ids 0..7 (== PART_LABELS[parts])
    caption: str  # captions.mask_to_caption(mask)
    fractions: dict[str, float]  # class name -> achieved pixel fraction, all 8 classes in label-id order
    parts: np.ndarray  # (H, W) uint8 Part ids
    targets: dict[str, float]  # class name -> target fraction the geometry aimed for


def generate_phantom(
    size: int | tuple[int, int] = 256,
    seed: int | None = 0,
    composition: Mapping[str | int, float] | None = None,
    rng: np.random.Generator | None = None,
    lead: Sequence[str | int] | None = None,
    context: int = 0,
) -> Phantom:
    """A phantom patch of `size` (side, or (height, width)) pixels.

    composition: target fraction per class name (or label id), e.g. {"Glomeruli": 0.45, "Tubuli": 0.25}.
    Classes not named are absent. "other kidney tissue" fills what the structures leave; if it is named
    itself, white background (the tissue edge) takes the rest unless the background is named too. Targets are
    met approximately (structures are whole, packing leaves interstitium), closely enough that the caption
    level matches for targets the packing can reach: one class up to about 0.6 of the patch, several classes
    together up to about 0.6 (0.7 at 256 px, where big glomeruli leave room for tubules between them).
    None draws a random composition; lead then names the structure classes its leading class is drawn from
    (random_composition). rng, when given, is used instead of `seed`.

    context > 0 builds a field `context` px wider on every side and keeps its centre, caption and fractions
    measured on the patch: a tile cut from a larger field, whose border looks like its interior. Without it the
    packing cuts structures by the patch border on purpose (to meet small targets), so a patch's border band
    differs from its interior (busier in tiles full of glomeruli, calmer in others), unlike a tile from a slide.
    (The demo model's own frame did not follow it: retrained on such tiles, it kept its frame; see
    models/demo/README.md.)
    """
    height, width = _check_size(size)
    context = _check_context(context)
    leads = resolve_lead(lead, composition)
    targets = resolve_composition(composition) if composition is not None else None
    rng = rng if rng is not None else np.random.default_rng(seed)
    if targets is None:
        targets = random_composition(rng, leads)
    phantom = _build(rng, height + 2 * context, width + 2 * context, targets)
    return _centre(phantom, context) if context else phantom


FIELD_CONTEXT = 32
"""The context (px) that cuts a patch from a wider field, as the frame measure's reference border: with it, 128 px
tiles led by glomeruli read a frame ratio of 0.977 (95% interval 0.948-1.010) instead of 1.056, and other tiles
1.010 instead of 0.967 (96 tiles each; tests/renal_ldm/test_phantom.py checks the direction)."""


def _check_context(context: int) -> int:
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
        raise ValueError(f"context must be a whole number of pixels >= 0; got {context!r}")
    return int(context)


def _centre(phantom: Phantom, margin: int) -> Phantom:
    """The phantom without `margin` px on every side; caption and fractions measured on what is left."""
    inner = (slice(margin, -margin), slice(margin, -margin))
    image, parts = (np.ascontiguousarray(a[inner]) for a in (phantom.image, phantom.parts))
    return _measured(image, parts, phantom.targets)


def _measured(image: np.ndarray, parts: np.ndarray, targets: dict[str, float]) -> Phantom:
    """The Phantom of a painted parts map: mask, caption and fractions derived from the parts."""
    mask = PART_LABELS[parts]
    return Phantom(
        image=image,
        mask=mask,
        caption=mask_to_caption(mask),
        fractions={by_id(k).name: float(v) for k, v in mask_fractions(mask).items()},
        parts=parts,
        targets=targets,
    )


def resolve_composition(composition: Mapping[str | int, float]) -> dict[int, float]:
    """Label id -> target fraction for every class 0..7, checked: known names, values in [0, 1], sum <= 1."""
    given: dict[int, float] = {}
    for key, value in composition.items():
        cls = by_id(key) if isinstance(key, (int, np.integer)) else by_name(key)
        if cls.id in given:
            raise ValueError(f"class {cls.name!r} is given twice in the composition")
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"fraction for {cls.name!r} must be a number in [0, 1]; got {value!r}") from None
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ValueError(f"fraction for {cls.name!r} must be in [0, 1]; got {value!r}")
        given[cls.id] = fraction
    total = sum(given.values())
    if total > 1.0 + 1e-9:
        shown = ", ".join(f"{by_id(k).name}={v:g}" for k, v in given.items())
        raise ValueError(f"composition fractions sum to {total:.3g} ({shown}); the total must be at most 1")
    targets = {c.id: given.get(c.id, 0.0) for c in TISSUE_CLASSES}
    rest = max(0.0, 1.0 - total)
    if OTHER_TISSUE_ID not in given:
        targets[OTHER_TISSUE_ID] = rest
    elif BACKGROUND_ID not in given:
        targets[BACKGROUND_ID] = rest
    else:
        targets[OTHER_TISSUE_ID] += rest
    return targets


def parse_composition(spec: str) -> dict[str, float]:
    """Class name -> fraction from a command-line spec like "Glomeruli=0.45,Tubuli=0.25".

    Names may contain commas (the background's name does): an entry runs up to its "=" and its number.
    """
    text = str(spec).strip()
    entries = re.findall(r"\s*([^=]+?)\s*=\s*([^,]*?)\s*(?:,|$)", text)
    rebuilt = ",".join(f"{n}={v}" for n, v in entries)
    if not entries or rebuilt.replace(" ", "") != text.replace(" ", "").rstrip(","):
        raise ValueError(
            f"bad composition {spec!r}; expected NAME=FRACTION[,NAME=FRACTION...], e.g. Glomeruli=0.45,Tubuli=0.25"
        )
    parsed: dict[str, float] = {}
    for name, value in entries:
        cls = by_name(name)
        try:
            parsed[cls.name] = float(value)
        except ValueError:
            raise ValueError(f"fraction for {cls.name!r} must be a number in [0, 1]; got {value!r}") from None
    resolve_composition(parsed)  # range and sum checks, with their messages
    return parsed


_LEVEL_RANGES = {
    LOW: (0.03, MEDIUM_THRESHOLD - 0.04),
    MEDIUM: (MEDIUM_THRESHOLD + 0.03, HIGH_THRESHOLD - 0.04),
    HIGH: (HIGH_THRESHOLD + 0.03, HIGH_THRESHOLD + 0.2),
}
"""Where random targets are drawn for each caption level: clear of the thresholds, so levels come out as drawn."""
_STRUCTURE_BUDGET = 0.75
"""Largest share of the tissue that packed structures are asked to cover; the rest stays interstitium."""


def random_composition(rng: np.random.Generator, leads: Sequence[int] | None = None) -> dict[int, float]:
    """Targets for the random mode: a leading structure class, each other one present half the time.

    The lead (often at a high level) gets first call on the space, so every class reaches every caption level;
    a tissue edge (white background) in a third of the tiles lets interstitium drop to a low level too. leads
    (label ids of structure classes) restricts the lead to those classes, e.g. to add tiles where glomeruli
    dominate to a data set; without it the lead is any structure class, with the same draws as ever.
    """
    background = rng.uniform(0.1, 0.5) if rng.random() < 0.35 else 0.0
    budget = _STRUCTURE_BUDGET * (1.0 - background)
    targets = {c.id: 0.0 for c in TISSUE_CLASSES}
    targets[BACKGROUND_ID] = background
    labels = [k.label for k in _KINDS]
    if leads:
        first = int(leads[rng.integers(len(leads))])
        order = [first, *rng.permutation([x for x in labels if x != first])]
    else:
        order = rng.permutation(labels)
    for rank, label in enumerate(order):
        if rank > 0 and rng.random() < 0.5:
            continue
        odds = (0.2, 0.35, 0.45) if rank == 0 else (0.55, 0.3, 0.15)
        for level in LEVELS[rng.choice(len(LEVELS), p=odds) :: -1]:  # step down a level when the budget is short
            low, high = _LEVEL_RANGES[level]
            if low <= budget:
                targets[int(label)] = fraction = rng.uniform(low, min(high, budget))
                budget -= fraction
                if rank == 0 and level == HIGH:
                    budget *= 0.5  # leave the lead room to stay high after the others are packed
                break
    targets[OTHER_TISSUE_ID] = max(0.0, 1.0 - sum(targets.values()))
    return targets


def resolve_lead(lead: Sequence[str | int] | None, composition=None) -> tuple[int, ...] | None:
    """Label ids of the classes a random composition may lead with, checked: structure classes only, and not
    together with a fixed composition (which leaves nothing to draw)."""
    if lead is None:
        return None
    if composition is not None:
        raise ValueError("a lead class applies to random compositions; give either a composition or a lead")
    ids = []
    for key in lead:
        cls = by_id(key) if isinstance(key, (int, np.integer)) else by_name(key)
        if cls.id not in _STRUCTURE_IDS:
            names = ", ".join(repr(by_id(x).name) for x in _STRUCTURE_IDS)
            raise ValueError(f"lead class {cls.name!r} is not a structure the phantom packs; expected one of {names}")
        ids.append(cls.id)
    if not ids:
        raise ValueError("no lead class given; expected at least one structure class name")
    return tuple(dict.fromkeys(ids))


def parse_lead(spec: str) -> tuple[int, ...]:
    """`--lead Glomeruli,Sclerotic Glomeruli` -> label ids (resolve_lead's checks)."""
    return resolve_lead([part.strip() for part in spec.split(",") if part.strip()])


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int or pair, refusing sizes too small to hold a structure."""
    dims = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(dims) != 2 or not all(isinstance(d, (int, np.integer)) for d in dims):
        raise ValueError(f"size must be an integer side or (height, width); got {size!r}")
    if min(dims) < MIN_SIZE:
        raise ValueError(f"size {size!r} is too small; phantoms need at least {MIN_SIZE} px per side")
    return int(dims[0]), int(dims[1])


def _build(rng: np.random.Generator, height: int, width: int, targets: dict[int, float]) -> Phantom:
    """Geometry, then mask and painting from the same parts map."""
    canvas = _Canvas.create(height, width, targets)
    canvas.tissue = _tissue_edge(rng, canvas, targets[BACKGROUND_ID])
    for kind in _KINDS:  # largest structures first, smaller ones fill in between
        if targets[kind.label] > 0:
            _pack(rng, canvas, kind, targets[kind.label])
    parts, shade, stamps = canvas.crop()
    stamps = np.concatenate([stamps, _interstitium(rng, parts)])
    image = _paint(rng, parts, PART_LABELS[parts], shade, stamps)
    return _measured(image, parts, {by_id(k).name: float(v) for k, v in targets.items()})


# ---------------------------------------------------------------------------------------------- geometry


@dataclass
class _Canvas:
    """The patch plus a margin: structures may be cut by the patch border, as in a tile from a slide."""

    height: int
    width: int
    pad: int
    parts: np.ndarray
    shade: np.ndarray
    clearance: np.ndarray  # px from every second point to the nearest placed structure (capped)
    tissue: np.ndarray
    stamps: list
    covered: float = 0.0  # visible structure pixels placed so far

    @functools.cached_property
    def tissue_px(self) -> int:
        """Tissue pixels inside the patch (asked only once the tissue edge is set)."""
        p = self.pad
        return int(np.count_nonzero(self.tissue[p : p + self.height, p : p + self.width]))

    @classmethod
    def create(cls, height: int, width: int, targets: dict[int, float]) -> _Canvas:
        present = [k.radius[1] for k in _KINDS if targets[k.label] > 0]
        pad = int(math.ceil(0.5 * max(present, default=8)))
        shape = (height + 2 * pad, width + 2 * pad)
        return cls(
            height,
            width,
            pad,
            parts=np.full(shape, Part.STROMA, dtype=np.uint8),
            shade=np.zeros(shape, dtype=np.float32),
            clearance=np.full(((shape[0] + 1) // _GRID, (shape[1] + 1) // _GRID), np.inf, dtype=np.float32),
            tissue=np.ones(shape, dtype=bool),
            stamps=[],
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.parts.shape

    def visible(self, box: tuple[slice, slice], region: np.ndarray) -> int:
        """Pixels of a structure inside the patch and inside the tissue: what the mask will count."""
        (ys, xs), p = box, self.pad
        y0, y1 = max(ys.start, p), min(ys.stop, p + self.height)
        x0, x1 = max(xs.start, p), min(xs.stop, p + self.width)
        if y0 >= y1 or x0 >= x1:
            return 0
        sub = region[y0 - ys.start : y1 - ys.start, x0 - xs.start : x1 - xs.start]
        return int(np.count_nonzero(sub & self.tissue[y0:y1, x0:x1]))

    def claim(self, outline: _Outline, reach: float) -> None:
        """Lower the clearance around a new structure, out to `reach` px beyond its outline.

        Distance is measured along the ray to the structure's centre: exact for round outlines, slightly long
        for elongated ones, which the spacing gap absorbs (and `_pack` never lets a structure overwrite another).
        The outline radius comes from a per-direction table, rounded up, so clearance is never overstated.
        """
        r = (outline.radius + reach) / _GRID
        cy, cx = outline.cy / _GRID, outline.cx / _GRID
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, self.clearance.shape[0])
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, self.clearance.shape[1])
        dist, angle = _polar(outline.cy, outline.cx, y0, y1, x0, x1, step=_GRID)
        bins = np.floor(angle * np.float32(_LUT_SIZE / (2 * np.pi))).astype(np.int32)  # negative ones wrap
        window = self.clearance[y0:y1, x0:x1]
        np.minimum(window, dist - outline.bin_max[bins], out=window)

    def visible_guess(self, cy: float, cx: float, radius: float) -> float:
        """Visible area of a disk estimated from a fixed pattern of points: cheap rejection before drawing."""
        ys = (cy + radius * _DISK[0]).astype(int)
        xs = (cx + radius * _DISK[1]).astype(int)
        p = self.pad
        inside = (ys >= p) & (ys < p + self.height) & (xs >= p) & (xs < p + self.width)
        inside[inside] &= self.tissue[ys[inside], xs[inside]]
        return math.pi * radius * radius * np.count_nonzero(inside) / _DISK.shape[1]

    def crop(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Parts (glass outside the tissue), shade and stamps in patch coordinates."""
        p = self.pad
        window = (slice(p, p + self.height), slice(p, p + self.width))
        tissue = self.tissue[window]
        parts = np.where(tissue, self.parts[window], np.uint8(Part.GLASS))
        shade = np.where(tissue, self.shade[window], np.float32(0))
        stamps = np.concatenate(self.stamps) if self.stamps else np.zeros((0, _STAMP_COLUMNS), np.float32)
        stamps[:, 0:2] -= p
        return parts, shade, stamps


_LUT_SIZE = 128
_LUT_Z = np.exp(2j * np.pi * np.arange(_LUT_SIZE) / _LUT_SIZE).astype(np.complex64)
"""Directions (unit complex numbers) where an outline's radius is tabulated."""


class _Outline:
    """A structure's outline: an ellipse with low-frequency wobble, radius at most `radius` in every direction.

    The radius is tabulated over directions once; fields over a bounding box interpolate the table.
    """

    def __init__(self, rng: np.random.Generator, cy: float, cx: float, radius: float, aspect: float, wobble: float):
        self.cy, self.cx, self.radius = cy, cx, radius
        amps = rng.uniform(0.0, wobble, 4) / np.arange(1, 5)  # harmonics of order 2..5
        coefs = (amps * np.exp(-1j * rng.uniform(0, 2 * np.pi, 4))).astype(np.complex64)
        rotation = np.complex64(np.exp(-1j * rng.uniform(0, np.pi)))
        shape = _outline_shape(_LUT_Z, rotation, aspect, coefs)
        table = shape * np.float32(radius / float(shape.max()))
        self.table = np.append(table, table[0])  # closed ring, for interpolation
        self.bin_max = np.maximum(table, self.table[1:])  # largest radius over each table interval
        self.mean_radius = float(table.mean())

    def at_angle(self, angle: np.ndarray) -> np.ndarray:
        """Outline radius (px) at any angles (radians), interpolated from the table."""
        pos = angle * np.float32(_LUT_SIZE / (2 * np.pi))
        i = np.floor(pos)
        frac = pos - i
        i = i.astype(np.int32) % _LUT_SIZE
        lo = self.table[i]
        return lo + frac * (self.table[i + 1] - lo)


def _outline_shape(z: np.ndarray, rotation, aspect: float, coefs: np.ndarray) -> np.ndarray:
    """Unscaled outline radius in directions z: a rotated ellipse (axes 1 and aspect) times 1 + wobble."""
    w = z * rotation
    ellipse = np.float32(aspect) / np.sqrt(np.float32(aspect**2) * w.real**2 + w.imag**2)
    poly = coefs[3]
    for coef in coefs[2::-1]:  # Horner: sum of coef_k z^(k+2)
        poly = poly * z + coef
    return ellipse * (1 + (poly * z * z).real)


def _polar(cy: float, cx: float, y0: int, y1: int, x0: int, x1: int, step: int = 1):
    """Distance to (cy, cx) and direction angle over grid rows y0:y1 and columns x0:x1 (`step` px apart)."""
    dy = (np.arange(y0, y1, dtype=np.float32) * step - np.float32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) * step - np.float32(cx))[None, :]
    return np.sqrt(dy * dy + dx * dx), np.arctan2(dy, dx)


@dataclass
class _Geometry:
    """Polar fields of one structure over its bounding box, which part drawings threshold."""

    outline: _Outline
    box: tuple[slice, slice]
    dist: np.ndarray  # distance to the centre, px
    angle: np.ndarray  # direction from the centre, radians
    edge: np.ndarray  # outline radius in that direction, px

    @classmethod
    def create(cls, outline: _Outline, shape: tuple[int, int]) -> _Geometry:
        r, cy, cx = outline.radius, outline.cy, outline.cx
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, shape[0])
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, shape[1])
        dist, angle = _polar(cy, cx, y0, y1, x0, x1)
        return cls(outline, (slice(y0, y1), slice(x0, x1)), dist, angle, outline.at_angle(angle))

    @property
    def depth(self) -> np.ndarray:
        """Pixels inside the outline along the radius (negative outside)."""
        return self.edge - self.dist

    def harmonic(self, order: int, phase: float) -> np.ndarray:
        """cos(order * angle - phase) over the box: angular modulation (cell borders, lobules, waves)."""
        return np.cos(order * self.angle - np.float32(phase))


@dataclass(frozen=True)
class _Kind:
    """A structure class: mask label, outer radius range (px), aspect range, outline wobble, drawing, spacing."""

    label: int
    radius: tuple[float, float]
    aspect: tuple[float, float]
    wobble: float
    gap: tuple[float, float]
    draw: Callable[[np.random.Generator, _Geometry], tuple[np.ndarray, np.ndarray | None, np.ndarray]]


_MAX_FAILURES = 30
"""Rejected tries (cheap ones count a quarter) after which a kind stops short of its target."""
_GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))
_DISK = np.stack([np.sqrt((np.arange(64) + 0.5) / 64) * f(np.arange(64) * _GOLDEN_ANGLE) for f in (np.sin, np.cos)])
"""64 evenly spread points of the unit disk (a sunflower pattern), for area estimates."""
_GRID = 2
"""Spacing (px) of the clearance grid where structure centres are chosen: a quarter of the work, no visible cost."""


def _pack(rng: np.random.Generator, canvas: _Canvas, kind: _Kind, target: float) -> None:
    """Place structures of one kind where they fit until their visible area reaches the target.

    Each try picks a tissue point with enough clearance to the structures already placed, sizes the structure
    to that room (often growing it to fill the room, which packs tightly) and to the area still wanted, and
    keeps it only if it does not overshoot the target.
    """
    area = canvas.height * canvas.width
    wanted = target * area
    slack = max(0.02 * area, 0.08 * wanted)
    rmin, rmax = kind.radius
    smallest = 0.6 * rmin  # the last structure may be a smaller section, to land near the target
    reach = rmax + kind.gap[1] + 1.0
    np.minimum(canvas.clearance, reach, out=canvas.clearance)
    mean_aspect = sum(kind.aspect) / 2
    placed, failures = 0.0, 0
    while wanted - placed > 0.01 * area and failures < _MAX_FAILURES:
        remaining = wanted - placed
        gap = rng.uniform(*kind.gap)
        r_area = math.sqrt((remaining + slack / 2) / (math.pi * mean_aspect))
        wish = min(rng.uniform(rmin, rmax), max(r_area, smallest))
        if r_area >= smallest:
            snug = remaining > 0.4 * (canvas.tissue_px - canvas.covered)  # crowded: pack tightly, else scatter
            found = _clear_point(rng, canvas, 0.5 * rmax, wish + gap, smallest + gap, snug)
            if found is None:
                break  # jammed: no room left for even the smallest structure of this kind
        else:  # less wanted than one whole structure: place one cut by the patch border
            found = _border_point(rng, canvas, wish, wish + gap)
            if found is None:
                failures += 0.25
                continue
        cy, cx, room = found
        radius = min(room - gap, rmax, max(r_area, smallest)) if rng.random() < 0.9 else min(wish, room - gap)
        aspect = rng.uniform(*kind.aspect)
        guess = canvas.visible_guess(cy, cx, 0.9 * radius * math.sqrt(aspect))
        if guess == 0 or guess > 1.3 * (remaining + slack):
            failures += 0.25  # cheap miss (e.g. a whole structure where only a sliver at the border fits)
            continue
        outline = _Outline(rng, cy, cx, radius, aspect, kind.wobble)
        geo = _Geometry.create(outline, canvas.shape)
        region = (geo.depth >= 0) & (canvas.parts[geo.box] == Part.STROMA)
        seen = canvas.visible(geo.box, region)
        if seen == 0 or seen > remaining + slack:
            failures += 1
            continue
        parts, shade, stamps = kind.draw(rng, geo)
        box = geo.box
        canvas.parts[box][region] = parts[region]
        if shade is not None:
            canvas.shade[box][region] += shade[region]
        canvas.stamps.append(stamps)
        canvas.claim(outline, reach)
        placed += seen
        canvas.covered += seen


def _clear_point(rng, canvas: _Canvas, margin: float, room: float, least: float, snug: bool = False):
    """A random tissue point (in the patch or up to `margin` px beyond it) with clearance >= room, or else one
    with the most clearance if that is at least `least`; returns (y, x, clearance), or None when nothing has
    `least` (the kind is jammed). snug picks the tightest fit (dense packing) instead of a random one (an even
    scatter). Points lie on the clearance grid."""
    p, g = canvas.pad, _GRID
    y0 = x0 = int(max(p - margin, 0)) // g
    y1 = int(min(p + canvas.height + margin, canvas.shape[0])) // g
    x1 = int(min(p + canvas.width + margin, canvas.shape[1])) // g
    iy, ix = rng.integers(y0, y1, 96), rng.integers(x0, x1, 96)
    clear = np.where(canvas.tissue[iy * g, ix * g], canvas.clearance[iy, ix], 0)
    fits = np.where(clear >= room, clear, np.inf)
    i = int(np.argmin(fits)) if snug else int(np.argmax(np.isfinite(fits)))  # tightest, or first that fits
    if not np.isfinite(fits[i]):
        i = int(np.argmax(clear))  # nothing that big fits: the roomiest probe, for a smaller structure
    if clear[i] >= least:
        return float(iy[i] * g), float(ix[i] * g), float(clear[i])
    window = np.where(canvas.tissue[y0 * g : y1 * g : g, x0 * g : x1 * g : g], canvas.clearance[y0:y1, x0:x1], 0)
    best = float(window.max())
    if best < least:
        return None
    flat = np.flatnonzero(window >= min(room, best))
    y, x = divmod(int(flat[rng.integers(flat.size)]), window.shape[1])
    return float((y + y0) * g), float((x + x0) * g), float(window[y, x])


def _border_point(rng, canvas: _Canvas, radius: float, room: float) -> tuple[float, float, float] | None:
    """A point near the patch border where a structure of `radius` would show only partly, with clearance >=
    room; None when the probes find none."""
    p, g = canvas.pad, _GRID
    side = rng.integers(0, 4, 16)
    inward = rng.uniform(-0.7, 0.3, 16) * radius  # centre's distance inside the border (negative: outside)
    along = rng.random(16)
    h, w = canvas.height, canvas.width
    y = np.select([side == 0, side == 1], [p + inward, p + h - 1 - inward], p + along * h)
    x = np.select([side == 2, side == 3], [p + inward, p + w - 1 - inward], p + along * w)
    iy = np.clip((y / g).astype(int), 0, canvas.clearance.shape[0] - 1)
    ix = np.clip((x / g).astype(int), 0, canvas.clearance.shape[1] - 1)
    clear = np.where(canvas.tissue[iy * g, ix * g], canvas.clearance[iy, ix], 0)
    hit = np.flatnonzero(clear >= room)
    if hit.size == 0:
        return None
    i = hit[0]
    return float(iy[i] * g), float(ix[i] * g), float(clear[i])


def _tissue_edge(rng: np.random.Generator, canvas: _Canvas, background: float) -> np.ndarray:
    """Tissue (True) vs white glass: a wavy cut edge leaving exactly `background` of the patch as glass."""
    if background <= 0:
        return np.ones(canvas.shape, dtype=bool)
    h, w = canvas.shape
    p = canvas.pad
    side = max(canvas.height, canvas.width)
    angle = rng.uniform(0, 2 * np.pi)
    yy = np.arange(h, dtype=np.float32)[:, None] - h / 2
    xx = np.arange(w, dtype=np.float32)[None, :] - w / 2
    field = (yy * np.sin(angle) + xx * np.cos(angle)) / side
    wave, ripple = _noise_fields(rng, (h, w), (side * 0.12, 3.0))
    if rng.random() < 0.25:  # a hole (tear, vessel space) in the tissue instead of a cut edge
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        field = -np.sqrt((yy + h / 2 - cy) ** 2 + (xx + w / 2 - cx) ** 2) / side
    field = field + 0.06 * wave + 0.003 * ripple
    inner = field[p : p + canvas.height, p : p + canvas.width]
    tissue = field < np.quantile(inner, 1.0 - background)
    pieces, count = ndimage.label(tissue)
    if count > 1:  # drop crumbs of tissue floating on the glass
        sizes = np.bincount(pieces.ravel())
        keep = sizes >= 0.02 * canvas.height * canvas.width
        keep[0] = False
        tissue = keep[pieces]
    return tissue


# --------------------------------------------------------------------------------------------- structures

_STAMP_COLUMNS = 8
_HEMA_CHANNEL, _RED_CHANNEL = 0.0, 1.0


def _stamps(y, x, a, b, angle, density, channel: float, label: int) -> np.ndarray:
    """Rows of elliptical stamps (nuclei or red cells): y, x, semi-axes a (along angle) and b, density, label."""
    y = np.atleast_1d(np.asarray(y, dtype=np.float32))
    out = np.empty((y.size, _STAMP_COLUMNS), dtype=np.float32)
    for i, column in enumerate((y, x, a, b, angle, density, channel, label)):
        out[:, i] = column
    return out


def _ring_nuclei(rng, geo: _Geometry, depth, spacing, size, keep, label, density=1.0) -> np.ndarray:
    """Nuclei along the outline at `depth` px inside it, every `spacing` px, tangentially oriented."""
    o = geo.outline
    mean_r = max(o.mean_radius - depth, 1.0)
    n = max(int(2 * math.pi * mean_r / spacing), 3)
    jitter = rng.random((6, n), dtype=np.float32)  # one draw for all per-nucleus variation
    theta = (np.arange(n, dtype=np.float32) + (jitter[0] - 0.5) * 0.5) * np.float32(2 * np.pi / n) + jitter[1, 0] * 6.28
    kept = jitter[2] < keep
    theta, jitter = theta[kept], jitter[:, kept]
    c, s = np.cos(theta), np.sin(theta)
    r = o.at_angle(theta) - depth + (jitter[3] - 0.5) * 1.2
    a, b = size
    scale = 0.85 + 0.3 * jitter[4]
    return _stamps(
        o.cy + r * s,
        o.cx + r * c,
        a * scale,
        b * scale,
        theta + np.float32(np.pi / 2),
        density * (0.8 + 0.4 * jitter[5]),
        _HEMA_CHANNEL,
        label,
    )


def _scattered(rng, cy, cx, radius, count, size, density, label, channel=_HEMA_CHANNEL) -> np.ndarray:
    """`count` randomly oriented stamps spread uniformly over a disk."""
    count = int(count)
    r = radius * np.sqrt(rng.random(count))
    theta = rng.uniform(0, 2 * np.pi, count)
    a, b = size
    return _stamps(
        cy + r * np.sin(theta),
        cx + r * np.cos(theta),
        rng.uniform(*a, count),
        rng.uniform(*b, count),
        rng.uniform(0, np.pi, count),
        density * rng.uniform(0.8, 1.2, count),
        channel,
        label,
    )


def _draw_tubule(rng, geo: _Geometry):
    """Proximal (tall eosinophilic cells, brush border, slit lumen) or distal (paler, open lumen) tubule."""
    distal = rng.random() < 0.3
    depth, rel = geo.depth, geo.dist / geo.edge
    membrane = rng.uniform(0.9, 1.4)
    lumen = rng.uniform(0.32, 0.45) if distal else rng.uniform(0.1, 0.28)
    lumen_edge = lumen * (1 + 0.2 * geo.harmonic(3, rng.uniform(0, 6.3)) + 0.1 * geo.harmonic(5, rng.uniform(0, 6.3)))
    parts = np.full(depth.shape, Part.DISTAL_EPITHELIUM if distal else Part.PROXIMAL_EPITHELIUM, dtype=np.uint8)
    parts[rel < lumen_edge] = Part.TUBULE_LUMEN
    parts[depth < membrane] = Part.TUBULE_MEMBRANE
    cells = max(int(2 * math.pi * geo.outline.radius / 7), 5)
    border = np.abs(geo.harmonic(cells, rng.uniform(0, 6.3)))  # faint radial cell borders
    shade = 0.14 * (border > 0.97)
    if not distal:  # brush border: a darker fuzzy line on the luminal side, fluffy debris in the lumen
        shade = shade + 0.3 * (np.abs(geo.dist - lumen_edge * geo.edge - 0.8) < 1.0) + 0.1 * (rel < lumen_edge)
    spacing = rng.uniform(5.5, 6.5) if distal else rng.uniform(6.5, 8.0)
    nuclei = _ring_nuclei(rng, geo, membrane + 2.9, spacing, (2.6, 2.3), 0.85 if distal else 0.7, TUBULI_ID, 0.85)
    return parts, shade.astype(np.float32), nuclei


def _draw_dilated(rng, geo: _Geometry):
    """Dilated tubule: wide clear lumen lined by flattened epithelium with sparse flat nuclei."""
    depth = geo.depth
    membrane, epithelium = rng.uniform(0.9, 1.4), rng.uniform(1.8, 3.0)
    parts = np.full(depth.shape, Part.DILATED_LUMEN, dtype=np.uint8)
    parts[depth < membrane + epithelium] = Part.DILATED_EPITHELIUM
    parts[depth < membrane] = Part.DILATED_MEMBRANE
    shade = None
    if rng.random() < 0.4:  # faint proteinaceous fluid
        shade = np.where(parts == Part.DILATED_LUMEN, rng.uniform(0.05, 0.15), 0.0).astype(np.float32)
    nuclei = _ring_nuclei(rng, geo, membrane + epithelium / 2, rng.uniform(9, 14), (3.2, 1.3), 0.85, DILATED_TUBULI_ID)
    return parts, shade, nuclei


def _draw_atrophic(rng, geo: _Geometry):
    """Atrophic tubule: small, thick glassy wrinkled basement membrane, low crowded cells, tiny lumen or a cast."""
    depth = geo.depth
    membrane = rng.uniform(1.8, 3.0) * (1 + 0.2 * geo.harmonic(int(rng.integers(5, 9)), rng.uniform(0, 6.3)))
    epithelium = rng.uniform(2.4, 3.8)
    cast = rng.random() < 0.35
    parts = np.full(depth.shape, Part.ATROPHIC_CAST if cast else Part.ATROPHIC_LUMEN, dtype=np.uint8)
    parts[depth < membrane + epithelium] = Part.ATROPHIC_EPITHELIUM
    parts[depth < membrane] = Part.ATROPHIC_MEMBRANE
    shade = (0.18 * np.cos(depth * 3.0) * (depth < membrane)).astype(np.float32)  # layered membrane
    nuclei = _ring_nuclei(
        rng,
        geo,
        float(np.mean(membrane)) + epithelium / 2,
        rng.uniform(4.0, 5.0),
        (1.8, 1.6),
        0.9,
        ATROPHIC_TUBULI_ID,
        density=1.2,
    )
    return parts, shade, nuclei


def _glomerulus_layout(rng, capsule, space, lobulation):
    """Capsule, Bowman's space and a lobulated tuft that meets the capsule at the vascular pole."""
    pole = rng.uniform(0, 2 * np.pi)
    lobes = int(rng.integers(4, 8))
    phases = rng.uniform(0, 6.3, 2)

    def tuft_edge(geo: _Geometry):
        pinch = np.exp(-(1 - np.cos(geo.angle - np.float32(pole))) / np.float32(0.15))
        wave = 1 - lobulation * (geo.harmonic(lobes, phases[0]) - 0.5 * geo.harmonic(lobes + 3, phases[1]))
        return np.minimum((geo.edge - capsule - space * (1 - pinch)) * wave, geo.edge - capsule)

    return tuft_edge


def _draw_glomerulus(rng, geo: _Geometry):
    """Glomerulus: thin Bowman's capsule, clear Bowman's space, lobulated capillary tuft dense with nuclei."""
    r = geo.outline.radius
    capsule = rng.uniform(1.3, 2.2)
    space = rng.uniform(0.07, 0.14) * r + 1.0
    tuft_edge = _glomerulus_layout(rng, capsule, space, rng.uniform(0.04, 0.08))
    parts = np.full(geo.dist.shape, Part.BOWMAN_SPACE, dtype=np.uint8)
    parts[geo.dist < tuft_edge(geo)] = Part.TUFT
    parts[geo.depth < capsule] = Part.BOWMAN_CAPSULE
    o = geo.outline
    tuft_r = o.mean_radius - capsule - space
    count = rng.uniform(0.018, 0.026) * math.pi * tuft_r**2
    sizes = ((1.9, 2.6), (1.6, 2.2))
    tuft = _scattered(rng, o.cy, o.cx, 0.95 * tuft_r, count, sizes, 0.9, GLOMERULI_ID)
    parietal = _ring_nuclei(rng, geo, capsule / 2, rng.uniform(12, 18), (3.0, 1.2), 0.8, GLOMERULI_ID)
    return parts, None, np.concatenate([tuft, parietal])


def _draw_sclerotic(rng, geo: _Geometry):
    """Sclerotic glomerulus: thick layered capsule, narrow or obliterated space, glassy pink scar with few nuclei."""
    r = geo.outline.radius
    capsule = rng.uniform(2.5, 4.5)
    space = rng.uniform(0.0, 0.06) * r
    tuft_edge = _glomerulus_layout(rng, capsule, space, rng.uniform(0.01, 0.03))
    depth, edge = geo.depth, tuft_edge(geo)
    parts = np.full(depth.shape, Part.SCLEROTIC_SPACE, dtype=np.uint8)
    parts[geo.dist < edge] = Part.SCLEROTIC_TUFT
    parts[depth < capsule] = Part.SCLEROTIC_CAPSULE
    lamellae = 0.15 * np.cos(depth * 2.2) * (depth < capsule) + 0.06 * np.cos(geo.dist * 0.7)
    o = geo.outline
    tuft_r = o.mean_radius - capsule - space
    count = 0.003 * math.pi * tuft_r**2 + 1
    nuclei = _scattered(rng, o.cy, o.cx, 0.9 * tuft_r, count, ((1.5, 2.0), (1.3, 1.8)), 1.2, SCLEROTIC_GLOMERULI_ID)
    return parts, lamellae.astype(np.float32), nuclei


def _draw_artery(rng, geo: _Geometry):
    """Artery: fibrous adventitia, concentric smooth-muscle media with elongated nuclei, wavy elastic lamina, lumen."""
    r = geo.outline.radius
    depth = geo.depth
    adventitia = rng.uniform(0.1, 0.16) * r + 1.0
    media = rng.uniform(0.26, 0.38) * r + 1.5
    waves = max(int(r * 0.35), 6)
    inner = adventitia + media + 0.6 * geo.harmonic(waves, rng.uniform(0, 6.3))
    lamina = rng.uniform(0.9, 1.4)
    parts = np.full(depth.shape, Part.ARTERY_LUMEN, dtype=np.uint8)
    parts[depth < inner + lamina] = Part.ELASTIC_LAMINA
    parts[depth < inner] = Part.MEDIA
    parts[depth < adventitia] = Part.ADVENTITIA
    shade = (0.12 * np.cos(depth * 1.6) * (parts == Part.MEDIA)).astype(np.float32)
    o = geo.outline
    mean_r = o.mean_radius
    layers = max(int(media / 3.2), 1)
    muscle = [
        _ring_nuclei(
            rng, geo, adventitia + (i + 0.5) * media / layers, rng.uniform(6, 8), (3.6, 1.2), 0.75, ARTERIES_ID
        )
        for i in range(layers)
    ]
    endothelium = _ring_nuclei(rng, geo, adventitia + media + lamina + 0.8, 10, (2.6, 1.0), 0.7, ARTERIES_ID)
    fibroblasts = _ring_nuclei(rng, geo, adventitia / 2, 14, (3.0, 1.0), 0.6, ARTERIES_ID)
    lumen_r = max(mean_r - adventitia - media - lamina - 1.5, 0.0)
    cells = lumen_r**2 * 0.04 * rng.uniform(0.2, 1.0) if rng.random() < 0.6 else 0
    red_cell = ((1.8, 2.2), (1.8, 2.2))
    blood = _scattered(rng, o.cy, o.cx, lumen_r * 0.85, cells, red_cell, 0.55, ARTERIES_ID, _RED_CHANNEL)
    return parts, shade, np.concatenate(muscle + [endothelium, fibroblasts, blood])


_KINDS: tuple[_Kind, ...] = (  # packing order: largest structures first
    _Kind(GLOMERULI_ID, (28, 70), (0.85, 1.0), 0.08, (2.0, 5.0), _draw_glomerulus),
    _Kind(ARTERIES_ID, (12, 62), (0.75, 1.0), 0.06, (2.0, 5.0), _draw_artery),
    _Kind(SCLEROTIC_GLOMERULI_ID, (24, 58), (0.85, 1.0), 0.08, (2.0, 5.0), _draw_sclerotic),
    _Kind(DILATED_TUBULI_ID, (18, 42), (0.6, 1.0), 0.12, (1.0, 3.0), _draw_dilated),
    _Kind(TUBULI_ID, (13, 26), (0.65, 1.0), 0.15, (0.8, 2.0), _draw_tubule),
    _Kind(ATROPHIC_TUBULI_ID, (6, 12), (0.65, 1.0), 0.12, (1.0, 3.0), _draw_atrophic),
)
_STRUCTURE_IDS = tuple(int(k.label) for k in _KINDS)
"""The classes the phantom packs as structures: those a random composition can lead with."""


def _interstitium(rng: np.random.Generator, parts: np.ndarray) -> np.ndarray:
    """Peritubular capillaries (written into parts) and interstitial cells; returns their stamps."""
    stroma = np.flatnonzero(parts.ravel() == Part.STROMA)
    if stroma.size == 0:
        return np.zeros((0, _STAMP_COLUMNS), np.float32)
    w = parts.shape[1]
    n_caps = int(stroma.size * rng.uniform(0.001, 0.0025))
    at = rng.choice(stroma, n_caps)
    cy, cx = (at // w).astype(np.float32), (at % w).astype(np.float32)
    a, b = rng.uniform(2.2, 4.5, n_caps), rng.uniform(1.4, 2.6, n_caps)
    caps = _stamps(cy, cx, a, b, rng.uniform(0, np.pi, n_caps), 1.0, _RED_CHANNEL, OTHER_TISSUE_ID)
    idx, weight, _ = _footprint(caps, parts.shape)
    hit = idx[(weight > 0.3) & (parts.ravel()[idx] == Part.STROMA)]
    parts.ravel()[hit] = Part.CAPILLARY
    full = rng.random(n_caps) < 0.5
    blood = _stamps(cy[full], cx[full], 1.5, 1.5, 0.0, 0.6, _RED_CHANNEL, OTHER_TISSUE_ID)
    lining = _stamps(cy + b * 1.0, cx, 2.4, 0.9, 0.0, 1.0, _HEMA_CHANNEL, OTHER_TISSUE_ID)[rng.random(n_caps) < 0.5]

    density = rng.uniform(0.0015, 0.0035) * (3.0 if rng.random() < 0.15 else 1.0)  # some tiles are inflamed
    n_cells = int(stroma.size * density)
    at = rng.choice(stroma, n_cells)
    y = (at // w) + rng.uniform(-0.5, 0.5, n_cells)
    x = (at % w) + rng.uniform(-0.5, 0.5, n_cells)
    lymph = rng.random(n_cells) < 0.4
    a = np.where(lymph, rng.uniform(1.6, 2.1, n_cells), rng.uniform(2.6, 3.8, n_cells))
    b = np.where(lymph, a, rng.uniform(0.9, 1.3, n_cells))
    darkness = np.where(lymph, 1.4, 1.0)
    cells = _stamps(y, x, a, b, rng.uniform(0, np.pi, n_cells), darkness, _HEMA_CHANNEL, OTHER_TISSUE_ID)
    return np.concatenate([blood, lining, cells])


# ---------------------------------------------------------------------------------------------- painting

_HEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_EOSIN_OD = np.array([0.12, 0.88, 0.46], dtype=np.float32)
_BLOOD_OD = np.array([0.08, 0.95, 0.72], dtype=np.float32)


def _stain(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Per-tile stain: jittered hematoxylin and eosin colours, strengths and glass tint (batch variation)."""

    def jitter(od, amount):
        v = np.clip(od + rng.normal(0, amount, 3), 0.02, None).astype(np.float32)
        return v / np.linalg.norm(v)

    glass = np.clip(rng.normal(246, 3, 3), 236, 254).astype(np.float32)
    hematoxylin, eosin = jitter(_HEMATOXYLIN_OD, 0.06), jitter(_EOSIN_OD, 0.07)
    return hematoxylin, eosin, glass, rng.uniform(0.75, 1.3), rng.uniform(0.75, 1.3)


@functools.lru_cache(maxsize=64)
def _spectral_filter(h: int, w: int, sigma: float) -> tuple[int, int, np.ndarray]:
    """Gaussian low-pass over the non-negligible corner of a half spectrum: rows kept at each end, columns, gain."""
    cutoff = math.sqrt(math.log(1e4) / (2 * (math.pi * sigma) ** 2))  # gain below 1e-4 beyond this frequency
    fy = sfft.fftfreq(h)
    rows = max(int(np.count_nonzero(np.abs(fy[: (h + 1) // 2]) < cutoff)), 1)
    cols = max(int(np.count_nonzero(sfft.rfftfreq(w) < cutoff)), 1)
    fy = np.concatenate([fy[:rows], fy[h - rows :]]) if 2 * rows < h else fy
    fx = sfft.rfftfreq(w)[:cols]
    gain = np.exp(-2 * (math.pi * sigma) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2)).astype(np.float32)
    return rows, cols, gain


def _noise_fields(rng: np.random.Generator, shape: tuple[int, int], sigmas) -> np.ndarray:
    """Smooth random fields (unit variance) with correlation lengths `sigmas` px, from one batched inverse FFT.

    Random coefficients are drawn only where the low-pass keeps them, so smooth fields cost almost nothing.
    """
    h, w = shape
    spec = np.zeros((len(sigmas), h, w // 2 + 1), dtype=np.complex64)
    for i, sigma in enumerate(sigmas):
        rows, cols, gain = _spectral_filter(h, w, float(sigma))
        coeffs = (rng.random((2,) + gain.shape, dtype=np.float32) - np.float32(0.5)) * gain
        values = coeffs[0] + 1j * coeffs[1]
        if gain.shape[0] == h:
            spec[i, :, :cols] = values
        else:
            spec[i, :rows, :cols] = values[:rows]
            spec[i, h - rows :, :cols] = values[rows:]
    fields = sfft.irfft2(spec, s=shape, axes=(-2, -1)).astype(np.float32, copy=False)
    fields /= fields.std(axis=(1, 2), keepdims=True) + np.float32(1e-12)
    return fields


def _footprint(stamps: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels under all elliptical stamps at once: flat indices, soft-edged weights, stamp row of each."""
    if len(stamps) == 0:
        empty = np.zeros(0, np.int64)
        return empty, np.zeros(0, np.float32), empty
    y, x, a, b, angle = (stamps[:, i][:, None, None] for i in range(5))
    k = int(math.ceil(float(max(stamps[:, 2].max(), stamps[:, 3].max())))) + 1
    off = np.arange(-k, k + 1, dtype=np.float32)
    iy = np.rint(y) + off[None, :, None]
    ix = np.rint(x) + off[None, None, :]
    dy, dx = iy - y, ix - x
    c, s = np.cos(angle), np.sin(angle)
    u, v = (dx * c + dy * s) / a, (dy * c - dx * s) / b
    weight = np.clip(2.0 * (1.0 - (u * u + v * v)), 0.0, 1.0)
    h, w = shape
    inside = (weight > 0) & (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    flat = (iy * w + ix).astype(np.int64)
    rows = np.broadcast_to(np.arange(len(stamps))[:, None, None], inside.shape)
    return flat[inside], weight[inside], rows[inside]


def _stamp_density(rng, stamps, parts, mask) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and red-cell density of all stamps, each kept inside its own structure's label.

    Nuclei also stay out of clear parts (lumen, Bowman's space, glass); red cells may float in them.
    """
    size = parts.size
    idx, weight, rows = _footprint(stamps, parts.shape)
    label_ok = mask.ravel()[idx] == stamps[rows, 7].astype(np.uint8)
    red = stamps[rows, 6] == _RED_CHANNEL
    keep = label_ok & (red | ~_CLEAR[parts.ravel()[idx]])
    chromatin = rng.uniform(0.65, 1.25, idx.size).astype(np.float32)
    value = weight * stamps[rows, 5] * np.where(red, 1.0, chromatin)
    hema = np.bincount(idx[keep & ~red], value[keep & ~red], minlength=size)
    blood = np.bincount(idx[keep & red], value[keep & red], minlength=size)
    return hema.reshape(parts.shape).astype(np.float32), blood.reshape(parts.shape).astype(np.float32)


def _paint(rng, parts: np.ndarray, mask: np.ndarray, shade: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """H&E-like RGB from the parts map: stain densities per part, textures, nuclei, then Beer-Lambert colour."""
    hema_od, eosin_od, glass, hema_gain, eosin_gain = _stain(rng)
    low, mid, mid2, fibre, loops = _noise_fields(rng, parts.shape, (14.0, 2.5, 6.0, 4.5, 1.7))
    fine = (rng.random(parts.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(math.sqrt(12))  # unit variance
    eosin = _EOSIN[parts] * (1 + 0.12 * low) + shade
    hema = _HEMATOXYLIN[parts].copy()
    blood = np.zeros_like(eosin)

    epithelium = _EPITHELIAL[parts]
    eosin[epithelium] *= 1 + 0.12 * mid[epithelium] + 0.1 * fine[epithelium]  # granular cytoplasm
    fibrous = _FIBROUS[parts]
    # collagen fibres: contour lines of a smooth field, broken up by a second one so they do not close into rings
    strands = np.exp(-((fibre / 0.2) ** 2)) * np.clip(0.6 + 0.8 * mid2, 0, 1) * rng.uniform(0.2, 0.45)
    eosin[fibrous] += strands[fibrous]
    stroma = parts == Part.STROMA
    eosin[stroma] *= np.clip(1 + 0.35 * mid[stroma], 0.3, None)  # loose, oedematous patches

    tuft = parts == Part.TUFT
    open_loops = tuft & (loops > 0.25)  # capillary lumina between mesangium
    eosin[open_loops] *= 0.2
    hema[open_loops] *= 0.1
    blood[open_loops & (mid2 > 1.1)] = 0.45
    scar = parts == Part.SCLEROTIC_TUFT
    eosin[scar] -= 0.45 * np.exp(-((mid[scar] / 0.12) ** 2))  # fine clefts in the glassy scar

    nuclei, red_cells = _stamp_density(rng, stamps, parts, mask)
    hema += np.minimum(nuclei, 1.4)
    blood += np.minimum(red_cells, 0.8)
    density = np.stack([hema * hema_gain, np.clip(eosin, 0, None) * eosin_gain, blood])
    focus = rng.uniform(0.5, 0.9)
    density = ndimage.gaussian_filter(density, sigma=(0, focus, focus), truncate=2.5)
    od = np.tensordot(density, np.stack([hema_od, eosin_od, _BLOOD_OD]), axes=(0, 0))  # (H, W, RGB)
    rgb = glass * np.exp(-od) + 2.5 * fine[..., None]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- data set


def file_name(index: int) -> str:
    """File name of pair `index` in a phantom data set, the same under images/ and masks/."""
    return f"{index:06d}.png"


def _write_pair(job: tuple[Path, int, tuple[int, int], int, dict | None, tuple[int, ...] | None, int]) -> dict:
    """Generate phantom `index` (seed + index) and write its pair; returns its captions.jsonl record."""
    out, index, size, seed, composition, lead, context = job
    phantom = generate_phantom(size, seed=seed + index, composition=composition, lead=lead, context=context)
    return layout.write_pair(out, file_name(index), phantom.image, phantom.mask)


def generate_dataset(
    out_dir: str | Path,
    n: int,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    composition: Mapping[str | int, float] | None = None,
    *,
    lead: Sequence[str | int] | None = None,
    context: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write n phantom pairs as a patch data set (renal_ldm.data.layout), with phantom.json, the parameters.

    Pair i is NNNNNN.png and uses seed + i, so `generate_phantom(size, seed + i, composition, lead=lead,
    context=context)` regenerates it alone. A folder that already holds a data set is refused unless overwrite,
    which replaces it (and puts it back if the run fails). progress(k) is called as k more pairs are written.
    Returns the folder.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of phantoms must be a positive integer; got {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}")
    height, width = _check_size(size)
    context = _check_context(context)
    leads = resolve_lead(lead, composition)
    targets = None if composition is None else {by_id(k).name: v for k, v in resolve_composition(composition).items()}
    named = None if composition is None else {_name(k): float(v) for k, v in composition.items()}
    parameters = {
        "generator": "renal_ldm.phantom",
        "version": __version__,
        "n": int(n),
        "size": [height, width],
        "seed": int(seed),
        "composition": named,
        "targets": targets,
        "lead": None if leads is None else [by_id(x).name for x in leads],
        "context": context,
    }
    writer = layout.DatasetWriter(out_dir, overwrite=overwrite, parameters=parameters)
    jobs = ((writer.root, i, (height, width), int(seed), named, leads, context) for i in range(int(n)))
    with writer:
        for record in _run_jobs(jobs, int(n), int(workers)):
            writer.add_written(record)
            if progress is not None:
                progress(1)
    return writer.root


def _name(key: str | int) -> str:
    return (by_id(key) if isinstance(key, (int, np.integer)) else by_name(key)).name


def _run_jobs(jobs, n: int, workers: int) -> Iterator[dict]:
    """Records in index order, from worker processes when more than one worker pays off."""
    workers = min(workers, n)
    if workers == 1:
        yield from map(_write_pair, jobs)
        return
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        context = multiprocessing.get_context("fork")  # cheapest; only safe without other threads (e.g. an app)
    else:
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap(_write_pair, jobs, chunksize=max(1, min(16, n // (workers * 8))))
