"""Database fixtures: every repository test runs on a fresh SQLite file and, where configured, on PostgreSQL.

PostgreSQL runs when RENAL_LDM_TEST_POSTGRES_URL is set (CI's .ci/run sets it); each test then starts from an
empty schema migrated to head, so tests never see each other's rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from db.migrate import init_db
from db.session import dispose_engines, get_engine

POSTGRES_ENV = "RENAL_LDM_TEST_POSTGRES_URL"


def reset_postgres(url: str) -> None:
    """Drop every table in the public schema (ours and alembic_version)."""
    with get_engine(url).begin() as connection:
        tables = connection.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
        if tables:
            connection.execute(text("DROP TABLE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request, tmp_path) -> Iterator[str]:
    """A database with no tables at all: a new SQLite file, or the emptied PostgreSQL test database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'renal_ldm.sqlite3'}"
    else:
        url = os.environ.get(POSTGRES_ENV)
        if not url:
            pytest.skip(f"PostgreSQL not configured: set {POSTGRES_ENV} (CI's .ci/run does) to run this on it")
        reset_postgres(url)
        yield url
    dispose_engines()


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A database migrated to head and empty of rows."""
    init_db(empty_db_url)
    return empty_db_url


@pytest.fixture
def sqlite_url(tmp_path) -> Iterator[str]:
    """A SQLite database at head, for tests about SQLite itself."""
    url = f"sqlite:///{tmp_path / 'renal_ldm.sqlite3'}"
    init_db(url)
    yield url
    dispose_engines()
