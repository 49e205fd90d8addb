"""What a whole-slide file is, read through OpenSlide, and the pixels the Slides page shows from it.

Guarantees (tests/renal_ldm/test_slide_info.py):

- `describe_slide(path)` gives the level-0 size, every level's size and downsample, `openslide.mpp-x` (None
  when the file records none) and the provenance sidecar beside the file (`provenance_path`) when there is one.
- A missing path, a folder, an unreadable file, or a file OpenSlide does not recognise as a slide: one
  SlideFileError (a ValueError) that names the path and says what was expected. Nothing else is raised for
  a bad file.
- A sidecar that is not a JSON object does not make the slide unusable: provenance is None and
  `provenance_error` says why.
- `slide_kind(provenance)`: "stitched" or "generated" for the sidecars `renal-ldm stitch` and
  `renal-ldm sample-slide` write, "registered" for anything else.
- `overview(path, max_side)` is at most `max_side` px on its longer side (never enlarged), made from the
  smallest level at least `max_side` px long (else level 0) that holds at most OVERVIEW_MAX_SOURCE_PIXELS,
  else the lowest level within that bound. It is read in bands of at most OVERVIEW_BAND_PIXELS, so memory
  stays bounded; a slide whose lowest level is above the bound is refused by name instead of read for minutes.
- `read_region(path, x, y, w, h, level)`: RGB pixels of a rectangle in that level's own coordinates (as
  renal_ldm.data.slide_reader reads them: transparent pixels become white); a rectangle outside the level or
  above MAX_REGION_PIXELS is refused by name. Tiles that cannot be decoded (a damaged file) are a
  SlideFileError too, for the overview as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from renal_ldm.data.slide_reader import OpenSlideReader
from renal_ldm.slides.stitch import PROVENANCE_FORMAT as STITCHED_FORMAT
from renal_ldm.slides.stitch import provenance_path

GENERATED_FORMAT = "renal-ldm generated slide"
"""The "format" of the sidecar `renal-ldm sample-slide` writes (renal_ldm.slides.generate imports it from here:
this module stays free of torch)."""
STITCHED, GENERATED, REGISTERED = "stitched", "generated", "registered"
KINDS = (STITCHED, GENERATED, REGISTERED)
KIND_BY_FORMAT = {STITCHED_FORMAT: STITCHED, GENERATED_FORMAT: GENERATED}

EXPECTED = (
    "expected a whole-slide image that OpenSlide reads: a pyramidal tiled TIFF (as `renal-ldm stitch` writes), "
    ".svs, .ndpi, .mrxs, ..."
)
DEFAULT_OVERVIEW_SIDE = 1024
OVERVIEW_BAND_PIXELS = 4 * 2**20
"""Pixels of the lowest level decoded at once while making an overview (16 MiB as RGBA)."""
OVERVIEW_MAX_SOURCE_PIXELS = 8192 * 8192
"""A lowest level larger than this (a slide without a pyramid) gets no overview: reading it would take minutes."""
MAX_REGION_PIXELS = 2048 * 2048
"""The largest region read_region returns (16 MiB decoded as RGBA by OpenSlide)."""


class SlideFileError(ValueError):
    """A path that is not a slide this product can read; the message names the path and what was expected."""


@dataclass(frozen=True)
class SlideInfo:
    """A slide file as OpenSlide reads it, with its provenance sidecar."""

    path: Path
    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    vendor: str | None
    provenance: dict[str, Any] | None
    provenance_error: str | None = None

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def kind(self) -> str:
        return slide_kind(self.provenance)


def slide_kind(provenance: dict[str, Any] | None) -> str:
    """stitched / generated for the product's own sidecars, registered for any other slide."""
    fmt = provenance.get("format") if isinstance(provenance, dict) else None
    return KIND_BY_FORMAT.get(fmt, REGISTERED) if isinstance(fmt, str) else REGISTERED


def check_slide_file(path: str | os.PathLike) -> Path:
    """The path if it is a readable file OpenSlide recognises; SlideFileError naming it otherwise."""
    import openslide

    path = Path(path).expanduser()
    if not path.exists():
        raise SlideFileError(f"slide file {path} does not exist; {EXPECTED}")
    if not path.is_file():
        raise SlideFileError(f"{path} is not a file (a folder?); {EXPECTED}")
    if not os.access(path, os.R_OK):
        raise SlideFileError(f"slide file {path} cannot be read (permission denied)")
    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideFileError(f"{path} cannot be read as a slide ({exc}); {EXPECTED}") from None
    if fmt is None:
        raise SlideFileError(f"{path} is not a slide OpenSlide recognises; {EXPECTED}")
    return path


def _reader(path: str | os.PathLike) -> OpenSlideReader:
    import openslide

    path = check_slide_file(path)
    try:
        return OpenSlideReader(path)
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideFileError(
            f"{path}: OpenSlide recognised the file but could not open it ({exc}); {EXPECTED}"
        ) from None


def describe_slide(path: str | os.PathLike) -> SlideInfo:
    """Size, levels, mpp and provenance of a slide file (see the module's guarantees)."""
    import openslide

    path = check_slide_file(path)
    try:
        with openslide.OpenSlide(str(path)) as slide:
            dims = tuple((int(w), int(h)) for w, h in slide.level_dimensions)
            downsamples = tuple(float(d) for d in slide.level_downsamples)
            properties = dict(slide.properties)
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideFileError(
            f"{path}: OpenSlide recognised the file but could not open it ({exc}); {EXPECTED}"
        ) from None
    provenance, why = read_provenance(path)
    return SlideInfo(
        path=path,
        width=dims[0][0],
        height=dims[0][1],
        level_dimensions=dims,
        level_downsamples=downsamples,
        mpp=_positive_float(properties.get(openslide.PROPERTY_NAME_MPP_X)),
        vendor=properties.get(openslide.PROPERTY_NAME_VENDOR),
        provenance=provenance,
        provenance_error=why,
    )


def read_provenance(slide: str | os.PathLike) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) from the sidecar beside `slide`; (None, None) without one; (None, why) for a sidecar
    that is not a JSON object."""
    sidecar = provenance_path(slide)
    if not sidecar.is_file():
        return None, None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"provenance file {sidecar} is not readable JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"provenance file {sidecar} holds a JSON {type(record).__name__}, not an object"
    return record, None


def overview(path: str | os.PathLike, max_side: int = DEFAULT_OVERVIEW_SIDE) -> Image.Image:
    """An RGB image of the whole slide, at most `max_side` px on its longer side, from the lowest level."""
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"overview side must be a positive number of pixels; got {max_side!r}")
    import openslide

    with _reader(path) as reader:
        level = overview_level(reader.level_dimensions, max_side)
        lw, lh = reader.level_dimensions[level]
        if lw * lh > OVERVIEW_MAX_SOURCE_PIXELS:
            raise SlideFileError(
                f"{reader.path}: its smallest level is {lw}x{lh} px, too large for an overview (at most "
                f"{OVERVIEW_MAX_SOURCE_PIXELS} pixels); expected a pyramidal slide (regions can still be opened)"
            )
        scale = min(1.0, max_side / max(lw, lh))
        ow, oh = max(1, round(lw * scale)), max(1, round(lh * scale))
        out = Image.new("RGB", (ow, oh), "white")
        band = max(1, OVERVIEW_BAND_PIXELS // lw)
        try:
            for y0 in range(0, lh, band):
                y1 = min(lh, y0 + band)
                t0, t1 = round(y0 * scale), round(y1 * scale) if y1 < lh else oh
                if t1 <= t0:
                    continue
                pixels = Image.fromarray(reader.read_region(level, 0, y0, lw, y1 - y0))
                out.paste(pixels.resize((ow, t1 - t0), Image.Resampling.BOX), (0, t0))
        except openslide.OpenSlideError as exc:
            raise SlideFileError(
                f"{reader.path}: level {level} cannot be decoded ({exc}); the file is damaged"
            ) from None
        return out


def overview_level(level_dimensions: tuple[tuple[int, int], ...], max_side: int) -> int:
    """The level an overview of `max_side` px is made from (see the module's guarantees)."""
    within = [i for i, (w, h) in enumerate(level_dimensions) if w * h <= OVERVIEW_MAX_SOURCE_PIXELS]
    if not within:
        return len(level_dimensions) - 1
    large_enough = [i for i in within if max(level_dimensions[i]) >= max_side]
    return max(large_enough) if large_enough else min(within)


def read_region(path: str | os.PathLike, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 pixels of the rectangle at (x, y) of `level`, in that level's own pixel coordinates."""
    for name, value in (("x", x), ("y", y), ("width", w), ("height", h), ("level", level)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"region {name} must be an integer number of pixels; got {value!r}")
    if w * h > MAX_REGION_PIXELS:
        raise ValueError(f"region {w}x{h} px is larger than the {MAX_REGION_PIXELS} pixels read at once")
    import openslide

    with _reader(path) as reader:
        try:
            return reader.read_region(int(level), int(x), int(y), int(w), int(h))
        except openslide.OpenSlideError as exc:
            raise SlideFileError(
                f"{reader.path}: the region x={x} y={y} {w}x{h} of level {level} cannot be decoded ({exc}); "
                "the file is damaged"
            ) from None


def _positive_float(text: object) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None
