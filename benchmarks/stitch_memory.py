"""Peak memory and time of `renal-ldm stitch` against writing the same pixels from one in-memory array.

Generates COLS x ROWS patch files (a few distinct tissue-like PNGs, hard-linked to fill the grid, so making
them is quick while the stitch still decodes every file), then, each in a fresh child process:

- baseline: imports the library only;
- streamed: `stitch_slide` (patches decoded a grid row at a time, lower levels through temporary files);
- in-memory: all patches decoded into one (H, W, 3) array, and the same pyramid (same tile, compression and
  2x2 averaging) written from arrays held whole.

Prints each child's wall time and peak RSS, and checks the issue's target for the default size (40 x 40
patches of 512 px = 20480^2 px: streamed peak RSS under 1.5 GB).

    .venv/bin/python benchmarks/stitch_memory.py [--grid 40x40] [--patch 512] [--compression jpeg]
        [--tile 512] [--workers N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_RSS_BYTES = 1.5e9
DISTINCT_PATCHES = 32
CHILD = """
import json, resource, sys, time
mode, folder, out, grid, tile, compression, workers = sys.argv[1:8]
tile, workers = int(tile), (int(workers) or None)
import numpy as np
from PIL import Image
import tifffile
from renal_ldm.slides.stitch import list_samples, parse_grid, stitch_slide
from renal_ldm.slides.pyramid import halve, level_sizes
t = time.perf_counter()
if mode == "streamed":
    stitch_slide(folder, out, grid, compression=compression, tile=tile, workers=workers)
elif mode == "in-memory":
    cols, rows = parse_grid(grid)
    samples, _ = list_samples(folder)
    first = np.asarray(Image.open(samples[0].path).convert("RGB"))
    ph, pw = first.shape[:2]
    level = np.empty((rows * ph, cols * pw, 3), np.uint8)
    for i, s in enumerate(samples[: cols * rows]):
        r, c = divmod(i, cols)
        level[r * ph : (r + 1) * ph, c * pw : (c + 1) * pw] = np.asarray(Image.open(s.path).convert("RGB"))
    sizes = level_sizes(cols * pw, rows * ph, tile)
    with tifffile.TiffWriter(out, bigtiff=level.nbytes * 4 / 3 > 2**31) as tw:
        for k in range(len(sizes)):
            if k:
                level = halve(level)
            tw.write(level, tile=(tile, tile), photometric="rgb", subfiletype=1 if k else 0, metadata=None,
                     compression="jpeg" if compression == "jpeg" else "zlib",
                     compressionargs={"level": 90} if compression == "jpeg" else None,
                     predictor=compression == "deflate", resolution=(2e4 / 2**k, 2e4 / 2**k),
                     resolutionunit="CENTIMETER", maxworkers=workers)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def tissue_patch(seed: int, side: int) -> np.ndarray:
    """Pink-purple low-frequency colour with grain: JPEG and deflate work about as on real tissue."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    wave = np.sin(2 * np.pi * (rng.uniform(1, 4) * x + rng.uniform(1, 4) * y))[..., None]
    base = np.array([200.0, 120.0, 180.0]) + rng.uniform(-20, 20, 3)
    grain = rng.normal(0, 6, (side, side, 1))
    return np.clip(base + 35 * wave * np.array([0.5, 1.0, 0.6]) + grain, 0, 255).astype(np.uint8)


def make_patches(folder: Path, n: int, side: int) -> None:
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        path = folder / f"patch_{i:05d}.png"
        if i < DISTINCT_PATCHES:
            Image.fromarray(tissue_patch(i, side)).save(path, compress_level=1)
        else:
            os.link(folder / f"patch_{i % DISTINCT_PATCHES:05d}.png", path)


def run_child(mode: str, folder: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", CHILD, mode, str(folder), str(out), args.grid, str(args.tile), args.compression]
    done = subprocess.run([*cmd, str(args.workers or 0)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="40x40", help="COLSxROWS (default 40x40)")
    parser.add_argument("--patch", type=int, default=512, help="patch side in px (default 512)")
    parser.add_argument("--compression", choices=("jpeg", "deflate"), default="jpeg")
    parser.add_argument("--tile", type=int, default=512, help="TIFF tile side (default 512)")
    parser.add_argument("--workers", type=int, help="encoding threads for both writers (default: tifffile's)")
    parser.add_argument("--workdir", type=Path, help="where to write patches and slides (default: a temp dir)")
    args = parser.parse_args()

    from renal_ldm.slides.stitch import parse_grid

    cols, rows = parse_grid(args.grid)
    side = cols * args.patch, rows * args.patch
    decoded = side[0] * side[1] * 3
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        make_patches(work / "patches", cols * rows, args.patch)
        print(
            f"{cols}x{rows} patches of {args.patch} px -> {side[0]}x{side[1]} px ({decoded / 2**20:.0f} MiB "
            f"decoded), {args.compression}, tile {args.tile}; patch files made in {time.perf_counter() - t:.1f} s"
        )
        base = run_child("baseline", work / "patches", work / "unused.tif", args)
        print(f"baseline  (imports only): peak RSS {base['rss'] / 2**20:6.0f} MiB")
        results = {}
        for mode in ("streamed", "in-memory"):
            out = work / f"{mode}.tif"
            r = results[mode] = run_child(mode, work / "patches", out, args)
            print(
                f"{mode:9s}: {r['seconds']:6.1f} s, peak RSS {r['rss'] / 2**20:6.0f} MiB "
                f"(+{(r['rss'] - base['rss']) / 2**20:.0f} MiB over baseline), "
                f"file {out.stat().st_size / 2**20:.0f} MiB"
            )
            out.unlink()
        s, m = results["streamed"], results["in-memory"]
        print(
            f"streamed / in-memory: time {s['seconds'] / m['seconds']:.2f}x, peak RSS {s['rss'] / m['rss']:.2f}x; "
            f"streamed peak RSS {s['rss'] / 1e9:.2f} GB vs target < {TARGET_RSS_BYTES / 1e9:.1f} GB: "
            f"{'met' if s['rss'] < TARGET_RSS_BYTES else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
