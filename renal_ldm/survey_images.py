"""Survey images: upload checks and one normalisation for every image, so nothing but the pixels can tell.

A blind real-vs-synthetic survey is only blind if file names, formats, sizes and metadata carry no hint. Every
image that enters a survey, whatever its source (an upload, a Library sample, a server folder, the demo), goes
through `normalise_image`:

1. decode (first frame only), apply the EXIF orientation, convert to 8-bit RGB (alpha composited on white);
2. center-crop to a square and resize to the survey size (Lanczos; no resize when already that size);
3. re-encode as PNG from a fresh pixel array: no text chunks, no ICC profile, no EXIF, no DPI, same settings
   for every image;

and is then stored under an opaque random name by app/survey_store.py (the database keeps the truth; the file
system and the participant's browser never see it).

Checks (`check_upload`) refuse, with a message naming the file and what was expected: empty files, files over
the size limit, anything Pillow cannot identify as an image, images whose declared size exceeds the pixel
limit (decompression bombs: refused from the header, before any pixel is decoded), and damaged or truncated
image data. No Streamlit, no database and no files written here: gathering the files is app/survey_files.py,
storing them app/survey_store.py.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_SIZE = 256
DEFAULT_COUNT = 20
MIN_SIZE = 32
MAX_SIZE = 2048
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
"""Images declaring more pixels than this are refused unread (a 6300 x 6300 patch is far beyond any survey)."""
EXPECTED = "an image file (PNG, JPEG, TIFF, BMP, WebP)"


class ImageCheckError(ValueError):
    """A file that cannot enter a survey; the message names the file and what was expected."""


@dataclass(frozen=True)
class SurveyImage:
    """A normalised image ready to store: PNG bytes (size x size RGB, no metadata) and where it came from.

    `source` is shown to the researcher only (e.g. an upload's file name); it is never stored or served.
    """

    png: bytes
    source: str


def _mb(n: int) -> str:
    """A byte count for people: '20.0 MB', '12.3 KB', '512 bytes'."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _check_size_arg(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"survey image size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {size!r}")
    return int(size)


def open_checked(name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The decoded first frame of an uploaded file, or ImageCheckError naming the file and what was expected.

    Pillow's own limit (Image.MAX_IMAGE_PIXELS) still applies as a backstop: its DecompressionBombError and
    DecompressionBombWarning are both turned into the same refusal.
    """
    if not data:
        raise ImageCheckError(f"{name}: the file is empty; expected {EXPECTED}")
    if len(data) > max_bytes:
        raise ImageCheckError(f"{name}: the file is {_mb(len(data))}, over the upload limit of {_mb(max_bytes)}; "
                              f"expected {EXPECTED} of at most {_mb(max_bytes)}")
    bomb = (f"{name}: refused as a possible decompression bomb: it declares {{w}} x {{h}} = {{n:,}} pixels, "
            f"more than the limit of {max_pixels:,}; expected an image of at most {max_pixels:,} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:  # reads the header only
                w, h = probe.size
                if w * h > max_pixels:
                    raise ImageCheckError(bomb.format(w=w, h=h, n=w * h))
                probe.verify()  # structure and checksums, without decoding pixels
            image = Image.open(io.BytesIO(data))  # verify() leaves the image unusable: open again
            image.load()  # decodes the pixels: truncated data fails here
    except ImageCheckError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageCheckError(f"{name}: refused as a possible decompression bomb: {exc}; "
                              f"expected an image of at most {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageCheckError(f"{name}: not an image Pillow can read; expected {EXPECTED}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying "damaged"
        raise ImageCheckError(f"{name}: the image data is damaged or truncated ({exc}); "
                              f"expected a complete image file (PNG, JPEG, TIFF, BMP, WebP)") from None
    return image


def check_upload(name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise ImageCheckError if the file cannot enter a survey (see `open_checked`)."""
    open_checked(name, data, max_bytes=max_bytes, max_pixels=max_pixels).close()


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: EXIF orientation applied, alpha composited on white, 16-bit and float scaled to 0..255."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken orientation tag is no reason to refuse the pixels  # noqa: BLE001
        pass
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        image = Image.fromarray(arr.round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def center_square(image: Image.Image, size: int) -> Image.Image:
    """The largest centered square, resized to size x size (Lanczos); untouched when already that size."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if (w, h) != (side, side):
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes from an (H, W, 3) uint8 array, with nothing but the pixels (same settings for every image)."""
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {arr.shape}")
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", compress_level=6)
    return out.getvalue()


def normalise_image(image: Image.Image | np.ndarray, size: int = DEFAULT_SIZE) -> bytes:
    """The survey form of an image: size x size RGB PNG with no metadata (see the module docstring)."""
    size = _check_size_arg(size)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image))
    square = center_square(to_rgb(image), size)
    return encode_png(np.asarray(square))


def normalise_upload(name: str, data: bytes, size: int = DEFAULT_SIZE, *, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> SurveyImage:
    """Check one file and normalise it; ImageCheckError names the file and what was expected."""
    image = open_checked(name, data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        return SurveyImage(normalise_image(image, size), name)
    finally:
        image.close()


def normalise_files(files: Iterable[tuple[str, bytes]], size: int = DEFAULT_SIZE, *,
                    max_bytes: int = DEFAULT_MAX_BYTES,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[SurveyImage], list[str]]:
    """Every file checked and normalised: (images, one error message per refused file), in input order.

    All files are tried, so a researcher sees every problem of a batch at once.
    """
    images: list[SurveyImage] = []
    errors: list[str] = []
    for name, data in files:
        try:
            images.append(normalise_upload(name, data, size, max_bytes=max_bytes, max_pixels=max_pixels))
        except ImageCheckError as exc:
            errors.append(str(exc))
    return images, errors
