"""`renal-ldm users`: the accounts that sign in to the app (researchers see every page, annotators the
annotation pages). With no account and no RENAL_LDM_ADMIN_PASSWORD the app runs in open mode, for local use."""

from __future__ import annotations

import argparse
import getpass
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("users", help="accounts and roles: add, list, remove, change a password")
    sub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create an account (password prompted twice, or two lines on stdin)")
    add.add_argument("name")
    add.add_argument(
        "--role", required=True, help="researcher (every page) or annotator (the slide and annotation pages)"
    )
    add.set_defaults(func=run_add)
    sub.add_parser("list", help="the accounts, their roles and when they were made").set_defaults(func=run_list)
    remove = sub.add_parser("remove", help="delete an account and end its sign-ins")
    remove.add_argument("name")
    remove.set_defaults(func=run_remove)
    passwd = sub.add_parser("passwd", help="set a new password (ends the account's sign-ins)")
    passwd.add_argument("name")
    passwd.set_defaults(func=run_passwd)
    for q in (add, remove, passwd, sub.choices["list"]):
        q.add_argument("--url", help="database URL (default: $DATABASE_URL, else the SQLite file in the data dir)")


def read_new_password(stdin=None) -> str:
    """The new password: typed twice at a terminal, or the first two lines of piped input; both must match."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first, second = getpass.getpass("New password: "), getpass.getpass("Repeat it: ")
    else:
        lines = stdin.read().splitlines()
        if len(lines) < 2:
            raise ValueError("give the password twice: two lines on standard input (or run at a terminal)")
        first, second = lines[0], lines[1]
    if first != second:
        raise ValueError("the two passwords differ; nothing was changed")
    return first


def run_add(args: argparse.Namespace) -> int:
    from app import accounts
    from db.migrate import upgrade

    upgrade(args.url)
    account = accounts.add_account(args.name, args.role, read_new_password(), url=args.url)
    print(
        f"added {account.role} {account.name!r}; the app now asks every visitor to sign in "
        "(survey participants excepted)"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    from app import accounts
    from db import repository as repo
    from db.migrate import upgrade

    upgrade(args.url)
    rows = repo.list_accounts(url=args.url)
    if accounts.admin_password() is not None:
        print(f"{accounts.ADMIN_NAME}\tresearcher\t(from ${accounts.ADMIN_PASSWORD_ENV})")
    for a in rows:
        print(f"{a.name}\t{a.role}\tcreated {a.created_at:%Y-%m-%d %H:%M} UTC")
    if not rows and accounts.admin_password() is None:
        print("no accounts: the app runs in open mode (no sign-in; keep it on 127.0.0.1)")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from db import repository as repo
    from db.migrate import upgrade

    upgrade(args.url)
    repo.remove_account(args.name, url=args.url)
    left = repo.count_accounts(url=args.url)
    print(
        f"removed {args.name!r}"
        + (
            ""
            if left
            else "; no accounts left, so the app is in open mode again unless RENAL_LDM_ADMIN_PASSWORD is set"
        )
    )
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    from app import accounts
    from db.migrate import upgrade

    upgrade(args.url)
    accounts.change_password(args.name, read_new_password(), url=args.url)
    print(f"password of {args.name!r} changed; its sign-ins have ended")
    return 0
