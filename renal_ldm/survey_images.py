"""Survey images: upload checks and one normalisation for every image, so nothing but the pixels can tell.

A blind real-vs-synthetic survey is only blind if file names, formats, sizes and metadata carry no hint. Every
image that enters a survey, whatever its source (an upload, a Library sample, a server folder, the demo), goes
through `normalise_image`:

1. decode (first frame only), apply the EXIF orientation, convert to 8-bit RGB (alpha composited on white);
2. center-crop to a square and resize to the survey size (Lanczos; no resize when already that size);
3. re-encode as PNG from a fresh pixel array: no text chunks, no ICC profile, no EXIF, no DPI, same settings
   for every image;

and is stored under an opaque random name, `survey/<random folder>/<random id>.png` under the data directory.
The database keeps the truth; the file system and the participant's browser never see it.

Checks (`check_upload`) refuse, with a message naming the file and what was expected: empty files, files over
the size limit, anything Pillow cannot identify as an image, images whose declared size exceeds the pixel
limit (decompression bombs: refused from the header, before any pixel is decoded), and damaged or truncated
image data. No Streamlit and no database here; `create_image_survey` reaches the database lazily.
"""

from __future__ import annotations

import io
import os
import random
import secrets
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from renal_ldm.paths import data_home, data_subdir

SURVEY_DIR = "survey"
DEFAULT_SIZE = 256
DEFAULT_COUNT = 20
MIN_SIZE = 32
MAX_SIZE = 2048
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
"""Images declaring more pixels than this are refused unread (a 6300 x 6300 patch is far beyond any survey)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
"""What a server folder is scanned for (uploads are checked by content, never by name)."""
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


def folder_files(folder: str | os.PathLike, *, limit: int | None = None) -> list[tuple[str, bytes]]:
    """(name, bytes) of the image files (by suffix) directly in a server folder, sorted by name.

    `limit` draws that many at random (system randomness) when the folder holds more. FileNotFoundError or
    NotADirectoryError name the folder; a folder with no image files is a ValueError listing the suffixes.
    """
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"folder {str(path)!r} does not exist on the server")
    if not path.is_dir():
        raise NotADirectoryError(f"{str(path)!r} is not a folder; expected a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"folder {str(path)!r} holds no image files; expected files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)}")
    if limit is not None and len(files) > limit:
        files = sorted(random.SystemRandom().sample(files, limit))
    return [(p.name, p.read_bytes()) for p in files]


# --------------------------------------------------------------------------------------------- storage


def new_survey_folder() -> Path:
    """A fresh, opaquely named folder under data_home()/survey for one survey's images."""
    root = data_subdir(SURVEY_DIR)
    while True:
        folder = root / secrets.token_hex(8)
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def store_images(images: Sequence[tuple[bytes, str]], *, rng: random.Random | None = None
                 ) -> tuple[Path, list[tuple[str, str]]]:
    """Write (png, truth) pairs under opaque names in a new folder; returns (folder, [(image_path, truth)]).

    The items come back in a random order (their survey positions), so question numbers say nothing about the
    truth either. image_path is relative to the data directory, as the database stores it.
    """
    order = list(images)
    (rng or random.SystemRandom()).shuffle(order)
    folder = new_survey_folder()
    home = data_home()
    items = []
    try:
        for png, truth in order:
            path = folder / f"{secrets.token_hex(12)}.png"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(png)
            os.replace(tmp, path)
            items.append((path.relative_to(home).as_posix(), truth))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, items


def create_image_survey(title: str, real: Sequence[bytes], synthetic: Sequence[bytes], *, is_demo: bool = False,
                        status: str = "open", url: str | None = None) -> str:
    """Store normalised PNGs and create the survey (db.repository.create_survey); returns its token.

    Nothing is left behind when it fails: the image folder is removed if the database refuses the survey.
    """
    if not real and not synthetic:
        raise ValueError("a survey needs images: got no real and no synthetic images")
    from db import repository  # the database is reached only here, lazily (the library works without it)

    folder, items = store_images([(p, "real") for p in real] + [(p, "synthetic") for p in synthetic])
    try:
        return repository.create_survey(title, items, is_demo=is_demo, status=status, url=url)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def resolve_image_path(image_path: str) -> Path:
    """The file of a stored (data-directory relative) image path; refuses paths leaving the data directory."""
    home = data_home()
    path = (home / image_path).resolve()
    if not path.is_relative_to(home):
        raise ValueError(f"image path {image_path!r} points outside the data directory")
    return path


def read_image_bytes(image_path: str) -> bytes:
    """The stored PNG bytes of a survey item or Library sample (served as bytes, never as a path)."""
    return resolve_image_path(image_path).read_bytes()


def thumbnail_png(image_path: str, size: int = 96) -> bytes:
    """A small PNG of a stored image, for researcher tables."""
    with Image.open(resolve_image_path(image_path)) as image:
        image = to_rgb(image)
        image.thumbnail((size, size))
        return encode_png(np.asarray(image))

