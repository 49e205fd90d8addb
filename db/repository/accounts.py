"""Accounts, sign-in sessions and failed sign-in counters: the rows behind the app's access control.

The repository stores what it is given: password hashing, the throttle policy and session lifetimes are the
app's rules (app/accounts.py). A session row stores only the SHA-256 of its token, so a copy of the database
does not sign anyone in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from db import models
from db.repository._common import NotFoundError, as_utc, check_choice, clean_name, insert_ignore
from db.session import session_scope


@dataclass(frozen=True)
class Account:
    """An account as the app shows it (no password hash)."""

    id: int
    name: str
    role: str
    created_at: datetime
    password_changed_at: datetime


@dataclass(frozen=True)
class SignInSession:
    """A live sign-in: who, with which role, until when."""

    account_name: str
    role: str
    credential_digest: str
    created_at: datetime
    expires_at: datetime


def _account(row: models.Account) -> Account:
    return Account(row.id, row.name, row.role, row.created_at, row.password_changed_at)


def account_name(value: object) -> str:
    """A stripped account name of at most NAME_LEN characters, no control characters."""
    name = clean_name(value, "account name")
    if len(name) > models.NAME_LEN or any(ord(c) < 32 for c in name):
        raise ValueError(f"account name must be at most {models.NAME_LEN} printable characters, got {value!r}")
    return name


def add_account(name: str, role: str, password_hash: str, *, url: str | None = None) -> Account:
    """Create an account; a ValueError when the name is taken or the role unknown."""
    name = account_name(name)
    role = check_choice(role, models.ACCOUNT_ROLES, "role")
    try:
        with session_scope(url) as s:
            row = models.Account(name=name, role=role, password_hash=password_hash)
            s.add(row)
            s.flush()
            return _account(row)
    except IntegrityError:
        raise ValueError(f"an account named {name!r} exists already (use `renal-ldm users passwd {name}`)") from None


def list_accounts(*, url: str | None = None) -> list[Account]:
    with session_scope(url, readonly=True) as s:
        return [_account(r) for r in s.scalars(select(models.Account).order_by(models.Account.name))]


def count_accounts(*, url: str | None = None) -> int:
    with session_scope(url, readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(models.Account)) or 0)


def get_credentials(name: str, *, url: str | None = None) -> tuple[Account, str] | None:
    """The account and its stored password hash, or None (for the sign-in check only)."""
    with session_scope(url, readonly=True) as s:
        row = s.scalar(select(models.Account).where(models.Account.name == name))
        return None if row is None else (_account(row), row.password_hash)


def set_password_hash(name: str, password_hash: str, *, url: str | None = None) -> Account:
    """Replace an account's password hash and end its sign-in sessions (a new password signs everyone out)."""
    with session_scope(url) as s:
        row = s.scalar(select(models.Account).where(models.Account.name == name))
        if row is None:
            raise NotFoundError(f"no account named {name!r}")
        row.password_hash = password_hash
        row.password_changed_at = models.utcnow()
        s.execute(delete(models.SignInSessionRow).where(models.SignInSessionRow.account_name == name))
        s.flush()
        return _account(row)


def remove_account(name: str, *, url: str | None = None) -> None:
    """Delete an account and its sign-in sessions."""
    with session_scope(url) as s:
        row = s.scalar(select(models.Account).where(models.Account.name == name))
        if row is None:
            raise NotFoundError(f"no account named {name!r}")
        s.execute(delete(models.SignInSessionRow).where(models.SignInSessionRow.account_name == name))
        s.delete(row)


# ------------------------------------------------------------------------------------------- sessions


def create_sign_in_session(
    token_hash: str,
    account_name: str,
    role: str,
    credential_digest: str,
    expires_at: datetime,
    *,
    url: str | None = None,
) -> None:
    """Store a sign-in; `credential_digest` ties it to the password it was made with (a change ends it)."""
    with session_scope(url) as s:
        s.add(
            models.SignInSessionRow(
                token_hash=token_hash,
                account_name=account_name,
                role=role,
                credential_digest=credential_digest,
                expires_at=expires_at,
            )
        )


def get_sign_in_session(token_hash: str, now: datetime, *, url: str | None = None) -> SignInSession | None:
    """The live session for a token hash; an expired one is None (and is deleted)."""
    with session_scope(url) as s:
        row = s.scalar(select(models.SignInSessionRow).where(models.SignInSessionRow.token_hash == token_hash))
        if row is None:
            return None
        if as_utc(row.expires_at) <= as_utc(now):
            s.delete(row)
            return None
        return SignInSession(row.account_name, row.role, row.credential_digest, row.created_at, row.expires_at)


def delete_sign_in_session(token_hash: str, *, url: str | None = None) -> None:
    with session_scope(url) as s:
        s.execute(delete(models.SignInSessionRow).where(models.SignInSessionRow.token_hash == token_hash))


def delete_expired_sessions(now: datetime, *, url: str | None = None) -> int:
    with session_scope(url) as s:
        result = s.execute(delete(models.SignInSessionRow).where(models.SignInSessionRow.expires_at <= now))
        return int(result.rowcount or 0)


# ------------------------------------------------------------------------------------------- failures


def sign_in_failures(key: str, *, url: str | None = None) -> tuple[int, datetime | None]:
    """(failed sign-ins in a row, time of the last one) for a throttle key ("account:NAME", "client:ADDR")."""
    with session_scope(url, readonly=True) as s:
        row = s.get(models.SignInFailure, key)
        return (0, None) if row is None else (row.failures, as_utc(row.last_failure_at))


def record_sign_in_failure(key: str, at: datetime, *, url: str | None = None) -> int:
    """Count one more failure for the key; returns the new count."""
    table = models.SignInFailure
    with session_scope(url) as s:
        insert_ignore(s, table, {"key": key, "failures": 0, "last_failure_at": at}, ["key"])
        s.execute(update(table).where(table.key == key).values(failures=table.failures + 1, last_failure_at=at))
        return int(s.scalar(select(table.failures).where(table.key == key)))


def clear_sign_in_failures(keys: list[str], *, url: str | None = None) -> None:
    with session_scope(url) as s:
        s.execute(delete(models.SignInFailure).where(models.SignInFailure.key.in_(keys)))
