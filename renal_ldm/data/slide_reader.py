"""Region-by-region reading of whole-slide images and their masks, so a slide never has to fit in memory.

Three back ends behind one small interface (`RegionReader.read_region`): OpenSlide for the formats it knows
(svs, tif, ndpi, mrxs, ...), tifffile for TIFFs OpenSlide refuses (stripped, or exact label/palette values for
masks: decoded chunk by chunk, never as a whole page), and PIL for plain PNG/JPEG images, which cannot be
decoded partially and are therefore held whole. Every reader records its largest request, so tests can prove
that tiling stays bounded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from renal_ldm.data.masks import LARGE_IMAGE_HINT, mask_pixels

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
_CHUNK_CACHE_BYTES = 64 * 2**20
"""Decoded TIFF tiles/strips kept for neighbouring patches: one row of strips of a wide slide fits."""


class RegionReader(ABC):
    """A slide or mask image as a pyramid of levels, read one rectangle at a time (coordinates of that level).

    A subclass sets `path` and the levels (`_set_levels`) and implements `_read` and `close`; one that forgets
    either method fails at construction (TypeError), not at the first read.
    """

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    def __init__(self) -> None:
        self.requests = 0
        self.max_request = (0, 0)
        """(w, h) of the largest region asked for: tiling tests assert it never exceeds a patch."""

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels (h, w) or (h, w, C) of the rectangle at (x, y) in `level`'s own coordinates."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path}: level {level} does not exist; levels are 0..{self.level_count - 1}")
        lw, lh = self.level_dimensions[level]
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > lw or y + h > lh:
            raise ValueError(f"{self.path}: region x={x} y={y} {w}x{h} lies outside level {level} ({lw}x{lh})")
        self.requests += 1
        if w * h > self.max_request[0] * self.max_request[1]:
            self.max_request = (w, h)
        return self._read(level, x, y, w, h)

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed `downsample`."""
        fits = [i for i, ds in enumerate(self.level_downsamples) if ds <= downsample * (1 + 1e-6)]
        return max(fits, key=lambda i: self.level_downsamples[i], default=0)

    @abstractmethod
    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels of a rectangle already checked to lie inside `level`."""

    @abstractmethod
    def close(self) -> None:
        """Release the file (and any decoded data) the reader holds."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _set_levels(self, dims: list[tuple[int, int]]) -> None:
        w0, h0 = dims[0]
        self.level_dimensions = tuple((int(w), int(h)) for w, h in dims)
        self.level_downsamples = tuple(((w0 / w) + (h0 / h)) / 2 for w, h in self.level_dimensions)


class OpenSlideReader(RegionReader):
    """OpenSlide formats; transparent (unscanned) pixels become white, like glass background."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import openslide

        self.path = Path(path)
        self._slide = openslide.OpenSlide(str(self.path))
        self.level_dimensions = tuple(tuple(d) for d in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)

    def _read(self, level, x, y, w, h):
        ds = self.level_downsamples[level]
        rgba = np.asarray(self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h)))
        alpha = rgba[..., 3:4].astype(np.uint16)
        rgb = rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)
        return (rgb // 255).astype(np.uint8)

    def close(self) -> None:
        self._slide.close()


class TiffReader(RegionReader):
    """Any TIFF via tifffile, decoding only the tiles or strips a region touches (levels = series 0 levels)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(str(self.path))
        except (tifffile.TiffFileError, OSError) as exc:
            raise ValueError(f"{self.path}: not a readable TIFF file ({exc})") from None
        series = self._tif.series[0]
        self._pages = [lvl.keyframe for lvl in series.levels]
        for page in self._pages:
            if page.samplesperpixel > 1 and page.planarconfig != tifffile.PLANARCONFIG.CONTIG:
                raise ValueError(
                    f"{self.path}: planar-separate TIFFs are not supported; save it interleaved (RGBRGB...)"
                )
        self._set_levels([(p.imagewidth, p.imagelength) for p in self._pages])
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0

    @property
    def samples(self) -> int:
        return int(self._pages[0].samplesperpixel)

    def _read(self, level, x, y, w, h):
        page = self._pages[level]
        if page.is_tiled:
            ch, cw = page.tilelength, page.tilewidth
        else:
            ch, cw = page.rowsperstrip or page.imagelength, page.imagewidth
        ncols = -(-page.imagewidth // cw)
        samples = () if page.samplesperpixel == 1 else (page.samplesperpixel,)
        out = np.zeros((h, w) + samples, dtype=page.dtype)
        for r in range(y // ch, (y + h - 1) // ch + 1):
            for c in range(x // cw, (x + w - 1) // cw + 1):
                chunk = self._chunk(level, r * ncols + c)
                cy, cx = r * ch, c * cw
                y0, y1 = max(y, cy), min(y + h, cy + chunk.shape[0])
                x0, x1 = max(x, cx), min(x + w, cx + chunk.shape[1])
                if y1 > y0 and x1 > x0:
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = chunk[y0 - cy : y1 - cy, x0 - cx : x1 - cx]
        return self._colormap(page, out)

    def _chunk(self, level: int, index: int) -> np.ndarray:
        key = (level, index)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        page = self._pages[level]
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        data = None
        if offset and count:
            fh = self._tif.filehandle
            fh.seek(offset)
            data = fh.read(count)
        segment, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        if segment is None:  # a tile the scanner never wrote
            segment = np.zeros(shape, dtype=page.dtype)
        chunk = segment[0]  # (depth=1, h, w, samples) -> (h, w, samples)
        chunk = chunk[..., 0] if chunk.shape[-1] == 1 else chunk
        self._cache[key] = chunk
        self._cache_bytes += chunk.nbytes
        while self._cache_bytes > _CHUNK_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return chunk

    @staticmethod
    def _colormap(page, pixels: np.ndarray) -> np.ndarray:
        import tifffile

        if page.photometric != tifffile.PHOTOMETRIC.PALETTE or page.colormap is None:
            return pixels
        cmap = np.asarray(page.colormap)
        cmap = (cmap >> 8 if cmap.max() > 255 else cmap).astype(np.uint8)
        return np.moveaxis(cmap, 0, -1)[pixels]

    def close(self) -> None:
        self._tif.close()


class PilReader(RegionReader):
    """Plain images (PNG, JPEG, ...): decoded once and held whole, since these formats cannot be read in parts."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self._img = Image.open(self.path)
            self._img.load()  # decodes once; PIL then closes the file
        except Image.DecompressionBombError as exc:
            raise ValueError(
                f"{self.path}: too many pixels to decode as one image ({exc}); {LARGE_IMAGE_HINT}"
            ) from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{self.path}: not a readable image file ({exc})") from None
        self._set_levels([self._img.size])

    @property
    def mode(self) -> str:
        return self._img.mode

    def _read(self, level, x, y, w, h):
        return mask_pixels(self._img.crop((x, y, x + w, y + h)))

    def close(self) -> None:
        self._img.close()


def open_slide(path: str | Path) -> RegionReader:
    """A reader for a tissue slide: OpenSlide where it recognises the file, else tifffile / PIL; RGB required."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide not found: {path}")
    import openslide

    if openslide.OpenSlide.detect_format(str(path)):
        try:
            return OpenSlideReader(path)
        except openslide.OpenSlideError as exc:
            raise ValueError(f"{path}: OpenSlide recognised but could not open the slide ({exc})") from None
    reader = _open_plain(path)
    if isinstance(reader, TiffReader):
        kind, ok = f"{reader.samples} channel(s)", reader.samples in (3, 4)
    else:
        kind, ok = f"PIL mode {reader.mode!r}", reader.mode in ("RGB", "RGBA", "P")
    if not ok:
        reader.close()
        raise ValueError(f"{path}: a slide must be an RGB image; this one has {kind}")
    return reader


def open_mask(path: str | Path) -> RegionReader:
    """A reader for a mask image at full precision (tifffile / PIL, never a lossy OpenSlide conversion)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    return _open_plain(path)


def _open_plain(path: Path) -> RegionReader:
    if path.suffix.lower() in TIFF_SUFFIXES:
        return TiffReader(path)
    return PilReader(path)


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 from slide pixels: alpha composited over white (glass); 16-bit scaled down."""
    arr = np.asarray(pixels)
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"slide pixels of shape {arr.shape}; expected RGB (H, W, 3)")
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.uint16)
        arr = ((arr[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8)
    return arr
