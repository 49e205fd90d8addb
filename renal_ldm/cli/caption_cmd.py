"""`renal-ldm caption`: the caption of a segmentation mask, as the training data would carry it."""

from __future__ import annotations

import argparse
import json

from renal_ldm.captions import fractions_to_levels, levels_to_caption, mask_fractions
from renal_ldm.classes import by_id
from renal_ldm.data.masks import load_mask


def add_mask_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that reads masks shares."""
    parser.add_argument(
        "--binary-class",
        metavar="NAME",
        help='read a binary mask: non-zero pixels are this class (e.g. "Glomeruli"), zero is other kidney tissue',
    )
    parser.add_argument(
        "--zero-is-background",
        action="store_true",
        help="with --binary-class: zero pixels are white background (label 0) instead of other kidney tissue",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser("caption", help="print the caption of a segmentation mask")
    p.add_argument("--mask", required=True, help="label mask (values 0..7), RGB palette mask, or binary mask")
    add_mask_arguments(p)
    p.add_argument("--json", action="store_true", help="print caption, fractions and levels as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    mask = load_mask(args.mask, binary_class=args.binary_class, zero_is_background=args.zero_is_background)
    fractions = mask_fractions(mask)
    levels = fractions_to_levels(fractions)
    caption = levels_to_caption(levels)
    if args.json:
        out = {
            "caption": caption,
            "fractions": {by_id(k).name: round(v, 6) for k, v in fractions.items()},
            "levels": levels,
        }
        print(json.dumps(out, indent=2))
    else:
        print(caption)
    return 0
