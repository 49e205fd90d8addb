"""Reading segmentation masks in the formats users bring, into one form: a 2-D uint8 array of label ids 0..7.

Accepted: single-channel label images (values 0..7), RGB(A) masks painted in the class palette
(`renal_ldm.classes`), and binary masks (zero / non-zero) mapped to one class. Anything else is refused with
the offending values named, because a silently mis-read mask produces a wrong caption and a wrong model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from renal_ldm.classes import BACKGROUND_ID, MAX_LABEL, OTHER_TISSUE_ID, TISSUE_CLASSES, by_name, palette

LARGE_IMAGE_HINT = "save very large masks and slides as tiled TIFF, which is read region by region"


def read_mask_image(path: str | Path) -> np.ndarray:
    """Pixels of a mask file as an array (H, W) or (H, W, C); a clear error if it is not a readable image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as img:
            return mask_pixels(img)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path}: too many pixels to decode as one image ({exc}); {LARGE_IMAGE_HINT}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image file ({exc})") from None


def mask_pixels(img: Image.Image) -> np.ndarray:
    """Pixels of an opened PIL mask (or a crop of one) in the form `to_label_mask` reads.

    Shared by whole-file reads and region reads (tiling), so both interpret palettes and 1-bit images alike.
    """
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("1", "LA"):
        img = img.convert("L")
    return np.asarray(img)


def load_mask(path: str | Path, *, binary_class: str | None = None, zero_is_background: bool = False) -> np.ndarray:
    """Label mask (H, W) uint8 from a file; see `to_label_mask` for the rules."""
    try:
        return to_label_mask(read_mask_image(path), binary_class=binary_class, zero_is_background=zero_is_background)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def to_label_mask(
    pixels: np.ndarray, *, binary_class: str | None = None, zero_is_background: bool = False
) -> np.ndarray:
    """Label ids 0..7 from label, palette or binary mask pixels.

    binary_class: treat the mask as binary; non-zero pixels become that class, zero pixels become
    "other kidney tissue" (or background when zero_is_background).
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"not a mask: pixel array of shape {arr.shape}; expected (H, W) labels or (H, W, 3) RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]

    if binary_class is not None:
        return _binary_to_labels(arr, binary_class, zero_is_background)

    if arr.ndim == 2:
        return _check_label_values(arr)

    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        gray = arr[..., 0]
        if int(gray.max(initial=0)) <= MAX_LABEL:
            return gray.astype(np.uint8)  # a label image saved as grey RGB
    return _palette_to_labels(arr)


def _check_label_values(arr: np.ndarray) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"not a mask: pixel type {arr.dtype}; expected integer labels 0..{MAX_LABEL}")
    values = np.unique(arr)
    bad = values[(values < 0) | (values > MAX_LABEL)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:12].tolist()) + (" ..." if bad.size > 12 else "")
        raise ValueError(
            f"mask holds label values {shown} outside 0..{MAX_LABEL} ({bad.size} unknown values); "
            "for a binary mask (e.g. 0/255) pass a class name as binary_class / --binary-class"
        )
    return arr.astype(np.uint8)


def _palette_to_labels(rgb: np.ndarray) -> np.ndarray:
    colours = palette()
    flat = rgb.reshape(-1, 3).astype(np.uint32)
    keys = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse = np.unique(keys, return_inverse=True)
    lut = np.full(uniq.shape, 255, dtype=np.uint8)
    unknown = []
    for i, key in enumerate(uniq.tolist()):
        colour = ((key >> 16) & 255, (key >> 8) & 255, key & 255)
        label = colours.get(colour)
        if label is None:
            unknown.append(colour)
        else:
            lut[i] = label
    if unknown:
        shown = ", ".join(str(c) for c in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        known = ", ".join(f"{c.id}={c.color}" for c in TISSUE_CLASSES)
        kind = "not a mask (looks like a photograph)" if len(unknown) > 64 else "unknown palette colours"
        hint = ""
        if uniq.size <= 2:
            hint = (
                f"; with only {uniq.size} colour(s) this may be a binary mask: pass the class of its non-zero "
                'pixels as binary_class / --binary-class NAME (e.g. --binary-class "Glomeruli")'
            )
        raise ValueError(
            f"{kind}: {len(unknown)} colours outside the class palette, e.g. {shown}; expected {known}{hint}"
        )
    return lut[inverse].reshape(rgb.shape[:2])


def _binary_to_labels(arr: np.ndarray, class_name: str, zero_is_background: bool) -> np.ndarray:
    cls = by_name(class_name)
    if cls.id == BACKGROUND_ID:
        raise ValueError(f"binary class must be a tissue class, not {cls.name!r}")
    gray = arr.max(axis=2) if arr.ndim == 3 else arr
    values = np.unique(gray)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:12].tolist()) + (" ..." if values.size > 12 else "")
        raise ValueError(
            f"binary mask holds {values.size} distinct values ({shown}); expected zero and one non-zero value"
        )
    zero_label = BACKGROUND_ID if zero_is_background else OTHER_TISSUE_ID
    return np.where(gray > 0, cls.id, zero_label).astype(np.uint8)


def labels_to_rgb(labels: np.ndarray) -> np.ndarray:
    """Palette RGB image (H, W, 3) of a label mask: the inverse of palette reading, for saving and overlays."""
    lut = np.array([c.color for c in TISSUE_CLASSES], dtype=np.uint8)
    return lut[np.asarray(labels, dtype=np.uint8)]
