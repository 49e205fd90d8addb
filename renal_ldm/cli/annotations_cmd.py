"""`renal-ldm annotations`: what annotators painted on the Annotate page. `agreement` compares annotators
(Dice, IoU per pair and region), `export` writes the annotated regions as a patch-mask data set plus QuPath
GeoJSON, `import` brings QuPath (or other) GeoJSON annotations back as one annotator's masks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from renal_ldm.cli._args import positive_int

DB_HELP = "database URL (default: $DATABASE_URL, else the SQLite file in the data dir)"


def register(subparsers) -> None:
    p = subparsers.add_parser("annotations", help="annotations of slides: agreement, export, import (QuPath GeoJSON)")
    sub = p.add_subparsers(dest="annotations_command", metavar="ACTION", required=True)

    agree = sub.add_parser("agreement", help="Dice and IoU between annotators, per pair and per region")
    agree.add_argument("--slide", type=int, required=True, help="slide id (renal-ldm slides list)")
    agree.add_argument("--class", dest="class_name", help="only this class (default: every class)")
    agree.add_argument("--json", action="store_true", help="one JSON object: pairs and regions")
    agree.set_defaults(func=run_agreement)

    export = sub.add_parser(
        "export", help="annotated regions as patch-mask pairs (images/, masks/, captions.jsonl) + annotations.geojson"
    )
    export.add_argument("--slide", type=int, required=True, help="slide id")
    export.add_argument("--out", required=True, help="folder for the data set (train-segmenter --data reads it)")
    export.add_argument("--annotator", help="only this annotator's masks (default: everyone's, one pair each)")
    export.add_argument("--patch", type=positive_int, default=512, help="patch side in px (default %(default)s)")
    export.add_argument(
        "--include-unfinished", action="store_true", help="also regions saved but not marked done (default: done only)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace a data set already in --out")
    export.set_defaults(func=run_export)

    imp = sub.add_parser("import", help="QuPath GeoJSON (FeatureCollection, full-resolution pixels) as masks")
    imp.add_argument("--slide", type=int, required=True, help="slide id")
    imp.add_argument("--geojson", required=True, help="the FeatureCollection file")
    imp.add_argument("--annotator", required=True, help="whose masks the areas join (added to what is saved)")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="THEIRS=CLASS",
        help="map a classification of the file to a product class, e.g. 'Glomerulus=Glomeruli' (repeatable)",
    )
    imp.add_argument("--region-side", type=positive_int, default=512, help="region grid in px (default %(default)s)")
    imp.set_defaults(func=run_import)
    for q in (agree, export, imp):
        q.add_argument("--db", "--url", dest="url", metavar="URL", help=DB_HELP)


def run_agreement(args: argparse.Namespace) -> int:
    from app import annotate
    from db import repository as repo
    from db.migrate import upgrade
    from renal_ldm.classes import by_name

    upgrade(args.url)
    repo.get_slide(args.slide, url=args.url)
    class_id = by_name(args.class_name).id if args.class_name else None
    found = annotate.agreements(args.slide, class_id, url=args.url)
    pairs, regions = annotate.agreement_rows(found), annotate.region_rows(found)
    if args.json:
        print(json.dumps({"slide": args.slide, "pairs": pairs, "regions": regions}, indent=2))
        return 0
    if not found:
        print(f"slide #{args.slide}: no region has masks of two or more annotators yet")
        return 0
    print(f"{'region':<28}  {'class':<20}  {'annotators':<32}  {'dice':>6}  {'iou':>6}")
    for row in pairs:
        who = f"{row['first']} / {row['second']}"
        print(f"{row['region']:<28}  {row['class']:<20}  {who:<32}  {row['dice']:>6.3f}  {row['iou']:>6.3f}")
    print(f"{len(regions)} region(s); mean Dice over regions {sum(r['mean dice'] for r in regions) / len(regions):.3f}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from app import annotate
    from db.migrate import upgrade

    upgrade(args.url)
    result = annotate.export_annotations(
        args.slide,
        Path(args.out),
        annotator=args.annotator,
        patch=args.patch,
        include_unfinished=args.include_unfinished,
        overwrite=args.overwrite,
        url=args.url,
    )
    left = ""
    if result.leftover_regions:
        left = f"; {result.leftover_regions} region(s) not whole patches (edges left out)"
    print(
        f"exported {result.pairs} patch-mask pair(s) from {result.regions} region(s) of "
        f"{', '.join(result.annotators)} and {result.features} GeoJSON feature(s){left}",
        file=sys.stderr,
    )
    print(result.out)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from app import annotate
    from db.migrate import upgrade
    from renal_ldm.annotations import geojson

    upgrade(args.url)
    path = Path(args.geojson).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--geojson {path} does not exist")
    geojson.check_size(path.stat().st_size, str(path))
    result = annotate.import_geojson(
        args.slide,
        path.read_bytes(),
        args.annotator,
        mapping=args.map,
        side=args.region_side,
        source=str(path),
        url=args.url,
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"imported {result.features} area(s) into {result.regions} region mask(s) of {args.annotator!r} "
        f"({result.pixels} px)"
    )
    return 0
