"""Measures of the two artefacts a latent model's samples show and real tissue does not: a block pattern on the
latent grid (or on the window grid of windowed sampling) and a frame along the image border.

Both compare an image with itself, so they need no reference set; run them on phantoms too, which have neither
artefact, for the baseline (scripts/grid_artifacts.py prints both).

- edge_ratio(images, period): mean |luminance step| across the lines x = k * period (and y = k * period) over the
  mean step everywhere else. A pattern on that grid lifts it above 1; tissue has no preferred phase, so ~1.
- frame_ratio(images, band): mean |luminance difference| between the outermost band of pixels and the band just
  inside it, over the same difference between two bands further in. A frame lifts it above 1.
- sharpness(images): mean |luminance step| between neighbouring pixels; averaging (window blending) lowers it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def _luma(image) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3:
        array = array[..., :3] @ LUMA
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image; got shape {array.shape}")
    return array


def edge_ratio(images: Iterable, period: int) -> float:
    """Steps across the grid lines of `period` px over steps elsewhere, pooled over images (1.0: no grid)."""
    if period < 2:
        raise ValueError(f"period must be >= 2 px; got {period}")
    on, off = [], []
    for image in images:
        y = _luma(image)
        if min(y.shape) <= period:
            raise ValueError(f"image of {y.shape[1]}x{y.shape[0]} px is too small for a grid period of {period} px")
        for steps in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
            # steps[:, j] is the step between columns j and j + 1; grid lines sit between k*period - 1 and k*period.
            grid = (np.arange(steps.shape[1]) + 1) % period == 0
            on.append(steps[:, grid].ravel())
            off.append(steps[:, ~grid].ravel())
    if not on:
        raise ValueError("no images given")
    return float(np.concatenate(on).mean() / max(np.concatenate(off).mean(), 1e-9))


def frame_ratio(images: Iterable, band: int = 4) -> float:
    """Difference between the border band and the band inside it, over that of two interior bands (1.0: none)."""
    if band < 1:
        raise ValueError(f"band must be >= 1 px; got {band}")
    outer, inner = [], []
    for image in images:
        y = _luma(image)
        if min(y.shape) < 8 * band:
            raise ValueError(f"image of {y.shape[1]}x{y.shape[0]} px is too small for {band} px bands")
        for side in (y, y[::-1], y.T, y.T[::-1]):  # top, bottom, left, right as "top"
            rows = [side[k * band : (k + 1) * band].mean(axis=0) for k in range(4)]
            outer.append(np.abs(rows[0] - rows[1]).mean())
            inner.append(np.abs(rows[2] - rows[3]).mean())
    if not outer:
        raise ValueError("no images given")
    return float(np.mean(outer) / max(np.mean(inner), 1e-9))


def sharpness(images: Iterable) -> float:
    """Mean |luminance step| between neighbouring pixels, over both axes and all images: blending or blurring
    lowers it. In grey levels (0..255 input); compare sets of the same size and content only."""
    means = []
    for image in images:
        y = _luma(image)
        means.append((np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean()) / 2)
    if not means:
        raise ValueError("no images given")
    return float(np.mean(means))
