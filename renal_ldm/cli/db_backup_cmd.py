"""`renal-ldm db backup` / `db restore`: the database and the data directory's files as one archive (db/backup.py)."""

from __future__ import annotations

import argparse

URL_HELP = "database URL (default: $DATABASE_URL, else the SQLite file in the data dir)"


def add_backup_parsers(sub, wrap) -> None:
    """Add `backup` and `restore` to the `db` subparsers; `wrap` turns connection errors into one line."""
    q = sub.add_parser("backup", help="write the database and the data directory's files to one archive")
    q.add_argument("--out", required=True, metavar="FILE", help="archive to write (a .tar file)")
    q.add_argument("--url", help=URL_HELP)
    q.add_argument("--force", action="store_true", help="replace FILE if it exists")
    q.set_defaults(func=wrap(run_backup))
    q = sub.add_parser("restore", help="replace the database and restore the files from a backup archive")
    q.add_argument("--from", dest="source", required=True, metavar="FILE", help="archive from `db backup`")
    q.add_argument("--url", help=URL_HELP)
    q.add_argument("--force", action="store_true", help="replace a database in use (it holds rows or is open)")
    q.set_defaults(func=wrap(run_restore))


def run_backup(args: argparse.Namespace) -> int:
    from db.backup import backup

    summary = backup(args.out, url=args.url, force=args.force)
    print(f"backup: {summary.path} ({summary.size / 1e6:.1f} MB)")
    print(f"database: {summary.engine}, revision {summary.revision or 'none'}; files: {summary.file_count}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from db.backup import restore

    summary = restore(args.source, url=args.url, force=args.force)
    print(f"restored: {args.source} (made {summary.created_at})")
    print(f"database: {summary.database}, revision {summary.revision or 'none'}; files: {summary.file_count}")
    return 0
