"""Regions of a slide and the binary masks painted on them.

Guarantees (tests/renal_ldm/test_annotations.py):

- `region_grid(width, height, side)` cuts a slide's full-resolution plane into cells of `side` px, row by row;
  edge cells are cut to the slide, so the cells cover every pixel exactly once.
- A mask file is a PNG (mode L, 0 or 255) of exactly the region's size; `read_mask` returns a bool array and
  refuses a file of another size or with other values, naming the file, so a damaged file is never taken as a
  mask. `write_mask` writes next to the target and renames it into place: a file is whole or absent.
- `count_components` counts glomeruli the way the page reports them: 8-connected components of painted pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_REGION_SIDE = 512
"""The side of an annotation region at full resolution (the reference study's patch size)."""
REGION_SIDES = (64, 128, 256, 512, 1024)
"""The region sides the app offers, for annotating and for viewing a slide's regions."""
MAX_REGION_SIDE = 2048


@dataclass(frozen=True, order=True)
class RegionBox:
    """A rectangle of the slide's full-resolution plane: (x, y) its top-left pixel, (w, h) its size."""

    x: int
    y: int
    w: int
    h: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.h, self.w

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(minx, miny, maxx, maxy) in pixel-corner coordinates."""
        return self.x, self.y, self.x + self.w, self.y + self.h

    def label(self) -> str:
        return f"x {self.x}-{self.x + self.w}, y {self.y}-{self.y + self.h}"


def check_side(side: object) -> int:
    if isinstance(side, bool) or not isinstance(side, int | np.integer) or not 1 <= side <= MAX_REGION_SIDE:
        raise ValueError(f"region side must be a whole number of pixels from 1 to {MAX_REGION_SIDE}; got {side!r}")
    return int(side)


def grid_shape(width: int, height: int, side: int) -> tuple[int, int]:
    """(columns, rows) of the grid of `side` px over a width x height slide."""
    side = check_side(side)
    return max(1, math.ceil(width / side)), max(1, math.ceil(height / side))


def region_at(width: int, height: int, side: int, col: int, row: int) -> RegionBox:
    """Cell (col, row) of the grid; edge cells are cut to the slide."""
    cols, rows = grid_shape(width, height, side)
    if not (0 <= col < cols and 0 <= row < rows):
        raise ValueError(f"region ({col}, {row}) is outside the {cols}x{rows} grid of {side} px regions")
    x, y = col * side, row * side
    return RegionBox(x, y, min(side, width - x), min(side, height - y))


def region_grid(width: int, height: int, side: int) -> list[RegionBox]:
    """Every cell of the grid, row by row."""
    cols, rows = grid_shape(width, height, side)
    return [region_at(width, height, side, c, r) for r in range(rows) for c in range(cols)]


def cell_of(box: RegionBox, side: int) -> tuple[int, int] | None:
    """(col, row) when `box` is a cell of the grid of `side` px, else None."""
    if box.x % side or box.y % side:
        return None
    return box.x // side, box.y // side


def empty_mask(box: RegionBox) -> np.ndarray:
    return np.zeros(box.shape, dtype=bool)


def count_components(mask: np.ndarray) -> int:
    """8-connected components of painted pixels (one glomerulus each)."""
    from skimage.measure import label

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0
    return int(label(mask, connectivity=2).max())


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """The mask as PNG (mode L, 0/255), written beside `path` and renamed into place."""
    path = Path(path)
    pixels = np.asarray(mask, dtype=bool)
    if pixels.ndim != 2:
        raise ValueError(f"a mask is a 2-D array; got shape {pixels.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        Image.fromarray(pixels.astype(np.uint8) * 255, mode="L").save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read_mask(path: str | Path, box: RegionBox) -> np.ndarray:
    """The bool mask stored at `path` for region `box`; ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L") if img.mode != "L" else img)
    except FileNotFoundError:
        raise FileNotFoundError(f"mask file {path} is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"mask file {path} is not a readable PNG ({exc})") from None
    if pixels.shape != box.shape:
        raise ValueError(f"mask file {path} is {pixels.shape[1]}x{pixels.shape[0]} px; its region is {box.w}x{box.h}")
    values = np.unique(pixels)
    if not set(values.tolist()) <= {0, 255}:
        raise ValueError(f"mask file {path} holds values {values[:8].tolist()}; expected 0 and 255 only")
    return pixels > 0
