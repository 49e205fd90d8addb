"""Survey images: upload checks and one normalisation for every image, so nothing but the pixels can tell.

A blind real-vs-synthetic survey is only blind if file names, formats, sizes and metadata carry no hint. Every
image that enters a survey, whatever its source (an upload, a Library sample, a server folder, the demo), goes
through `normalise`:

1. decode (first frame only), apply the EXIF orientation; 16-bit pixels become 8-bit by one fixed rule, the
   high byte (value >> 8: 0 -> 0, 65535 -> 255, the rule Pillow itself applies to 16-bit RGB), never a
   per-image stretch that would brighten one image and not another;
2. an embedded colour profile is converted to sRGB (LittleCMS through PIL.ImageCms) before it is dropped, so
   an AdobeRGB scan does not look dull beside sRGB samples; a profile that cannot be used is a warning naming
   the file (its pixels are then taken as sRGB);
3. alpha composited on white, 8-bit RGB;
4. center-crop to a square and resize to the survey size (Lanczos; no resize when already that size). An image
   smaller than the survey size is refused unless up-scaling is allowed (then a warning): up-scaled images are
   soft, and "the soft ones are real" is an answer key;
5. re-encode as PNG from a fresh pixel array: no text chunks, no ICC profile, no EXIF, no DPI, same settings
   for every image.

`compare_halves` then compares what the two halves were before normalisation (`Native`: size, format, mode,
colour profile) and words every difference as a warning for the researcher: "the real half is all JPEG and the
synthetic half all PNG" is a tell that normalisation cannot remove.

Stored images (app/survey_store.py) are stamped with `stamp_png`: one private ancillary chunk of fresh random
bytes per file, pixels untouched. Streamlit names media by a hash of their bytes, so without it a survey image
made from a Library sample at the survey size would be served under the very URL of the Library card. Every
stored image of both halves carries a chunk of the same type and length, so the chunk tells nothing; decoders
(browsers, Pillow) skip unknown ancillary chunks.

Checks (`check_upload`) refuse, with a message naming the file and what was expected: empty files, files over
the size limit, anything Pillow cannot identify as an image, images whose declared size exceeds the pixel
limit (decompression bombs: refused from the header, before any pixel is decoded), and damaged or truncated
image data. No Streamlit, no database and no files written here: gathering the files is app/survey_files.py,
storing them app/survey_store.py.
"""

from __future__ import annotations

import io
import secrets
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # Pillow built without LittleCMS has no colour management: profiles are then a warning, not a crash
    from PIL import ImageCms
except ImportError:  # pragma: no cover - every supported Pillow wheel ships LittleCMS
    ImageCms = None

DEFAULT_SIZE = 256
DEFAULT_COUNT = 20
MIN_SIZE = 32
MAX_SIZE = 2048
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
"""Images declaring more pixels than this are refused unread (a 6300 x 6300 patch is far beyond any survey)."""
EXPECTED = "an image file (PNG, JPEG, TIFF, BMP, WebP)"
NO_PROFILE = "none"
LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})
"""Formats whose compression leaves artefacts a trained eye can see (WebP may be lossless; assumed lossy)."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRIVATE_CHUNK = b"rlDm"
"""The chunk type of the per-file random stamp: lower-case first letter = ancillary (decoders may skip it),
lower-case second = private, upper-case third as the PNG specification requires, lower-case fourth = safe to copy."""
PRIVATE_CHUNK_BYTES = 16


class ImageCheckError(ValueError):
    """A file that cannot enter a survey; the message names the file and what was expected."""


@dataclass(frozen=True)
class Native:
    """What an image was before normalisation, compared across the halves at creation (`compare_halves`)."""

    width: int
    height: int
    format: str
    """Pillow's format name ("PNG", "JPEG", "TIFF", ...), "array" for pixels the product made."""
    mode: str
    """Pillow's mode ("RGB", "L", "I;16", ...), with " 16-bit" where Pillow hides the depth ("RGB 16-bit")."""
    profile: str
    """The embedded ICC profile's description, "none", or "unreadable colour profile"."""

    @property
    def size(self) -> str:
        return f"{self.width} x {self.height} px"

    def as_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "mode": self.mode,
            "profile": self.profile,
        }


@dataclass(frozen=True)
class SurveyImage:
    """A normalised image ready to store: PNG bytes (size x size RGB, no metadata) and where it came from.

    `source` is shown to the researcher only (e.g. an upload's file name); it is never stored or served.
    `native` is what the file was before normalisation; `warnings` what the researcher should know about it.
    """

    png: bytes
    source: str
    native: Native | None = None
    warnings: tuple[str, ...] = ()


def _mb(n: int) -> str:
    """A byte count for people: '20.0 MB', '12.3 KB', '512 bytes'."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _check_size_arg(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"survey image size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {size!r}")
    return int(size)


def open_checked(
    name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The decoded first frame of an uploaded file, or ImageCheckError naming the file and what was expected.

    Pillow's own limit (Image.MAX_IMAGE_PIXELS) still applies as a backstop: its DecompressionBombError and
    DecompressionBombWarning are both turned into the same refusal.
    """
    if not data:
        raise ImageCheckError(f"{name}: the file is empty; expected {EXPECTED}")
    if len(data) > max_bytes:
        raise ImageCheckError(
            f"{name}: the file is {_mb(len(data))}, over the upload limit of {_mb(max_bytes)}; "
            f"expected {EXPECTED} of at most {_mb(max_bytes)}"
        )
    bomb = (
        f"{name}: refused as a possible decompression bomb: it declares {{w}} x {{h}} = {{n:,}} pixels, "
        f"more than the limit of {max_pixels:,}; expected an image of at most {max_pixels:,} pixels"
    )
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
        raise ImageCheckError(
            f"{name}: refused as a possible decompression bomb: {exc}; "
            f"expected an image of at most {max_pixels:,} pixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageCheckError(f"{name}: not an image Pillow can read; expected {EXPECTED}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying "damaged"
        raise ImageCheckError(
            f"{name}: the image data is damaged or truncated ({exc}); "
            f"expected a complete image file (PNG, JPEG, TIFF, BMP, WebP)"
        ) from None
    return image


def check_upload(
    name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """Raise ImageCheckError if the file cannot enter a survey (see `open_checked`)."""
    open_checked(name, data, max_bytes=max_bytes, max_pixels=max_pixels).close()


# -------------------------------------------------------------------------------------------- pixels


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S")


def to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer pixels as 8-bit by the fixed rule value >> 8 (mode "I" taken as 0..65535, clipped).

    Float images have no fixed scale and are refused (ValueError naming the mode).
    """
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        arr = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8))
    if image.mode == "F":
        raise ValueError(
            "32-bit floating-point pixels (Pillow mode F) have no fixed scale to 8 bits; expected an 8- or 16-bit image"
        )
    return image


def _profile_description(icc: bytes | None) -> str:
    if not icc:
        return NO_PROFILE
    if ImageCms is None:
        return "colour profile (not readable without LittleCMS)"
    try:
        text = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return "unreadable colour profile"
    return text or "colour profile without a description"


def to_srgb(image: Image.Image, icc: bytes | None, name: str = "image") -> tuple[Image.Image, str | None]:
    """The image with its embedded profile `icc` converted to sRGB (8-bit RGB, alpha kept), and a warning
    naming the file when the profile cannot be used (its pixels are then taken as sRGB); no profile: untouched."""
    if not icc:
        return image, None
    if ImageCms is None:
        return image, (
            f"{name}: has an embedded colour profile, but this Pillow has no colour management "
            f"(PIL.ImageCms): its colours were not converted to sRGB and may look different"
        )
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    base = image.convert({"RGBA": "RGB", "LA": "L"}[image.mode]) if alpha is not None else image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(base, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError) as exc:
        return image, (
            f"{name}: its colour profile ({_profile_description(icc)}) cannot be converted to sRGB "
            f"({exc}); its pixels are used as they are, so its colours may look different"
        )
    if alpha is not None:
        converted.putalpha(alpha)
    return converted, None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: EXIF orientation applied, 16-bit by the fixed rule (`to_8bit`), alpha composited on white.

    Colour profiles are not looked at here (see `to_srgb`, which `normalise` applies first).
    """
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken orientation tag is no reason to refuse the pixels  # noqa: BLE001
        pass
    image = to_8bit(image)
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


def _bit_depth(image: Image.Image, data: bytes | None) -> int | None:
    """Bits per sample where Pillow decodes 16-bit files to 8-bit modes (PNG, TIFF); None when unknown."""
    if image.format == "PNG" and data is not None and len(data) > 24:
        return data[24]  # IHDR bit depth: signature 8 + length 4 + type 4 + width 4 + height 4
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)
        return max(bits) if isinstance(bits, tuple) and bits else bits
    return None


def native_properties(image: Image.Image, data: bytes | None = None) -> Native:
    """What `image` is as stored in its file (`data`, when given, reveals 16-bit PNGs that Pillow reads as 8-bit)."""
    mode = image.mode
    if _bit_depth(image, data) == 16 and mode not in SIXTEEN_BIT_MODES:
        mode = f"{mode} 16-bit"
    return Native(
        image.width, image.height, image.format or "array", mode, _profile_description(image.info.get("icc_profile"))
    )


def _check_upscale(name: str, width: int, height: int, size: int, allow_upscale: bool) -> str | None:
    """None when the image covers the survey size; a warning when up-scaling is allowed; else ImageCheckError."""
    if min(width, height) >= size:
        return None
    if not allow_upscale:
        raise ImageCheckError(
            f"{name}: {width} x {height} px is smaller than the survey size of {size} x {size} px and would be "
            f"up-scaled (up-scaled images look soft, which gives the answer away); expected at least {size} px on "
            f"the shorter side: pick a smaller survey size, or tick 'Allow up-scaling'"
        )
    return (
        f"{name}: {width} x {height} px is up-scaled to {size} x {size} px (allowed): up-scaled images look "
        f"soft, and soft images give the answer away when the other half is sharp"
    )


def normalise(
    image: Image.Image | np.ndarray, size: int = DEFAULT_SIZE, name: str = "image", *, allow_upscale: bool = True
) -> tuple[bytes, list[str]]:
    """The survey form of an image (see the module docstring) and the warnings about it, each naming `name`.

    ImageCheckError when it is smaller than `size` and up-scaling is not allowed, or cannot be converted.
    """
    size = _check_size_arg(size)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image))
    notes = []
    icc = image.info.get("icc_profile")
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception:  # a broken orientation tag is no reason to refuse the pixels  # noqa: BLE001
        oriented = image
    if note := _check_upscale(name, oriented.width, oriented.height, size, allow_upscale):
        notes.append(note)
    try:
        pixels = to_8bit(oriented)
        if pixels.mode == "P":
            pixels = pixels.convert("RGBA" if "transparency" in pixels.info else "RGB")
        pixels, note = to_srgb(pixels, icc, name)
        if note:
            notes.append(note)
        rgb = to_rgb(pixels)
    except ValueError as exc:
        raise ImageCheckError(f"{name}: cannot be converted to 8-bit RGB ({exc})") from None
    return encode_png(np.asarray(center_square(rgb, size))), notes


def normalise_image(image: Image.Image | np.ndarray, size: int = DEFAULT_SIZE) -> bytes:
    """The survey form of pixels the product made (phantoms, samples): `normalise` without its warnings."""
    return normalise(image, size)[0]


def normalise_upload(
    name: str,
    data: bytes,
    size: int = DEFAULT_SIZE,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_upscale: bool = False,
) -> SurveyImage:
    """Check one file and normalise it; ImageCheckError names the file and what was expected.

    An image smaller than `size` is refused unless `allow_upscale` (then it carries a warning).
    """
    image = open_checked(name, data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        native = native_properties(image, data)
        png, notes = normalise(image, size, name, allow_upscale=allow_upscale)
        return SurveyImage(png, name, native, tuple(notes))
    finally:
        image.close()


def normalise_files(
    files: Iterable[tuple[str, bytes]],
    size: int = DEFAULT_SIZE,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_upscale: bool = False,
) -> tuple[list[SurveyImage], list[str]]:
    """Every file checked and normalised: (images, one error message per refused file), in input order.

    All files are tried, so a researcher sees every problem of a batch at once.
    """
    images: list[SurveyImage] = []
    errors: list[str] = []
    for name, data in files:
        try:
            images.append(
                normalise_upload(
                    name, data, size, max_bytes=max_bytes, max_pixels=max_pixels, allow_upscale=allow_upscale
                )
            )
        except ImageCheckError as exc:
            errors.append(str(exc))
    return images, errors


# ---------------------------------------------------------------------------------- the halves compared


def _describe(values: Sequence[str], listed: int = 4) -> str:
    counts = Counter(values).most_common()
    if len(counts) == 1:
        return f"all {counts[0][0]}"
    shown = ", ".join(f"{value} ({n})" for value, n in counts[:listed])
    return shown + (f" and {len(counts) - listed} more" if len(counts) > listed else "")


def _format_reason(real: set[str], synthetic: set[str]) -> str:
    if (real ^ synthetic) & LOSSY_FORMATS:
        return "a participant can tell them apart by compression artefacts"
    return "differently stored images are often differently processed, which a participant may learn to see"


_PROPERTIES = (
    (
        "sizes",
        lambda n: n.size,
        lambda r, s: "they are resized by different factors to the survey size, so they differ in sharpness",
    ),
    ("formats", lambda n: n.format, _format_reason),
    (
        "modes",
        lambda n: n.mode,
        lambda r, s: "they differ in colour depth or channels (grayscale, 16-bit, alpha), which can show in the pixels",
    ),
    (
        "colour profiles",
        lambda n: n.profile,
        lambda r, s: "their colours come from different colour spaces (converted to sRGB, but seldom alike in look)",
    ),
)


def compare_halves(real: Sequence[Native], synthetic: Sequence[Native]) -> list[str]:
    """One warning per native property (size, format, mode, colour profile) whose values differ between halves.

    Normalisation makes every image the same size and format, but what the files were leaves traces (JPEG
    artefacts, the softness of up-scaling, a converted colour space): a difference between the halves is an
    answer key, so the researcher is told before participants find out.
    """
    if not real or not synthetic:
        return []
    out = []
    for label, key, reason in _PROPERTIES:
        r, s = [key(n) for n in real], [key(n) for n in synthetic]
        if set(r) != set(s):
            out.append(
                f"Native {label} differ: the real half is {_describe(r)} and the synthetic half "
                f"{_describe(s)}: {reason(set(r), set(s))}."
            )
    return out


# ------------------------------------------------------------------------------------- per-file stamp


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a PNG file in order; ValueError when it is not a well-formed PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (no PNG signature)")
    pos, chunks = len(PNG_SIGNATURE), []
    while pos < len(png):
        if pos + 12 > len(png):
            raise ValueError(f"truncated PNG: a chunk header at byte {pos} runs past the end")
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(png):
            raise ValueError(f"truncated PNG: chunk {kind!r} at byte {pos} runs past the end")
        chunks.append((kind, body))
        pos += 12 + length
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("not a complete PNG file (expected IHDR first and IEND last)")
    return chunks


def stamp_png(png: bytes, payload: bytes | None = None) -> bytes:
    """The same PNG with one PRIVATE_CHUNK of `payload` (default: fresh random bytes) right after IHDR.

    An earlier stamp is replaced, so a copy of a stamped file gets its own. Pixels and every other chunk are
    kept byte for byte.
    """
    payload = secrets.token_bytes(PRIVATE_CHUNK_BYTES) if payload is None else payload
    if len(payload) != PRIVATE_CHUNK_BYTES:
        raise ValueError(f"stamp payload must be {PRIVATE_CHUNK_BYTES} bytes, got {len(payload)}")
    chunks = [(kind, body) for kind, body in png_chunks(png) if kind != PRIVATE_CHUNK]
    out = [PNG_SIGNATURE, _chunk(*chunks[0]), _chunk(PRIVATE_CHUNK, payload)]
    out += [_chunk(kind, body) for kind, body in chunks[1:]]
    return b"".join(out)
