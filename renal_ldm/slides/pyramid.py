"""A streamed pyramidal tiled TIFF: a whole-slide image written tile by tile, for OpenSlide and QuPath.

Guarantees (tests/renal_ldm/test_stitch.py):

- The layout OpenSlide opens as a generic tiled TIFF with every level: one tiled page per level in the main
  IFD chain (with SubIFDs OpenSlide sees one level), SubfileType "reduced resolution" on every page after the
  first, each level half the one above (odd sides round up), down to the first level whose longer side fits
  in one tile. Tile sides are multiples of 16 (TIFF requires it; JPEG's 4:2:0 blocks too).
- XResolution/YResolution are pixels per centimetre (ResolutionUnit 3) from `mpp`, scaled per level, so
  OpenSlide reports openslide.mpp-x/-y equal to `mpp` (mpp = 10000 / XResolution).
- Memory does not grow with the slide. Level 0 arrives as full-width strips of any height and is held one
  band of `tile` rows at a time; each lower level is made by 2x2 area averaging of the level above, appended
  to a raw file in a temporary folder beside the output, and written from there a band at a time. Plain
  sequential writes and reads keep those pixels in the page cache, outside this process: a numpy.memmap
  would count every page it touched in the process's RSS until unmapped (a 20480^2 slide's level 1 alone is
  300 MiB).
- deflate (with the horizontal predictor) is lossless: a region read back equals the pixels given. jpeg
  stores YCbCr 4:2:0 at `quality`.
- Atomic: the TIFF is written under a temporary name beside `path` and renamed into place at the end; a
  refused request or a failure leaves `path` as it was, and no temporary file or folder behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np

from renal_ldm import __version__

COMPRESSIONS = ("jpeg", "deflate")
DEFAULT_COMPRESSION = "jpeg"
DEFAULT_QUALITY = 90
DEFAULT_TILE = 512
TILE_GRANULE = 16
CHANNELS = 3
BIGTIFF_ABOVE_BYTES = 2**31
"""Decoded pixels (all levels) above which the file is BigTIFF: classic TIFF offsets stop at 4 GiB, and
compressed tiles of noisy content can come close to their decoded size. Smaller slides stay classic TIFF,
which every reader opens."""

Progress = Callable[[int, int], None]


def check_tile(tile: int) -> int:
    """The tile side if TIFF (and JPEG's 16-pixel MCUs) accept it."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < TILE_GRANULE or tile % TILE_GRANULE:
        raise ValueError(f"tile side must be a positive multiple of {TILE_GRANULE} px; got {tile}")
    return tile


def check_mpp(mpp: float) -> float:
    """Microns per pixel, a positive finite number."""
    if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"mpp (microns per pixel) must be a positive number, e.g. 0.5; got {mpp}")
    return float(mpp)


def check_compression(compression: str, quality: int | None) -> tuple[str, int | None]:
    """(compression, quality): quality defaults to DEFAULT_QUALITY for jpeg and means nothing for deflate."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}; got {compression!r}")
    if compression != "jpeg":
        if quality is not None:
            raise ValueError(f"quality applies to jpeg only; got quality {quality} with {compression} (lossless)")
        return compression, None
    quality = DEFAULT_QUALITY if quality is None else quality
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be an integer from 1 to 100; got {quality}")
    return compression, quality


def level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """(width, height) of every level: halved (rounding up) until the longer side fits in one tile."""
    sizes = [(width, height)]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append(((w + 1) // 2, (h + 1) // 2))
    return sizes


def tile_count(width: int, height: int, tile: int) -> int:
    """Tiles over all levels of a width x height slide: the units of write_pyramid's progress."""
    return sum(-(-w // tile) * -(-h // tile) for w, h in level_sizes(width, height, tile))


def halve(band: np.ndarray) -> np.ndarray:
    """2x2 area average (rounded half up) of an (h, w, 3) uint8 band; an odd last row or column counts twice,
    so every pixel of the next level is the mean of the pixels it covers."""
    h, w = band.shape[:2]
    if h % 2 or w % 2:
        band = np.pad(band, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    acc = band[0::2, 0::2].astype(np.uint16)
    acc += band[1::2, 0::2]
    acc += band[0::2, 1::2]
    acc += band[1::2, 1::2]
    acc += 2
    acc //= 4
    return acc.astype(np.uint8)


def tile_strips(
    tile_at: Callable[[int, int, int, int], np.ndarray], width: int, height: int, tile: int = DEFAULT_TILE
) -> Iterator[np.ndarray]:
    """Full-width strips for write_pyramid from a tile callback `tile_at(x, y, w, h) -> (h, w, 3) uint8`,
    called row by row, left to right, once per tile (edge tiles are cut to the slide): for sources that make
    pixels tile by tile, such as a sampler."""
    check_tile(tile)
    for y in range(0, height, tile):
        h = min(tile, height - y)
        strip = np.empty((h, width, CHANNELS), np.uint8)
        for x in range(0, width, tile):
            w = min(tile, width - x)
            pixels = np.asarray(tile_at(x, y, w, h))
            if pixels.shape != (h, w, CHANNELS):
                raise ValueError(f"tile at x={x}, y={y}: expected shape ({h}, {w}, {CHANNELS}); got {pixels.shape}")
            strip[:, x : x + w] = pixels
        yield strip


def _bands(strips: Iterable[np.ndarray], width: int, height: int, tile: int) -> Iterator[np.ndarray]:
    """Strips of any height -> bands of `tile` rows (the last one shorter), with the strips' shapes checked."""
    pending: list[np.ndarray] = []
    rows = seen = 0
    for i, strip in enumerate(strips):
        strip = np.asarray(strip)
        if strip.dtype != np.uint8 or strip.ndim != 3 or strip.shape[1:] != (width, CHANNELS):
            raise ValueError(
                f"strip {i}: expected uint8 rows of shape (n, {width}, {CHANNELS}); got {strip.dtype} {strip.shape}"
            )
        seen += len(strip)
        if seen > height:
            raise ValueError(f"strips hold more than the slide's {height} rows (strip {i} ends at row {seen})")
        pending.append(strip)
        rows += len(strip)
        while rows >= tile:
            buf = pending[0] if len(pending) == 1 else np.concatenate(pending)
            yield buf[:tile]
            rest = buf[tile:]
            pending = [rest] if len(rest) else []
            rows = len(rest)
    if seen != height:
        raise ValueError(f"strips hold {seen} rows; the slide has {height}")
    if rows:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


def _file_bands(f: BinaryIO, width: int, height: int, tile: int) -> Iterator[np.ndarray]:
    """Bands of `tile` rows read back from a raw level file, in order."""
    f.seek(0)
    for y in range(0, height, tile):
        band = np.empty((min(tile, height - y), width, CHANNELS), np.uint8)
        if f.readinto(memoryview(band).cast("B")) != band.nbytes:
            raise OSError(f"temporary level file {f.name} ended before row {y + len(band)} of {height}")
        yield band


def _tiles(
    bands: Iterable[np.ndarray], tile: int, below: BinaryIO | None, tick: Callable[[], None]
) -> Iterator[np.ndarray]:
    """The tiles of one level, row by row (edge tiles padded by repeating the edge, which keeps JPEG from
    ringing at the slide border), while each band's half-resolution copy is appended to `below`."""
    for band in bands:
        if below is not None:
            below.write(memoryview(halve(band)).cast("B"))
        h = len(band)
        for x in range(0, band.shape[1], tile):
            t = band[:, x : x + tile]
            if t.shape[:2] != (tile, tile):
                t = np.pad(t, ((0, tile - h), (0, tile - t.shape[1]), (0, 0)), mode="edge")
            tick()  # counted when handed over: tifffile closes this generator after the level's last tile
            yield t


def write_pyramid(
    path: str | Path,
    strips: Iterable[np.ndarray],
    width: int,
    height: int,
    *,
    tile: int = DEFAULT_TILE,
    mpp: float = 0.5,
    compression: str = DEFAULT_COMPRESSION,
    quality: int | None = None,
    overwrite: bool = False,
    description: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> list[tuple[int, int]]:
    """Write level 0 from `strips` (full-width uint8 RGB rows, top to bottom, any heights summing to `height`)
    and every lower level, to `path`; returns the level sizes. `progress(done, total)` counts tiles over all
    levels; `workers` is tifffile's encoding threads (None: its own choice)."""
    import tifffile

    path = Path(path)
    check_tile(tile)
    mpp = check_mpp(mpp)
    compression, quality = check_compression(compression, quality)
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be at least 1x1 px; got {width}x{height}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; overwrite it explicitly (--overwrite) or choose another name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no folder {path.parent} to write {path.name} in")

    sizes = level_sizes(width, height, tile)
    total = tile_count(width, height, tile)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    px_per_cm = 1e4 / mpp
    options = {
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": "jpeg" if compression == "jpeg" else "zlib",
        "compressionargs": {"level": quality} if compression == "jpeg" else None,
        "predictor": compression == "deflate",
        "resolutionunit": "CENTIMETER",
        "metadata": None,  # no tifffile JSON in ImageDescription: it would become the slide's comment
        "software": f"renal-ldm {__version__}",
        "maxworkers": workers,
    }
    bigtiff = sum(w * h for w, h in sizes) * CHANNELS > BIGTIFF_ABOVE_BYTES
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with (
            tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.levels.") as work,
            ExitStack() as files,
            tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw,
        ):
            bands: Iterator[np.ndarray] = _bands(strips, width, height, tile)
            above: BinaryIO | None = None
            for k, (w, h) in enumerate(sizes):
                below = None
                if k + 1 < len(sizes):
                    below = files.enter_context(open(Path(work) / f"level{k + 1}.raw", "w+b"))
                tiles = _tiles(bands, tile, below, tick)
                tw.write(
                    tiles,
                    shape=(h, w, CHANNELS),
                    dtype=np.uint8,
                    resolution=(px_per_cm / 2**k, px_per_cm / 2**k),
                    subfiletype=1 if k else 0,
                    description=description if k == 0 else None,
                    **options,
                )
                if k == 0 and next(bands, None) is not None:  # tifffile takes only the tiles it expects
                    raise ValueError(f"strips hold more than the slide's {height} rows")
                if above is not None:  # written: its disk space back now, not at the end
                    above.close()
                    os.unlink(above.name)
                if below is not None:
                    below.flush()
                    bands, above = _file_bands(below, *sizes[k + 1], tile), below
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sizes
