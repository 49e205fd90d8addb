"""Peak memory of `renal-ldm tile` on a generated slide larger than is sensible to decode whole.

Writes a pyramidal tiled TIFF (default 16384^2, levels /1 /4 /16, JPEG tiles streamed from a generator, so
the generator itself never holds the slide), then tiles it twice in child processes: with an Otsu tissue
filter (no mask) and with a label mask at downsample 16. Each child's peak RSS is printed next to a baseline
child that only imports the library and opens the slide, and next to the size of the decoded level 0.

    .venv/bin/python benchmarks/tiling_memory.py [--side 16384] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 256
CHILD = """
import resource, sys, time
from renal_ldm.data.slide_reader import open_slide
from renal_ldm.data.tiling import tile_slide
mode, slide, out, mask = sys.argv[1:5]
t = time.perf_counter()
reader = open_slide(slide)
written = 0
if mode != "baseline":
    result = tile_slide(reader, out, mask=mask if mode == "mask" else None, min_tissue=0.5)
    written = result.written
print(written, reader.max_request[0] * reader.max_request[1], time.perf_counter() - t,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def tissue_at(x: np.ndarray, y: np.ndarray, side: int) -> np.ndarray:
    """A few round tissue islands (about a quarter of the slide), defined analytically at any resolution."""
    centres = [(0.3, 0.3, 0.18), (0.7, 0.6, 0.2), (0.35, 0.75, 0.1)]
    inside = np.zeros(np.broadcast(x, y).shape, bool)
    for cx, cy, r in centres:
        inside |= (x / side - cx) ** 2 + (y / side - cy) ** 2 < r * r
    return inside


def tiles(side: int, ds: int):
    """RGB tiles of the level at downsample `ds`, row by row: pink textured tissue, white glass."""
    n = side // ds
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 30, (TILE, TILE, 1), dtype=np.uint8)
    for ty in range(0, n, TILE):
        for tx in range(0, n, TILE):
            ys, xs = np.mgrid[ty : ty + TILE, tx : tx + TILE] * ds
            tile = np.full((TILE, TILE, 3), 242, np.uint8)
            tile[tissue_at(xs, ys, side)] = (190, 80, 160)
            yield tile - noise


def write_slide(path: Path, side: int) -> None:
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, ds in enumerate((1, 4, 16)):
            n = side // ds
            tw.write(
                tiles(side, ds),
                shape=(n, n, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                subfiletype=1 if i else 0,
            )


def write_mask(path: Path, side: int, ds: int = 16) -> None:
    from PIL import Image

    n = side // ds
    ys, xs = np.mgrid[0:n, 0:n] * ds
    Image.fromarray(np.where(tissue_at(xs, ys, side), 3, 0).astype(np.uint8)).save(path)


def run_child(mode: str, slide: Path, out: Path, mask: Path) -> tuple[int, int, float, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(slide), str(out), str(mask)], capture_output=True, text=True, check=True
    )
    written, max_request, seconds, rss_kib = done.stdout.split()
    return int(written), int(max_request), float(seconds), int(rss_kib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16384, help="level-0 side in pixels (multiple of 4096)")
    parser.add_argument("--workdir", type=Path, help="where to write the slide and patches (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        slide, mask = work / "big.tif", work / "big_mask.png"
        t = time.perf_counter()
        write_slide(slide, args.side)
        write_mask(mask, args.side)
        gen_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"slide {args.side}^2 written in {time.perf_counter() - t:.1f} s ({slide.stat().st_size / 2**20:.0f} MiB "
            f"on disk, generator peak RSS {gen_rss:.0f} MiB)"
        )
        decoded = args.side * args.side * 3 / 2**20
        _, _, _, base = run_child("baseline", slide, work / "unused", mask)
        print(f"decoded level 0 would be {decoded:.0f} MiB; baseline (import + open) peak RSS {base / 1024:.0f} MiB")
        for mode in ("otsu", "mask"):
            written, max_request, seconds, rss = run_child(mode, slide, work / mode, mask)
            print(
                f"{mode:5s}: {written} patches in {seconds:.1f} s; peak RSS {rss / 1024:.0f} MiB "
                f"(+{(rss - base) / 1024:.0f} MiB over baseline = {(rss - base) / 1024 / decoded:.1%} of the decoded "
                f"slide); largest slide read {max_request} px = {max_request / TILE**2:.0f} patch(es)"
            )


if __name__ == "__main__":
    main()
