"""`renal-ldm slides`: the slides the app's Slides page lists. `add` registers an existing slide file (OpenSlide
must read it; its provenance sidecar is kept) and prints its id; `list` shows them, with files that have gone
marked missing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DB_HELP = "database URL (default: $DATABASE_URL, else the SQLite file in the data dir)"


def register(subparsers) -> None:
    p = subparsers.add_parser("slides", help="the slides the app lists: register a slide file, list them")
    sub = p.add_subparsers(dest="slides_command", metavar="ACTION", required=True)
    add = sub.add_parser(
        "add",
        help="register an existing whole-slide file (any format OpenSlide reads); prints its id",
    )
    add.add_argument("file", help="the slide file; stored as its absolute path, symbolic links resolved")
    add.add_argument("--name", help="the name the app shows (default: the file's name without its suffix)")
    add.set_defaults(func=run_add)
    listing = sub.add_parser("list", help="the registered slides, newest first")
    listing.add_argument("--json", action="store_true", help="one JSON array with every field and the provenance")
    listing.set_defaults(func=run_list)
    for q in (add, listing):
        q.add_argument("--db", "--url", dest="url", metavar="URL", help=DB_HELP)


def run_add(args: argparse.Namespace) -> int:
    from app.slides import register_slide
    from db.migrate import upgrade

    upgrade(args.url)
    slide = register_slide(Path(args.file).expanduser().resolve(), name=args.name, url=args.url)
    mpp = f"{slide.mpp:g} mpp" if slide.mpp else "no mpp recorded"
    print(
        f"registered slide #{slide.id} {slide.name!r} ({slide.kind}): {slide.width}x{slide.height} px, "
        f"{slide.levels} level(s), {mpp}; {slide.path}",
        file=sys.stderr,
    )
    print(slide.id)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from app.slides import list_slides
    from db.migrate import upgrade

    upgrade(args.url)
    listed = list_slides(url=args.url)
    if args.json:
        rows = [
            {
                "id": item.slide.id,
                "name": item.slide.name,
                "kind": item.slide.kind,
                "path": item.slide.path,
                "width": item.slide.width,
                "height": item.slide.height,
                "levels": item.slide.levels,
                "mpp": item.slide.mpp,
                "patch_size": item.slide.patch_size,
                "created_at": item.slide.created_at.isoformat(timespec="seconds"),
                "created_by": item.slide.created_by,
                "missing": item.missing,
                "provenance": item.slide.provenance,
            }
            for item in listed
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not listed:
        print("no slides registered; add one with `renal-ldm slides add FILE` or stitch one on the Slides page")
        return 0
    print(f"{'id':>4}  {'kind':<10}  {'size (px)':>13}  {'levels':>6}  {'mpp':>6}  {'created (UTC)':<16}  name / path")
    for item in listed:
        s = item.slide
        mpp = f"{s.mpp:g}" if s.mpp else "-"
        state = "  [MISSING]" if item.missing else ""
        print(
            f"{s.id:>4}  {s.kind:<10}  {f'{s.width}x{s.height}':>13}  {s.levels:>6}  {mpp:>6}  "
            f"{s.created_at:%Y-%m-%d %H:%M}  {s.name}{state}\n{'':>4}  {s.path}"
        )
    return 0
