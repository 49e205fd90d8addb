"""Stitching generated patches into one synthetic whole-slide image: a grid of samples as a pyramidal TIFF.

Guarantees (tests/renal_ldm/test_stitch.py):

- Order: a `sample` output folder (one holding manifest.csv) is read in its manifest's order, any other folder
  of images in file-name order; `shuffle:SEED` is a seeded permutation of that list (numpy default_rng), the
  same for the same seed. The first COLS x ROWS samples of the order fill the grid row by row.
- Cell (col, row) holds its sample pixel for pixel at (col * patch width, row * patch height): a region read
  back through OpenSlide equals the source patch exactly with deflate.
- Everything is checked before a pixel is written, each with one error that names the value: a grid the
  samples cannot fill, samples of mixed sizes, an unreadable image, an existing output without `overwrite`.
  The slide is written under a temporary name and renamed at the end (renal_ldm.slides.pyramid), so a refused
  or failed stitch leaves nothing at the output path.
- Memory does not grow with the slide: patches are decoded one grid row at a time and streamed into the
  writer (benchmarks/stitch_memory.py measures it).
- Provenance: `provenance_path(slide)` (the slide's name + PROVENANCE_SUFFIX) is a JSON record of the grid,
  patch size, mpp, order, compression and each cell's source file, with the caption and seed of its sample
  when the manifest or the sample's JSON sidecar holds them. It is written after the slide, atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from renal_ldm import __version__
from renal_ldm.data.layout import IMAGE_SUFFIXES
from renal_ldm.fsutil import write_file_atomically
from renal_ldm.sample_files import MANIFEST_CSV, read_manifest_csv
from renal_ldm.slides.pyramid import (
    DEFAULT_COMPRESSION,
    DEFAULT_TILE,
    Progress,
    check_compression,
    check_mpp,
    check_tile,
    write_pyramid,
)

PROVENANCE_SUFFIX = ".json"
"""The provenance record of `slide.tif` is `slide.tif.json`, beside it (the Slides page reads it)."""
PROVENANCE_FORMAT = "renal-ldm stitched slide"
ORDER_MANIFEST = "manifest"
ORDER_SHUFFLE = "shuffle"
SLIDE_SUFFIXES = (".tif", ".tiff")

_GRID = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")
_SHUFFLE = re.compile(rf"{ORDER_SHUFFLE}:(\d+)")


@dataclass(frozen=True)
class Sample:
    """One patch file, with the caption and seed it was generated from when known."""

    path: Path
    caption: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class StitchResult:
    """What a stitch wrote: grid and patch as (columns, rows) and (width, height), level sizes in pixels."""

    out: Path
    provenance: Path
    grid: tuple[int, int]
    patch: tuple[int, int]
    levels: list[tuple[int, int]]
    used: int
    available: int
    order: str
    source_order: str


def provenance_path(slide: str | Path) -> Path:
    """Where the provenance record of `slide` lives."""
    slide = Path(slide)
    return slide.with_name(slide.name + PROVENANCE_SUFFIX)


def parse_grid(grid: str | Sequence[int]) -> tuple[int, int]:
    """'COLSxROWS' (or a (cols, rows) pair) -> (cols, rows), both >= 1."""
    if isinstance(grid, str):
        m = _GRID.fullmatch(grid)
        cols, rows = (int(m[1]), int(m[2])) if m else (0, 0)
    else:
        cols, rows = tuple(grid) if len(grid) == 2 else (0, 0)
    if not (isinstance(cols, int) and isinstance(rows, int) and cols >= 1 and rows >= 1):
        raise ValueError(f"grid must be COLSxROWS with integers >= 1, e.g. 40x40; got {grid!r}")
    return cols, rows


def parse_order(order: str) -> int | None:
    """'manifest' -> None; 'shuffle:SEED' -> SEED."""
    if order == ORDER_MANIFEST:
        return None
    m = _SHUFFLE.fullmatch(order)
    if not m:
        raise ValueError(
            f"order must be {ORDER_MANIFEST} or {ORDER_SHUFFLE}:SEED (SEED an integer >= 0); got {order!r}"
        )
    return int(m[1])


def list_samples(folder: str | Path, exclude: Path | None = None) -> tuple[list[Sample], str]:
    """The samples of a folder in their own order, and where that order came from ('manifest.csv' or 'file
    names'). `exclude` (the output slide) is never a sample of its own folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"samples folder {folder} is not a directory")
    if (folder / MANIFEST_CSV).is_file():
        samples = []
        for i, row in enumerate(read_manifest_csv(folder)):
            if not row.get("image"):
                raise ValueError(f"{folder / MANIFEST_CSV} row {i + 2} names no image (expected an 'image' column)")
            path = folder / row["image"]
            if not path.is_file():
                raise FileNotFoundError(f"{folder / MANIFEST_CSV} row {i + 2} lists {row['image']}; no such file")
            samples.append(_with_sidecar(Sample(path, row.get("caption"), _int_or_none(row.get("seed")))))
        return samples, MANIFEST_CSV
    skip = exclude.resolve() if exclude is not None else None
    paths = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() != skip
    )
    return [_with_sidecar(Sample(p)) for p in paths], "file names"


def order_samples(samples: list[Sample], order: str) -> list[Sample]:
    """The samples in the order asked for: as listed, or a permutation seeded by shuffle:SEED."""
    seed = parse_order(order)
    if seed is None:
        return list(samples)
    return [samples[i] for i in np.random.default_rng(seed).permutation(len(samples))]


def patch_size(samples: list[Sample]) -> tuple[int, int]:
    """The one (width, height) all samples share, read from file headers without decoding pixels."""
    sizes: dict[tuple[int, int], list[Path]] = {}
    for s in samples:
        sizes.setdefault(_image_size(s.path), []).append(s.path)
    if len(sizes) > 1:
        found = "; ".join(
            f"{w}x{h} px: {len(paths)} (e.g. {paths[0].name})"
            for (w, h), paths in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        )
        raise ValueError(f"samples must all be the same size; found {found}")
    return next(iter(sizes))


def stitch_slide(
    samples: str | Path,
    out: str | Path,
    grid: str | Sequence[int],
    *,
    mpp: float = 0.5,
    compression: str = DEFAULT_COMPRESSION,
    quality: int | None = None,
    tile: int = DEFAULT_TILE,
    order: str = ORDER_MANIFEST,
    overwrite: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> StitchResult:
    """Lay the first COLS x ROWS samples of `samples` (a folder) out on the grid and write them to `out` as a
    pyramidal TIFF at `mpp`, with its provenance record beside it."""
    folder, out = Path(samples), Path(out)
    cols, rows = parse_grid(grid)
    parse_order(order)
    check_tile(tile)
    mpp = check_mpp(mpp)
    compression, quality = check_compression(compression, quality)
    if out.suffix.lower() not in SLIDE_SUFFIXES:
        raise ValueError(f"output slide must end in {' or '.join(SLIDE_SUFFIXES)}; got {out.name}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    listed, source_order = list_samples(folder, exclude=out)
    need = cols * rows
    if len(listed) < need:
        raise ValueError(f"grid {cols}x{rows} needs {need} samples; {folder} holds {len(listed)}")
    pw, ph = patch_size(listed)
    cells = order_samples(listed, order)[:need]
    width, height = cols * pw, rows * ph

    levels = write_pyramid(
        out,
        _grid_rows(cells, cols, rows, pw, ph),
        width,
        height,
        tile=tile,
        mpp=mpp,
        compression=compression,
        quality=quality,
        overwrite=overwrite,
        description=f"renal-ldm synthetic slide: {cols}x{rows} patches of {pw}x{ph} px",
        progress=progress,
        workers=workers,
    )
    record = {
        "format": PROVENANCE_FORMAT,
        "renal_ldm_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "slide": out.name,
        "samples": str(folder.resolve()),
        "grid": {"cols": cols, "rows": rows},
        "patch": {"width": pw, "height": ph},
        "size": {"width": width, "height": height},
        "levels": [{"width": w, "height": h} for w, h in levels],
        "mpp": mpp,
        "tile": tile,
        "compression": compression,
        "quality": quality,
        "order": order,
        "source_order": source_order,
        "used": need,
        "available": len(listed),
        "cells": [_cell(i, s, cols, pw, ph) for i, s in enumerate(cells)],
    }
    provenance = provenance_path(out)
    write_file_atomically(provenance, json.dumps(record, indent=2) + "\n")
    return StitchResult(out, provenance, (cols, rows), (pw, ph), levels, need, len(listed), order, source_order)


def _grid_rows(cells: list[Sample], cols: int, rows: int, pw: int, ph: int) -> Iterator[np.ndarray]:
    """One full-width strip per grid row, decoded only when the writer asks for it."""
    for r in range(rows):
        strip = np.empty((ph, cols * pw, 3), np.uint8)
        for c, sample in enumerate(cells[r * cols : (r + 1) * cols]):
            with Image.open(sample.path) as im:
                pixels = np.asarray(im.convert("RGB"))
            if pixels.shape != (ph, pw, 3):
                raise ValueError(f"{sample.path} is now {pixels.shape[1]}x{pixels.shape[0]} px; expected {pw}x{ph}")
            strip[:, c * pw : (c + 1) * pw] = pixels
        yield strip


def _cell(i: int, sample: Sample, cols: int, pw: int, ph: int) -> dict[str, Any]:
    col, row = i % cols, i // cols
    cell: dict[str, Any] = {"col": col, "row": row, "x": col * pw, "y": row * ph, "file": sample.path.name}
    if sample.caption is not None:
        cell["caption"] = sample.caption
    if sample.seed is not None:
        cell["seed"] = sample.seed
    return cell


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc})") from None


def _with_sidecar(sample: Sample) -> Sample:
    """Caption and seed from the sample's JSON sidecar (`sample` writes one per image) where it has them."""
    sidecar = sample.path.with_suffix(".json")
    if not sidecar.is_file():
        return sample
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return sample  # a foreign or broken JSON file is not provenance; the image itself is still usable
    if not isinstance(meta, dict):
        return sample
    caption = meta.get("caption") if isinstance(meta.get("caption"), str) else sample.caption
    seed = _int_or_none(meta.get("seed"))
    return Sample(sample.path, caption, sample.seed if seed is None else seed)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None
