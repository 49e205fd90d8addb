"""`renal-ldm db`: apply the database migrations (`upgrade`), show where the database stands (`current`),
back it up with its files (`backup`, `restore`: renal_ldm/cli/db_backup_cmd.py)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("db", help="database schema: upgrade, show the revision; backup and restore")
    sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, func, help_ in (
        ("upgrade", run_upgrade, "apply all migrations (idempotent; keeps every row)"),
        ("current", run_current, "print the database URL and its schema revision"),
    ):
        q = sub.add_parser(name, help=help_)
        q.add_argument("--url", help="database URL (default: $DATABASE_URL, else the SQLite file in the data dir)")
        q.set_defaults(func=_reporting_connection_errors(func))
    from renal_ldm.cli.db_backup_cmd import add_backup_parsers

    add_backup_parsers(sub, _reporting_connection_errors)


def _reporting_connection_errors(func):
    """An unreachable database is a user's problem to fix: one clear line, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import OperationalError

        from db.session import masked_url

        try:
            return func(args)
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise ValueError(f"cannot use database {masked_url(args.url)}: {reason}") from None

    return run


def run_upgrade(args: argparse.Namespace) -> int:
    from db.migrate import upgrade
    from db.session import masked_url

    revision = upgrade(args.url)
    print(f"database: {masked_url(args.url)}")
    print(f"revision: {revision} (head)")
    return 0


def run_current(args: argparse.Namespace) -> int:
    from db.migrate import current_revision, head_revision
    from db.session import masked_url

    current, head = current_revision(args.url), head_revision()
    state = "up to date" if current == head else f"behind: run `renal-ldm db upgrade` to reach {head}"
    print(f"database: {masked_url(args.url)}")
    print(f"revision: {current or 'none (empty database)'} ({state})")
    return 0 if current == head else 1
