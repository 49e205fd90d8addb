"""`renal-ldm phantom`: write a phantom renal tissue data set (images, label masks, captions.jsonl)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tqdm import tqdm

from renal_ldm.contact_sheet import dataset_contact_sheet
from renal_ldm.data.layout import CAPTIONS_FILE, IMAGES_DIR, MASKS_DIR, check_output
from renal_ldm.phantom import generate_dataset, parse_composition, parse_lead

SHEET_COUNT = 16


def default_workers() -> int:
    """One worker per core the process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a phantom renal tissue data set: H&E-like images, 8-class label masks, captions.jsonl",
        description="Procedural kidney tissue patches with pixel-exact masks; pair i uses seed S+i.",
    )
    p.add_argument("--out", required=True, help="output folder (gets images/, masks/, captions.jsonl)")
    p.add_argument("--n", type=int, required=True, help="number of image/mask pairs")
    p.add_argument("--size", type=int, default=256, help="patch side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of pair 0; pair i uses seed+i (default 0)")
    p.add_argument(
        "--composition",
        metavar="SPEC",
        help="target fraction per class, e.g. Glomeruli=0.45,Tubuli=0.25 (default: random, covering all levels)",
    )
    p.add_argument(
        "--lead",
        metavar="CLASSES",
        help="random compositions lead with one of these structure classes, e.g. 'Glomeruli,Sclerotic Glomeruli' "
        "(tiles where they dominate, to add to a data set; default: any structure class)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=0,
        metavar="PX",
        help="build each patch PX px wider on every side and keep the centre, so its border looks like its interior, "
        "as in a tile cut from a slide (without it the packing leaves a busier or calmer border band; 32 is enough "
        "for 128 px patches; default 0)",
    )
    p.add_argument("--workers", type=int, default=default_workers(), help="worker processes (default: one per core)")
    p.add_argument("--contact-sheet", metavar="PATH", help=f"also write a PNG of the first {SHEET_COUNT} pairs")
    p.add_argument("--overwrite", action="store_true", help="replace a data set already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    composition = parse_composition(args.composition) if args.composition is not None else None
    lead = parse_lead(args.lead) if args.lead is not None else None
    if lead is not None and composition is not None:
        raise ValueError("--lead applies to random compositions; give either --composition or --lead")
    sheet = Path(args.contact_sheet) if args.contact_sheet else None
    if sheet is not None and sheet.suffix.lower() != ".png":
        raise ValueError(f"--contact-sheet must name a .png file; got {sheet}")
    check_output(args.out, overwrite=args.overwrite)  # refuse early, before any work
    start = time.perf_counter()
    with tqdm(total=args.n, unit="pair", desc="phantoms", delay=0.5) as bar:  # no bar for instant errors
        out = generate_dataset(
            args.out,
            args.n,
            args.size,
            args.seed,
            composition,
            lead=lead,
            context=args.context,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=bar.update,
        )
    elapsed = time.perf_counter() - start
    print(f"wrote {args.n} pairs to {out} ({IMAGES_DIR}/, {MASKS_DIR}/, {CAPTIONS_FILE}) in {elapsed:.1f} s")
    if sheet is not None:
        dataset_contact_sheet(out, sheet, count=SHEET_COUNT)
        print(f"contact sheet: {sheet}")
    return 0
