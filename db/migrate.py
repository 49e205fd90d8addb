"""Alembic, configured from Python: works from an installed package and any working directory, no alembic.ini.

Every schema change is a migration in db/migrations/versions; `upgrade` applies them in one transaction (SQLite
and PostgreSQL both have transactional DDL), so a failed upgrade leaves the old schema and all data in place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from db.session import SQLITE_BEGIN_OPTION, database_url, get_engine

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
# Any constant: serialises concurrent upgrades of one PostgreSQL database (two app processes starting at once).
_PG_LOCK_KEY = 0x52454E414C  # "RENAL"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations and the database URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this package."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""
    engine = get_engine(url).execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def init_db(url: str | None = None) -> str | None:
    """Migrate the database to the newest schema at start (idempotent); returns the revision it is at."""
    return upgrade(url)


def upgrade(url: str | None = None, revision: str = "head") -> str | None:
    """Apply migrations up to `revision` in one transaction; idempotent. Returns the revision reached."""
    config = alembic_config(url)
    with get_engine(url).connect() as connection, _migration_guard(connection):
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            if connection.dialect.name == "sqlite":
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration to {revision} broke foreign keys: {broken[:5]}; rolled back")
    return current_revision(url)


def new_revision(message: str, url: str | None = None) -> str:
    """Autogenerate the next numbered migration (0002_..., ...) from the models; for developers."""
    config = alembic_config(url)
    script = ScriptDirectory.from_config(config)
    numbers = [int(r.revision) for r in script.walk_revisions() if re.fullmatch(r"\d+", r.revision)]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    with get_engine(url).connect() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True, rev_id=rev_id)
    return rev_id


@contextmanager
def _migration_guard(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while migrating (batch mode rebuilds tables), checked before commit."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")  # only takes effect outside a transaction, hence before begin()
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
