"""`renal-ldm tile`: cut a whole-slide image (and its mask) into a patch data set for training."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from renal_ldm.cli.caption_cmd import add_mask_arguments
from renal_ldm.data.tiling import tile_slide


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tile",
        help="cut a slide (svs, tif, ndpi, mrxs, png, ...) into patches: images/, masks/, captions.jsonl",
    )
    p.add_argument("--slide", required=True, help="whole-slide image (OpenSlide formats) or plain PNG/JPEG/TIFF")
    p.add_argument(
        "--mask", help="label, palette or binary mask of the slide, at full size or the slide size divided by any k"
    )
    p.add_argument("--out", required=True, help="output folder (one holding a data set needs --overwrite or --append)")
    p.add_argument("--size", type=int, default=256, help="patch side in pixels (default 256)")
    p.add_argument("--level", type=int, default=0, help="pyramid level to cut patches from (default 0, full res)")
    p.add_argument("--stride", type=int, help="step between patches in level pixels (default: the patch size)")
    p.add_argument(
        "--min-tissue",
        type=float,
        default=0.5,
        help="keep patches with at least this tissue fraction (default 0.5): mask labels other than 0 (a binary "
        "mask's zero pixels count as tissue unless --zero-is-background), or Otsu on saturation without a mask",
    )
    add_mask_arguments(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace the data set in --out (only its own entries)")
    mode.add_argument("--append", action="store_true", help="add this slide's patches to the data set in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bars: list[tqdm] = []  # created at the first patch, so a refused request prints no empty bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="patch", desc="tiling", leave=False))
        bars[0].update(done - bars[0].n)

    try:
        result = tile_slide(
            args.slide,
            args.out,
            size=args.size,
            level=args.level,
            stride=args.stride,
            mask=args.mask,
            min_tissue=args.min_tissue,
            binary_class=args.binary_class,
            zero_is_background=args.zero_is_background,
            overwrite=args.overwrite,
            append=args.append,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    how = "mask labels" if result.mask_downsample else f"Otsu saturation > {result.saturation_threshold:.3f}"
    print(
        f"wrote {result.written} of {result.candidates} patches ({result.size} px, level {result.level}) to "
        f"{result.out_dir}; {result.skipped} below {args.min_tissue:g} tissue ({how})"
    )
    return 0
