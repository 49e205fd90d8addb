"""Helpers the repository modules share: errors, input checks, tokens, insert-if-absent."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, insert, inspect
from sqlalchemy.orm import Session


class NotFoundError(LookupError, ValueError):
    """A name, id or token that matches nothing (a ValueError too, so callers may catch just that)."""


def new_token(nbytes: int = 24) -> str:
    """An unguessable URL-safe token (survey links, resume links, public item ids) that never starts with "-":
    the CSV exports neutralise a leading "-" as a spreadsheet formula (renal_ldm.csv_cells), which would show
    the id as '-... there (1 token in 64 did)."""
    while (token := secrets.token_urlsafe(nbytes)).startswith("-"):
        pass
    return token


def clean_name(value: object, what: str) -> str:
    """A stripped, non-empty name; the error names what was expected."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty text, got {value!r}")
    return value.strip()


def as_utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken to be UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def insert_ignore(session: Session, table: Any, values: dict[str, Any], conflict: list[str]) -> bool:
    """INSERT a row unless one with the same `conflict` columns exists; True if this call inserted it.

    A single statement (ON CONFLICT DO NOTHING), so two concurrent identical inserts leave one row and
    neither raises, on SQLite and PostgreSQL alike; other backends fall back to a savepoint.
    """
    dialect = session.get_bind().dialect.name
    stmt: Insert
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.exc import IntegrityError

        try:
            with session.begin_nested():
                session.execute(insert(table).values(**values))
            return True
        except IntegrityError:
            return False
    stmt = dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)
    # RETURNING yields a row only when this statement inserted one (rowcount is not reliable for INSERT).
    return session.execute(stmt.returning(*inspect(table).primary_key)).first() is not None


def check_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    """One of a fixed set of words (case and surrounding space forgiven)."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return word  # type: ignore[return-value]


def check_experience(value: object) -> int | None:
    """Experience 1 (barely any) .. 5 (pathologist), or None while not given yet."""
    from db.models import EXPERIENCE_MAX, EXPERIENCE_MIN

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not EXPERIENCE_MIN <= value <= EXPERIENCE_MAX:
        raise ValueError(f"experience must be an integer from {EXPERIENCE_MIN} to {EXPERIENCE_MAX}, got {value!r}")
    return value
