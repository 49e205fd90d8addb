"""Small sample folders and slides for the Slides tests (library, app, CLI, browser): one builder.

`write_sample_folder` writes the layout of a `renal-ldm sample` run (PNG + JSON sidecar per image and
manifest.csv) through the product's own writer, with smooth tissue-coloured patches, so a stitched slide looks
like something and JPEG has little to lose. No torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

PATCH = 64


def patch_pixels(seed: int, side: int = PATCH) -> np.ndarray:
    """A smooth pink-purple patch, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    base = rng.uniform([170, 90, 150], [235, 160, 215])
    wave = np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y))[..., None]
    return np.clip(base + 25 * wave, 0, 255).astype(np.uint8)


def write_sample_folder(folder: Path, n: int = 4, side: int = PATCH, first_seed: int = 100) -> Path:
    """n patches as a `renal-ldm sample` output folder; image i has seed first_seed + i and caption 'caption i'."""
    from renal_ldm.sample_files import write_samples

    results = []
    for i in range(n):
        pixels = patch_pixels(first_seed + i, side)
        caption = f"caption {i}"
        params = {"caption": caption, "seed": first_seed + i, "model": "tiny", "steps": 2}
        results.append(
            SimpleNamespace(image=Image.fromarray(pixels), seed=first_seed + i, caption=caption, index=i, params=params)
        )
    write_samples(results, folder)
    return folder


def stitched_slide(folder: Path, grid: str = "2x2", tile: int = PATCH, compression: str = "deflate") -> Path:
    """A slide stitched from a fresh sample folder under `folder` (2 levels with the defaults)."""
    from renal_ldm.slides.stitch import stitch_slide

    cols, rows = (int(v) for v in grid.split("x"))
    samples = write_sample_folder(folder / "samples", n=cols * rows)
    out = folder / "slide.tif"
    stitch_slide(samples, out, grid, tile=tile, compression=compression, mpp=0.25)
    return out
