"""Cutting a whole-slide image (and its label mask, at any downsample) into a patch data set.

Why region by region: a slide can be far larger than memory, so each patch, each mask window and the tissue
thumbnail are read through `slide_reader` in pieces no larger than a patch. Tissue is the mask's non-background
labels, or without a mask an Otsu threshold on HSV saturation of a low-resolution view (glass is unsaturated).
The output is the patch data-set format of `layout` (images/, masks/, captions.jsonl), which
`patches.PatchDataset` reads; its rule for an existing data set (refuse, overwrite, append) is layout's too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from renal_ldm.classes import BACKGROUND_ID
from renal_ldm.data.layout import IMAGES_DIR, DatasetWriter
from renal_ldm.data.masks import to_label_mask
from renal_ldm.data.slide_reader import RegionReader, open_mask, open_slide, to_rgb

THUMBNAIL_MAX_SIDE = 2048
"""Long side (at most) of the low-resolution view the Otsu tissue threshold is computed on."""
THUMBNAIL_PIXELS_PER_PATCH = 16
"""...and no finer than this many view pixels per patch side: enough for a tissue fraction, cheap to read."""


@dataclass(frozen=True)
class TilingResult:
    """What a tiling run did; `saturation_threshold` is set when tissue came from Otsu (no mask)."""

    out_dir: Path
    candidates: int
    written: int
    skipped: int
    size: int
    level: int
    stride: int
    mask_downsample: tuple[float, float] | None = None
    saturation_threshold: float | None = None


def tile_slide(
    slide: str | Path | RegionReader,
    out_dir: str | Path,
    *,
    size: int = 256,
    level: int = 0,
    stride: int | None = None,
    mask: str | Path | RegionReader | None = None,
    min_tissue: float = 0.5,
    binary_class: str | None = None,
    zero_is_background: bool = False,
    overwrite: bool = False,
    append: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TilingResult:
    """Write every full `size` patch of `level` (step `stride`, default `size`) with tissue >= `min_tissue`.

    Patch files are named `{slide stem}_{x}_{y}.png` with x, y the patch origin in level-0 pixels. With a mask,
    masks/ holds label PNGs (values 0..7) and captions.jsonl one row per patch. `progress(done, total)` is
    called after each candidate patch. A folder that holds a data set is refused unless `overwrite` (replace
    it; put back if the run fails) or `append` (add this slide's patches, e.g. many slides into one set).
    Pass readers instead of paths to inspect what was read.
    """
    size, stride = int(size), int(stride if stride is not None else size)
    if size < 1 or stride < 1:
        raise ValueError(f"patch size and stride must be positive; got size={size}, stride={stride}")
    if not 0.0 <= float(min_tissue) <= 1.0:
        raise ValueError(f"min_tissue must be a fraction 0..1; got {min_tissue}")
    out_dir = Path(out_dir)

    slide_reader = slide if isinstance(slide, RegionReader) else open_slide(slide)
    mask_reader = None if mask is None else mask if isinstance(mask, RegionReader) else open_mask(mask)
    try:
        grid = list(_grid(slide_reader, level, size, stride))
        ds = slide_reader.level_downsamples[level]
        sampler = tissue = None
        if mask_reader is not None:
            sampler = _MaskSampler(mask_reader, slide_reader.dimensions, binary_class, zero_is_background)
        stem = slide_reader.path.stem
        out = DatasetWriter(
            out_dir,
            with_masks=sampler is not None,
            overwrite=overwrite,
            append=append,
            append_hint="to add this slide's patches",
        )
        if out.appending:
            _check_not_tiled(out.root, stem)
        if sampler is None:
            tissue = _SaturationTissue(slide_reader, chunk=size, patch_extent=size * ds)
        with out:  # only now, with every request checked, may --overwrite set the old data set aside
            written = _write(
                out, slide_reader, grid, level, ds, size, stem, sampler, tissue, float(min_tissue), progress
            )
        return TilingResult(
            out_dir=out.root,
            candidates=len(grid),
            written=written,
            skipped=len(grid) - written,
            size=size,
            level=level,
            stride=stride,
            mask_downsample=None if sampler is None else (sampler.kx, sampler.ky),
            saturation_threshold=None if tissue is None else tissue.threshold,
        )
    finally:
        if not isinstance(slide, RegionReader):
            slide_reader.close()
        if mask_reader is not None and not isinstance(mask, RegionReader):
            mask_reader.close()


def _write(out: DatasetWriter, reader, grid, level, ds, size, stem, sampler, tissue, min_tissue, progress) -> int:
    """Write every candidate patch with enough tissue; returns how many were written."""
    written = 0
    for done, (x, y) in enumerate(grid, 1):
        x0, y0 = round(x * ds), round(y * ds)
        labels = None
        if sampler is not None:
            labels = sampler.labels(x0, y0, size, ds)
            fraction = float(np.count_nonzero(labels != BACKGROUND_ID)) / labels.size
        else:
            fraction = tissue.fraction(x0, y0, size * ds)
        if fraction >= min_tissue:
            rgb = to_rgb(reader.read_region(level, x, y, size, size))
            out.add(f"{stem}_{x0}_{y0}.png", rgb, labels, x=x0, y=y0, level=level, size=size, tissue=round(fraction, 6))
            written += 1
        if progress is not None:
            progress(done, len(grid))
    return written


def _check_not_tiled(root: Path, stem: str) -> None:
    """Appending the same slide twice would duplicate its patches: refused, naming a patch that shows it."""
    pattern = re.compile(rf"{re.escape(stem)}_\d+_\d+\.png")
    images = root / IMAGES_DIR
    clash = next((p for p in images.iterdir() if pattern.fullmatch(p.name)), None) if images.is_dir() else None
    if clash is not None:
        raise FileExistsError(f"cannot append: {clash} shows slide {stem!r} is already tiled into {root}")


def _grid(reader: RegionReader, level: int, size: int, stride: int) -> Iterator[tuple[int, int]]:
    if not 0 <= level < reader.level_count:
        levels = ", ".join(f"{i}: {w}x{h}" for i, (w, h) in enumerate(reader.level_dimensions))
        raise ValueError(f"{reader.path}: no level {level}; the slide has levels {levels}")
    w, h = reader.level_dimensions[level]
    if w < size or h < size:
        raise ValueError(f"{reader.path}: level {level} is {w}x{h}, smaller than the patch size {size}")
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            yield x, y


class _MaskSampler:
    """Label patches from a mask at any downsample k of the slide (mask = slide / k), nearest neighbour."""

    def __init__(self, reader: RegionReader, slide_dims, binary_class, zero_is_background) -> None:
        (sw, sh), (mw, mh) = slide_dims, reader.dimensions
        self.kx, self.ky = sw / mw, sh / mh
        k = max(sw, sh) / max(mw, mh)  # the long side gives the factor most precisely
        if abs(sw / k - mw) > 1.01 or abs(sh / k - mh) > 1.01:  # allow the rounding of slide size / k
            raise ValueError(
                f"{reader.path}: mask {mw}x{mh} is not the slide {sw}x{sh} at one downsample "
                f"(x: {self.kx:.3f}, y: {self.ky:.3f}); expected the slide size divided by one factor k"
            )
        self.reader, self.options = reader, dict(binary_class=binary_class, zero_is_background=zero_is_background)

    def labels(self, x0: int, y0: int, size: int, ds: float) -> np.ndarray:
        """(size, size) uint8 labels of the patch whose level-0 origin is (x0, y0) at level downsample `ds`."""
        centres = (np.arange(size) + 0.5) * ds
        mw, mh = self.reader.dimensions
        cols = np.minimum(((x0 + centres) / self.kx).astype(np.int64), mw - 1)
        rows = np.minimum(((y0 + centres) / self.ky).astype(np.int64), mh - 1)
        c0, r0 = int(cols[0]), int(rows[0])
        window = self.reader.read_region(0, c0, r0, int(cols[-1]) - c0 + 1, int(rows[-1]) - r0 + 1)
        try:
            labels = to_label_mask(window, **self.options)
        except ValueError as exc:
            raise ValueError(f"{self.reader.path} (near mask x={c0}, y={r0}): {exc}") from None
        return labels[np.ix_(rows - r0, cols - c0)]


class _SaturationTissue:
    """Tissue from an Otsu threshold on HSV saturation of a low-resolution view, read in patch-sized chunks."""

    def __init__(self, reader: RegionReader, chunk: int, patch_extent: float) -> None:
        from skimage.filters import threshold_otsu

        w0, h0 = reader.dimensions
        target = max(1.0, max(w0, h0) / THUMBNAIL_MAX_SIDE, patch_extent / THUMBNAIL_PIXELS_PER_PATCH)
        sat, self.downsample = _saturation_thumbnail(reader, chunk, target)
        self.threshold = float(threshold_otsu(sat)) if sat.min() < sat.max() else float(sat.max())
        self.tissue = sat > self.threshold

    def fraction(self, x0: int, y0: int, extent: float) -> float:
        """Tissue share of the level-0 square (x0, y0, extent)."""
        d = self.downsample
        h, w = self.tissue.shape
        c0, r0 = min(int(x0 / d), w - 1), min(int(y0 / d), h - 1)
        c1, r1 = max(c0 + 1, min(w, math.ceil((x0 + extent) / d))), max(r0 + 1, min(h, math.ceil((y0 + extent) / d)))
        return float(self.tissue[r0:r1, c0:c1].mean())


def _saturation_thumbnail(reader: RegionReader, chunk: int, target: float) -> tuple[np.ndarray, float]:
    """HSV saturation (float32) of the slide at about `target` downsample, and its exact downsample."""
    level = reader.best_level_for_downsample(target)
    factor = max(1, int(target / reader.level_downsamples[level]))
    lw, lh = reader.level_dimensions[level]
    tw, th = max(1, lw // factor), max(1, lh // factor)
    step = max(factor, (chunk // factor) * factor)
    sat = np.zeros((th, tw), dtype=np.float32)
    for y in range(0, th * factor, step):
        for x in range(0, tw * factor, step):
            w, h = min(step, tw * factor - x), min(step, th * factor - y)
            rgb = to_rgb(reader.read_region(level, x, y, w, h)).astype(np.float32)
            hi, lo = rgb.max(axis=2), rgb.min(axis=2)
            s = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1), 0.0)
            sat[y // factor : (y + h) // factor, x // factor : (x + w) // factor] = s.reshape(
                h // factor, factor, w // factor, factor
            ).mean(axis=(1, 3))
    return sat, reader.level_downsamples[level] * factor
