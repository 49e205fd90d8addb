"""`renal-ldm stitch`: lay generated patches out on a grid as one synthetic whole-slide image (pyramidal TIFF)."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from renal_ldm.cli._args import positive_int
from renal_ldm.slides.pyramid import COMPRESSIONS, DEFAULT_COMPRESSION, DEFAULT_QUALITY, DEFAULT_TILE
from renal_ldm.slides.stitch import ORDER_MANIFEST, stitch_slide


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stitch",
        help="stitch a folder of samples into a pyramidal tiled TIFF that OpenSlide and QuPath read",
    )
    p.add_argument(
        "--samples",
        required=True,
        help="a `sample` output folder (taken in its manifest.csv order) or any folder of same-size images "
        "(file-name order)",
    )
    p.add_argument("--grid", required=True, help="COLSxROWS patches, e.g. 40x40; the first COLS*ROWS samples fill it")
    p.add_argument("--out", required=True, help="output slide (.tif/.tiff); its provenance goes to OUT.json")
    p.add_argument("--mpp", type=float, default=0.5, help="microns per pixel at full resolution (default 0.5)")
    p.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=DEFAULT_COMPRESSION,
        help=f"tile compression (default {DEFAULT_COMPRESSION}; deflate is lossless)",
    )
    p.add_argument("--quality", type=int, help=f"JPEG quality 1-100 (default {DEFAULT_QUALITY}; jpeg only)")
    p.add_argument(
        "--tile",
        type=positive_int,
        default=DEFAULT_TILE,
        help=f"TIFF tile side, a multiple of 16 (default {DEFAULT_TILE})",
    )
    p.add_argument(
        "--order",
        default=ORDER_MANIFEST,
        help="manifest (the folder's own order, default) or shuffle:SEED (a seeded permutation)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output slide")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bars: list[tqdm] = []  # created at the first tile, so a refused request prints no empty bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="tile", desc="stitching", leave=False))
        bars[0].update(done - bars[0].n)

    try:
        result = stitch_slide(
            args.samples,
            args.out,
            args.grid,
            mpp=args.mpp,
            compression=args.compression,
            quality=args.quality,
            tile=args.tile,
            order=args.order,
            overwrite=args.overwrite,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    (cols, rows), (pw, ph), (w, h) = result.grid, result.patch, result.levels[0]
    print(
        f"wrote {result.out}: {cols}x{rows} patches of {pw}x{ph} px = {w}x{h} px at {args.mpp:g} mpp, "
        f"{len(result.levels)} levels, {args.compression}; {result.used} of {result.available} samples "
        f"({result.order} order, from {result.source_order}); provenance in {result.provenance}"
    )
    return 0
