"""Cutting a whole-slide image (and its label mask, at any downsample) into a patch data set.

Why region by region: a slide can be far larger than memory, so each patch, each mask window and the tissue
thumbnail are read through `slide_reader` in pieces no larger than a patch. Tissue is the mask's non-background
labels, or without a mask an Otsu threshold on HSV saturation of a low-resolution view (glass is unsaturated).
The output is the folder format `patches.PatchDataset` reads: images/, masks/, captions.jsonl.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from renal_ldm.captions import mask_fractions, mask_to_caption
from renal_ldm.classes import BACKGROUND_ID, by_id
from renal_ldm.data.masks import to_label_mask
from renal_ldm.data.slide_reader import RegionReader, open_mask, open_slide, to_rgb

CAPTIONS_FILE = "captions.jsonl"
CACHE_FILE = ".captions-cache.jsonl"
"""The caption cache `patches.PatchDataset` keeps beside a data set; removed when tiling overwrites it."""
IMAGES_DIR, MASKS_DIR = "images", "masks"
THUMBNAIL_MAX_SIDE = 2048
"""Long side (at most) of the low-resolution view the Otsu tissue threshold is computed on."""
THUMBNAIL_PIXELS_PER_PATCH = 16
"""...and no finer than this many view pixels per patch side: enough for a tissue fraction, cheap to read."""
PNG_COMPRESS_LEVEL = 1
"""zlib level for patch PNGs: on real PAS patches 40% faster to write than the default 6, files 10% larger."""


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
    called after each candidate patch. A non-empty `out_dir` is refused unless `overwrite` (replace its data
    set) or `append` (add this slide's patches, e.g. many slides into one set). Pass readers instead of paths
    to inspect what was read.
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
        out = _Output(out_dir, stem, with_masks=sampler is not None, overwrite=overwrite, append=append)
        if sampler is None:
            tissue = _SaturationTissue(slide_reader, chunk=size, patch_extent=size * ds)
        out.prepare()  # only now, with every request checked, may --overwrite delete the old data set
        return _write(out, slide_reader, grid, level, ds, size, stride, stem, sampler, tissue, float(min_tissue), progress)
    finally:
        if not isinstance(slide, RegionReader):
            slide_reader.close()
        if mask_reader is not None and not isinstance(mask, RegionReader):
            mask_reader.close()


def _write(out: _Output, reader, grid, level, ds, size, stride, stem, sampler, tissue, min_tissue, progress):
    written = 0
    try:
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
                row = {"x": x0, "y": y0, "level": level, "size": size, "tissue": round(fraction, 6)}
                out.add(f"{stem}_{x0}_{y0}.png", rgb, labels, row)
                written += 1
            if progress is not None:
                progress(done, len(grid))
        out.commit()
    except BaseException:
        out.rollback()
        raise
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


class _Output:
    """The output data set: refuses to clobber, appends another slide on request, undoes a failed run."""

    def __init__(self, root: Path, stem: str, with_masks: bool, overwrite: bool, append: bool) -> None:
        """Checks only; nothing is changed on disk before `prepare`."""
        self.root, self.with_masks, self.replace = root, with_masks, False
        self.images, self.masks, self.captions = root / IMAGES_DIR, root / MASKS_DIR, root / CAPTIONS_FILE
        self.rows: list[dict] = []
        self.files: list[Path] = []
        self.backup: Path | None = None  # the replaced data set, kept until this run commits
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"output {root} exists and is not a folder")
        if root.is_dir() and any(root.iterdir()):
            if overwrite:
                self.replace = True
            elif append:
                self._check_append(stem)
            else:
                raise FileExistsError(
                    f"output folder {root} is not empty; choose a new folder, pass --append (append=True) to add "
                    f"this slide's patches, or --overwrite (overwrite=True) to replace its {IMAGES_DIR}/, "
                    f"{MASKS_DIR}/ and {CAPTIONS_FILE}"
                )

    def prepare(self) -> None:
        if self.replace:  # set aside, not deleted: a run that fails half-way (e.g. a bad mask region) restores it
            self.backup = self.root / f".{IMAGES_DIR}-replaced.{os.getpid()}"
            shutil.rmtree(self.backup, ignore_errors=True)
            self.backup.mkdir()
            for path in self._replaced():
                if path.exists():
                    os.replace(path, self.backup / path.name)
        self.images.mkdir(parents=True, exist_ok=True)
        if self.with_masks:
            self.masks.mkdir(exist_ok=True)

    def _check_append(self, stem: str) -> None:
        has_masks = self.masks.is_dir()
        if has_masks != self.with_masks:
            have = "has masks" if has_masks else "has no masks"
            this = "has a mask" if self.with_masks else "has no mask"
            raise ValueError(f"cannot append to {self.root}: it {have} and this run {this}; use one kind per data set")
        pattern = re.compile(rf"{re.escape(stem)}_\d+_\d+\.png")
        names = self.images.iterdir() if self.images.is_dir() else ()
        clash = next((p for p in names if pattern.fullmatch(p.name)), None)
        if clash is not None:
            raise FileExistsError(f"cannot append: {clash} shows slide {stem!r} is already tiled into {self.root}")

    def add(self, name: str, rgb: np.ndarray, labels: np.ndarray | None, row: dict) -> None:
        self.files.append(self.images / name)
        Image.fromarray(rgb).save(self.images / name, compress_level=PNG_COMPRESS_LEVEL)
        if labels is not None:
            self.files.append(self.masks / name)
            Image.fromarray(labels).save(self.masks / name, compress_level=PNG_COMPRESS_LEVEL)
            fractions = mask_fractions(labels)
            self.rows.append(
                {
                    "file": name,
                    "caption": mask_to_caption(labels),
                    "fractions": {by_id(k).name: round(v, 6) for k, v in fractions.items()},
                    **row,
                }
            )

    def _replaced(self) -> tuple[Path, ...]:
        return (self.images, self.masks, self.captions, self.root / CACHE_FILE)

    def commit(self) -> None:
        """captions.jsonl is replaced in one step, with earlier slides' rows kept in front."""
        if self.with_masks:
            old = self.captions.read_text(encoding="utf-8") if self.captions.is_file() else ""
            if old and not old.endswith("\n"):
                old += "\n"
            tmp = self.root / f"{CAPTIONS_FILE}.{os.getpid()}.tmp"
            tmp.write_text(old + "".join(json.dumps(r) + "\n" for r in self.rows), encoding="utf-8")
            os.replace(tmp, self.captions)
        if self.backup is not None:
            shutil.rmtree(self.backup, ignore_errors=True)
            self.backup = None

    def rollback(self) -> None:
        """Remove exactly the files this run wrote; earlier slides of an appended data set stay, and a data set
        this run was replacing is put back."""
        for path in self.files:
            path.unlink(missing_ok=True)
        if self.backup is not None:
            for path in self._replaced():
                kept = self.backup / path.name
                if kept.exists():
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    os.replace(kept, path)
            shutil.rmtree(self.backup, ignore_errors=True)
            self.backup = None


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
